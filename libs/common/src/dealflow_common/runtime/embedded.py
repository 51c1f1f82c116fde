"""`dealflow-run` (what `make run` calls): the whole system on one machine.

Starts the embedded broker and every installed service as its own process, each with
its own SQLite file under the data folder (or, when `DATABASE_URL` names PostgreSQL,
its own schema there), prints where each listens and how to get a token, restarts a
service that crashes, and stops everything on Ctrl-C.

Environment (all optional):
  DEALFLOW_HOST              interface for the broker and the services (127.0.0.1)
  DEALFLOW_KAFKA_PORT        embedded broker port (9092)
  KAFKA_BOOTSTRAP_SERVERS    use this broker instead of starting the embedded one
  DEALFLOW_<SERVICE>_PORT    a service's HTTP port (opportunity 8001, quote 8002, …)
  DATABASE_URL               one PostgreSQL for all services, a schema each
  DEALFLOW_DATA_DIR          where SQLite files, logs and generated secrets go (./data)
  DEALFLOW_JWT_SECRET        token secret, and likewise every secret a service reads
                             (DEALFLOW_BUY_NOW_SECRET, …): when unset, one is generated
                             and kept in the data folder for the next runs
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dealflow_common.auth import mint_token
from dealflow_common.runtime.broker import EmbeddedBroker
from dealflow_common.runtime.processes import ServiceProcess, installed_services, service_module
from dealflow_common.settings import environment_variables

_COLORS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m"]
_RESET = "\033[0m"


EMBEDDED_PARTITIONS = 1
"""Partitions per topic in the embedded runtime, where each service runs once."""


def embedded_service_env(
    *,
    name: str,
    port: int,
    host: str,
    bootstrap_servers: str,
    database_url: str,
    secrets: Mapping[str, str],
    idempotence: bool,
) -> dict[str, str]:
    """The environment of one service in the embedded runtime (also used by the tests)."""
    return {
        **secrets,
        "DEALFLOW_HOST": host,
        "DEALFLOW_PORT": str(port),
        "DATABASE_URL": database_url,
        "DEALFLOW_DATABASE_SCHEMA": name,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "DEALFLOW_KAFKA_ENABLE_IDEMPOTENCE": "true" if idempotence else "false",
        "DEALFLOW_KAFKA_REPLICATION_FACTOR": "1",
        # Tansu holds a group join for about half the session timeout and waits up to
        # fetch_max_wait for data: short values keep a one-machine system snappy.
        "DEALFLOW_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "DEALFLOW_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        # Tansu answers a fetch it holds only when the wait is over, so a saga consumer
        # polls it 1000/wait times a second, deal or no deal. At 20 ms the broker, the
        # consumers and the wake-ups cost the deal benchmark a sixth of its context
        # switches and the broker a fifth of its CPU per deal. At 50 ms half-load latency
        # did not measurably rise: the CPU it frees shortens the queues as much as the
        # wait adds (docs/performance.md, issue 13's thirteenth round).
        "DEALFLOW_KAFKA_FETCH_MAX_WAIT_MS": "50",
        # One process per service reads every partition: more partitions buy it no
        # parallelism, and each costs the broker and every consumer work on every fetch
        # (the deal benchmark did 9.3 deals/s on 1, 7.6 on 2 and 5.8 on 6). Deployments
        # keep the setting's default; a run with replicas raises it.
        "DEALFLOW_KAFKA_TOPIC_PARTITIONS": str(EMBEDDED_PARTITIONS),
        "DEALFLOW_OUTBOX_POLL_INTERVAL_MS": "200",
        # The console's development sign-in (pick a made-up user, get a short-lived
        # token): on in the embedded run and the tests, off in every deployment.
        "DEALFLOW_CONSOLE_DEV_SIGN_IN": "true",
    }


def service_urls(processes: Iterable[ServiceProcess]) -> dict[str, str]:
    """`DEALFLOW_<NAME>_URL` for every service: where the console forwards calls to."""
    return {f"DEALFLOW_{p.name.upper()}_URL": p.url for p in processes}


def secret_names(services: Mapping[str, Any]) -> list[str]:
    """Every secret setting any installed service reads (no service has a default)."""
    return sorted(
        {
            name
            for cls in services.values()
            for name, secret in environment_variables(cls).items()
            if secret
        }
    )


def _secrets(data_dir: Path, names: list[str]) -> dict[str, str]:
    """From the environment, else kept from an earlier run, else new (mode 0600 files)."""
    found = {}
    for name in names:
        path = data_dir / "secrets" / name.lower()
        value = os.environ.get(name)
        if not value and path.exists():
            value = path.read_text(encoding="utf-8").strip()
        if not value:
            value = secrets.token_urlsafe(48)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.write_text(value + "\n", encoding="utf-8")
            path.chmod(0o600)
        found[name] = value
    return found


async def _run(data_dir: Path, services: Mapping[str, Any], secrets: Mapping[str, str]) -> int:
    host = os.environ.get("DEALFLOW_HOST", "127.0.0.1")

    broker: EmbeddedBroker | None = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap is None:
        broker = EmbeddedBroker(
            host, int(os.environ.get("DEALFLOW_KAFKA_PORT", "9092")), data_dir / "broker.log"
        )
        broker.start()
        bootstrap = broker.bootstrap_servers

    colors = dict(zip(services, _COLORS * 2, strict=False))

    def show(name: str, line: str) -> None:
        print(f"{colors[name]}{name:>12}{_RESET} | {line}", flush=True)

    shared_database = os.environ.get("DATABASE_URL")
    processes: list[ServiceProcess] = []
    for name, settings_class in services.items():
        default_port = settings_class.model_fields["port"].default
        port = int(os.environ.get(f"DEALFLOW_{name.upper()}_PORT", default_port))
        database_url = shared_database or f"sqlite+aiosqlite:///{data_dir / name}.db"
        env = embedded_service_env(
            name=name,
            port=port,
            host=host,
            bootstrap_servers=bootstrap,
            database_url=database_url,
            secrets=secrets,
            idempotence=broker is None,
        )
        env["DEALFLOW_LOG_FORMAT"] = "text"
        processes.append(
            ServiceProcess(name, service_module(settings_class), env, port, host, on_output=show)
        )
    urls = service_urls(processes)
    for process in processes:
        process.env.update(urls)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    try:
        for process in processes:
            await process.start()
        for process in processes:
            await process.wait_ready(timeout=90)
        _print_banner(
            processes, bootstrap, broker is not None, data_dir, secrets["DEALFLOW_JWT_SECRET"]
        )
        supervisors = [asyncio.create_task(supervise(p, stopping)) for p in processes]
        await stopping.wait()
        print("\nstopping…", flush=True)
        for task in supervisors:
            task.cancel()
    except (RuntimeError, TimeoutError) as error:
        print(f"\ncould not start: {error}", file=sys.stderr)
        return 1
    finally:
        await asyncio.gather(*(p.stop() for p in processes), return_exceptions=True)
        if broker is not None:
            broker.stop()
    print("stopped.")
    return 0


@dataclass
class RestartBackoff:
    """How long to wait before restarting a service that exited on its own.

    The wait doubles from `first` up to `longest` while the service keeps failing, and
    starts from `first` again once a run lasted `healthy_after` seconds: a service that
    crashes now and then is not in a crash loop, and is back at once.
    """

    first: float = 1.0
    longest: float = 30.0
    healthy_after: float = 60.0
    _next: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def after_run(self, ran_for: float) -> float:
        """The wait before the next start, for a run that lasted `ran_for` seconds."""
        if ran_for >= self.healthy_after:
            self._next = self.first
        delay = self._next
        self._next = min(delay * 2, self.longest)
        return delay


async def supervise(
    process: ServiceProcess,
    stopping: asyncio.Event,
    backoff: RestartBackoff | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Restart a service that exits on its own, backing off while it keeps failing."""
    backoff = backoff or RestartBackoff()
    started = clock()
    while not stopping.is_set():
        assert process.process is not None
        code = await process.process.wait()
        if stopping.is_set():
            return
        delay = backoff.after_run(clock() - started)
        print(f"{process.name} exited with {code}; restarting in {delay:.0f}s", flush=True)
        await sleep(delay)
        await process.start()
        started = clock()


