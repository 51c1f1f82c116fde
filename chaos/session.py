"""One chaos session: start the stack, run each fault as a phase, check, tear down.

A phase starts a fresh batch of deals, injects its fault while they run, lets the
batch finish, then checks the invariants every second until they all hold (recovery
time: from the end of the fault until then) or the settle time runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from chaos.faults import Fault, FaultContext, Profile
from chaos.invariants import Checker, Findings, Scope, consumer_groups, snapshot
from chaos.load import Api, Deal, Load
from chaos.proxy import self_check
from chaos.records import KafkaLog
from chaos.stack import Stack, progress


@dataclass
class Row:
    fault: str
    title: str
    scope: Scope
    findings: Findings
    recovery: float | None
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def deals(self) -> list[Deal]:
        return self.scope.deals

    @property
    def failed(self) -> bool:
        return not self.findings.holds

    def summary(self) -> dict[str, Any]:
        deals = self.deals
        return {
            "started": len(deals),
            "won": sum(d.outcome == "won" for d in deals),
            "lost": sum(d.outcome == "lost" for d in deals),
            "accepted_202": sum(d.accepted for d in deals),
            "racing_lose": sum(d.racing_lose for d in deals),
            "gave_up": sum(d.failure is not None for d in deals),
            "http_calls": sum(d.calls for d in deals),
            "http_retries": sum(d.retries for d in deals),
        }


@dataclass
class Session:
    stack: Stack
    profile: Profile
    rng: random.Random
    rows: list[Row] = field(default_factory=list)
    aborted: str | None = None
    """Why the session stopped before its last fault (a service that would not start)."""
    _settled: set[str] = field(default_factory=set)
    _next_deal: int = 0

    async def run(self, faults: list[Fault]) -> list[Row]:
        progress("proxy self-check")
        await asyncio.wait_for(self_check(), 30)
        progress(f"starting the stack (database dealflow_chaos, logs in {self.stack.log_dir})")
        started = time.monotonic()
        await self.stack.start()
        assert self.stack.proxy is not None
        progress(
            f"stack ready in {time.monotonic() - started:.0f}s: broker behind the proxy at "
            f"{self.stack.bootstrap_servers}, "
            + ", ".join(f"{n} {self.stack.urls(n)[0]}" for n in self.stack.replicas)
        )
        log = KafkaLog(self.stack.bootstrap_servers)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.stack.bootstrap_servers,
            client_id="chaos-producer",
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
        )
        checker: Checker | None = None
        session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.stack.token()}"},
            timeout=aiohttp.ClientTimeout(total=10),
            # No keep-alive: a pooled connection to a killed process would make a call look
            # ambiguous when it never reached the new one.
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
        )
        try:
            await log.start()
            await producer.start()
            checker = Checker(self.stack, log, await consumer_groups(self.stack))
            api = Api(session, self.stack, self.profile.step_deadline)
            for fault in faults:
                progress(f"phase {fault.name}: {fault.title}")
                try:
                    row = await self._phase(fault, api, log, producer, checker)
                except (RuntimeError, TimeoutError) as error:
                    # The stack itself is broken (a service does not come back): the
                    # later phases would measure nothing. Report what was measured.
                    self.aborted = f"{fault.name}: {error}"
                    progress(f"phase {fault.name} aborted the run: {error}")
                    break
                self.rows.append(row)
                progress(
                    f"phase {fault.name} done in {row.seconds:.0f}s: {len(row.deals)} deals, "
                    f"lost {len(row.findings.lost)}, stuck {len(row.findings.stuck)}, "
                    f"violations {len(row.findings.violations)}, recovery "
                    + (f"{row.recovery:.1f}s" if row.recovery is not None else "none")
                )
            if len(self.rows) > 1:
                self.rows.append(await self._whole_run(log, checker))
        finally:
            await session.close()
            if checker is not None:
                await checker.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)
            await log.stop()
        return self.rows

    async def _phase(
        self,
        fault: Fault,
        api: Api,
        log: KafkaLog,
        producer: AIOKafkaProducer,
        checker: Checker,
    ) -> Row:
        profile = self.profile
        scope = Scope(dead_letters_from=len(log.records))
        load = Load(
            api,
            log,
            profile.concurrency,
            profile.min_deals,
            profile.max_deals,
            profile.outcome_wait,
            first_number=self._next_deal,
        )
        scope.deals = load.deals
        ctx = FaultContext(
            self.stack, log, load, producer, checker.groups, profile, self._settled, scope, self.rng
        )
        started = time.monotonic()
        await fault.prepare(ctx)
        if scope.frozen_subjects:
            await log.catch_up()
            connection = await self.stack.connect()
            try:
                scope.frozen = await snapshot(connection, scope.frozen_subjects)
            finally:
                await connection.close()

        running = asyncio.create_task(load.run())
        try:
            await asyncio.wait_for(fault.inject(ctx), 600)
        except Exception as error:  # the harness goes on; the row says what happened
            ctx.note(f"the fault itself failed: {error!r}")
        finally:
            await fault.undo(ctx)  # raises when a service cannot be started again
        fault_ended = time.monotonic()
        load.stop_after(profile.concurrency)
        try:
            await asyncio.wait_for(running, profile.outcome_wait + 2 * profile.step_deadline)
        except TimeoutError:
            ctx.note("the load did not finish in time; its last deals were cancelled")
        self._next_deal += len(load.deals)

        findings, recovery = await self._settle(checker, log, scope, fault_ended, ctx)
        if recovery is not None:
            self._settled |= {d.opportunity_id for d in load.deals if d.opportunity_id}
        else:
            # Whatever is wedged would fail the next phases too: give them a clean start.
            ctx.note("did not settle: every service restarted before the next phase")
            await self.stack.restart_all()
        return Row(
            fault.name,
            fault.title,
            scope,
            findings,
            recovery,
            time.monotonic() - started,
            ctx.notes,
        )

    async def _settle(
        self, checker: Checker, log: KafkaLog, scope: Scope, since: float, ctx: FaultContext
    ) -> tuple[Findings, float | None]:
        deadline = time.monotonic() + self.profile.settle_timeout
        findings = Findings()
        while True:
            caught_up = await log.catch_up(10)
            try:
                findings = await checker.check(scope)
            except Exception as error:  # e.g. the broker not answering yet: try again
                findings = Findings(violations=[f"the check itself failed: {error!r}"])
            if caught_up and findings.holds:
                return findings, time.monotonic() - since
            if time.monotonic() > deadline:
                if not caught_up:
                    ctx.note("the Kafka log could not catch up with the end offsets")
                return findings, None
            await asyncio.sleep(1.0)

    async def _whole_run(self, log: KafkaLog, checker: Checker) -> Row:
        """Every deal of every phase, checked once more at the end."""
        started = time.monotonic()
        deals = [d for row in self.rows for d in row.deals]
        scope = Scope(deals=deals, poisons=[p for row in self.rows for p in row.scope.poisons])
        await log.catch_up(10)
        findings = await checker.check(scope)
        return Row(
            "whole-run", "(whole run, rechecked)", scope, findings, None, time.monotonic() - started
        )
