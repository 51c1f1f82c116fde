"""Follow-up sequences end to end, on real processes, the real broker and PostgreSQL:
steps run in order at their times; closing the deal cancels its enrollment; pause and
resume; two replicas never run one step twice; a crash while steps fall due neither
runs one twice nor loses one; a quiet deal is reported stale once until new activity.

Steps are seconds apart (PT1S...), and the stack's quiet period is a few seconds
(conftest), so no test waits for days. What is checked is what a user or a subscriber
sees: the APIs, the events on Kafka, and, to count exactly, the sequence service's own
tables read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from dealflow_common.contracts.topics import SEQUENCE_EVENTS
from dealflow_common.testing import ReadRecord, TopicReader

pytestmark = pytest.mark.integration

DEAL = {
    "title": "Fleet renewal",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "50000.00", "currency": "USD"},
    "contact": {"name": "Ana Lima", "email": "ana@acme.example"},
}
MANAGER = {"user": "mia", "roles": ("manager",)}
REP = {"user": "alice", "roles": ("rep",)}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "the condition"
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def sequence_schema(stack: Any) -> str:
    return str(stack.services["sequence"].env["DEALFLOW_DATABASE_SCHEMA"])


@asynccontextmanager
async def sequence_tables(stack: Any) -> AsyncIterator[AsyncConnection]:
    """A read-only look at the sequence service's tables (autocommit: every query sees
    what is committed at that moment)."""
    engine = create_async_engine(stack.database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'SET search_path TO "{sequence_schema(stack)}"'))
            yield connection
    finally:
        await engine.dispose()


@asynccontextmanager
async def sequence(as_user: Callable[..., httpx.AsyncClient], **body: Any) -> AsyncIterator[str]:
    """A sequence defined for one test and retired after it (the stack is shared: a
    sequence left live would enroll the deals of the tests after it)."""
    async with as_user("sequence", **MANAGER) as api:
        defined = await api.post("/sequences", json=body)
        assert defined.status_code == 201, defined.text
        sequence_id = str(defined.json()["id"])
        try:
            yield sequence_id
        finally:
            retired = await api.post(f"/sequences/{sequence_id}/retire")
            assert retired.status_code == 200, retired.text


async def open_deal(opportunities: httpx.AsyncClient, *stages: str, **extra: Any) -> str:
    created = await opportunities.post("/opportunities", json={**DEAL, **extra})
    assert created.status_code == 201, created.text
    deal = str(created.json()["id"])
    for stage in stages:
        moved = await opportunities.post(f"/opportunities/{deal}/stage", json={"stage": stage})
        assert moved.status_code == 200, moved.text
    return deal


async def open_deals(opportunities: httpx.AsyncClient, count: int, **extra: Any) -> list[str]:
    gate = asyncio.Semaphore(8)

    async def one() -> str:
        async with gate:
            return await open_deal(opportunities, **extra)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def enrollment_of(
    api: httpx.AsyncClient, deal: str, sequence_id: str
) -> dict[str, Any] | None:
    response = await api.get(f"/opportunities/{deal}/enrollments")
    if response.status_code != 200:
        return None  # the deal's creation has not reached the sequence service yet
    mine = [e for e in response.json() if e["sequence_id"] == sequence_id]
    assert len(mine) <= 1, mine
    return mine[0] if mine else None


async def tasks_of(api: httpx.AsyncClient, deal: str) -> list[dict[str, Any]]:
    response = await api.get("/tasks", params={"opportunity_id": deal})
    assert response.status_code == 200, response.text
    return list(response.json())


def distinct(records: list[ReadRecord], kind: str) -> list[dict[str, Any]]:
    """The payloads of the events of `kind`, each once, in order (a relay may send a
    record twice after a crash; the event id says it is the same event)."""
    seen: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.event.get("type") == kind:
            seen.setdefault(record.event["id"], record.event["data"])
    return list(seen.values())


def events(reader: TopicReader, deal: str, kind: str) -> list[dict[str, Any]]:
    return distinct(reader.of(deal), kind)


# 1. Steps run in order at their times.


async def test_steps_run_in_order_each_at_its_time_with_its_effect_seen(stack, as_user) -> None:
    async with sequence(
        as_user,
        name="Proposal follow-up in three steps",
        trigger={"event": "opportunity.stage_changed", "stage": "proposal"},
        steps=[
            {"after": "PT1S", "action": "task", "title": "Call about the offer", "due": "P2D"},
            {
                "after": "PT1S",
                "action": "email",
                "subject": "Your offer for {{ title }}",
                "body": "Dear {{ contact_name }}, the offer of {{ value }} is ready.",
            },
            {"after": "PT1S", "action": "next_action", "due": "P3D", "note": "Ask for a signature"},
        ],
    ) as sequence_id:
        async with as_user("opportunity", **REP) as opportunities:
            deal = await open_deal(opportunities, "qualification", "proposal")
        async with as_user("sequence", **REP) as sequences:

            async def completed() -> dict[str, Any] | None:
                found = await enrollment_of(sequences, deal, sequence_id)
                return found if found and found["state"] == "completed" else None

            enrollment = await eventually(completed, what="the enrollment completed")
            (task,) = await tasks_of(sequences, deal)

    steps = enrollment["steps"]
    assert [(s["step_no"], s["action"], s["state"]) for s in steps] == [
        (1, "task", "done"),
        (2, "email", "done"),
        (3, "next_action", "done"),
    ]
    assert enrollment["enrolled_by"] == "system:sequence"
    assert (enrollment["end_reason"], enrollment["allowed_actions"]) == ("every step ran", [])
    previous = ts(enrollment["enrolled_at"])
    for step in steps:
        due, ran = ts(step["due_at"]), ts(step["executed_at"])
        assert due == previous + timedelta(seconds=1), "each step falls due 1s after the last ran"
        assert due <= ran < due + timedelta(seconds=5), "run not before its time, nor long after"
        previous = ran
    first_ran, last_ran = ts(steps[0]["executed_at"]), ts(steps[2]["executed_at"])

    # The task step's task, on the deal, for its owner.
    assert (task["title"], task["assignee"], task["state"]) == (
        "Call about the offer",
        "alice",
        "open",
    )
    assert (task["enrollment_id"], task["id"]) == (enrollment["id"], steps[0]["task_id"])
    assert ts(task["due_at"]) == first_ran + timedelta(days=2)

    # The next action step's next action, on the deal (it outranks the task's due date).
    async with as_user("opportunity", **REP) as opportunities:

        async def next_action_by_the_step() -> dict[str, Any] | None:
            body = (await opportunities.get(f"/opportunities/{deal}")).json()
            return body if body["next_action_source"] == "sequence" else None

        shown = await eventually(next_action_by_the_step, what="the step's next action")
    assert shown["next_action"] == {
        "date": (last_ran + timedelta(days=3)).date().isoformat(),
        "note": "Ask for a signature",
    }

    # The email step's request for the mail gateway, rendered with the deal's fields.
    async with TopicReader(stack.kafka.bootstrap_servers, SEQUENCE_EVENTS) as reader:
        await reader.wait_for(
            lambda _: (
                bool(events(reader, deal, "sequence.completed"))
                and bool(events(reader, deal, "email.requested"))
            )
        )
    (email,) = events(reader, deal, "email.requested")
    assert (email["to"], email["sender"], email["step_no"]) == ("ana@acme.example", "alice", 2)
    assert email["subject_line"] == "Your offer for Fleet renewal"
    assert email["body"] == "Dear Ana Lima, the offer of 50000.00 USD is ready."
    executed = events(reader, deal, "sequence.step_executed")
    assert [(e["step_no"], e["result"]) for e in executed] == [
        (1, "done"),
        (2, "done"),
        (3, "done"),
    ]
    assert executed[1]["email_id"] == email["email_id"]
    kinds = [r.event["type"] for r in reader.of(deal)]
    assert kinds.index("sequence.enrolled") < kinds.index("task.created")
    assert kinds.index("task.created") < kinds.index("email.requested")
    assert kinds.index("email.requested") < kinds.index("sequence.completed")


# 2. Closing the deal cancels the enrollment.


async def test_losing_the_deal_cancels_its_enrollment_and_no_later_step_runs(
    stack, as_user
) -> None:
    async with (
        sequence(
            as_user,
            name="Proposal follow-up, lost midway",
            trigger={"event": "opportunity.stage_changed", "stage": "proposal"},
            steps=[
                {"after": "PT1S", "action": "task", "title": "First call"},
                {"after": "PT4S", "action": "task", "title": "Second call"},
            ],
        ) as sequence_id,
        as_user("opportunity", **REP) as opportunities,
        as_user("sequence", **REP) as sequences,
    ):
        deal = await open_deal(opportunities, "qualification", "proposal")

        async def first_task() -> list[dict[str, Any]]:
            found = await sequences.get("/tasks", params={"opportunity_id": deal})
            return list(found.json()) if found.status_code == 200 else []

        await eventually(first_task, what="the first step's task")
        lost = await opportunities.post(
            f"/opportunities/{deal}/lose", json={"reason": "budget cut"}
        )
        assert lost.status_code == 200, lost.text

        async def cancelled() -> dict[str, Any] | None:
            found = await enrollment_of(sequences, deal, sequence_id)
            return found if found and found["state"] != "active" else None

        enrollment = await eventually(cancelled, what="the enrollment ended")
        assert enrollment["state"] == "cancelled", enrollment
        assert enrollment["end_reason"] == "the deal was closed (closed_lost)"
        assert enrollment["allowed_actions"] == []
        # Past the time the second step would have run, and a tick more: nothing ran.
        first_ran = ts(enrollment["steps"][0]["executed_at"])
        await sleep_until(first_ran + timedelta(seconds=4 + 2.5))
        enrollment = await enrollment_of(sequences, deal, sequence_id)
        assert enrollment is not None
        tasks = await tasks_of(sequences, deal)

    assert enrollment["state"] == "cancelled"
    assert [(s["step_no"], s["state"]) for s in enrollment["steps"]] == [
        (1, "done"),
        (2, "skipped"),
    ]
    assert [t["title"] for t in tasks] == ["First call"]
    async with TopicReader(stack.kafka.bootstrap_servers, SEQUENCE_EVENTS) as reader:
        await reader.wait_for(lambda _: bool(events(reader, deal, "sequence.cancelled")))
        await reader.settle(1.0)
    (cancel,) = events(reader, deal, "sequence.cancelled")
    assert (cancel["reason"], cancel["cancelled_by"]) == (
        "the deal was closed (closed_lost)",
        "system:sequence",
    )
    assert [e["step_no"] for e in events(reader, deal, "sequence.step_executed")] == [1]
    assert [e["title"] for e in events(reader, deal, "task.created")] == ["First call"]
    assert events(reader, deal, "sequence.completed") == []


# 3. Pause and resume by hand.


async def test_a_paused_enrollment_holds_its_due_step_and_goes_on_when_resumed(
    stack, as_user
) -> None:
    async with (
        sequence(
            as_user,
            name="Proposal follow-up, paused midway",
            trigger={"event": "opportunity.stage_changed", "stage": "proposal"},
            steps=[
                {"after": "PT1S", "action": "task", "title": "First call"},
                {"after": "PT4S", "action": "task", "title": "Second call"},
            ],
        ) as sequence_id,
        as_user("opportunity", **REP) as opportunities,
        as_user("sequence", **REP) as sequences,
    ):
        deal = await open_deal(opportunities, "qualification", "proposal")

        async def first_ran() -> dict[str, Any] | None:
            found = await enrollment_of(sequences, deal, sequence_id)
            return found if found and found["steps"][0]["state"] == "done" else None

        running = await eventually(first_ran, what="the first step ran")
        assert running["steps"][1]["state"] == "scheduled"
        second_due = ts(running["steps"][1]["due_at"])

        paused = await sequences.post(f"/enrollments/{running['id']}/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["state"] == "paused"
        assert paused.json()["allowed_actions"] == ["resume", "cancel"]
        assert paused.json()["steps"][1]["state"] == "waiting"

        # Well past the second step's due time, and two ticks more: it waits.
        await sleep_until(second_due + timedelta(seconds=2.5))
        held = await enrollment_of(sequences, deal, sequence_id)
        assert held is not None
        assert (held["state"], held["next_step"], held["steps"][1]["state"]) == (
            "paused",
            2,
            "waiting",
        )
        assert [t["title"] for t in await tasks_of(sequences, deal)] == ["First call"]

        resumed = await sequences.post(f"/enrollments/{running['id']}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["state"] == "active"
        assert resumed.json()["next_step"] == 2

        async def completed() -> dict[str, Any] | None:
            found = await enrollment_of(sequences, deal, sequence_id)
            return found if found and found["state"] == "completed" else None

        done = await eventually(completed, what="the enrollment completed after resume")
        tasks = await tasks_of(sequences, deal)

    assert sorted(t["title"] for t in tasks) == ["First call", "Second call"]
    async with TopicReader(stack.kafka.bootstrap_servers, SEQUENCE_EVENTS) as reader:
        await reader.wait_for(lambda _: bool(events(reader, deal, "sequence.completed")))
    (pause,) = events(reader, deal, "sequence.paused")
    (resume,) = events(reader, deal, "sequence.resumed")
    assert (pause["paused_by"], resume["resumed_by"]) == ("alice", "alice")
    # It goes on where it stopped: the time that was left when paused, from the resume.
    left = second_due - ts(pause["paused_at"])
    assert timedelta(0) < left <= timedelta(seconds=4)
    resumed_due = ts(resume["next_step_due_at"])
    assert abs(resumed_due - (ts(resume["resumed_at"]) + left)) < timedelta(milliseconds=5)
    second = done["steps"][1]
    assert ts(second["due_at"]) == resumed_due
    assert resumed_due <= ts(second["executed_at"]) < resumed_due + timedelta(seconds=5)
    assert ts(second["executed_at"]) > second_due + timedelta(seconds=2), "held while paused"
    assert [e["step_no"] for e in events(reader, deal, "sequence.step_executed")] == [1, 2]


# 4 and 5: many enrollments; each step must have run exactly once.


async def runs_of(tables: AsyncConnection, sequence_id: str) -> int:
    found = await tables.scalar(
        text(
            "SELECT count(*) FROM enrollment_steps s JOIN enrollments e "
            "ON e.id = s.enrollment_id WHERE e.sequence_id = :s"
        ),
        {"s": UUID(sequence_id)},
    )
    return int(found or 0)


async def check_each_step_ran_once(
    stack: Any, tables: AsyncConnection, sequence_id: str, deals: list[str], titles: list[str]
) -> None:
    """Every deal has one enrollment, completed, with one record, one task and one
    `sequence.step_executed` per step, and one `task.created` per task: no step ran
    twice and none was lost."""
    rows = (
        await tables.execute(
            text("SELECT id, opportunity_id, state FROM enrollments WHERE sequence_id = :s"),
            {"s": UUID(sequence_id)},
        )
    ).all()
    assert sorted(str(r.opportunity_id) for r in rows) == sorted(deals), "one enrollment a deal"
    assert Counter(r.state for r in rows) == Counter({"completed": len(deals)})
    enrollments = {r.id for r in rows}
    steps = Counter(
        (r.enrollment_id, r.step_no)
        for r in await tables.execute(text("SELECT enrollment_id, step_no FROM enrollment_steps"))
        if r.enrollment_id in enrollments
    )
    expected = Counter({(e, n): 1 for e in enrollments for n in range(1, len(titles) + 1)})
    assert steps == expected
    tasks = Counter(
        (r.enrollment_id, r.title)
        for r in await tables.execute(text("SELECT enrollment_id, title FROM tasks"))
        if r.enrollment_id in enrollments
    )
    assert tasks == Counter({(e, t): 1 for e in enrollments for t in titles}), (
        "one task a task step: "
        + str([k for k, n in tasks.items() if n != 1][:5] or "some are missing")
    )

    wanted = {str(e) for e in enrollments}
    async with TopicReader(stack.kafka.bootstrap_servers, SEQUENCE_EVENTS) as reader:

        def created(records: list[ReadRecord]) -> list[dict[str, Any]]:
            return [e for e in distinct(records, "task.created") if e["enrollment_id"] in wanted]

        await reader.wait_for(lambda rs: len(created(rs)) >= len(wanted) * len(titles), 60)
        await reader.settle(2.0)
    published = Counter((e["enrollment_id"], e["title"]) for e in created(reader.records))
    assert published == Counter({(e, t): 1 for e in wanted for t in titles})
    executed = Counter(
        (e["enrollment_id"], e["step_no"])
        for e in distinct(reader.records, "sequence.step_executed")
        if e["enrollment_id"] in wanted
    )
    assert executed == Counter({(e, n): 1 for e in wanted for n in range(1, len(titles) + 1)})


async def recording(tables: AsyncConnection, schema: str) -> set[int]:
    """The client ports of the sessions whose transaction holds uncommitted step
    records: it ran a step (its task is inserted first), recorded it, and has not
    committed yet."""
    rows = await tables.execute(
        text(
            "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.relation = CAST(:t AS regclass) AND l.mode = 'RowExclusiveLock' "
            "AND l.granted AND l.pid <> pg_backend_pid()"
        ),
        {"t": f'"{schema}".enrollment_steps'},
    )
    return {int(r.client_port) for r in rows if r.client_port is not None}


def socket_ports(pid: int) -> set[int]:
    """The local TCP ports of process `pid`'s sockets (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


