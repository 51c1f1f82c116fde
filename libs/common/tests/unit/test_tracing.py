"""A trace goes on through the outbox and Kafka: recorded, published, applied, caused."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common import telemetry
from dealflow_common.http.app import NO_NATIVE_TELEMETRY
from dealflow_common.logs import JsonFormatter
from dealflow_common.messaging.outbox import Outbox
from dealflow_common.messaging.tables import outbox
from dealflow_common.testing import in_memory_tracing

from .test_consumer import FakeRecord, Harness, effects_metadata, envelope
from .test_outbox import commit, note, relay

A = uuid.uuid4()


@pytest.fixture(autouse=True)
async def _effects_table(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(effects_metadata.create_all)


@pytest.fixture
def spans() -> Iterator[Any]:
    with in_memory_tracing() as exporter:
        yield exporter


class HeaderSender:
    """Acks every record and keeps what was sent, headers included."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, dict[str, str]]] = []

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> asyncio.Future[Any]:
        self.records.append((value, headers))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def stored_envelopes(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = (await connection.execute(select(outbox.c.envelope).order_by(outbox.c.id))).all()
    return [orjson.loads(row.envelope) for row in rows]


def as_records(sent: list[tuple[bytes, dict[str, str]]]) -> list[FakeRecord]:
    return [
        FakeRecord(value, headers=[(k, v.encode()) for k, v in headers.items()], offset=i)
        for i, (value, headers) in enumerate(sent)
    ]


async def test_one_trace_runs_from_the_request_through_the_relay_to_the_consumer_and_on(
    engine: AsyncEngine, spans: Any
) -> None:
    writer = Outbox("/dealflow/test")
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("POST /quotes/{id}/accept") as request:
        await commit(engine, writer, note(A, "accepted"))
    (stored,) = await stored_envelopes(engine)
    request_context = request.get_span_context()
    assert stored["traceparent"].split("-")[1] == format(request_context.trace_id, "032x")
    assert stored["traceparent"].split("-")[2] == format(request_context.span_id, "016x")

    sender = HeaderSender()
    assert await relay(engine, sender, writer).relay_once() == 1  # type: ignore[arg-type]
    ((_, headers),) = sender.records
    (publish,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert publish.parent.span_id == request_context.span_id
    assert publish.context.trace_id == request_context.trace_id
    # The record carries the publish span, so the consumer's apply is its child.
    assert headers["ce_traceparent"].split("-")[2] == format(publish.context.span_id, "016x")

    # The consumer (another service) applies it; the event its handler causes goes on
    # in the same trace, as a child of the apply.
    harness = Harness(engine)
    await harness.consumer.apply_batch(as_records(sender.records))
    (apply,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert apply.parent.span_id == publish.context.span_id
    assert apply.context.trace_id == request_context.trace_id
    assert apply.name == "apply opportunity.note_added"
    caused = (await stored_envelopes(engine))[-1]
    assert caused["traceparent"].split("-")[1] == format(request_context.trace_id, "032x")
    assert caused["traceparent"].split("-")[2] == format(apply.context.span_id, "016x")
    # Causal order: accepted, then published, then applied.
    assert request.start_time <= publish.start_time <= apply.start_time  # type: ignore[attr-defined]


async def test_a_record_from_a_producer_without_trace_context_applies_and_starts_a_trace(
    engine: AsyncEngine, spans: Any
) -> None:
    harness = Harness(engine)
    await harness.consumer.apply_batch([FakeRecord(envelope("no trace here"))])
    assert await harness.applied() == ["no trace here"]
    (apply,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert apply.parent is None


async def test_a_malformed_traceparent_applies_and_starts_a_trace(
    engine: AsyncEngine, spans: Any
) -> None:
    harness = Harness(engine)
    record = FakeRecord(envelope("bad trace"), headers=[("ce_traceparent", b"00-zz-yy-01")])
    await harness.consumer.apply_batch([record])
    assert await harness.applied() == ["bad trace"]
    (apply,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert apply.parent is None


async def test_a_structured_mode_record_is_followed_by_its_envelope_traceparent(
    engine: AsyncEngine, spans: Any
) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    value = orjson.loads(envelope("structured"))
    value["traceparent"] = parent
    await Harness(engine).consumer.apply_batch([FakeRecord(orjson.dumps(value))])
    (apply,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert format(apply.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(apply.parent.span_id, "016x") == "b7ad6b7169203331"


async def test_with_tracing_off_nothing_is_carried(engine: AsyncEngine) -> None:
    assert not telemetry.tracing_enabled()
    writer = Outbox("/dealflow/test")
    await commit(engine, writer, note(A, "quiet"))
    (stored,) = await stored_envelopes(engine)
    assert "traceparent" not in stored
    sender = HeaderSender()
    await relay(engine, sender, writer).relay_once()  # type: ignore[arg-type]
    ((_, headers),) = sender.records
    assert not any(name.startswith("ce_trace") for name in headers)


def test_log_lines_carry_the_trace_and_span_ids(spans: Any) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("tracing-test")
    logger.addHandler(handler)
    try:
        with trace.get_tracer("test").start_as_current_span("work") as span:
            logger.warning("inside")
    finally:
        logger.removeHandler(handler)
    line = orjson.loads(stream.getvalue())
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_tracing_is_off_unless_an_endpoint_is_configured(environ: dict[str, str]) -> None:
    assert telemetry.configure_tracing("test", environ) is False
    assert not telemetry.tracing_enabled()


def test_statements_alone_start_no_trace_but_are_kept_under_a_request() -> None:
    from opentelemetry.sdk.trace.sampling import Decision, ParentBased

    sampler = ParentBased(root=telemetry.NoOrphanWork())
    for kind in (SpanKind.CLIENT, SpanKind.INTERNAL):
        assert sampler.should_sample(None, 1, "SELECT", kind).decision == Decision.DROP
    for kind in (SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.PRODUCER):
        assert sampler.should_sample(None, 1, "work", kind).decision != Decision.DROP
    with in_memory_tracing(), trace.get_tracer("test").start_as_current_span("request") as request:
        parent = trace.set_span_in_context(request)
        kept = sampler.should_sample(parent, 1, "SELECT", SpanKind.CLIENT)
    assert kept.decision != Decision.DROP


async def test_fastapi_traces_nothing_of_its_own_when_told_so(spans: Any) -> None:
    """The services build their apps with `NO_NATIVE_TELEMETRY` while our tracing is off:
    FastAPI then does not even ask whether a provider is configured. Here one is (the
    test's), so FastAPI's defaults would trace the request, as the first case shows."""

    def app_with(config: Any) -> FastAPI:
        app = FastAPI(telemetry=config)

        @app.get("/ping")
        async def ping() -> dict[str, bool]:
            return {"ok": True}

        return app

    for config, traced in ((None, True), (NO_NATIVE_TELEMETRY, False)):
        spans.clear()
        transport = httpx.ASGITransport(app=app_with(config))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/ping")).status_code == 200
        assert bool(spans.get_finished_spans()) is traced, config
