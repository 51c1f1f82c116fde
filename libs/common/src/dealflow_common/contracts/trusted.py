"""Models built from values that are valid already: a Money computed from other Money, a
response made of a state that was validated when it was built.

pydantic's `model_construct` skips validation but still walks every field in Python to
look for aliases and defaults: 11 µs for the opportunity's response of 30 fields, most
of a `Money.exact`'s 7 µs, on paths that build several of each per request. When every
field is given, and the model has no aliases, private attributes, extras or post-init
hook, what it builds is the values as they are: `trusted` builds that directly.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_FIELDS: dict[type[BaseModel], tuple[str, ...] | None] = {}
"""Per model class, its fields in order if `model_construct` would do nothing but store
the values, else None."""


def trusted(cls: type[M], values: dict[str, Any]) -> M:
    """`cls.model_construct(**values)`, for `values` already valid: built directly when
    they name every field of a plain model (`values` is kept as the model's own), by
    `model_construct` otherwise."""
    if cls in _FIELDS:
        fields = _FIELDS[cls]
    else:
        fields = _FIELDS[cls] = tuple(cls.__pydantic_fields__) if _is_plain(cls) else None
    if fields is None or values.keys() != cls.__pydantic_fields__.keys():
        return cls.model_construct(**values)
    if tuple(values) != fields:
        # The fields' order is the JSON's (pydantic serializes the dict as it is).
        values = {name: values[name] for name in fields}
    model = cls.__new__(cls)
    # What `model_construct` sets, in the same way (models may be frozen).
    object.__setattr__(model, "__dict__", values)
    object.__setattr__(model, "__pydantic_fields_set__", set(values))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


def _is_plain(cls: type[BaseModel]) -> bool:
    return (
        not cls.__pydantic_root_model__
        and not cls.__private_attributes__
        and not cls.__pydantic_post_init__
        and cls.model_config.get("extra") != "allow"
        and all(
            field.alias is None and field.validation_alias is None
            for field in cls.__pydantic_fields__.values()
        )
    )
