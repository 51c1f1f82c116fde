"""What the benchmarks measure beside their own figures: CPU seconds per process (the
services, the broker, PostgreSQL's backends of the bench database) from /proc, and
medians over runs. Shared by `bench.purge` and `bench.sequences`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from dealflow_common.runtime.broker import free_port
from dealflow_common.runtime.embedded import embedded_service_env
from dealflow_common.runtime.processes import ServiceProcess, service_module

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (None when it is gone)."""
    times = cpu_times(pid)
    return None if times is None else times[0] + times[1]


def cpu_times(pid: int) -> tuple[float, float] | None:
    """User and system (kernel) CPU seconds of a process (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def on_cpu_seconds(pid: int) -> float:
    """Seconds a process has run on a CPU, from the scheduler's own count
    (`/proc/<pid>/schedstat`, nanoseconds), 0 when it is gone. `cpu_seconds` counts in
    clock ticks (10 ms): too coarse for what one request costs a database backend."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, every process) since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def reference_cpu_ms(repeats: int = 5) -> float:
    """CPU milliseconds this process takes for a fixed piece of work of the kind the
    services do (JSON, Decimal, dicts and strings), median of `repeats`: the host's
    speed at the moment. On the development machine the same code's CPU per deal has
    moved by half from one hour to the next; a run's figures are comparable with another
    run's only beside this one."""
    timings = []
    for _ in range(repeats):
        started = time.process_time()
        _reference_work()
        timings.append((time.process_time() - started) * 1000)
    return round(statistics.median(timings), 1)


def _reference_work() -> None:
    total = Decimal(0)
    cent = Decimal("0.01")
    for n in range(20_000):
        record = {"id": f"deal-{n}", "amount": str((Decimal(n) / 7).quantize(cent)), "n": [n] * 4}
        total += Decimal(orjson.loads(orjson.dumps(record))["amount"])
    assert total > 0


def reference_round_trip_us(repeats: int = 3, round_trips: int = 2_000) -> float:
    """CPU microseconds one loopback TCP round trip to another process costs both
    processes (200 bytes each way, an echo in a child process), median of `repeats`.

    `reference_cpu_ms` is Python in one process; the system's work is mostly sends,
    receives and wake-ups of other processes, and on the development machine (a VM) those
    slowed more than that loop from one hour to the next: PostgreSQL's and the broker's CPU
    a deal 1.65-2.9 times, the loop 1.25-1.4 times (docs/performance.md, issue 13's
    twenty-fourth round). This is the second reading of the host's speed."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        echo = subprocess.Popen(
            [sys.executable, "-c", _ECHO, str(listener.getsockname()[1])],
            stdin=subprocess.DEVNULL,
        )
        try:
            listener.settimeout(30)
            connection, _ = listener.accept()
            with connection:
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                timings = [_round_trips(connection, echo.pid, round_trips) for _ in range(repeats)]
        finally:
            echo.kill()
            echo.wait()
    return round(statistics.median(timings), 1)


_ECHO = """
import socket, sys
connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while data := connection.recv(65536):
    connection.sendall(data)
