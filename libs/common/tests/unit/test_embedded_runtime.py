"""`make run` restarts a crashed service: quickly after a healthy run, slower in a loop.

A fake clock and fake processes: nothing sleeps and nothing is started.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from dealflow_common.runtime.broker import broker_environment, free_port
from dealflow_common.runtime.embedded import (
    RestartBackoff,
    _print_banner,
    service_urls,
    supervise,
)
from dealflow_common.runtime.processes import ServiceProcess


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeRun:
    """One run of the service: up for `uptime` seconds of the fake clock, then exits 1."""

    def __init__(self, clock: FakeClock, uptime: float, last: bool, stopping: asyncio.Event):
        self._clock, self._uptime, self._last, self._stopping = clock, uptime, last, stopping

    async def wait(self) -> int:
        self._clock.now += self._uptime
        if self._last:
            self._stopping.set()  # Ctrl-C during the last run: no restart after it
        return 1


class FakeService:
    """A ServiceProcess whose runs last as long as `uptimes` says, one after another."""

    name = "quote"

    def __init__(self, clock: FakeClock, uptimes: list[float], stopping: asyncio.Event):
        self._clock, self._uptimes, self._stopping = clock, list(uptimes), stopping
        self.starts = 0
        self.process: Any = None
        self.start_sync()

    def start_sync(self) -> None:
        uptime = self._uptimes.pop(0)
        self.process = FakeRun(self._clock, uptime, not self._uptimes, self._stopping)

    async def start(self) -> None:
        self.starts += 1
        self.start_sync()


async def waits_between_runs(uptimes: list[float]) -> list[float]:
    clock, stopping, waits = FakeClock(), asyncio.Event(), []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    service = FakeService(clock, uptimes, stopping)
    await supervise(service, stopping, clock=clock, sleep=sleep)  # type: ignore[arg-type]
    assert service.starts == len(uptimes) - 1
    return waits


async def test_a_service_that_keeps_crashing_waits_longer_each_time_up_to_30_s() -> None:
    assert await waits_between_runs([2.0] * 8) == [1, 2, 4, 8, 16, 30, 30]


async def test_after_a_healthy_run_a_crash_is_restarted_at_once_again() -> None:
    crash_loop, healthy, crash_loop_again = [2.0] * 6, [600.0], [2.0, 2.0]
    assert await waits_between_runs(crash_loop + healthy + crash_loop_again) == [
        1,
        2,
        4,
        8,
        16,
        30,
        1,  # it had run ten minutes
        2,
    ]


async def test_a_service_that_crashes_now_and_then_is_always_back_in_a_second() -> None:
    assert await waits_between_runs([3600.0, 90.0, 60.0, 7200.0]) == [1, 1, 1]


def test_the_backoff_rule() -> None:
    backoff = RestartBackoff(first=1, longest=8, healthy_after=60)
    assert [backoff.after_run(5) for _ in range(5)] == [1, 2, 4, 8, 8]
    assert backoff.after_run(59.9) == 8
    assert backoff.after_run(60) == 1
    assert backoff.after_run(0) == 2


def test_every_service_learns_where_the_others_listen() -> None:
    processes = [
        ServiceProcess("opportunity", "dealflow_opportunity", {}, 18001),
        ServiceProcess("console", "dealflow_console", {}, 18000, host="0.0.0.0"),
    ]
    assert service_urls(processes) == {
        "DEALFLOW_OPPORTUNITY_URL": "http://127.0.0.1:18001",
        "DEALFLOW_CONSOLE_URL": "http://0.0.0.0:18000",
    }


def test_make_run_prints_the_console_address_first(capsys: Any) -> None:
    processes = [
        ServiceProcess("console", "dealflow_console", {}, 8000),
        ServiceProcess("opportunity", "dealflow_opportunity", {}, 8001),
    ]
    _print_banner(processes, "127.0.0.1:9092", True, Path("data"), "s" * 48)
    printed = capsys.readouterr().out
    assert "Open the console: http://127.0.0.1:8000/" in printed
    assert printed.index("Open the console") < printed.index("opportunity")
    assert 'curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8001/opportunities' in printed


def test_a_free_port_is_outside_the_range_outgoing_connections_take() -> None:
    """Binding port 0 picks from the kernel's range for outgoing connections, where a
    connection opened before the service binds may take the port; `free_port` answers
    below it, with a port that binds, and never the same one twice."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert 1024 <= port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_the_embedded_broker_runs_one_worker_thread_unless_told_otherwise() -> None:
    """Tansu's Tokio runtime would start a worker per core, each handing work to the
    other on cores every process shares; the embedded broker is given one. An explicit
    `TOKIO_WORKER_THREADS` in the environment is kept."""
    assert broker_environment({"PATH": "/bin"}) == {"PATH": "/bin", "TOKIO_WORKER_THREADS": "1"}
    assert broker_environment({"TOKIO_WORKER_THREADS": "3"})["TOKIO_WORKER_THREADS"] == "3"
