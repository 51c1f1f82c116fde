"""The base of every event and command payload, and the registry of them by type.

A payload class declares its `event_type`, the `topic` it travels on and its
`schema_version`. A change that would break a subscriber gets a new class with a new
version, never a silent edit of the old one: the committed JSON Schema snapshots make
such an edit fail the tests.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict

_REGISTRY: dict[tuple[str, int], type[EventPayload]] = {}


class EventPayload(BaseModel):
    # Subscribers ignore fields they do not know: adding an optional field is not a
    # breaking change, so it does not need a new schema version.
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
    topic: ClassVar[str]
    schema_version: ClassVar[int] = 1

    opportunity_id: UUID
    """Every Dealflow message concerns one opportunity: it is the subject and the key."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" in cls.__dict__:
            key = (cls.event_type, cls.schema_version)
            if key in _REGISTRY:
                raise TypeError(f"{cls.event_type} v{cls.schema_version} is defined twice")
            _REGISTRY[key] = cls

    @property
    def subject(self) -> str:
        return str(self.opportunity_id)

    @classmethod
    def dataschema(cls) -> str:
        return dataschema_for(cls.event_type, cls.schema_version)


def dataschema_for(event_type: str, version: int) -> str:
    return f"urn:dealflow:schema:{event_type}:v{version}"


def payload_class(event_type: str, dataschema: str) -> type[EventPayload] | None:
    """The payload class for an event as it arrives, or None if this version is unknown."""
    for (known_type, version), cls in _REGISTRY.items():
        if known_type == event_type and dataschema_for(known_type, version) == dataschema:
            return cls
    return None


def is_known_event_type(event_type: str) -> bool:
    """Whether any version of `event_type` is part of Dealflow's contract."""
    return any(known_type == event_type for known_type, _ in _REGISTRY)


def registered_payloads() -> list[type[EventPayload]]:
    return sorted(_REGISTRY.values(), key=lambda c: (c.event_type, c.schema_version))
