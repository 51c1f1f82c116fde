"""A shallow copy of an aggregate, for the snapshots that copies of aggregates are made
of (`dealflow_common.recent`): one is taken each time a change starts from a copy and
each time a committed change is kept."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def shallow_copy(obj: T) -> T:
    """A new instance of `obj`'s class holding the same attribute values, made without
    calling `__init__`; for plain objects and dataclasses without `__slots__`.

    `copy.copy` makes the same through the pickle protocol (`__reduce_ex__`, `copyreg`,
    `_reconstruct`: five Python calls), and `dataclasses.replace` calls `__init__` with
    every field read one by one: each several times the cost of this, on a path that
    runs twice per change."""
    twin = object.__new__(type(obj))
    twin.__dict__.update(obj.__dict__)
    return twin