def _print_banner(
    processes: list[ServiceProcess],
    bootstrap: str,
    embedded: bool,
    data_dir: Path,
    jwt_secret: str,
) -> None:
    token = mint_token(
        jwt_secret,
        sub="dev-manager",
        roles=["manager", "rep"],
        teams=["team-1"],
        now=int(time.time()),
    )
    width = max(len(p.name) for p in processes)
    opportunities = f"{_url_of(processes, 'opportunity')}/opportunities"
    lines = ["", "Dealflow is running.", ""]
    console = next((p for p in processes if p.name == "console"), None)
    if console is not None:
        lines += [
            f"  Open the console: {console.url}/  (sign in as a development user)",
            "",
        ]
    lines.append(
        f"  {'kafka':<{width}}  {bootstrap}"
        + ("  (embedded Tansu, memory only: a restart forgets all topics)" if embedded else "")
    )
    for p in processes:
        lines.append(f"  {p.name:<{width}}  {p.url}   docs {p.url}/docs")
    secret_hint = (
        f"--secret-file {data_dir / 'secrets' / 'dealflow_jwt_secret'}"
        if not os.environ.get("DEALFLOW_JWT_SECRET")
        else "(with DEALFLOW_JWT_SECRET set)"
    )
    lines += [
        "",
        "A development token (8 h, user dev-manager, roles manager+rep, team team-1):",
        f"  export TOKEN={token}",
        "Mint others with:",
        f"  .venv/bin/dealflow-token --sub alice --roles rep --teams team-1 {secret_hint}",
        "Then for example:",
        f'  curl -H "Authorization: Bearer $TOKEN" {opportunities}',
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


def _url_of(processes: list[ServiceProcess], name: str) -> str:
    return next((p.url for p in processes if p.name == name), processes[0].url)


def main() -> int:
    data_dir = Path(os.environ.get("DEALFLOW_DATA_DIR", "data")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    services = installed_services()
    if not services:
        print("no Dealflow service is installed (run `make run` from the repository)")
        return 1
    found = _secrets(data_dir, secret_names(services))
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_run(data_dir, services, found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
