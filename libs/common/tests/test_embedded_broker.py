"""The embedded broker, started for real: what its process is given."""

from __future__ import annotations

import os
from pathlib import Path

from dealflow_common.runtime.broker import EmbeddedBroker, free_port


def test_the_broker_process_is_started_with_one_tokio_worker() -> None:
    """`broker_environment` reaches the process (its threads are not counted: Tokio
    names its blocking pool's threads as it names its workers, and those come and go)."""
    broker = EmbeddedBroker("127.0.0.1", free_port())
    broker.start()
    try:
        environment = Path(f"/proc/{broker.pid}/environ").read_bytes().split(b"\0")
        workers = os.environ.get("TOKIO_WORKER_THREADS", "1")
        assert f"TOKIO_WORKER_THREADS={workers}".encode() in environment
    finally:
        broker.stop()
