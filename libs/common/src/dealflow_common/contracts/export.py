"""`dealflow-contracts`: write the JSON Schema of every message, for subscribers.

    dealflow-contracts libs/common/schemas

One file per event type and version (`opportunity.created.v1.json`) plus the envelope.
The committed files are compared with the code by a test, so a change to a published
schema is always deliberate and visible in review.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from dealflow_common.contracts.base import registered_payloads
from dealflow_common.contracts.envelope import CloudEvent


def tolerant(schema: Any) -> Any:
    """The schema without `additionalProperties: false`: subscribers must accept
    properties added later (at any depth), since adding one is not a breaking change.
    API requests still refuse unknown fields; events never do."""
    if isinstance(schema, dict):
        return {
            key: tolerant(value)
            for key, value in schema.items()
            if not (key == "additionalProperties" and value is False)
        }
    if isinstance(schema, list):
        return [tolerant(item) for item in schema]
    return schema


def schema_documents() -> dict[str, dict[str, Any]]:
    documents: dict[str, dict[str, Any]] = {
        "cloudevent.json": {
            "$id": "urn:dealflow:schema:cloudevent:v1",
            **tolerant(CloudEvent.model_json_schema()),
        }
    }
    for cls in registered_payloads():
        schema = tolerant(cls.model_json_schema())
        documents[f"{cls.event_type}.v{cls.schema_version}.json"] = {
            "$id": cls.dataschema(),
            "x-topic": cls.topic,
            **schema,
        }
    return documents


def render(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dealflow-contracts", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    args.directory.mkdir(parents=True, exist_ok=True)
    for name, document in schema_documents().items():
        (args.directory / name).write_bytes(render(document))
    print(f"wrote {len(schema_documents())} schemas to {args.directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
