"""`dealflow-purge`: the operators' command line for the purge agent.

It talks only to the purge service's HTTP API (`/purge/...`, roles operator or admin),
with a bearer token from `--token` or `DEALFLOW_TOKEN`, at `--url` or
`DEALFLOW_PURGE_URL` (http://127.0.0.1:8005 by default):

    dealflow-purge status                       paused or not, next run, backlog, stuck deals
    dealflow-purge runs [--limit N]             recent runs, newest first
    dealflow-purge dry-run                      what a run would purge now (changes nothing)
    dealflow-purge run [--follow]               run now; --follow draws its progress live
    dealflow-purge pause | resume
    dealflow-purge hold <opportunity_id> [--reason TEXT] | unhold <opportunity_id> | holds
    dealflow-purge policy [--set key=value ...]

Exit status: 0 done; 1 the API refused (its problem's title and detail are printed)
or could not be reached; 2 a usage error; 3 a followed run finished failed or
interrupted; 130 interrupted by Ctrl-C (a run started goes on in the service).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

DEFAULT_URL = "http://127.0.0.1:8005"
URL_VARIABLE = "DEALFLOW_PURGE_URL"
TOKEN_VARIABLE = "DEALFLOW_TOKEN"

OK, API_ERROR, USAGE, RUN_NOT_SUCCEEDED, INTERRUPTED = 0, 1, 2, 3, 130
WIDE = 130
"""Columns from which `runs` shows whole ids and every column."""

Sleep = Callable[[float], Awaitable[object]]


class ApiError(Exception):
    """A refusal of the API (its problem+json), or no answer at all."""

    def __init__(
        self, title: str, detail: str, status: int | None = None, errors: Sequence[Any] = ()
    ) -> None:
        super().__init__(f"{title}: {detail}")
        self.title = title
        self.detail = detail
        self.status = status
        self.errors = list(errors)


class UsageError(Exception):
    pass


class PurgeApi:
    """The purge service's operators' API, over one HTTP client."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self._http = http
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    async def call(
        self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        try:
            response = await self._http.request(
                method, path, json=body, params=params, headers=self._headers
            )
        except httpx.HTTPError as error:
            raise ApiError(
                "Cannot reach the purge service",
                f"{self._http.base_url}: {error or type(error).__name__}",
            ) from None
        if response.status_code >= 400:
            raise _problem(response)
        if not response.content:
            return response.status_code, None
        return response.status_code, response.json()

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return (await self.call("GET", path, params=params))[1]


def _problem(response: httpx.Response) -> ApiError:
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        text = response.text.strip()[:300] or response.reason_phrase
        return ApiError(f"HTTP {response.status_code}", text, response.status_code)
    return ApiError(
        str(document.get("title") or f"HTTP {response.status_code}"),
        str(document.get("detail") or ""),
        response.status_code,
        document.get("errors") or (),
    )


# --- how values are shown -------------------------------------------------------------


def _moment(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _when(value: str | None, now: datetime | None = None) -> str:
    """`2026-12-03 10:00:00Z (in 12 min)`: the moment in UTC and how far it is."""
    moment = _moment(value)
    if moment is None:
        return "-"
    shown = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    span = _span(abs(seconds))
    return f"{shown} ({'in ' + span if seconds > 0 else span + ' ago'})"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else _span(seconds)


def _done(run: Mapping[str, Any]) -> int:
    return int(run["purged"]) + int(run["would_purge"]) + int(run["skipped"]) + int(run["failed"])


def _counts(run: Mapping[str, Any]) -> str:
    went = f"{run['would_purge']} would be purged" if run["dry_run"] else f"{run['purged']} purged"
    parts = [f"{run['examined']} examined", went, f"{run['skipped']} skipped"]
    parts.append(f"{run['failed']} failed")
    if run.get("in_progress"):
        parts.append(f"{run['in_progress']} in progress")
    return ", ".join(parts)


def _status_style(status: str) -> str:
    return {"succeeded": "green", "running": "cyan", "failed": "red"}.get(status, "yellow")


def _run_line(run: Mapping[str, Any]) -> str:
    kind = "dry run" if run["dry_run"] else "run"
    status = run["status"]
    took = f" in {_duration(run['duration_seconds'])}" if run.get("finished_at") else ""
    return f"{kind} {run['id']} [{_status_style(status)}]{status}[/]{took}: {_counts(run)}" + (
        f" [dim]({escape(run['error'])})[/]" if run.get("error") else ""
    )


def _policy_table(policy: Mapping[str, Any]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    for key in ("retention_days_won", "retention_days_lost", "batch_size", "schedule", "journal"):
        if key in policy:
            value = policy[key]
            table.add_row(key, str(value).lower() if isinstance(value, bool) else str(value))
    table.add_row("version", str(policy.get("version", "-")))
    return table


# --- the commands ---------------------------------------------------------------------


class Cli:
    def __init__(self, api: PurgeApi, out: Console, args: argparse.Namespace, sleep: Sleep):
        self.api = api
        self.out = out
        self.args = args
        self.sleep = sleep

    async def status(self) -> int:
        status = await self.api.get("/purge/status")
        now = datetime.now(UTC)
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_row("agent", "[yellow]paused[/]" if status["paused"] else "[green]active[/]")
        table.add_row("next run", _when(status["next_run_at"], now))
        running = status.get("running_run")
        table.add_row("running", _run_line(running) if running else "-")
        last = status.get("last_run")
        if last:
            table.add_row("last run", _run_line(last))
            table.add_row("", f"finished {_when(last['finished_at'], now)}")
        else:
            table.add_row("last run", "-")
        table.add_row("backlog", f"{status['backlog']} deals eligible, not yet under way")
        table.add_row("in progress", f"{status['in_progress']} deals")
        stuck = status.get("stuck") or []
        table.add_row("stuck", f"[red]{len(stuck)} deals[/]" if stuck else "0 deals")
        self.out.print(table)
        if stuck:
            self.out.print(self._stuck_table(stuck, now))
        return OK

    def _stuck_table(self, stuck: Sequence[Mapping[str, Any]], now: datetime) -> Table:
        table = Table(title="Stuck deals (retried with backoff)", title_justify="left")
        for column in ("opportunity", "failed step", "attempts", "next attempt", "last error"):
            table.add_column(column)
        for deal in stuck:
            table.add_row(
                str(deal["opportunity_id"]),
                str(deal.get("failed_step") or "-"),
                str(deal["attempts"]),
                _when(deal.get("next_attempt_at"), now),
                escape(str(deal.get("last_error") or "")),
            )
        return table

    async def runs(self) -> int:
        runs = await self.api.get("/purge/runs", params={"limit": self.args.limit})
        if not runs:
            self.out.print("no runs yet")
            return OK
        # Below WIDE columns: ids cut to their first 8 characters, fewer columns.
        wide = self.out.width >= WIDE
        table = Table(
            box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=not wide
        )
        table.add_column("run", no_wrap=True)
        table.add_column("started (UTC)", no_wrap=True)
        if wide:
            table.add_column("trigger", no_wrap=True)
            table.add_column("kind", no_wrap=True)
        table.add_column("status", no_wrap=True)
        for name in ("examined", "purged", "skipped", "failed", "duration" if wide else "took"):
            table.add_column(name, justify="right", no_wrap=True)
        for run in runs:
            started = _moment(run["started_at"])
            shown = started.astimezone(UTC) if started else None
            cells = [
                str(run["id"]) if wide else str(run["id"])[:8],
                shown.strftime("%Y-%m-%d %H:%M:%S" if wide else "%m-%d %H:%M") if shown else "-",
            ]
            if wide:
                cells += [str(run["trigger"]), "dry run" if run["dry_run"] else "run"]
            cells += [
                f"[{_status_style(run['status'])}]{run['status']}[/]",
                str(run["examined"]),
                f"({run['would_purge']})" if run["dry_run"] else str(run["purged"]),
                str(run["skipped"]),
                str(run["failed"]),
                _duration(run["duration_seconds"]),
            ]
            table.add_row(*cells)
        self.out.print(table)
        if any(r["dry_run"] for r in runs):
            self.out.print("[dim](n): a dry run's deals that would be purged[/]")
        return OK

    async def run(self) -> int:
        status, run = await self.api.call("POST", "/purge/runs", {"dry_run": False})
        if status == 200:
            self.out.print(f"a run is already going: {_run_line(run)}")
        else:
            self.out.print(f"run {run['id']} started")
        if not self.args.follow:
            self.out.print(
                f"follow it with: dealflow-purge run --follow, or GET /purge/runs/{run['id']}"
            )
            return OK
        return await self._follow(run)

    async def dry_run(self) -> int:
        status, run = await self.api.call("POST", "/purge/runs", {"dry_run": True})
        if status == 200 and not run["dry_run"]:
            raise ApiError(
                "A run is going",
                f"run {run['id']} is purging now; a dry run can start once it is done "
                "(dealflow-purge run --follow shows it)",
                409,
            )
        finished = await self._wait(run, show=False)
        items = await self.api.get(f"/purge/runs/{run['id']}/items")
        listed = [i for i in items if i["outcome"] in ("would_purge", "skipped")]
        if listed:
            table = Table(title=f"Dry run {run['id']}", title_justify="left")
            for column in ("opportunity", "outcome", "reason"):
                table.add_column(column, no_wrap=column == "opportunity")
            for item in listed:
                outcome = item["outcome"].replace("_", " ")
                style = "green" if item["outcome"] == "would_purge" else "yellow"
                table.add_row(
                    str(item["opportunity_id"]),
                    f"[{style}]{outcome}[/]",
                    escape(str(item.get("reason") or "")),
                )
            self.out.print(table)
        self.out.print(
            f"{finished['would_purge']} deals would be purged, {finished['skipped']} skipped "
            f"(nothing was changed)"
        )
        return OK if finished["status"] == "succeeded" else RUN_NOT_SUCCEEDED

    async def _wait(self, run: dict[str, Any], *, show: bool) -> dict[str, Any]:
        """Poll the run until it finished, drawing its progress when `show`."""
        if not show:
            while run.get("finished_at") is None:
                await self.sleep(self.args.interval)
                run = await self.api.get(f"/purge/runs/{run['id']}")
            return run
        went = "would purge" if run["dry_run"] else "purged"
        progress = Progress(
            TextColumn("{task.description:>11}"),
            BarColumn(bar_width=40),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=self.out,
        )
        tasks: dict[str, TaskID] = {
            name: progress.add_task(name, total=None, note="")
            for name in ("examined", went, "failed")
        }
        self._draw(progress, tasks, run, went)  # the first frame has the run's total
        with progress:
            while run.get("finished_at") is None:
                await self.sleep(self.args.interval)
                run = await self.api.get(f"/purge/runs/{run['id']}")
                self._draw(progress, tasks, run, went)
        return run

    def _draw(
        self, progress: Progress, tasks: Mapping[str, TaskID], run: Mapping[str, Any], went: str
    ) -> None:
        planned = run.get("planned")
        finished = run.get("finished_at") is not None
        total = max(int(planned), run["examined"]) if planned is not None else None
        if finished:
            total = run["examined"] if total is None else total
        notes = f"{run['skipped']} skipped, {run.get('in_progress', 0)} in progress"
        values = {
            "examined": (run["examined"], notes),
            went: (run["would_purge"] if run["dry_run"] else run["purged"], ""),
            "failed": (run["failed"], ""),
        }
        for name, (completed, note) in values.items():
            progress.update(tasks[name], completed=completed, total=total, note=note)
        if finished:
            progress.refresh()

    async def _follow(self, run: dict[str, Any]) -> int:
        finished = await self._wait(run, show=True)
        self.out.print(_run_line(finished))
        if finished["failed"]:
            items = await self.api.get(f"/purge/runs/{finished['id']}/items")
            for item in items:
                if item["outcome"] == "failed":
                    self.out.print(
                        f"  [red]failed[/] {item['opportunity_id']}: "
                        f"{escape(str(item.get('reason') or ''))}"
                    )
            self.out.print("[dim]failed deals are retried by the next runs (with backoff)[/]")
        return OK if finished["status"] == "succeeded" else RUN_NOT_SUCCEEDED

    async def pause(self) -> int:
        await self.api.call("POST", "/purge/pause")
        self.out.print(
            "purge agent paused: no scheduled or new runs (a run going stops before its next batch)"
        )
        return OK

    async def resume(self) -> int:
        await self.api.call("POST", "/purge/resume")
        self.out.print("purge agent resumed")
        return OK

    async def hold(self) -> int:
        body = {"opportunity_id": self.args.opportunity_id, "reason": self.args.reason}
        _, hold = await self.api.call("POST", "/purge/holds", body)
        self.out.print(
            f"hold placed on {hold['opportunity_id']} by {hold['placed_by']}: "
            f"{escape(hold['reason'])}"
        )
        return OK

    async def unhold(self) -> int:
        await self.api.call("DELETE", f"/purge/holds/{self.args.opportunity_id}")
        self.out.print(f"hold on {self.args.opportunity_id} released")
        return OK

    async def holds(self) -> int:
        holds = await self.api.get("/purge/holds")
        if not holds:
            self.out.print("no deals on hold")
            return OK
        table = Table()
        for column in ("opportunity", "placed by", "placed at (UTC)", "reason"):
            table.add_column(column)
        for hold in holds:
            placed = _moment(hold["placed_at"])
            table.add_row(
                str(hold["opportunity_id"]),
                str(hold["placed_by"]),
                placed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if placed else "-",
                escape(str(hold["reason"])),
            )
        self.out.print(table)
        return OK

    async def policy(self) -> int:
        policy = await self.api.get("/purge/policy")
        if self.args.set:
            body = {k: v for k, v in policy.items() if k != "version"}
            for assignment in self.args.set:
                key, value = _assignment(assignment, body)
                body[key] = value
            _, policy = await self.api.call("PUT", "/purge/policy", body)
            self.out.print("policy changed:")
        self.out.print(_policy_table(policy))
        return OK


def _assignment(text: str, current: Mapping[str, Any]) -> tuple[str, Any]:
    """`key=value`, the value read as the type the policy has for that key."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set takes key=value, not {text!r}")
    if key not in current:
        raise UsageError(f"unknown policy field {key!r} (fields: {', '.join(sorted(current))})")
    raw = raw.strip()
    present = current[key]
    if isinstance(present, bool):
        lowered = raw.lower()
        if lowered in ("true", "yes", "on", "1"):
            return key, True
        if lowered in ("false", "no", "off", "0"):
            return key, False
        raise UsageError(f"{key} is true or false, not {raw!r}")
    if isinstance(present, int):
        try:
            return key, int(raw)
        except ValueError:
            raise UsageError(f"{key} is a whole number, not {raw!r}") from None
    return key, raw


# --- the command line -----------------------------------------------------------------


def _console(env: Mapping[str, str], *, stderr: bool) -> Console:
    """A terminal's width; written to a pipe or file, wide enough for the runs table."""
    console = Console(stderr=stderr)
    if console.is_terminal or env.get("COLUMNS"):
        return console
    return Console(stderr=stderr, width=160)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="dealflow-purge",
        description="Watch and steer the Dealflow purge agent through its HTTP API.",
        epilog=f"The token (roles operator or admin) comes from --token or ${TOKEN_VARIABLE}.",
    )
    main.add_argument(
        "--url", help=f"the purge service (default ${URL_VARIABLE}, else {DEFAULT_URL})"
    )
    main.add_argument("--token", help=f"bearer token (default ${TOKEN_VARIABLE})")
    main.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for each answer (10)"
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="command")
    commands.add_parser("status", help="paused or not, next run, last run, backlog, stuck deals")
    runs = commands.add_parser("runs", help="recent runs, newest first")
    runs.add_argument("--limit", type=int, default=20, help="how many (20)")
    for name, help_text in (
        ("dry-run", "list what a run would purge now; changes nothing"),
        ("run", "run the agent now"),
    ):
        command = commands.add_parser(name, help=help_text)
        if name == "run":
            command.add_argument(
                "--follow", "-f", action="store_true", help="show its progress until it ends"
            )
        command.add_argument(
            "--interval", type=float, default=0.5, help="seconds between looks (0.5)"
        )
    commands.add_parser("pause", help="stop scheduled and new runs")
    commands.add_parser("resume", help="start scheduling runs again")
    hold = commands.add_parser("hold", help="put a deal on legal hold: it is not purged")
    hold.add_argument("opportunity_id")
    hold.add_argument("--reason", default="legal hold", help='why ("legal hold")')
    unhold = commands.add_parser("unhold", help="release a deal's hold")
    unhold.add_argument("opportunity_id")
    commands.add_parser("holds", help="the deals on hold")
    policy = commands.add_parser("policy", help="show the policy, or change fields of it")
    policy.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="retention_days_won, retention_days_lost, batch_size, schedule or journal "
        "(repeat for several)",
    )
    return main