SAMPLE_RECORDING = """
DO $$
BEGIN
  FOR i IN 1..100 LOOP
    INSERT INTO pg_temp.recorders
      SELECT DISTINCT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.relation = '"{schema}".enrollment_steps'::regclass
        AND l.mode = 'RowExclusiveLock' AND l.granted AND a.client_port IS NOT NULL
      ON CONFLICT DO NOTHING;
    PERFORM pg_stat_clear_snapshot();
    PERFORM pg_sleep(0.002);
  END LOOP;
END $$
"""


async def watch_runners(
    stack: Any, processes: dict[str, Any], seen: set[str], stop: asyncio.Event
) -> None:
    """Until `stop`: which of `processes` are seen with a tick's transaction open, that
    is holding uncommitted step records (sampled in PostgreSQL every few ms)."""
    sample = text(SAMPLE_RECORDING.format(schema=sequence_schema(stack)))
    async with sequence_tables(stack) as tables:
        await tables.execute(text("CREATE TEMP TABLE recorders (port int PRIMARY KEY)"))
        while not stop.is_set():
            await tables.execute(sample)
            ports = set(await tables.scalars(text("SELECT port FROM pg_temp.recorders")))
            for name, process in processes.items():
                if ports & socket_ports(process.process.pid):
                    seen.add(name)


