"""Database refusals that concurrent requests cause, and a database that cannot answer,
become problem+json answers in one place (`http.problems`); every other database error,
and a connection lost while committing, stays a 500."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asyncpg.exceptions import PostgresError
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from dealflow_common.http.problems import MEDIA_TYPE, from_database_error, install_problem_handlers
from dealflow_common.messaging.outbox import Outbox
from dealflow_common.uow import CommitOutcomeUnknown, UnitOfWork, work_scope

ASYNCPG = AsyncAdapt_asyncpg_dbapi(asyncpg)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def postgres_error(sqlstate: str, message: str, constraint: str | None = None) -> Any:
    """The error SQLAlchemy raises for this server error, wrapped as it wraps asyncpg's."""
    fields = {"S": "ERROR", "C": sqlstate, "M": message}
    if constraint:
        fields["n"] = constraint
    driver = PostgresError.new(fields)
    adapted = (
        ASYNCPG.IntegrityError(message, driver)
        if sqlstate.startswith("23")
        else ASYNCPG.Error(message, driver)
    )
    return sa_exc.DBAPIError.instance("UPDATE …", {}, adapted, ASYNCPG.Error)


def sqlite_error(tmp_path: Path, provoke: str) -> Any:
    """A real SQLite error, as SQLAlchemy wraps it."""
    path = tmp_path / "errors.db"
    first = sqlite3.connect(path, isolation_level=None, timeout=0)
    second = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        first.execute("CREATE TABLE products (sku TEXT UNIQUE)")
        first.execute("INSERT INTO products VALUES ('A-1')")
        if provoke == "unique":
            second.execute("INSERT INTO products VALUES ('A-1')")
        else:
            first.execute("BEGIN IMMEDIATE")
            second.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as error:
        return sa_exc.DBAPIError.instance("INSERT …", {}, error, sqlite3.Error)
    finally:
        first.close()
        second.close()
    raise AssertionError(f"SQLite raised nothing for {provoke}")


def test_a_unique_violation_is_a_conflict_naming_the_constraint() -> None:
    error = postgres_error(
        "23505",
        'duplicate key value violates unique constraint "products_sku_key"',
        "products_sku_key",
    )
    assert isinstance(error, sa_exc.IntegrityError)
    problem = from_database_error(error)
    assert problem is not None
    assert (problem.status, problem.slug) == (409, "conflict")
    assert "products_sku_key" in problem.detail
    assert problem.extensions["constraint"] == "products_sku_key"


def test_a_foreign_key_violation_is_a_conflict() -> None:
    error = postgres_error("23503", "insert violates foreign key", "bundle_items_product_id_fkey")
    problem = from_database_error(error)
    assert problem is not None
    assert (problem.status, problem.slug) == (409, "conflict")
    assert "bundle_items_product_id_fkey" in problem.detail


@pytest.mark.parametrize(
    ("sqlstate", "meaning"),
    [
        ("40001", "serialization failure"),
        ("40P01", "deadlock"),
        ("55P03", "lock timeout"),
    ],
)
def test_a_collision_with_a_concurrent_transaction_is_a_conflict(
    sqlstate: str, meaning: str
) -> None:
    problem = from_database_error(postgres_error(sqlstate, "could not go on"))
    assert problem is not None
    assert (problem.status, problem.slug) == (409, "conflict")
    assert meaning in problem.detail
    assert "retry" in problem.detail


def test_a_statement_cancelled_by_the_statement_timeout_is_503_with_retry_after() -> None:
    error = postgres_error("57014", "canceling statement due to statement timeout")
    problem = from_database_error(error)
    assert problem is not None
    assert (problem.status, problem.slug) == (503, "unavailable")
    assert problem.headers == {"Retry-After": "1"}


@pytest.mark.parametrize(
    ("sqlstate", "why"),
    [
        ("57P01", "terminating connection due to administrator command"),
        ("57P03", "the database system is starting up"),
        ("53300", "sorry, too many clients already"),
        ("08006", "connection failure"),
    ],
)
def test_a_database_that_cannot_answer_now_is_503_nothing_changed(sqlstate: str, why: str) -> None:
    problem = from_database_error(postgres_error(sqlstate, why))
    assert problem is not None
    assert (problem.status, problem.slug, problem.headers) == (
        503,
        "unavailable",
        {"Retry-After": "1"},
    )
    assert "nothing was changed" in problem.detail