"""


def _round_trips(connection: socket.socket, echo: int, round_trips: int) -> float:
    message = b"x" * 200
    started, echo_started = time.process_time(), on_cpu_seconds(echo)
    for _ in range(round_trips):
        connection.sendall(message)
        received = 0
        while received < len(message):
            echoed = connection.recv(65536)
            if not echoed:
                raise RuntimeError("the echo process closed the connection")
            received += len(echoed)
    spent = time.process_time() - started + on_cpu_seconds(echo) - echo_started
    return spent / round_trips * 1e6


def machine_context_switches() -> int:
    """Context switches on the whole machine since boot: each is a process that slept
    (waiting for a socket, mostly) or was preempted; on this VM a wake-up of another
    process costs more than the few microseconds of its own work."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("ctxt "):
                return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parent = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class CpuSampler:
    """Samples the CPU time of named processes and of the bench database's backends.

    A backend that appears during the window counts from zero (it started in it); one
    that exits counts up to its last sample (sampled every `interval` seconds).
    """

    def __init__(
        self,
        db: asyncpg.Connection,
        processes: dict[str, int],
        database: str,
        interval: float = 0.5,
        alone: dict[str, int] | None = None,
    ) -> None:
        """`processes` count with their children; `alone` without (the load client,
        whose children are the services themselves)."""
        self._db = db
        self._database = database
        self._processes = {name: descendants(pid) for name, pid in processes.items()}
        self._processes.update({name: [pid] for name, pid in (alone or {}).items()})
        self._interval = interval
        self._first: dict[int, tuple[float, float]] = {}
        self._last: dict[int, tuple[float, float]] = {}
        self._group: dict[int, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._machine = 0.0
        self._started = 0.0
        self.machine_busy = 0.0
        """CPU seconds the machine was busy between start and stop, every process."""
        self._switches = 0
        self.context_switches = 0
        """Context switches on the machine between start and stop."""
        self.seconds = 0.0
        self.kernel_seconds: dict[str, float] = {}
        """Of each name's CPU seconds between start and stop, those spent in the kernel
        (system time): syscalls, and the loopback's network stack run for the sender."""

    async def _backends(self) -> dict[int, str]:
        rows = await self._db.fetch(
            "SELECT pid, backend_type, datname, application_name FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid()"
        )
        found = {}
        for r in rows:
            if r["datname"] == self._database and r["backend_type"] == "client backend":
                found[r["pid"]] = f"postgres:{r['application_name'] or 'other'}"
            elif r["datname"] == self._database:
                found[r["pid"]] = f"postgres:{r['backend_type']}"
            elif r["backend_type"] in ("walwriter", "checkpointer", "background writer"):
                found[r["pid"]] = "postgres:shared (wal writer, checkpointer, bgwriter)"
        return found

    async def _sample(self, first: bool) -> None:
        groups = {pid: name for name, pids in self._processes.items() for pid in pids}
        groups.update(await self._backends())
        for pid, name in groups.items():
            times = cpu_times(pid)
            if times is None:
                continue
            if pid not in self._first:
                self._first[pid] = times if first else (0.0, 0.0)
            self._last[pid] = times
            self._group[pid] = name

    async def start(self) -> None:
        self._machine = machine_busy_seconds()
        self._switches = machine_context_switches()
        self._started = time.perf_counter()
        await self._sample(first=True)

        async def loop() -> None:
            while True:
                await asyncio.sleep(self._interval)
                await self._sample(first=False)

        self._task = asyncio.create_task(loop())

    async def stop(self) -> dict[str, float]:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._sample(first=False)
        totals: dict[str, float] = {}
        kernel: dict[str, float] = {}
        for pid, name in self._group.items():
            (user_then, system_then), (user_now, system_now) = self._first[pid], self._last[pid]
            totals[name] = totals.get(name, 0.0) + user_now - user_then + system_now - system_then
            kernel[name] = kernel.get(name, 0.0) + system_now - system_then
        self.kernel_seconds = kernel
        self.machine_busy = machine_busy_seconds() - self._machine
        self.context_switches = machine_context_switches() - self._switches
        self.seconds = time.perf_counter() - self._started
        return {name: round(seconds, 2) for name, seconds in sorted(totals.items())}


def scrape_counters(text: str, names: Iterable[str]) -> dict[str, float]:
    """The value of each named unlabelled sample in a Prometheus text exposition."""
    wanted = set(names)
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            found[name] = float(value)
    return found


RESULTS = Path("bench/results")


def keep_report(report: dict[str, Any], benchmark: str) -> Path:
    """Print the report and keep it as `bench/results/<benchmark>-<at>.json`; its path."""
    text = json.dumps(report, indent=2, default=str)
    RESULTS.mkdir(parents=True, exist_ok=True)
    written = RESULTS / f"{benchmark}-{report['at'].replace(':', '')}.json"
    written.write_text(text + "\n")
    print(text)
    return written


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95 and p99 of a latency sample, in its unit to 0.1; None when it is empty."""
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


def compare_with_previous(
    results: Path, current: Path, pattern: str, figures: dict[str, str]
) -> list[str]:
    """Lines saying how each figure changed since the newest earlier report run with
    the same options, else since the newest earlier report, saying which options
    differ: a half load paced at 5 deals/s is no baseline for one at half the rate."""
    earlier = sorted(p for p in results.glob(pattern) if p.name < current.name)
    if not earlier:
        return [f"no earlier {pattern} in {results} to compare with"]
    now = json.loads(current.read_text())
    chosen, previous = earlier[-1], json.loads(earlier[-1].read_text())
    for path in reversed(earlier):
        report = json.loads(path.read_text())
        if not _options_differ(report, now):
            chosen, previous = path, report
            break
    lines = [f"against {chosen.name}:"]
    if differ := _options_differ(previous, now):
        lines.append(f"  (no earlier report ran with these options; that one differs in {differ})")
    if (ran_before := _python_of(previous)) != (ran_now := _python_of(now)):
        # The interpreter alone moved the deal's instructions by 12 % (pyenv's 3.11.7
        # against Debian's 3.11.2, docs/performance.md, issue 13's twenty-ninth round).
        lines.append(f"  (that report ran on Python {ran_before}, this one on {ran_now})")
    for key, label in figures.items():
        before, after = previous.get("median", {}).get(key), now.get("median", {}).get(key)
        if before is None or after is None:
            lines.append(f"  {label}: {before} -> {after}")
            continue
        change = (after - before) / before * 100 if before else float("nan")
        lines.append(f"  {label}: {before} -> {after} ({change:+.1f} %)")
    return lines


def _options_differ(before: dict[str, Any], now: dict[str, Any]) -> str:
    """The options (`config`) two reports were run with that differ, as `name a -> b`.
    An option a report does not record counts as None: the default of `half_load_rate`,
    which the deal reports before it was recorded were all run with."""
    old, new = before.get("config") or {}, now.get("config") or {}
    return ", ".join(
        f"{name} {old.get(name)} -> {new.get(name)}"
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    )


def _python_of(report: dict[str, Any]) -> str | None:
    """The Python a report ran on, where the benchmark recorded it."""
    machine = report.get("machine")
    found = report.get("python") or (machine.get("python") if isinstance(machine, dict) else None)
    return str(found) if found is not None else None


def flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            flatten(f"{prefix}.{key}" if prefix else key, inner, into)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        into[prefix] = value


def medians(runs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    flat: list[dict[str, Any]] = []
    for run in runs:
        values: dict[str, Any] = {}
        flatten("", run, values)
        flat.append(values)
    keys = dict.fromkeys(k for values in flat for k in values)
    return {k: round(statistics.median(v[k] for v in flat if k in v), 3) for k in keys}


def bench_service(
    name: str,
    settings_class: type[Any],
    *,
    bootstrap_servers: str,
    database_url: str,
    secrets: dict[str, str],
    log_file: Path,
    env: dict[str, str] | None = None,
) -> ServiceProcess:
    """One service of a benchmark's stack: the embedded runtime's environment, quiet
    logs (warnings and up) written to `log_file`, and `env` on top."""
    port = free_port()
    environment = embedded_service_env(
        name=name,
        port=port,
        host="127.0.0.1",
        bootstrap_servers=bootstrap_servers,
        database_url=database_url,
        secrets=secrets,
        idempotence=False,
    )
    environment["DEALFLOW_LOG_LEVEL"] = "WARNING"
    environment.update(env or {})
    log_file.write_text("")

    def write(_: str, line: str) -> None:
        with log_file.open("a") as f:
            f.write(line + "\n")

    return ServiceProcess(name, service_module(settings_class), environment, port, on_output=write)
