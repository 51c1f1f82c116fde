"""Distributed tracing: one trace per deal, across HTTP, the outbox and Kafka.

Configured by the standard OpenTelemetry variables: spans are exported over OTLP when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and
tracing is off otherwise, or when `OTEL_SDK_DISABLED=true` / `OTEL_TRACES_EXPORTER=none`.
Off means off: no span is built, no context is carried, nothing is paid on the hot
path beyond one boolean test.

How a trace crosses the asynchronous hops (the CloudEvents distributed tracing
extension):
- the unit of work records, with each event, the context of the span it was recorded
  in (the HTTP request, or the consumer applying an event); the outbox writes it into
  the envelope as `traceparent` / `tracestate`;
- the relay publishes each record in a PRODUCER span, a child of that context started
  when the row is actually sent, so the time the row waited in the outbox shows as the
  gap between the two; the producer span's context goes on the record as the
  `ce_traceparent` / `ce_tracestate` headers (CloudEvents' Kafka binding names);
- a consumer applies each record in a CONSUMER span whose parent is the
  `ce_traceparent` header, or else the envelope's `traceparent` (a producer that writes
  structured mode only); a record with neither starts a trace of its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

_propagator = TraceContextTextMapPropagator()
tracer = trace.get_tracer("dealflow")

_enabled = False


def tracing_enabled() -> bool:
    return _enabled


def enable_tracing(provider: Any) -> None:
    """Install an SDK tracer provider (the exporter's, or a test's in-memory one)."""
    global _enabled
    trace.set_tracer_provider(provider)
    _enabled = True


def configure_tracing(service_name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Export spans over OTLP when the standard variables ask for it; True if on."""
    if _enabled:
        return True
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    if not (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        return False
    # Imported here: a process with tracing off never loads the SDK and its exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still win over the default name.
    resource = Resource.create({SERVICE_NAME: f"dealflow-{service_name}"})
    if environ.get("OTEL_SERVICE_NAME"):
        resource = resource.merge(Resource({SERVICE_NAME: environ["OTEL_SERVICE_NAME"]}))
    # Unless OTEL_TRACES_SAMPLER says otherwise: every trace that starts at a request,
    # a record or a publish, and no trace of statements alone (the relay's and the
    # schedulers' polling would otherwise be a trace every few hundred milliseconds).
    sampler = None if environ.get("OTEL_TRACES_SAMPLER") else ParentBased(root=NoOrphanWork())
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    enable_tracing(provider)
    log.info("tracing on: spans are exported over OTLP")
    return True


class NoOrphanWork(Sampler):
    """Root spans only for work that begins somewhere: a request, a record, a publish.

    A statement or an internal step with no parent (a poll of the outbox, a scheduler
    tick that finds nothing) is not worth a trace of its own; under a parent it is kept
    by `ParentBased`, as the parent's decision."""

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind in (None, SpanKind.CLIENT, SpanKind.INTERNAL):
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "NoOrphanWork"


def shutdown_tracing() -> None:
    """Flush the spans still queued (at process exit)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if _enabled and shutdown is not None:
        shutdown()


def current_trace_headers() -> dict[str, str] | None:
    """`traceparent` (and `tracestate`) of the running span, or None outside a trace."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier or None


def _context_of(headers: Mapping[str, str]) -> otel_context.Context | None:
    carrier = {key: value for key, value in headers.items() if value}
    if "traceparent" not in carrier:
        return None
    context = _propagator.extract(carrier)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None  # a malformed traceparent starts a new trace instead
    return context


def record_trace_headers(
    headers: Mapping[str, str], envelope_trace: Mapping[str, str] | None
) -> dict[str, str]:
    """The trace context a consumed record carries: its `ce_` headers, else its envelope."""
    carried = {
        "traceparent": headers.get("ce_traceparent", ""),
        "tracestate": headers.get("ce_tracestate", ""),
    }
    if carried["traceparent"]:
        return carried
    return dict(envelope_trace or {})


def start_publish_span(
    topic: str, subject: str, event_id: str, event_type: str, creation: Mapping[str, str] | None
) -> tuple[Span, dict[str, str]]:
    """A PRODUCER span for one outbox record, and the headers that carry it on."""
    parent = _context_of(creation) if creation else None
    span = tracer.start_span(
        f"publish {event_type}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.kafka.message.key": subject,
            "messaging.message.id": event_id,
            "cloudevents.event_type": event_type,
        },
    )
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    headers = {f"ce_{key}": value for key, value in carrier.items()}
    return span, headers


def end_publish_span(span: Span, error: BaseException | None) -> None:
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, repr(error)))
    span.end()


@contextmanager
def consume_span(
    group: str,
    topic: str,
    partition: int,
    offset: int,
    event_id: str,
    event_type: str,
    carried: Mapping[str, str],
) -> Iterator[None]:
    """The CONSUMER span applying one record, a child of the span that published it
    (its caller builds it only with tracing on)."""
    with tracer.start_as_current_span(
        f"apply {event_type}",
        context=_context_of(carried),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": group,
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
            "messaging.message.id": event_id,
            "cloudevents.event_type": event_type,
        },
    ):
        yield


def log_ids() -> tuple[str, str] | None:
    """The trace and span ids of the running span, for log lines; None outside one."""
    if not _enabled:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