async def test_two_replicas_never_run_one_step_twice(stack, as_user) -> None:
    """Two processes on one schema; 50 enrollments. Both are frozen (SIGSTOP) while the
    first steps fall due, then woken together: both tick at once over the same due
    steps, 10 a transaction, and each step runs once."""
    first = stack.services["sequence"]
    second = stack.service_process("sequence", schema=sequence_schema(stack))
    await second.start()
    try:
        await second.wait_ready(timeout=90)
        async with (
            sequence(
                as_user,
                name="Trade show leads",
                trigger={"event": "opportunity.created", "lead_origin": "trade_show"},
                steps=[
                    {"after": "PT4S", "action": "task", "title": "Call the visitor"},
                    {"after": "PT1S", "action": "task", "title": "Send the brochure"},
                ],
            ) as sequence_id,
            sequence_tables(stack) as tables,
        ):
            runners: set[str] = set()
            processes = {"first": first, "second": second}
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_runners(stack, processes, runners, stop))
            try:
                async with as_user("opportunity", **REP) as opportunities:
                    deals = await open_deals(opportunities, 50, lead_origin="trade_show")

                async def all_enrolled() -> bool:
                    enrolled = await tables.scalar(
                        text("SELECT count(*) FROM enrollments WHERE sequence_id = :s"),
                        {"s": UUID(sequence_id)},
                    )
                    return enrolled == len(deals)

                await eventually(all_enrolled, timeout=60, what="50 enrollments")
                for process in processes.values():
                    os.kill(process.process.pid, signal.SIGSTOP)
                try:
                    latest = await tables.scalar(
                        text(
                            "SELECT max(next_due_at) FROM enrollments "
                            "WHERE sequence_id = :s AND state = 'active'"
                        ),
                        {"s": UUID(sequence_id)},
                    )
                    if latest is not None:
                        await sleep_until(latest + timedelta(seconds=0.1))
                finally:
                    for process in processes.values():
                        os.kill(process.process.pid, signal.SIGCONT)

                async def all_ran() -> bool:
                    return await runs_of(tables, sequence_id) >= 2 * len(deals)

                await eventually(all_ran, timeout=60, what="every step of 50 enrollments ran")
            finally:
                stop.set()
                await watcher
            assert runners == {"first", "second"}, "both replicas ran steps"
            await asyncio.sleep(1.5)  # a second run, if any, would show by now
            await check_each_step_ran_once(
                stack, tables, sequence_id, deals, ["Call the visitor", "Send the brochure"]
            )
    finally:
        await second.stop()


