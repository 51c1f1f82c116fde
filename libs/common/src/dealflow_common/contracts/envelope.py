"""The CloudEvents 1.0 envelope, structured JSON mode, with Dealflow's extensions.

`correlationid` is one per business flow, `causationid` names the event or request that
caused this one, and `sequence` counts the events of one opportunity from one source,
strictly by one, so a subscriber can see a gap or a duplicate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

CONTENT_TYPE: Final = "application/cloudevents+json"


class CloudEvent(BaseModel):
    # Unknown extension attributes are legal CloudEvents; keep reading when one appears.
    model_config = ConfigDict(extra="ignore", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: UUID
    source: str = Field(description="The service that wrote the event, e.g. /dealflow/opportunity")
    type: str = Field(description="Event type, e.g. opportunity.stage_changed")
    subject: str = Field(description="The opportunity id; also the Kafka record key")
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str = Field(description="Versioned schema of `data`, e.g. urn:dealflow:…:v1")
    data: dict[str, Any]
    correlationid: str
    causationid: str | None = None
    sequence: int = Field(ge=1, description="Per subject and source, increasing by one")
    traceparent: str | None = Field(
        default=None,
        description="W3C trace context of the work that recorded the event "
        "(CloudEvents distributed tracing extension); absent when tracing is off",
    )
    tracestate: str | None = Field(default=None, description="W3C tracestate, with traceparent")
