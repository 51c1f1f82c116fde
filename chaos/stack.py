"""The system under test: a fresh database, Tansu behind the proxy, each service a process.

Every Kafka connection goes through the proxy (Tansu advertises the proxy's port), so
network faults reach the services, the load client and the checker alike; the proxy
passes bytes through unless a fault says otherwise.

A service may run as several replicas (processes of one schema sharing its consumer
group); the load client spreads its calls over those listed in `urls`. Every process
writes to a log file of its own under `log_dir`, kept after the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from chaos.proxy import TcpProxy
from dealflow_common.auth import mint_token
from dealflow_common.runtime.broker import EmbeddedBroker, free_port
from dealflow_common.runtime.embedded import embedded_service_env, secret_names
from dealflow_common.runtime.processes import ServiceProcess, installed_services, service_module
from dealflow_common.settings import ServiceSettings

DATABASE = "dealflow_chaos"
HOST = "127.0.0.1"
SERVICES = ("opportunity", "quote", "order")
CHECKER_APPLICATION = "chaos-checker"
CHAOS_PARTITIONS = int(ServiceSettings.model_fields["kafka_topic_partitions"].default)
"""The application_name of the harness's own connections: the database fault
terminates `dealflow-%` backends, never these."""


@dataclass
class Replica:
    process: ServiceProcess
    log_file: Path
    serving: bool = False
    """Listed for the load client: started, ready, and not being stopped."""

    def note(self, text: str) -> None:
        """A line of the harness in the service's own log, to find faults in it."""
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self.log_file.open("a", encoding="utf-8") as f:
            f.write(f"----- chaos {stamp}: {text} -----\n")


