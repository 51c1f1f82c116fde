"""RFC 9457 problem+json: every error a client sees, in one place.

Domain errors map to statuses here (404 unknown id, 409 forbidden transition with the
allowed moves, 412 stale version, 422 invalid input naming the field, 403 not
permitted), so routers never build error responses by hand. So do the database's
refusals that concurrent requests cause (409 conflict, 503 busy): a clash between two
requests is the client's to retry, never a 500.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from dealflow_common.context import peek_flow
from dealflow_common.errors import (
    Conflict,
    DomainError,
    NotFound,
    NotPermitted,
    RuleViolated,
    StaleVersion,
    TransitionNotAllowed,
)
from dealflow_common.http.audit import record_domain_refusal
from dealflow_common.uow import CommitOutcomeUnknown, work_committed

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"


def problem_type(slug: str) -> str:
    return f"urn:dealflow:problem:{slug}"


class Problem(Exception):
    """Raise from an adapter to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


# Path parameters that are credentials (the buy-now link's token): shown by name only.
_SECRET_PATH_PARAMS = ("token",)


def _instance(request: Request) -> str:
    path = request.url.path
    for name in _SECRET_PATH_PARAMS:
        value = request.path_params.get(name)
        if value:
            path = path.replace(str(value), "{" + name + "}")
    return path


def problem_response(problem: Problem, request: Request) -> Response:
    body: dict[str, Any] = {
        "type": problem_type(problem.slug),
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": _instance(request),
        **problem.extensions,
    }
    flow = peek_flow()
    if flow is not None:
        body["correlation_id"] = flow.correlation_id
    return Response(
        orjson.dumps(body, default=str),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=problem.headers,
    )


def field_errors(field: str, message: str) -> list[dict[str, str]]:
    return [{"field": field, "message": message}]


def invalid_field(field: str, message: str) -> Problem:
    """A 422 naming one field of the request, as every invalid request is answered."""
    return Problem(
        422,
        "validation",
        "Invalid request",
        f"{field}: {message}",
        errors=field_errors(field, message),
    )


def from_domain_error(error: DomainError) -> Problem:
    if isinstance(error, NotFound):
        return Problem(404, "not-found", f"{error.entity.capitalize()} not found", error.detail)
    if isinstance(error, TransitionNotAllowed):
        return Problem(
            409,
            "transition-not-allowed",
            "Transition not allowed",
            error.detail,
            state=error.state,
            attempted=error.attempted,
            allowed=error.allowed,
        )
    if isinstance(error, StaleVersion):
        return Problem(
            412,
            "stale-version",
            "Precondition failed",
            error.detail,
            current_version=error.actual,
        )
    if isinstance(error, RuleViolated):
        return invalid_field(error.field, error.detail)
    if isinstance(error, NotPermitted):
        return Problem(403, "forbidden", "Forbidden", error.detail)
    if isinstance(error, Conflict):
        return Problem(409, "conflict", "Conflict", error.detail)
    return Problem(400, "bad-request", "Bad request", error.detail)


# PostgreSQL SQLSTATEs (appendix A of its manual) that a concurrent request causes.
_UNIQUE_VIOLATION = "23505"
_FOREIGN_KEY_VIOLATION = "23503"
_EXCLUSION_VIOLATION = "23P01"
_COLLISIONS = {
    "40001": "it collided with a concurrent transaction (serialization failure)",
    "40P01": "it deadlocked with a concurrent transaction",
    "55P03": "it waited too long for data another request is changing (lock timeout)",
}
_QUERY_CANCELED = "57014"
# The session ended or never began: class 08 (connection exception), a backend
# terminated or the server shutting down or starting (57P01-57P03), no free connection.
_SESSION_LOST = {"57P01", "57P02", "57P03", "53300"}
# SQLite extended result codes (`sqlite3.Error.sqlite_errorcode`).
_SQLITE_UNIQUE = {2067, 1555}  # SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
_SQLITE_FOREIGN_KEY = 787  # SQLITE_CONSTRAINT_FOREIGNKEY
_SQLITE_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED (the low byte of every variant)
_SQLITE_CONSTRAINT_MESSAGE = re.compile(r"constraint failed: (.+)$")

RETRY_AFTER_SECONDS = "1"


def _driver_errors(error: sa_exc.DBAPIError) -> list[BaseException]:
    """The driver's exception and those it wraps (SQLAlchemy wraps asyncpg's in an adapter)."""
    found: list[BaseException] = []
    current: Any = error.orig
    while isinstance(current, BaseException) and current not in found:
        found.append(current)
        current = getattr(current, "orig", None) or current.__cause__
    return found


def _first(errors: list[BaseException], *names: str) -> Any:
    for candidate in errors:
        for name in names:
            value = getattr(candidate, name, None)
            if value is not None:
                return value
    return None