async def test_a_kill_while_steps_fall_due_runs_each_once_and_loses_none(stack, as_user) -> None:
    """60 enrollments whose steps fall due a second apart, many at the same second:
    the service is killed while a tick's transaction has run and recorded steps but not
    committed. Back up, it runs each step left once (those that fell due while it was
    down too), and none is lost."""
    service = stack.services["sequence"]
    count, titles = 60, ["Call the caller back", "Send the price list"]
    async with (
        sequence(
            as_user,
            name="Call center leads",
            trigger={"event": "opportunity.created", "lead_origin": "call_center"},
            steps=[
                {"after": "PT5S", "action": "task", "title": titles[0]},
                {"after": "PT1S", "action": "task", "title": titles[1]},
            ],
        ) as sequence_id,
        sequence_tables(stack) as tables,
    ):
        try:
            async with as_user("opportunity", **REP) as opportunities:
                deals = await open_deals(opportunities, count, lead_origin="call_center")

            async def all_enrolled() -> bool:
                enrolled = await tables.scalar(
                    text("SELECT count(*) FROM enrollments WHERE sequence_id = :s"),
                    {"s": UUID(sequence_id)},
                )
                return enrolled == count

            await eventually(all_enrolled, timeout=60, what=f"{count} enrollments")
            deadline = asyncio.get_running_loop().time() + 60
            while not await recording(tables, sequence_schema(stack)):
                assert await runs_of(tables, sequence_id) < 2 * count, "no tick caught running"
                assert asyncio.get_running_loop().time() < deadline, "no step ran"
                await asyncio.sleep(0.005)
            service.kill()
            await service.wait_killed()
            assert await runs_of(tables, sequence_id) < 2 * count
        finally:
            # Back up (whatever happened: the tests after this one need it).
            if service.process is None or service.process.returncode is not None:
                await service.start()
                await service.wait_ready(timeout=90)

        async def all_ran() -> bool:
            return await runs_of(tables, sequence_id) >= 2 * count

        await eventually(all_ran, timeout=60, what="every step ran after the restart")
        await asyncio.sleep(1.5)  # a second run, if any, would show by now
        await check_each_step_ran_once(stack, tables, sequence_id, deals, titles)


