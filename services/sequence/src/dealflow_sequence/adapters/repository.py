"""Persistence of sequences, enrollments, tasks and the deal projection.

Rows that a use case changes are read `FOR UPDATE` on PostgreSQL and saved with the
versioned save; on SQLite every writer holds the one write lock from `BEGIN IMMEDIATE`.
The scheduler's due steps are taken with `FOR UPDATE SKIP LOCKED`, so replicas ticking
at once take different enrollments and none waits for another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from sqlalchemy import (
    Uuid,
    and_,
    any_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.contracts.opportunity import LeadOrigin, Stage
from dealflow_common.contracts.sequence import StepAction, TaskKind
from dealflow_common.db import is_postgres
from dealflow_common.deal_access import shares_from_document, shares_to_document
from dealflow_common.direct import DirectStatement
from dealflow_common.errors import StaleVersion
from dealflow_common.messaging.projection import AppliedSequences, HeldRows, ProjectionRows
from dealflow_common.versioned import VersionedTable
from dealflow_sequence.adapters.tables import (
    enrollment_steps,
    enrollments,
    known_deals,
    sequence_versions,
    sequences,
    task_notes,
    tasks,
)
from dealflow_sequence.domain.deal import OPEN_STAGES, KnownDeal
from dealflow_sequence.domain.definitions import SequenceDefinition
from dealflow_sequence.domain.enrollment import LIVE, Enrollment, EnrollmentState, StepRun
from dealflow_sequence.domain.errors import EnrollmentNotFound, SequenceNotFound, TaskNotFound
from dealflow_sequence.domain.tasks import Task, TaskFilter, TaskNote, TaskState

_VERSIONED_SEQUENCE = VersionedTable(sequences, "sequence")
_VERSIONED_ENROLLMENT = VersionedTable(enrollments, "enrollment")
_VERSIONED_TASK = VersionedTable(tasks, "task")
_KNOWN = ProjectionRows(known_deals)
_OPEN = [s.value for s in OPEN_STAGES]
# Built once and executed with a list of rows (one statement for a batch).
_INSERT_TASK = insert(tasks)
_INSERT_STEP = insert(enrollment_steps)
_UPDATE_ENROLLMENT = update(enrollments).where(
    enrollments.c.id == bindparam("b_id"), enrollments.c.version == bindparam("b_version")
)


class DefinitionCache:
    """Sequence versions by (id, version). A version never changes once written, so a
    process may keep every one it has read; the scheduler then reads none twice."""

    def __init__(self) -> None:
        self._found: dict[tuple[UUID, int], SequenceDefinition] = {}

    def get(self, sequence_id: UUID, version: int) -> SequenceDefinition | None:
        return self._found.get((sequence_id, version))

    def keep(self, definition: SequenceDefinition) -> None:
        self._found[(definition.id, definition.version)] = definition


_CURRENT_VERSIONS = select(sequences, sequence_versions.c.document).join(
    sequence_versions,
    and_(
        sequence_versions.c.sequence_id == sequences.c.id,
        sequence_versions.c.version == sequences.c.version,
    ),
)
"""Each sequence with the document of its current version."""
_TRIGGERED_BY = _CURRENT_VERSIONS.where(
    sequences.c.trigger_event == bindparam("b_event"), sequences.c.retired_at.is_(None)
).order_by(sequences.c.created_at, sequences.c.id)
_LIVE_OF = (
    select(enrollments)
    .where(
        enrollments.c.opportunity_id == bindparam("b_opportunity"),
        enrollments.c.state.in_([s.value for s in LIVE]),
    )
    .order_by(enrollments.c.enrolled_at, enrollments.c.id)
)
# Whether a tick has anything to run: most ticks have nothing (`run_due_steps`).
_ANY_DUE = DirectStatement(
    select(enrollments.c.id)
    .where(
        enrollments.c.state == EnrollmentState.ACTIVE.value,
        enrollments.c.next_due_at <= bindparam("b_now"),
    )
    .limit(1)
)
# On PostgreSQL the same read, locked and run directly (every opportunity event asks it).
_LIVE_OF_LOCKED = DirectStatement(_LIVE_OF.with_for_update())
# The same for a consumer's batch of deals, in one statement.
_LIVE_OF_MANY_LOCKED = DirectStatement(
    select(enrollments)
    .where(
        enrollments.c.opportunity_id
        == any_(bindparam("b_opportunities", type_=postgresql.ARRAY(Uuid))),
        enrollments.c.state.in_([s.value for s in LIVE]),
    )
    .order_by(enrollments.c.opportunity_id, enrollments.c.enrolled_at, enrollments.c.id)
    .with_for_update()
)


class SequenceRepository:
    def __init__(self, connection: AsyncConnection, cache: DefinitionCache) -> None:
        self._connection = connection
        self._cache = cache
        self._triggered: dict[str, list[SequenceDefinition]] = {}
        """`triggered_by`'s answers in this unit of work: a batch of events asks the same
        question once per event. A sequence created meanwhile starts with the next batch,
        as it would have had the batch run a moment earlier."""

    async def add(self, definition: SequenceDefinition) -> None:
        await self._connection.execute(insert(sequences).values(**_head_row(definition)))
        await self._insert_version(definition)

    async def save(self, definition: SequenceDefinition, loaded_version: int) -> None:
        """A new version (from `revise`) or a retirement of the head row read."""
        values = _head_row(definition)
        del values["id"]
        await _VERSIONED_SEQUENCE.save(self._connection, definition.id, loaded_version, values)
        if definition.version != loaded_version:
            await self._insert_version(definition)

    async def _insert_version(self, definition: SequenceDefinition) -> None:
        await self._connection.execute(
            insert(sequence_versions).values(
                sequence_id=definition.id,
                version=definition.version,
                document=definition.document(),
                created_at=definition.updated_at,
            )
        )

    async def get(self, sequence_id: UUID, *, lock: bool = False) -> SequenceDefinition:
        """The current version."""
        query = _CURRENT_VERSIONS.where(sequences.c.id == sequence_id)
        if lock and is_postgres(self._connection):
            query = query.with_for_update(of=sequences)
        row = (await self._connection.execute(query)).first()
        if row is None:
            raise SequenceNotFound(sequence_id)
        return _to_definition(row, row.version)

    async def version(self, sequence_id: UUID, version: int) -> SequenceDefinition:
        """The version an enrollment runs, however many came after it."""
        found = self._cache.get(sequence_id, version)
        if found is not None:
            return found
        row = (
            await self._connection.execute(
                select(sequences, sequence_versions.c.document)
                .join(sequence_versions, sequence_versions.c.sequence_id == sequences.c.id)
                .where(sequences.c.id == sequence_id, sequence_versions.c.version == version)
            )
        ).first()
        if row is None:
            raise SequenceNotFound(sequence_id)
        definition = _to_definition(row, version)
        # A retirement does not stop running enrollments: keep the version unretired.
        definition = _unretired(definition)
        self._cache.keep(definition)
        return definition

    async def listed(self, include_retired: bool) -> list[SequenceDefinition]:
        query = _CURRENT_VERSIONS.order_by(sequences.c.created_at, sequences.c.id)
        if not include_retired:
            query = query.where(sequences.c.retired_at.is_(None))
        return [_to_definition(r, r.version) for r in await self._connection.execute(query)]

    async def triggered_by(self, event_type: str) -> list[SequenceDefinition]:
        """The current versions of the sequences not retired that start on `event_type`."""
        found = self._triggered.get(event_type)
        if found is None:
            rows = await self._connection.execute(_TRIGGERED_BY, {"b_event": event_type})
            found = self._triggered[event_type] = [_to_definition(r, r.version) for r in rows]
        return list(found)


def _unretired(definition: SequenceDefinition) -> SequenceDefinition:
    return replace(definition, retired_at=None)


def _head_row(definition: SequenceDefinition) -> dict[str, Any]:
    return {
        "id": definition.id,
        "version": definition.version,
        "name": definition.name,
        "trigger_event": definition.trigger.event,
        "created_by": definition.created_by,
        "created_at": definition.created_at,
        "updated_at": definition.updated_at,
        "retired_at": definition.retired_at,
    }


def _to_definition(row: Row[Any], version: int) -> SequenceDefinition:
    return SequenceDefinition.from_document(
        row.document,
        id=row.id,
        version=version,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        retired_at=row.retired_at,
    )


class EnrollmentRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._loaded: dict[UUID, int] = {}
        self._live_held: dict[UUID, list[Enrollment]] = {}
        """A batch's deals' live enrollments, locked ahead: every enrollment of theirs
        this transaction reads, changes or adds is the one object kept here."""

    def _locking(self, query: Any, *, skip_locked: bool = False) -> Any:
        if is_postgres(self._connection):
            return query.with_for_update(skip_locked=skip_locked)
        return query

    def _keep(self, rows: Sequence[Row[Any]]) -> list[Enrollment]:
        found = [_to_enrollment(r) for r in rows]
        for enrollment in found:
            self._loaded[enrollment.id] = enrollment.version
        return found

    async def add(self, enrollment: Enrollment) -> None:
        await self._connection.execute(insert(enrollments).values(**_enrollment_row(enrollment)))
        self._loaded[enrollment.id] = enrollment.version
        held = self._live_held.get(enrollment.opportunity_id)
        if held is not None:
            held.append(enrollment)

    async def lock_live_ahead(self, opportunity_ids: Iterable[UUID]) -> None:
        """Lock the live enrollments of these deals in one statement and hold them, so
        that `live_of` reads none of them again. The deals' rows must be locked first
        (every writer of a deal's enrollments locks the deal, so none can be added
        meanwhile). Nothing is held on SQLite."""
        wanted = set(opportunity_ids).difference(self._live_held)
        if not wanted or not is_postgres(self._connection):
            return
        found = await _LIVE_OF_MANY_LOCKED.all(self._connection, {"b_opportunities": list(wanted)})
        for opportunity_id in wanted:
            self._live_held[opportunity_id] = []
        for enrollment in self._keep(found):
            self._live_held[enrollment.opportunity_id].append(enrollment)

    def hold_none_live(self, opportunity_ids: Iterable[UUID]) -> None:
        """Hold these deals as having no live enrollment, unread: deals with no row when
        the batch locked its deals. Only a known deal is enrolled (by hand or by an event
        that adds it first), so such a deal has none; and if another transaction adds
        the deal meanwhile, this batch's insert of it fails and nothing it did stays."""
        for opportunity_id in opportunity_ids:
            self._live_held.setdefault(opportunity_id, [])

    async def get(self, enrollment_id: UUID) -> Enrollment:
        query = self._locking(select(enrollments).where(enrollments.c.id == enrollment_id))
        rows = (await self._connection.execute(query)).all()
        if not rows:
            raise EnrollmentNotFound(enrollment_id)
        return self._keep(rows)[0]

    async def live_of(self, opportunity_id: UUID) -> list[Enrollment]:
        held = self._live_held.get(opportunity_id)
        if held is not None:
            return [enrollment for enrollment in held if enrollment.is_live]
        if is_postgres(self._connection):
            locked = await _LIVE_OF_LOCKED.all(self._connection, {"b_opportunity": opportunity_id})
            return self._keep(locked)
        rows = await self._connection.execute(_LIVE_OF, {"b_opportunity": opportunity_id})
        return self._keep(rows.all())

    async def any_due(self, now: datetime) -> bool:
        """Whether a step is due now, looked at without a lock: one statement, which in
        one-write mode needs no transaction around it."""
        return await _ANY_DUE.first(self._connection, {"b_now": now}) is not None

    async def due(self, now: datetime, limit: int) -> list[Enrollment]:
        """Active enrollments whose next step is due, earliest first, locked; rows another
        transaction holds are skipped (it is running them)."""
        query = self._locking(
            select(enrollments)
            .where(
                enrollments.c.state == EnrollmentState.ACTIVE.value,
                enrollments.c.next_due_at <= now,
            )
            .order_by(enrollments.c.next_due_at)
            .limit(limit),
            skip_locked=True,
        )
        return self._keep((await self._connection.execute(query)).all())

    async def save(self, enrollment: Enrollment) -> None:
        loaded = self._loaded[enrollment.id]
        if enrollment.version == loaded:
            return
        values = _enrollment_row(enrollment)
        del values["id"]
        await _VERSIONED_ENROLLMENT.save(self._connection, enrollment.id, loaded, values)
        self._loaded[enrollment.id] = enrollment.version

    async def save_all(self, saved: Sequence[Enrollment]) -> None:
        """The versioned save of many enrollments, in one statement; as `save`, refused
        with `StaleVersion` (nothing written) when one was saved by another since read."""
        changed = [e for e in saved if e.version != self._loaded[e.id]]
        if not changed:
            return
        rows = []
        for enrollment in changed:
            values = _enrollment_row(enrollment)
            values["b_id"] = values.pop("id")
            values["b_version"] = self._loaded[enrollment.id]
            rows.append(values)
        result = await self._connection.execute(_UPDATE_ENROLLMENT, rows)
        if self._connection.dialect.supports_sane_multi_rowcount:
            updated = result.rowcount
        else:  # asyncpg: no row count for a batch; the new versions tell
            versions = {
                r.id: r.version
                for r in await self._connection.execute(
                    select(enrollments.c.id, enrollments.c.version).where(
                        enrollments.c.id.in_([e.id for e in changed])
                    )
                )
            }
            updated = sum(1 for e in changed if versions.get(e.id) == e.version)
        if updated != len(changed):
            for enrollment in changed:  # the first one refused, as `save` reports it
                current = await self._connection.scalar(
                    select(enrollments.c.version).where(enrollments.c.id == enrollment.id)
                )
                if current != enrollment.version:
                    if current is None:
                        raise EnrollmentNotFound(enrollment.id)
                    raise StaleVersion("enrollment", self._loaded[enrollment.id], int(current))
        for enrollment in changed:
            self._loaded[enrollment.id] = enrollment.version

    async def record_run(self, enrollment_id: UUID, run: StepRun) -> None:
        await self.record_runs([(enrollment_id, run)])

    async def record_runs(self, runs: Sequence[tuple[UUID, StepRun]]) -> None:
        """The records of steps that ran, in one statement."""
        if not runs:
            return
        await self._connection.execute(
            _INSERT_STEP,
            [
                {
                    "enrollment_id": enrollment_id,
                    "step_no": run.step_no,
                    "action": run.action.value,
                    "due_at": run.due_at,
                    "executed_at": run.executed_at,
                    "result": run.result,
                    "detail": run.detail,
                    "task_id": run.task_id,
                }
                for enrollment_id, run in runs
            ],
        )