def _constraint_name(errors: list[BaseException]) -> str | None:
    name = _first(errors, "constraint_name")  # asyncpg
    if name is None:
        diagnostics = _first(errors, "diag")  # psycopg
        name = getattr(diagnostics, "constraint_name", None)
    if name is None and errors:
        # SQLite names no constraint, only its columns: "UNIQUE constraint failed: t.c".
        found = _SQLITE_CONSTRAINT_MESSAGE.search(str(errors[0]))
        name = found.group(1) if found else None
    return str(name) if name else None


def from_database_error(error: sa_exc.DBAPIError) -> Problem | None:
    """The answer to a database refusal that a concurrent request causes, or to a
    database that cannot answer now (503: nothing was changed, retry later).

    None for any other refusal (a NOT NULL or CHECK violation is a bug): those stay a
    500 and are logged as such. A connection lost while committing never gets here
    (`CommitOutcomeUnknown`): whether that change is stored is unknown.
    """
    errors = _driver_errors(error)
    sqlstate = _first(errors, "sqlstate", "pgcode")
    sqlite_code = _first(errors, "sqlite_errorcode")
    unique = sqlstate in (_UNIQUE_VIOLATION, _EXCLUSION_VIOLATION) or sqlite_code in _SQLITE_UNIQUE
    reference = sqlstate == _FOREIGN_KEY_VIOLATION or sqlite_code == _SQLITE_FOREIGN_KEY
    if isinstance(error, sa_exc.IntegrityError) and (unique or reference):
        # The use case checked first; only a request committed in between gets here.
        constraint = _constraint_name(errors)
        rule = f" ({constraint})" if constraint else ""
        what = "stored the same value" if unique else "changed what this one refers to"
        detail = f"another request has just {what}{rule}; reload and retry"
        return Problem(409, "conflict", "Conflict", detail, constraint=constraint)
    if sqlstate in _COLLISIONS:
        detail = f"the request was not applied: {_COLLISIONS[sqlstate]}; retry it"
        return Problem(409, "conflict", "Conflict", detail)
    if sqlstate == _QUERY_CANCELED:
        # statement_timeout cancelled a statement that ran too long: the database is slow
        # or overloaded, nothing in the request clashed with anyone's data, and the same
        # request may well succeed later. That is a 503 with Retry-After; a 409 would
        # tell the client to change something first.
        return Problem(
            503,
            "unavailable",
            "Service unavailable",
            "the database took too long to answer; retry later",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    if error.connection_invalidated or (
        sqlstate is not None and (sqlstate.startswith("08") or sqlstate in _SESSION_LOST)
    ):
        # The database went away (restarted, its sessions terminated, no session
        # free) before this request's transaction committed: PostgreSQL rolled it
        # back, so nothing was changed and the same request may be sent again.
        return Problem(
            503,
            "unavailable",
            "Service unavailable",
            "the connection to the database was lost before the change was committed, "
            "so nothing was changed; retry later",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    if (
        isinstance(error, sa_exc.OperationalError)
        and sqlite_code is not None
        and sqlite_code & 0xFF in _SQLITE_BUSY
    ):
        # Another writer held SQLite's one write lock for longer than the busy timeout.
        return Problem(
            503,
            "unavailable",
            "Service unavailable",
            "the database is busy with other writes; retry later",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    return None


def _field_name(loc: Sequence[int | str]) -> str:
    """`("body", "lines", 0, "quantity")` -> `lines[0].quantity`, as domain errors name it."""
    parts = list(loc)
    if parts and parts[0] in {"body", "query", "path", "header"}:
        where, parts = str(parts[0]), parts[1:]
        if not parts:
            return where
        if where == "header":
            return str(parts[0])
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _describe_validation(errors: Sequence[Any]) -> list[dict[str, str]]:
    described = []
    for error in errors:
        kind = error.get("type", "")
        loc = error.get("loc", ())
        if kind == "json_invalid":
            described.append(
                {
                    "field": "body",
                    "message": f"malformed JSON: {error.get('ctx', {}).get('error', '')}",
                }
            )
            continue
        message = error.get("msg", "invalid")
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "required"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        described.append({"field": _field_name(loc), "message": message})
    return described


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc, request)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        record_domain_refusal(request, exc)
        return problem_response(from_domain_error(exc), request)

    @app.exception_handler(sa_exc.DBAPIError)
    async def _database(request: Request, exc: sa_exc.DBAPIError) -> Response:
        problem = from_database_error(exc)
        if problem is not None and problem.status == 503 and work_committed():
            # This request had stored a change before the database failed it (a read
            # for the answer): a 503 would say nothing changed, and invite a repeat.
            problem = None
        if problem is None:
            return _internal_error(request)
        log.warning(
            "%s %s refused by the database (%s): %s",
            request.method,
            request.url.path,
            problem.status,
            str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__,
        )
        return problem_response(problem, request)

    async def _unreachable(request: Request, exc: Exception) -> Response:
        # No connection to the database could be had: refused, timed out, a name that
        # does not resolve (the driver's socket errors, which SQLAlchemy passes on
        # unwrapped), or the pool had none free in time. Nothing of this request was
        # stored unless an earlier unit of work of it had committed.
        if work_committed():
            return _internal_error(request)
        log.warning(
            "%s %s: no database connection (%s: %s)",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc,
        )
        return problem_response(
            Problem(
                503,
                "unavailable",
                "Service unavailable",
                "no connection to the database could be had, so nothing was changed; retry later",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            ),
            request,
        )

    for unreachable in (ConnectionError, TimeoutError, socket.gaierror, sa_exc.TimeoutError):
        app.add_exception_handler(unreachable, _unreachable)

    @app.exception_handler(CommitOutcomeUnknown)
    async def _outcome_unknown(request: Request, exc: CommitOutcomeUnknown) -> Response:
        log.error(
            "%s %s: the database connection was lost while committing; the change may "
            "or may not be stored: %s",
            request.method,
            request.url.path,
            exc,
        )
        return problem_response(
            Problem(
                500,
                "outcome-unknown",
                "Outcome unknown",
                "the connection to the database was lost while the change was being "
                "committed: it may or may not be stored; read it before sending it again",
            ),
            request,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = _describe_validation(exc.errors())
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(
            Problem(422, "validation", "Invalid request", detail, errors=errors), request
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode (not UTF-8): invalid input,
            # answered as every other invalid body is.
            message = f"not a JSON document: {exc.detail}"
            return problem_response(invalid_field("body", message), request)
        titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route of the path only.
            headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
        return problem_response(
            Problem(
                exc.status_code,
                "http",
                titles.get(exc.status_code, "HTTP error"),
                str(exc.detail),
                headers=headers,
            ),
            request,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return _internal_error(request)


def allowed_methods(request: Request) -> list[str]:
    """Every method the app's OpenAPI document gives the request's path (a path is
    served by several routes, one per method, and FastAPI nests included routers, so
    the document is the one place that lists them all)."""
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = []
        for template, item in request.app.openapi().get("paths", {}).items():
            parts = re.split(r"\{[^}]+\}", template)
            pattern = re.compile("^" + "[^/]+".join(re.escape(part) for part in parts) + "$")
            methods = [m.upper() for m in _METHOD_ORDER if m in item]
            table.append((pattern, methods))
        # A literal path (/opportunities/stage-machine) before a template that matches it.
        table.sort(key=lambda entry: entry[0].pattern.count("[^/]+"))
        request.app.state.allowed_methods = table
    path = request.url.path
    for pattern, methods in table:
        if pattern.match(path):
            return methods
    return []


_METHOD_ORDER = ("get", "head", "post", "put", "patch", "delete")


def _internal_error(request: Request) -> Response:
    """Called from an exception handler, so `log.exception` logs the error being handled."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        Problem(500, "internal", "Internal error", "the request failed; see the service log"),
        request,
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting problem+json answers; see READS, CHANGES."""
    return {status: _PROBLEM_DOCS[status] for status in statuses}


def _problem_doc(status: int) -> dict[str, Any]:
    meaning = {
        401: "No or invalid bearer token",
        403: "The caller's roles do not allow this",
        404: "Unknown id (or one the caller may not see)",
        409: "A transition the state machine forbids (`allowed` lists the allowed ones), "
        "or a clash with a concurrent request",
        412: "`If-Match` names an older version",
        413: "The request body is larger than the service accepts",
        422: "Invalid input; `errors` names each field",
        429: "Too many requests from this caller; retry after `Retry-After` seconds",
        431: "The request line and headers (a bearer token among them) are too large",
        503: "The database dropped the connection, or is busy or slow; nothing was "
        "changed; retry after `Retry-After` seconds",
    }
    schema = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
            "allowed": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {"description": meaning[status], "content": {MEDIA_TYPE: {"schema": schema}}}


_PROBLEM_DOCS = {
    status: _problem_doc(status) for status in (401, 403, 404, 409, 412, 413, 422, 429, 431, 503)
}
PLATFORM_PROBLEMS = {status: _PROBLEM_DOCS[status] for status in (412, 413, 422, 429, 431)}
"""What the platform answers before a route runs (limits, rate limit): every operation
documents these; see `dealflow_common.http.app.document_platform_answers`."""
READS = problem_responses(401, 404, 422, 503)
"""What a read endpoint may answer besides 200."""
CHANGES = problem_responses(401, 403, 404, 409, 412, 422, 503)
"""What an endpoint that changes state may answer besides success."""
