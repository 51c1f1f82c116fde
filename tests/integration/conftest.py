"""All services as real processes on the real broker and PostgreSQL.

The stack starts once per session: every installed service in its own process, each
with a schema of its own in the test database, on the session's broker. Service logs
go to files under the session's temporary folder (their paths are printed on failure).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from dealflow_common.runtime.broker import free_port
from dealflow_common.runtime.embedded import embedded_service_env, secret_names, service_urls
from dealflow_common.runtime.processes import ServiceProcess, installed_services, service_module
from dealflow_common.testing import KafkaEndpoint, new_schema_name

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    kafka: KafkaEndpoint
    database_url: str
    jwt_secret: str
    log_dir: Path
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def service_process(
        self, name: str, *, schema: str, bootstrap: str | None = None
    ) -> ServiceProcess:
        """A process of service `name` (not started), logging to the session folder."""
        services = installed_services()
        settings_class = services[name]
        port = free_port()
        secrets = {
            secret: f"{secret.lower()}-for-tests-only-0123456789abcdef"
            for secret in secret_names(services)
        }
        secrets["DEALFLOW_JWT_SECRET"] = self.jwt_secret
        env = embedded_service_env(
            name=name,
            port=port,
            host="127.0.0.1",
            bootstrap_servers=bootstrap or self.kafka.bootstrap_servers,
            database_url=self.database_url,
            secrets=secrets,
            idempotence=self.kafka.idempotence,
        )
        env["DEALFLOW_DATABASE_SCHEMA"] = schema
        # Expire due quotes every second (settings other services do not read are ignored).
        env["DEALFLOW_EXPIRY_INTERVAL_SECONDS"] = "1"
        # Sequence service: a deal quiet for 3 seconds is stale, checked every second;
        # due steps run 10 a transaction, so replicas share the steps of one tick.
        env["DEALFLOW_STALE_AFTER_DAYS"] = repr(3 / 86400)
        env["DEALFLOW_STALE_CHECK_INTERVAL_SECONDS"] = "1"
        env["DEALFLOW_STEP_BATCH_SIZE"] = "10"
        log_file = self.log_dir / f"{name}-{schema}.log"

        def write(_: str, line: str) -> None:
            with log_file.open("a", encoding="utf-8") as f:
                f.write(line + "\n")

        return ServiceProcess(name, service_module(settings_class), env, port, on_output=write)

    def client(self, name: str, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.services[name].url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )


@pytest.fixture(scope="session")
async def stack(
    kafka: KafkaEndpoint,
    database_url: str,
    schemas: list[str],
    jwt_secret: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    stack = Stack(kafka, database_url, jwt_secret, tmp_path_factory.mktemp("service-logs"))
    for name in installed_services():
        schema = new_schema_name(name)
        schemas.append(schema)
        stack.services[name] = stack.service_process(name, schema=schema)
    # The console forwards to the other services: it needs their (free) ports.
    urls = service_urls(stack.services.values())
    for process in stack.services.values():
        process.env.update(urls)
    try:
        for process in stack.services.values():
            await process.start()
        for process in stack.services.values():
            await process.wait_ready(timeout=90)
        yield stack
    finally:
        for process in stack.services.values():
            await process.stop()
        print(f"\nservice logs: {stack.log_dir}")


@pytest.fixture
def as_user(stack: Stack, token: Callable[..., str]) -> Callable[..., httpx.AsyncClient]:
    """`as_user("opportunity", "alice", roles=("rep",))` -> a client of that service."""

    def client(
        service: str,
        user: str = "alice",
        roles: tuple[str, ...] = ("rep", "manager"),
        teams: tuple[str, ...] = ("emea",),
    ) -> httpx.AsyncClient:
        return stack.client(service, token(user, roles, teams))

    return client