@dataclass
class Stack:
    server_url: str
    """SQLAlchemy URL of a PostgreSQL server; the run uses database `dealflow_chaos` in it."""
    log_dir: Path
    proxy: TcpProxy | None = None
    broker: EmbeddedBroker | None = None
    replicas: dict[str, list[Replica]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    _settings_classes: dict[str, Any] = field(default_factory=dict)
    _replicas_started: dict[str, int] = field(default_factory=dict)
    _broker_paused: bool = False

    # Addresses --------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """What the services get: asyncpg on the chaos database."""
        return str(
            make_url(self.server_url).set(drivername="postgresql+asyncpg", database=DATABASE)
        )

    def dsn(self, database: str = DATABASE) -> str:
        return str(make_url(self.server_url).set(drivername="postgresql", database=database))

    @property
    def bootstrap_servers(self) -> str:
        """The proxy: every Kafka client of the run connects there."""
        assert self.proxy is not None
        return f"{HOST}:{self.proxy.port}"

    def urls(self, service: str) -> list[str]:
        return [r.process.url for r in self.replicas.get(service, []) if r.serving]

    def token(self) -> str:
        return mint_token(
            self.secrets["DEALFLOW_JWT_SECRET"],
            sub="chaos",
            roles=["rep", "manager"],
            teams=["chaos"],
            now=int(time.time()),
        )

    async def connect(self) -> asyncpg.Connection:
        """A connection of the harness (read-only use), immune to the database fault."""
        return await asyncpg.connect(
            self.dsn(), server_settings={"application_name": CHECKER_APPLICATION}
        )

    # Lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        admin = await asyncpg.connect(self.dsn("postgres"))
        try:
            others = await admin.fetch(
                "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = $1",
                DATABASE,
            )
            if others:
                # Processes of another run (or of one that could not stop them) would
                # reconnect to the new database and compete with this run's services.
                names = ", ".join(sorted(str(r["application_name"]) for r in others))
                raise RuntimeError(
                    f"database {DATABASE} is in use ({names}): is another chaos run going on? "
                    "(processes of a run that was killed: ps -ef | grep 'dealflow_.* serve')"
                )
            await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await admin.close()

        broker_port = free_port(HOST)
        self.proxy = TcpProxy((HOST, free_port(HOST)), (HOST, broker_port))
        await self.proxy.start()
        self.broker = EmbeddedBroker(
            HOST, broker_port, self.log_dir / "broker.log", advertised_port=self.proxy.port
        )
        await asyncio.to_thread(self.broker.start)

        self._settings_classes = installed_services()
        missing = [name for name in SERVICES if name not in self._settings_classes]
        if missing:
            raise RuntimeError(f"services not installed: {', '.join(missing)}")
        self.secrets = {name: uuid.uuid4().hex * 2 for name in secret_names(self._settings_classes)}
        for name in SERVICES:
            self.replicas[name] = [self._new_replica(name, 1)]
            self._replicas_started[name] = 1
        for name in SERVICES:
            await self.replicas[name][0].process.start()
        for name in SERVICES:
            await self._until_ready(self.replicas[name][0])

    async def stop(self) -> None:
        """Stop everything started; safe to call more than once, and after a failure."""
        self.resume_broker()
        processes = [r.process for replicas in self.replicas.values() for r in replicas]
        await asyncio.gather(*(p.stop(timeout=10) for p in processes), return_exceptions=True)
        for process in processes:
            process.kill()  # whatever did not stop (the stop above may have been cancelled)
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
            self.broker = None
        if self.proxy is not None:
            await self.proxy.stop()

    def _new_replica(self, name: str, number: int) -> Replica:
        port = free_port(HOST)
        env = embedded_service_env(
            name=name,
            port=port,
            host=HOST,
            bootstrap_servers=self.bootstrap_servers,
            database_url=self.database_url,
            secrets=self.secrets,
            idempotence=False,
        )
        env["DEALFLOW_LOG_FORMAT"] = "text"
        env["DEALFLOW_LOG_LEVEL"] = os.environ.get("CHAOS_SERVICE_LOG_LEVEL", "INFO")
        # The deployments' partition count, not the embedded runtime's one: the replicas
        # fault adds a replica to each service, and a rebalance must hand it partitions.
        env["DEALFLOW_KAFKA_TOPIC_PARTITIONS"] = str(CHAOS_PARTITIONS)
        log_file = self.log_dir / (f"{name}.log" if number == 1 else f"{name}-replica{number}.log")
        log_file.touch()

        def write(_: str, line: str) -> None:
            with log_file.open("a", encoding="utf-8") as f:
                f.write(line + "\n")

        process = ServiceProcess(
            name, service_module(self._settings_classes[name]), env, port, HOST, on_output=write
        )
        return Replica(process, log_file)

    async def _until_ready(self, replica: Replica, timeout: float = 90.0) -> None:
        try:
            await replica.process.wait_ready(timeout=timeout)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error} (log: {replica.log_file})") from error
        replica.serving = True

    # Service faults ---------------------------------------------------------------

    def primary(self, service: str) -> Replica:
        return self.replicas[service][0]

    async def kill(self, service: str, why: str) -> None:
        """SIGKILL the service's first replica (it stays dead until `restart`)."""
        replica = self.primary(service)
        replica.serving = False
        replica.note(f"SIGKILL ({why})")
        replica.process.kill()
        await replica.process.wait_killed()

    async def restart(self, service: str, timeout: float = 90.0) -> float:
        """Start the killed replica again on its schema and port; seconds until ready."""
        replica = self.primary(service)
        replica.note("restart")
        started = time.monotonic()
        await replica.process.start()
        await self._until_ready(replica, timeout)
        return time.monotonic() - started

    async def restart_all(self) -> None:
        """Every replica stopped (SIGTERM) and started again, one at a time."""
        for replica in list(self.all_replicas()):
            replica.serving = False
            replica.note("restart (the chaos run heals the stack after a phase that failed)")
            await replica.process.stop()
            await replica.process.start()
            await self._until_ready(replica)

    async def add_replica(self, service: str) -> Replica:
        self._replicas_started[service] += 1
        number = self._replicas_started[service]
        replica = self._new_replica(service, number)
        self.replicas[service].append(replica)
        replica.note(f"replica {number} starting")
        await replica.process.start()
        await self._until_ready(replica)
        return replica

    async def retire_oldest(self, service: str) -> None:
        """Stop the oldest replica gracefully (SIGTERM); the others carry on."""
        replica = self.replicas[service][0]
        replica.serving = False
        replica.note("stopping (scale in)")
        await replica.process.stop()
        self.replicas[service].remove(replica)

    # Broker faults ----------------------------------------------------------------

    def pause_broker(self) -> None:
        assert self.broker is not None
        os.kill(self.broker.pid, signal.SIGSTOP)
        self._broker_paused = True

    def resume_broker(self) -> None:
        if self._broker_paused and self.broker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.broker.pid, signal.SIGCONT)
        self._broker_paused = False

    def all_replicas(self) -> Iterator[Replica]:
        for replicas in self.replicas.values():
            yield from replicas


def progress(text: str) -> None:
    """Progress goes to stderr; stdout carries only the table. A closed stderr (the
    output piped into `head`) must not stop the run before its teardown."""
    with contextlib.suppress(OSError, ValueError):
        print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
