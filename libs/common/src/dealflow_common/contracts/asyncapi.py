"""AsyncAPI 3.0 documents of what a service publishes and consumes, from the contracts.

FastStream can generate AsyncAPI from typed handler signatures, but our subscribers read
raw records (one bad record must not fail a batch) and the relay publishes stored
envelopes, so FastStream would see no payloads. This builds the document from the
contract classes themselves, which are the single definition of every message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from dealflow_common.contracts.base import EventPayload, registered_payloads
from dealflow_common.contracts.envelope import CONTENT_TYPE, CloudEvent
from dealflow_common.contracts.export import tolerant

_REF = "#/components/schemas/{model}"


def _channel_id(topic: str) -> str:
    return topic.replace(".", "-")


def _message_id(cls: type[EventPayload]) -> str:
    return f"{cls.event_type}.v{cls.schema_version}"


def asyncapi_document(
    *,
    service: str,
    version: str,
    description: str,
    publishes: Iterable[str],
    consumes: Iterable[str],
) -> dict[str, Any]:
    """`publishes`: topics whose every event this service writes; `consumes`: the event
    types its consumers handle (their topics come from the contracts)."""
    published = set(publishes)
    consumed_types = set(consumes)
    messages: dict[str, type[EventPayload]] = {}
    by_channel: dict[str, dict[str, list[str]]] = {}
    for cls in registered_payloads():
        directions = []
        if cls.topic in published:
            directions.append("send")
        if cls.event_type in consumed_types:
            directions.append("receive")
        for direction in directions:
            messages[_message_id(cls)] = cls
            by_channel.setdefault(cls.topic, {}).setdefault(direction, []).append(_message_id(cls))

    models: list[tuple[type[BaseModel], Literal["validation"]]] = [(CloudEvent, "validation")]
    models += [(cls, "validation") for cls in messages.values()]
    keyed, definitions = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = tolerant(dict(definitions.get("$defs", {})))

    components_messages = {}
    for message_id, cls in messages.items():
        data_ref = keyed[(cls, "validation")]
        components_messages[message_id] = {
            "name": cls.event_type,
            "title": cls.event_type,
            "summary": (cls.__doc__ or cls.event_type).strip().splitlines()[0],
            "contentType": CONTENT_TYPE,
            "payload": {
                "allOf": [
                    keyed[(CloudEvent, "validation")],
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": cls.event_type},
                            "dataschema": {"const": cls.dataschema()},
                            "data": data_ref,
                        },
                    },
                ]
            },
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "format": "uuid", "description": "opportunity id"},
                    "bindingVersion": "0.5.0",
                }
            },
        }

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic, by_direction in sorted(by_channel.items()):
        channel = _channel_id(topic)
        ids = sorted({m for listed in by_direction.values() for m in listed})
        channels[channel] = {
            "address": topic,
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in ids},
        }
        for direction, message_ids in sorted(by_direction.items()):
            operations[f"{direction}-{channel}"] = {
                "action": direction,
                "channel": {"$ref": f"#/channels/{channel}"},
                "messages": [
                    {"$ref": f"#/channels/{channel}/messages/{m}"} for m in sorted(message_ids)
                ],
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"Dealflow {service} service",
            "version": version,
            "description": description,
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "Set by KAFKA_BOOTSTRAP_SERVERS",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": components_messages, "schemas": schemas},
    }