class EnrollmentQueries:
    """Reads for the follow-up history."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def find(self, enrollment_id: UUID) -> Enrollment | None:
        row = (
            await self._connection.execute(
                select(enrollments).where(enrollments.c.id == enrollment_id)
            )
        ).first()
        return None if row is None else _to_enrollment(row)

    async def of_opportunity(self, opportunity_id: UUID) -> list[Enrollment]:
        rows = await self._connection.execute(
            select(enrollments)
            .where(enrollments.c.opportunity_id == opportunity_id)
            .order_by(enrollments.c.enrolled_at, enrollments.c.id)
        )
        return [_to_enrollment(r) for r in rows]

    async def runs_of(self, enrollment_ids: Sequence[UUID]) -> dict[UUID, list[StepRun]]:
        found: dict[UUID, list[StepRun]] = {i: [] for i in enrollment_ids}
        if not enrollment_ids:
            return found
        rows = await self._connection.execute(
            select(enrollment_steps)
            .where(enrollment_steps.c.enrollment_id.in_(list(enrollment_ids)))
            .order_by(enrollment_steps.c.enrollment_id, enrollment_steps.c.step_no)
        )
        for r in rows:
            found[r.enrollment_id].append(
                StepRun(
                    r.step_no,
                    StepAction(r.action),
                    r.due_at,
                    r.executed_at,
                    r.result,
                    r.detail,
                    r.task_id,
                )
            )
        return found


def _enrollment_row(enrollment: Enrollment) -> dict[str, Any]:
    return {
        "id": enrollment.id,
        "opportunity_id": enrollment.opportunity_id,
        "sequence_id": enrollment.sequence_id,
        "sequence_version": enrollment.sequence_version,
        "sequence_name": enrollment.sequence_name,
        "state": enrollment.state.value,
        "next_step": enrollment.next_step,
        "next_due_at": enrollment.next_due_at,
        "remaining_seconds": enrollment.remaining.total_seconds()
        if enrollment.remaining is not None
        else None,
        "enrolled_by": enrollment.enrolled_by,
        "enrolled_at": enrollment.enrolled_at,
        "ended_at": enrollment.ended_at,
        "end_reason": enrollment.end_reason,
        "version": enrollment.version,
    }


def _to_enrollment(row: Row[Any]) -> Enrollment:
    return Enrollment(
        id=row.id,
        opportunity_id=row.opportunity_id,
        sequence_id=row.sequence_id,
        sequence_version=row.sequence_version,
        sequence_name=row.sequence_name,
        state=EnrollmentState(row.state),
        next_step=row.next_step,
        next_due_at=row.next_due_at,
        remaining=timedelta(seconds=row.remaining_seconds)
        if row.remaining_seconds is not None
        else None,
        enrolled_by=row.enrolled_by,
        enrolled_at=row.enrolled_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        version=row.version,
    )


class TaskRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._loaded: dict[UUID, int] = {}

    async def add(self, task: Task) -> None:
        await self.add_all([task])

    async def add_all(self, added: Sequence[Task]) -> None:
        """New tasks, in one statement."""
        if not added:
            return
        await self._connection.execute(_INSERT_TASK, [_task_row(t) for t in added])
        for task in added:
            self._loaded[task.id] = task.version

    async def get(self, task_id: UUID) -> Task:
        query = select(tasks).where(tasks.c.id == task_id)
        if is_postgres(self._connection):
            query = query.with_for_update()
        row = (await self._connection.execute(query)).first()
        if row is None:
            raise TaskNotFound(task_id)
        task = _to_task(row)
        self._loaded[task.id] = task.version
        return task

    async def save(self, task: Task) -> None:
        loaded = self._loaded[task.id]
        if task.version != loaded:
            values = _task_row(task)
            del values["id"]
            await _VERSIONED_TASK.save(self._connection, task.id, loaded, values)
            self._loaded[task.id] = task.version

    async def add_note(self, note: TaskNote) -> None:
        await self._connection.execute(
            insert(task_notes).values(
                id=note.id,
                task_id=note.task_id,
                text=note.text,
                author=note.author,
                added_at=note.added_at,
            )
        )


class TaskQueries:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def find(self, task_id: UUID) -> Task | None:
        row = (await self._connection.execute(select(tasks).where(tasks.c.id == task_id))).first()
        if row is None:
            return None
        (task,) = await self._with_notes([row])
        return task

    async def search(
        self,
        *,
        opportunity_id: UUID | None,
        assignee: str | None,
        state: TaskFilter | None,
        now: datetime,
        limit: int,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[Task]:
        """Earliest due first; `after` a (due_at, id) seen: the tasks that follow it."""
        query = select(tasks).order_by(tasks.c.due_at, tasks.c.id).limit(limit)
        if after is not None:
            query = query.where(tuple_(tasks.c.due_at, tasks.c.id) > tuple_(*after))
        if opportunity_id is not None:
            query = query.where(tasks.c.opportunity_id == opportunity_id)
        if assignee is not None:
            query = query.where(tasks.c.assignee == assignee)
        if state == TaskFilter.OVERDUE:
            query = query.where(tasks.c.state == TaskState.OPEN.value, tasks.c.due_at < now)
        elif state is not None:
            query = query.where(tasks.c.state == state.value)
        return await self._with_notes((await self._connection.execute(query)).all())

    async def _with_notes(self, rows: Sequence[Row[Any]]) -> list[Task]:
        found = [_to_task(r) for r in rows]
        if found:
            by_id = {t.id: t for t in found}
            notes = await self._connection.execute(
                select(task_notes)
                .where(task_notes.c.task_id.in_(list(by_id)))
                .order_by(task_notes.c.added_at, task_notes.c.id)
            )
            for n in notes:
                by_id[n.task_id].notes.append(
                    TaskNote(n.id, n.task_id, n.text, n.author, n.added_at)
                )
        return found


def _task_row(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "opportunity_id": task.opportunity_id,
        "enrollment_id": task.enrollment_id,
        "kind": task.kind.value,
        "title": task.title,
        "assignee": task.assignee,
        "due_at": task.due_at,
        "state": task.state.value,
        "created_by": task.created_by,
        "created_at": task.created_at,
        "completed_by": task.completed_by,
        "completed_at": task.completed_at,
        "version": task.version,
    }


def _to_task(row: Row[Any]) -> Task:
    return Task(
        id=row.id,
        opportunity_id=row.opportunity_id,
        kind=TaskKind(row.kind),
        title=row.title,
        assignee=row.assignee,
        due_at=row.due_at,
        state=TaskState(row.state),
        created_by=row.created_by,
        created_at=row.created_at,
        enrollment_id=row.enrollment_id,
        completed_by=row.completed_by,
        completed_at=row.completed_at,
        version=row.version,
    )


class KnownDeals:
    """The projection of deals this service keeps from opportunity events."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._held = HeldRows()

    async def lock_ahead(self, opportunity_ids: Iterable[UUID]) -> None:
        """Lock these deals' rows in one statement and hold them until `write_held`."""
        await _KNOWN.lock_ahead(self._connection, opportunity_ids, self._held)

    async def write_held(self) -> None:
        await _KNOWN.write_held(self._connection, self._held)

    def held_ids(self) -> list[UUID]:
        """The deals locked ahead that have a row."""
        return [cast(UUID, key) for key, row in self._held.rows.items() if row is not None]

    def absent_ids(self) -> list[UUID]:
        """The deals locked ahead that have no row (the batch adds them)."""
        return [cast(UUID, key) for key, row in self._held.rows.items() if row is None]

    async def get(self, opportunity_id: UUID, *, lock: bool = False) -> KnownDeal | None:
        row = await _KNOWN.get(self._connection, opportunity_id, lock=lock, held=self._held)
        return None if row is None else _to_deal(row)

    async def get_many(self, opportunity_ids: Sequence[UUID]) -> dict[UUID, KnownDeal]:
        """The deals held of these ids, in one statement, unlocked."""
        if not opportunity_ids:
            return {}
        rows = await self._connection.execute(
            select(known_deals).where(known_deals.c.id.in_(set(opportunity_ids)))
        )
        return {r.id: _to_deal(r) for r in rows}

    async def lock_or_add(self, unseen: KnownDeal) -> KnownDeal:
        """The deal's row, locked until commit; `unseen` is added first when there is none
        (a concurrent insert waits for the other and does nothing)."""
        row = await _KNOWN.lock_or_add(
            self._connection, _deal_row(unseen, unseen.last_activity_at), self._held
        )
        return _to_deal(row)

    async def save(self, deal: KnownDeal, now: datetime) -> None:
        await _KNOWN.save(self._connection, _deal_row(deal, now), self._held)

    async def stale_candidates(
        self, now: datetime, quiet: timedelta, limit: int
    ) -> list[KnownDeal]:
        """Open deals the stale rule may report now, locked, skipping rows others hold.

        The same conditions as `KnownDeal.stale_reasons`, in SQL so that a reported deal
        no longer matches and the scan ends."""
        future_task = exists().where(
            tasks.c.opportunity_id == known_deals.c.id,
            tasks.c.state == TaskState.OPEN.value,
            tasks.c.due_at >= now,
        )
        inactive = and_(
            known_deals.c.last_activity_at <= now - quiet,
            ~future_task,
            or_(
                known_deals.c.inactive_reported_at.is_(None),
                known_deals.c.inactive_reported_at < known_deals.c.last_activity_at,
            ),
        )
        close_date_past = and_(
            known_deals.c.expected_close_date < now.date(),
            or_(
                known_deals.c.close_date_reported.is_(None),
                known_deals.c.close_date_reported != known_deals.c.expected_close_date,
            ),
        )
        query = (
            select(known_deals)
            .where(known_deals.c.stage.in_(_OPEN), or_(inactive, close_date_past))
            .order_by(known_deals.c.last_activity_at)
            .limit(limit)
        )
        if is_postgres(self._connection):
            query = query.with_for_update(skip_locked=True)
        return [_to_deal(r) for r in await self._connection.execute(query)]

    async def has_open_future_task(self, opportunity_id: UUID, now: datetime) -> bool:
        found = await self._connection.scalar(
            select(func.count())
            .select_from(tasks)
            .where(
                tasks.c.opportunity_id == opportunity_id,
                tasks.c.state == TaskState.OPEN.value,
                tasks.c.due_at >= now,
            )
        )
        return bool(found)

    async def stale(self, today: date) -> list[KnownDeal]:
        """Open deals reported inactive with no activity since, or past their close date."""
        query = (
            select(known_deals)
            .where(
                known_deals.c.stage.in_(_OPEN),
                or_(
                    known_deals.c.inactive_reported_at >= known_deals.c.last_activity_at,
                    known_deals.c.expected_close_date < today,
                ),
            )
            .order_by(known_deals.c.last_activity_at, known_deals.c.id)
        )
        return [_to_deal(r) for r in await self._connection.execute(query)]


