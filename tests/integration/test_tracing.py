"""One accepted quote is one trace, across three services, the outbox and Kafka.

The services run as real processes on a broker of their own (so that no other test's
replicas take part) and export their spans over OTLP/HTTP to a collector this test
runs on loopback, which keeps them in memory: the real exporter, the real protocol.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dealflow_common.contracts.topics import QUOTE_EVENTS
from dealflow_common.runtime.broker import EmbeddedBroker, free_port
from dealflow_common.runtime.processes import ServiceProcess
from dealflow_common.testing import TopicReader, new_schema_name

pytestmark = pytest.mark.integration

# OTLP's span kinds (opentelemetry/proto/trace/v1/trace.proto).
SERVER, PRODUCER, CONSUMER = 2, 4, 5

DEAL = {
    "title": "Traced deal",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "900.00", "currency": "USD"},
}


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    start: int
    attributes: dict[str, Any]


class Collector:
    """An OTLP/HTTP trace receiver on loopback that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector._keep(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {
                        a.key: getattr(a.value, a.value.WhichOneof("value") or "string_value")
                        for a in span.attributes
                    }
                    with self._lock:
                        self.spans.append(
                            ExportedSpan(
                                service,
                                span.name,
                                span.kind,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                span.start_time_unix_nano,
                                attributes,
                            )
                        )

    def snapshot(self) -> list[ExportedSpan]:
        with self._lock:
            return list(self.spans)

    def __enter__(self) -> Collector:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


@pytest.fixture
async def traced(stack, schemas, collector) -> AsyncIterator[tuple[dict[str, ServiceProcess], str]]:
    """Opportunity, quote and order with tracing on, on a broker of their own."""
    broker = EmbeddedBroker("127.0.0.1", free_port())
    broker.start()
    processes: dict[str, ServiceProcess] = {}
    try:
        for name in ("opportunity", "quote", "order"):
            schema = new_schema_name(f"traced_{name}")
            schemas.append(schema)
            process = stack.service_process(name, schema=schema, bootstrap=broker.bootstrap_servers)
            process.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
            process.env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
            processes[name] = process
        for process in processes.values():
            await process.start()
        for process in processes.values():
            await process.wait_ready(timeout=90)
        yield processes, broker.bootstrap_servers
    finally:
        for process in processes.values():
            await process.stop()
        broker.stop()


async def eventually(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check() if asyncio.iscoroutinefunction(check) else check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {timeout:.0f}s")
        await asyncio.sleep(0.2)


def ancestry(span: ExportedSpan, by_id: dict[str, ExportedSpan]) -> list[ExportedSpan]:
    """The span and its ancestors, the root first."""
    chain = [span]
    while chain[-1].parent_id and chain[-1].parent_id in by_id:
        chain.append(by_id[chain[-1].parent_id])
    return chain[::-1]


async def test_an_accepted_quote_is_one_trace_across_every_hop(traced, token, collector) -> None:
    processes, bootstrap = traced
    headers = {"Authorization": f"Bearer {token('alice', ('rep', 'manager'), ('emea',))}"}
    opportunity = httpx.AsyncClient(
        base_url=processes["opportunity"].url, headers=headers, timeout=30
    )
    quotes = httpx.AsyncClient(base_url=processes["quote"].url, headers=headers, timeout=30)
    async with opportunity, quotes:
        created = await opportunity.post("/opportunities", json=DEAL)
        assert created.status_code == 201, created.text
        deal = created.json()["id"]
        for stage in ("qualification", "proposal", "negotiation"):
            moved = await opportunity.post(f"/opportunities/{deal}/stage", json={"stage": stage})
            assert moved.status_code == 200, moved.text

        async def quote_may_be_made() -> bool:
            # The quote service learns of the deal from its events.
            response = await quotes.post(
                "/quotes",
                json={
                    "opportunity_id": deal,
                    "lines": [
                        {
                            "description": "Widget",
                            "quantity": "1",
                            "unit_price": {"amount": "900.00", "currency": "USD"},
                        }
                    ],
                },
            )
            made.append(response)
            return response.status_code == 201

        made: list[httpx.Response] = []
        await eventually(quote_may_be_made)
        quote = made[-1].json()["id"]
        assert (await quotes.post(f"/quotes/{quote}/present")).status_code == 200
        assert (await quotes.post(f"/quotes/{quote}/accept")).status_code == 202

        async def has_order() -> bool:
            body = (await opportunity.get(f"/opportunities/{deal}")).json()
            return body.get("order_id") is not None

        await eventually(has_order)
        # The saga dashboard's metrics: the win and the moves that led to it.
        metrics = (await opportunity.get("/metrics")).text
        assert "dealflow_saga_accept_to_won_seconds_count 1.0" in metrics
        for move in ("lead", "qualification"), ("proposal", "negotiation"):
            assert (
                f'dealflow_opportunity_stage_moves_total{{from_stage="{move[0]}",'
                f'to_stage="{move[1]}"}} 1.0'
            ) in metrics, metrics

    def accept_trace() -> list[ExportedSpan] | None:
        spans = collector.snapshot()
        accepts = [
            s
            for s in spans
            if s.service == "dealflow-quote" and s.name == "POST /quotes/{quote_id}/accept"
        ]
        if not accepts:
            return None
        trace = [s for s in spans if s.trace_id == accepts[0].trace_id]
        wanted = ("dealflow-order", "apply quote.accepted")
        applied = [s for s in trace if (s.service, s.name) == wanted]
        # Each process exports its spans in its own batches: wait until the whole chain
        # from the request to the order's apply has arrived, not only its two ends.
        by_id = {s.span_id: s for s in trace}
        if not applied or ancestry(applied[0], by_id)[0].parent_id:
            return None
        return trace

    trace = await eventually(accept_trace)
    by_id = {s.span_id: s for s in trace}
    (order_apply,) = [
        s for s in trace if s.service == "dealflow-order" and s.name == "apply quote.accepted"
    ]
    hops = [
        (s.service, s.name)
        for s in ancestry(order_apply, by_id)
        if s.name.startswith(("POST", "publish", "apply"))
    ]
    assert hops == [
        ("dealflow-quote", "POST /quotes/{quote_id}/accept"),
        ("dealflow-quote", "publish quote.acceptance_requested"),
        ("dealflow-opportunity", "apply quote.acceptance_requested"),
        ("dealflow-opportunity", "publish opportunity.won"),
        ("dealflow-quote", "apply opportunity.won"),
        ("dealflow-quote", "publish quote.accepted"),
        ("dealflow-order", "apply quote.accepted"),
    ], hops
    chain = ancestry(order_apply, by_id)
    assert [s.start for s in chain] == sorted(s.start for s in chain), "causal order"
    # The order's own event goes on in the same trace, back to the opportunity.
    assert any(
        (s.service, s.name) == ("dealflow-opportunity", "apply order.created") for s in trace
    ) or await eventually(
        lambda: any(
            (s.service, s.name, s.trace_id)
            == ("dealflow-opportunity", "apply order.created", order_apply.trace_id)
            for s in collector.snapshot()
        )
    )
    # The database work shows inside the spans (the SQLAlchemy instrumentation).
    assert any(s.attributes.get("db.system") or s.attributes.get("db.system.name") for s in trace)

    # A record from another producer, without any trace context, still applies and
    # starts a trace of its own.
    async with TopicReader(bootstrap, QUOTE_EVENTS) as reader:
        records = await reader.wait_for(
            lambda rs: any(r.event.get("type") == "quote.acceptance_requested" for r in rs)
        )
    original = next(r.event for r in records if r.event.get("type") == "quote.acceptance_requested")
    foreign = {k: v for k, v in original.items() if k not in ("traceparent", "tracestate")}
    foreign["id"] = str(uuid.uuid4())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            QUOTE_EVENTS, orjson.dumps(foreign), key=original["subject"].encode()
        )
    finally:
        await producer.stop()

    def foreign_apply() -> ExportedSpan | None:
        return next(
            (
                s
                for s in collector.snapshot()
                if s.name == "apply quote.acceptance_requested"
                and s.attributes.get("messaging.message.id") == foreign["id"]
            ),
            None,
        )

    applied = await eventually(foreign_apply)
    assert applied.parent_id == ""
    assert applied.trace_id != order_apply.trace_id

    # No trace is made of statements alone (the relay's polls, the schedulers' ticks):
    # every root span is a request, a record applied or a publish.
    roots = {(s.service, s.name, s.kind) for s in collector.snapshot() if not s.parent_id}
    assert roots
    assert all(kind in (SERVER, PRODUCER, CONSUMER) for _, _, kind in roots), roots
