"""Published schemas change only on purpose: the committed snapshots must match the code."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dealflow_common.contracts import CloudEvent, dataschema_for, payload_class
from dealflow_common.contracts.base import registered_payloads
from dealflow_common.contracts.export import render, schema_documents
from dealflow_common.contracts.topics import ALL_TOPICS
from dealflow_common.settings import ServiceSettings

SNAPSHOTS = Path(__file__).parents[2] / "schemas"


def test_committed_json_schemas_match_the_contracts() -> None:
    documents = schema_documents()
    committed = {p.name for p in SNAPSHOTS.glob("*.json")}
    assert committed == set(documents), "run `make contracts` and review the schema change"
    for name, document in documents.items():
        assert (SNAPSHOTS / name).read_bytes() == render(document), (
            f"{name} differs from the code: a breaking change needs a new schema version"
        )


def test_every_payload_travels_on_a_known_topic_and_resolves_by_its_dataschema() -> None:
    for cls in registered_payloads():
        assert cls.topic in ALL_TOPICS
        assert payload_class(cls.event_type, cls.dataschema()) is cls


def test_an_unknown_schema_version_is_not_guessed() -> None:
    assert payload_class("opportunity.created", dataschema_for("opportunity.created", 99)) is None


def test_the_envelope_reads_structured_cloudevents_with_unknown_extensions() -> None:
    event = CloudEvent.model_validate_json(
        b'{"specversion":"1.0","id":"6f1c1c52-5f0e-4e8a-9d47-2a8f4f4f0a11",'
        b'"source":"/dealflow/opportunity","type":"opportunity.created",'
        b'"subject":"6f1c1c52-5f0e-4e8a-9d47-2a8f4f4f0a12","time":"2026-11-24T12:00:00Z",'
        b'"datacontenttype":"application/json",'
        b'"dataschema":"urn:dealflow:schema:opportunity.created:v1","data":{},'
        b'"correlationid":"c-1","sequence":1,"traceparent":"00-abc"}'
    )
    assert event.sequence == 1
    assert event.causationid is None


def test_an_empty_optional_setting_means_unset(monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///x.db")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("DEALFLOW_JWT_SECRET", "x" * 32)
    monkeypatch.setenv("DEALFLOW_JWT_ISSUER", "")
    assert ServiceSettings().jwt_issuer is None


def test_a_short_token_secret_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///x.db")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("DEALFLOW_JWT_SECRET", "short")
    with pytest.raises(ValidationError, match="at least 32 characters"):
        ServiceSettings()
