"""`dealflow-purge` against a mock transport: how it reaches the API and reads its
refusals, whatever comes back (the real API: tests/component/test_cli.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import httpx
import pytest
from rich.console import Console

from dealflow_purge import cli

Handler = Callable[[httpx.Request], httpx.Response]


async def purge(
    handler: Handler, *argv: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport, base_url="http://purge.test") as http:
        code = await cli.run(
            list(argv),
            env={"DEALFLOW_TOKEN": "t0ken"} if env is None else env,
            out=Console(file=out, width=160, color_system=None),
            err=Console(file=err, width=160, color_system=None),
            http=http,
        )
    return code, out.getvalue(), err.getvalue()


POLICY = {
    "retention_days_won": 30,
    "retention_days_lost": 30,
    "batch_size": 100,
    "schedule": "0 * * * *",
    "journal": False,
    "version": 4,
}


async def test_the_token_goes_as_a_bearer_and_the_flag_wins_over_the_environment() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json=POLICY)

    assert (await purge(handler, "policy"))[0] == 0
    assert (await purge(handler, "--token", "flag", "policy"))[0] == 0
    assert seen == ["Bearer t0ken", "Bearer flag"]


async def test_the_url_comes_from_the_flag_the_environment_or_the_default() -> None:
    parser = cli.parser()
    assert parser.parse_args(["--url", "http://x:1", "status"]).url == "http://x:1"
    assert cli.DEFAULT_URL == "http://127.0.0.1:8005"
    assert cli.URL_VARIABLE == "DEALFLOW_PURGE_URL"


async def test_a_problem_prints_title_detail_and_each_field() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=POLICY)
        problem = {
            "type": "urn:dealflow:problem:validation",
            "title": "Invalid request",
            "status": 422,
            "detail": "batch_size: must be between 1 and 1000",
            "errors": [{"field": "batch_size", "message": "must be between 1 and 1000"}],
        }
        return httpx.Response(
            422, content=json.dumps(problem), headers={"content-type": "application/problem+json"}
        )

    code, out, err = await purge(handler, "policy", "--set", "batch_size=5000")
    assert code == cli.API_ERROR
    assert out == ""
    assert err.splitlines() == [
        "error: Invalid request: batch_size: must be between 1 and 1000",
        "  batch_size: must be between 1 and 1000",
    ]


async def test_a_policy_change_sends_the_whole_policy_with_typed_values() -> None:
    sent: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            sent.append(json.loads(request.content))
            return httpx.Response(200, json={**sent[-1], "version": 5})
        return httpx.Response(200, json=POLICY)

    code, out, _ = await purge(
        handler, "policy", "--set", "journal=yes", "--set", "retention_days_lost = 7"
    )
    assert code == 0
    assert sent == [
        {
            "retention_days_won": 30,
            "retention_days_lost": 7,
            "batch_size": 100,
            "schedule": "0 * * * *",
            "journal": True,
        }
    ]
    assert "policy changed:" in out
    assert "version              5" in out


async def test_an_error_that_is_not_a_problem_document() -> None:
    code, _, err = await purge(lambda r: httpx.Response(502, text="Bad Gateway"), "status")
    assert (code, err.strip()) == (cli.API_ERROR, "error: HTTP 502: Bad Gateway")


async def test_no_answer_at_all() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    code, _, err = await purge(handler, "runs")
    assert code == cli.API_ERROR
    assert err.startswith("error: Cannot reach the purge service: http://purge.test")
    assert "connection refused" in err


async def test_without_a_token_nothing_is_asked() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request without a token")

    code, _, err = await purge(handler, "status", env={})
    assert code == cli.USAGE
    assert "--token" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("batch_size=50", ("batch_size", 50)),
        ("journal=off", ("journal", False)),
        ("journal=TRUE", ("journal", True)),
        ("schedule=*/15 * * * *", ("schedule", "*/15 * * * *")),
    ],
)
def test_assignments_take_the_policy_s_types(text: str, expected: tuple[str, object]) -> None:
    assert cli._assignment(text, POLICY) == expected


@pytest.mark.parametrize("text", ["batch_size", "=5", "colour=red", "batch_size=5.5", "journal=2"])
def test_bad_assignments(text: str) -> None:
    with pytest.raises(cli.UsageError):
        cli._assignment(text, POLICY)


async def test_follow_draws_until_the_run_finished() -> None:
    """The run as the API reports it while it goes: planned 4, then done."""
    base = {
        "id": "7d1f3a52-0000-4000-8000-000000000001",
        "trigger": "operator",
        "dry_run": False,
        "started_by": "olga",
        "started_at": "2026-12-03T10:00:00Z",
        "duration_seconds": None,
        "planned": 4,
        "would_purge": 0,
        "error": None,
        "policy": POLICY,
    }
    states = [
        {"status": "running", "finished_at": None, "examined": 2, "in_progress": 2, "purged": 0},
        {"status": "running", "finished_at": None, "examined": 4, "in_progress": 1, "purged": 3},
        {
            "status": "succeeded",
            "finished_at": "2026-12-03T10:00:09Z",
            "duration_seconds": 9.0,
            "examined": 4,
            "in_progress": 0,
            "purged": 4,
        },
    ]
    looks: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        looks.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            first = {**base, **states[0], "examined": 0, "in_progress": 0}
            return httpx.Response(202, json={**first, "skipped": 0, "failed": 0})
        state = states[min(len(looks) - 2, len(states) - 1)]
        return httpx.Response(200, json={**base, "skipped": 0, "failed": 0, **state})

    code, out, _ = await purge(handler, "run", "--follow", "--interval", "0")
    assert code == 0
    assert looks == ["POST /purge/runs"] + ["GET /purge/runs/" + base["id"]] * 3
    assert "4/4" in out
    assert "0/4" in out
    assert f"run {base['id']} succeeded in 9.0 s: 4 examined, 4 purged" in out