@pytest.mark.parametrize(
    ("sqlstate", "why"),
    [("23502", "NOT NULL: a bug"), ("23514", "CHECK: a bug"), ("42P01", "no such table")],
)
def test_other_database_errors_are_not_translated(sqlstate: str, why: str) -> None:
    assert from_database_error(postgres_error(sqlstate, why)) is None


def test_a_sqlite_unique_violation_is_a_conflict_naming_the_column(tmp_path: Path) -> None:
    problem = from_database_error(sqlite_error(tmp_path, "unique"))
    assert problem is not None
    assert (problem.status, problem.slug) == (409, "conflict")
    assert problem.extensions["constraint"] == "products.sku"


def test_a_locked_sqlite_database_is_503_with_retry_after(tmp_path: Path) -> None:
    error = sqlite_error(tmp_path, "busy")
    assert isinstance(error, sa_exc.OperationalError)
    assert "database is locked" in str(error)
    problem = from_database_error(error)
    assert problem is not None
    assert (problem.status, problem.headers) == (503, {"Retry-After": "1"})


async def test_the_app_answers_a_database_conflict_with_problem_json_not_a_500() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/products")
    async def clash() -> None:
        raise postgres_error("23505", "duplicate key", "products_sku_key")

    @app.post("/broken")
    async def broken() -> None:
        raise postgres_error("42P01", 'relation "products" does not exist')

    @app.post("/committing")
    async def committing() -> None:
        raise CommitOutcomeUnknown("connection is closed")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        conflict = await http.post("/products")
        unexpected = await http.post("/broken")
        unknown = await http.post("/committing")
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == MEDIA_TYPE
    assert conflict.json()["type"] == "urn:dealflow:problem:conflict"
    assert conflict.json()["constraint"] == "products_sku_key"
    assert unexpected.status_code == 500
    assert unexpected.json()["type"] == "urn:dealflow:problem:internal"
    # Lost while committing: no 503, which would invite sending a create twice.
    assert unknown.status_code == 500
    assert unknown.headers["content-type"] == MEDIA_TYPE
    assert unknown.json()["type"] == "urn:dealflow:problem:outcome-unknown"
    assert "may or may not be stored" in unknown.json()["detail"]


async def test_a_request_that_stored_a_change_is_not_told_nothing_changed(
    tmp_path: Path,
) -> None:
    """A 503 says nothing was changed. After a unit of work of the request committed,
    a lost connection (reading for the answer, say) is a 500 instead: sending the
    request again would repeat the change."""
    app = FastAPI()
    install_problem_handlers(app)
    lost = postgres_error("57P01", "terminating connection due to administrator command")

    @app.post("/lost")
    async def lost_before() -> None:
        raise lost

    @app.post("/stored-then-lost")
    async def stored_then_lost() -> None:
        async with UnitOfWork(engine, Outbox("/dealflow/test"), lambda: NOW) as uow:
            await uow.commit()
        raise lost

    async def scoped(scope: Any, receive: Any, send: Any) -> None:
        with work_scope():  # as `FlowMiddleware` opens one per request
            await app(scope, receive, send)

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'stored.db'}")
    transport = httpx.ASGITransport(app=scoped, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            stored = await http.post("/stored-then-lost")
            before = await http.post("/lost")  # the next request has a scope of its own
    finally:
        await engine.dispose()
    assert stored.status_code == 500
    assert before.status_code == 503


async def test_a_database_that_cannot_be_reached_is_503_not_a_500(tmp_path: Path) -> None:
    """A refused connection comes out of the driver as a bare `ConnectionRefusedError`
    (SQLAlchemy wraps only the driver's own errors), and a pool with no connection free
    in time as SQLAlchemy's `TimeoutError`: both are a database that cannot answer now,
    with nothing changed."""
    app = FastAPI()
    install_problem_handlers(app)
    nowhere = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    busy = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}",
        poolclass=AsyncAdaptedQueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.05,
    )

    @app.get("/refused")
    async def refused() -> None:
        async with nowhere.connect():
            pass

    @app.get("/busy")
    async def pool_exhausted() -> None:
        async with busy.connect(), busy.connect():
            pass

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            answers = [await http.get("/refused"), await http.get("/busy")]
    finally:
        await nowhere.dispose()
        await busy.dispose()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == MEDIA_TYPE
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["type"] == "urn:dealflow:problem:unavailable"
        assert "nothing was changed" in answer.json()["detail"]