# 6. Stale detection fires once.


async def test_a_quiet_deal_is_reported_stale_once_until_new_activity(stack, as_user) -> None:
    quiet = timedelta(days=float(stack.services["sequence"].env["DEALFLOW_STALE_AFTER_DAYS"]))
    async with as_user("opportunity", **REP) as opportunities:
        deal = await open_deal(opportunities, title="A quiet deal")
    async with TopicReader(stack.kafka.bootstrap_servers, SEQUENCE_EVENTS) as reader:

        def reports() -> list[dict[str, Any]]:
            return events(reader, deal, "opportunity.stale")

        await reader.wait_for(lambda _: bool(reports()))
        (first,) = reports()
        assert (first["reason"], first["owners"]) == ("inactive", ["alice"])
        assert ts(first["detected_at"]) - ts(first["last_activity_at"]) >= quiet
        async with as_user("sequence", **REP) as sequences:
            listed = (await sequences.get("/stale")).json()
        assert [(d["reasons"], d["title"]) for d in listed if d["opportunity_id"] == deal] == [
            (["inactive"], "A quiet deal")
        ]

        # Another quiet period and two ticks: still one report.
        await reader.settle(quiet.total_seconds() + 2)
        assert len(reports()) == 1

        # New activity (a note), then another quiet period: reported again, once.
        async with as_user("opportunity", **REP) as opportunities:
            noted = await opportunities.post(
                f"/opportunities/{deal}/notes", json={"reason": "call", "text": "They need time"}
            )
            assert noted.status_code == 201, noted.text
        await reader.wait_for(lambda _: len(reports()) >= 2)
        await reader.settle(2.0)
    first, second = reports()
    assert ts(second["last_activity_at"]) > ts(first["detected_at"])
    assert ts(second["detected_at"]) - ts(second["last_activity_at"]) >= quiet
    assert len(reports()) == 2