async def run(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    out: Console | None = None,
    err: Console | None = None,
    http: httpx.AsyncClient | None = None,
    sleep: Sleep = asyncio.sleep,
) -> int:
    """The CLI's whole work; answers the exit status. `http` replaces the client (tests)."""
    env = os.environ if env is None else env
    out = out or _console(env, stderr=False)
    err = err or _console(env, stderr=True)
    try:
        args = parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse has printed
        return int(stop.code or 0)
    token = args.token or env.get(TOKEN_VARIABLE)
    if not token:
        err.print(f"error: no token: pass --token or set {TOKEN_VARIABLE} (operator or admin)")
        return USAGE
    url = args.url or env.get(URL_VARIABLE) or DEFAULT_URL
    own = http is None
    client = http or httpx.AsyncClient(base_url=url, timeout=args.timeout)
    cli = Cli(PurgeApi(client, token), out, args, sleep)
    action = {
        "status": cli.status,
        "runs": cli.runs,
        "dry-run": cli.dry_run,
        "run": cli.run,
        "pause": cli.pause,
        "resume": cli.resume,
        "hold": cli.hold,
        "unhold": cli.unhold,
        "holds": cli.holds,
        "policy": cli.policy,
    }[args.command]
    try:
        return await action()
    except ApiError as error:
        err.print(
            f"[red]error:[/] {escape(error.title)}"
            + (f": {escape(error.detail)}" if error.detail else "")
        )
        for field in error.errors:
            if isinstance(field, Mapping):
                err.print(
                    f"  {escape(str(field.get('field')))}: {escape(str(field.get('message')))}"
                )
        return API_ERROR
    except UsageError as error:
        err.print(f"[red]error:[/] {escape(str(error))}")
        return USAGE
    finally:
        if own:
            await client.aclose()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        code = asyncio.run(run(argv))
    except KeyboardInterrupt:
        Console(stderr=True).print(
            "\nstopped watching; a run started goes on (dealflow-purge status shows it)"
        )
        code = INTERRUPTED
    sys.exit(code)


if __name__ == "__main__":
    main()
