"""Service processes: start one with its environment, wait until ready, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import urllib.request
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any


def installed_services() -> dict[str, Any]:
    """Every service package installed in this environment, by name -> settings class.

    A new service joins `make run` by declaring a `dealflow.services` entry point.
    """
    found = {ep.name: ep for ep in entry_points(group="dealflow.services")}
    return {name: found[name].load() for name in sorted(found)}


def owns_database(settings_class: Any) -> bool:
    """Whether a service has a schema to migrate, tables and an outbox (the console has not)."""
    return "database_url" in settings_class.model_fields


def service_module(settings_class: Any) -> str:
    return str(settings_class.__module__).split(".")[0]


class ServiceProcess:
    def __init__(
        self,
        name: str,
        module: str,
        env: Mapping[str, str],
        port: int,
        host: str = "127.0.0.1",
        on_output: Callable[[str, str], None] | None = None,
    ) -> None:
        self.name = name
        self.module = module
        self.env = dict(env)
        self.port = port
        self.host = host
        self._on_output = on_output
        self.process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, migrate: bool = True) -> None:
        args = [sys.executable, "-m", self.module, "serve"] + (["--migrate"] if migrate else [])
        self.process = await asyncio.create_subprocess_exec(
            *args,
            env={**os.environ, **self.env},
            stdout=asyncio.subprocess.PIPE if self._on_output else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        if self._on_output is not None:
            self._pump = asyncio.create_task(self._pump_output())

    async def _pump_output(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        assert self._on_output is not None
        async for line in self.process.stdout:
            self._on_output(self.name, line.decode(errors="replace").rstrip())

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until `/readyz` answers 200 (database and broker reachable)."""
        await self._wait_for("/readyz", timeout)

    async def wait_alive(self, timeout: float = 60.0) -> None:
        """Until `/healthz` answers 200 (serving HTTP, whatever the broker does)."""
        await self._wait_for("/healthz", timeout)

    async def _wait_for(self, path: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            if await asyncio.to_thread(self._answers, path):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.name} did not answer {path} within {timeout:.0f}s")

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    async def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL if it does not finish in time."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.kill()
            await self.process.wait()
        await self._finish_pump()

    def kill(self) -> None:
        """SIGKILL: the process dies at once, whatever it was doing."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def wait_killed(self) -> None:
        if self.process is not None:
            await self.process.wait()
        await self._finish_pump()

    async def _finish_pump(self) -> None:
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 5)
            self._pump = None