def _to_deal(row: Row[Any]) -> KnownDeal:
    return KnownDeal(
        id=row.id,
        stage=Stage(row.stage),
        owners=list(row.owners),
        team_id=row.team_id,
        created_by=row.created_by,
        last_activity_at=row.last_activity_at,
        title=row.title,
        customer_name=row.customer_name,
        customer_id=row.customer_id,
        value_amount=row.value_amount,
        value_currency=row.value_currency,
        expected_close_date=row.expected_close_date,
        lead_origin=LeadOrigin(row.lead_origin) if row.lead_origin else None,
        contact_name=row.contact_name,
        contact_email=row.contact_email,
        shares=shares_from_document(row.shares),
        inactive_reported_at=row.inactive_reported_at,
        close_date_reported=row.close_date_reported,
        sequences=AppliedSequences.from_document(row.applied_sequences),
    )


def _deal_row(deal: KnownDeal, now: datetime) -> dict[str, Any]:
    return {
        "id": deal.id,
        "stage": deal.stage.value,
        "owners": list(deal.owners),
        "team_id": deal.team_id,
        "created_by": deal.created_by,
        "title": deal.title,
        "customer_name": deal.customer_name,
        "customer_id": deal.customer_id,
        "value_amount": deal.value_amount,
        "value_currency": deal.value_currency,
        "expected_close_date": deal.expected_close_date,
        "lead_origin": deal.lead_origin.value if deal.lead_origin else None,
        "contact_name": deal.contact_name,
        "contact_email": deal.contact_email,
        "shares": shares_to_document(deal.shares),
        "last_activity_at": deal.last_activity_at,
        "inactive_reported_at": deal.inactive_reported_at,
        "close_date_reported": deal.close_date_reported,
        "applied_sequences": deal.sequences.to_document(),
        "updated_at": now,
    }
