"""Structured logs: one JSON object per line, carrying the service and correlation id."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from dealflow_common.context import peek_flow
from dealflow_common.telemetry import log_ids

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged
# (but not uvicorn's terminal-coloured copy of the message).
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        flow = peek_flow()
        if flow is not None:
            entry["correlation_id"] = flow.correlation_id
        ids = log_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        flow = peek_flow()
        if flow is not None:
            line = f"{line} [cid={flow.correlation_id}]"
        ids = log_ids()
        return f"{line} [trace={ids[0]} span={ids[1]}]" if ids else line


def configure_logging(service: str, level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-message INFO lines from the Kafka framework and the access log would drown
    # the business log at our rates, and APScheduler logs two lines per run of every job
    # (the sequence service's runs four times a second); their warnings still come through.
    for noisy in ("aiokafka", "uvicorn.access", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
