"""docs/api.md runs as a test: every request of the walkthrough, against real services.

The walkthrough assumes a fresh system (`make run`): here every service runs as its own
process on a broker and database schemas of their own, so no other test's deals,
products or orders show in its lists. Each ```bash block runs, in order, in one bash
session (variables carry over, as in a reader's terminal), in a folder where
`.venv/bin/dealflow-token` and `data/secrets/dealflow_jwt_secret` are what `make run`
leaves; `localhost:8001`... name the services' ports here.

The block after a request is its documented answer, compared with the real one: the
same status line and headers shown, the same JSON members and values, except what
differs on every run: ids (the first time the doc shows an id, the real one stands for
it from then on, in later requests too), times, correlation ids, and cursors and links
(opaque; the real one stands for the documented one). `…` marks what the doc trims. A
request shown without an answer must not answer with a problem.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dealflow_common.runtime.broker import EmbeddedBroker, free_port
from dealflow_common.runtime.processes import installed_services
from dealflow_common.testing import new_schema_name

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "api.md"
PORTS = {
    "8001": "opportunity",
    "8002": "quote",
    "8003": "order",
    "8004": "sequence",
    "8005": "purge",
}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MOMENT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
# Members whose values are opaque and new on every run: the real one stands for the
# documented one from then on.
OPAQUE = {"next_cursor", "url"}
IGNORED = {"correlation_id"}
DONE = "__doc_block_done__"


@dataclass
class Step:
    line: int
    command: str
    answer: str | None
    answer_lang: str


def steps(text: str) -> list[Step]:
    """The walkthrough's requests with the answers shown after them."""
    blocks = [
        (text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)
    ]
    found: list[Step] = []
    for i, (line, lang, body) in enumerate(blocks):
        if lang != "bash" or body.strip() == "make run":
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        answered = following is not None and following[1] != "bash"
        found.append(
            Step(
                line,
                body,
                following[2] if answered and following else None,
                following[1] if answered and following else "",
            )
        )
    return found


@dataclass
class Learned:
    """What the doc shows that differs on every run, and what stands for it here."""

    values: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def ports_in(self, text: str, *, bare: bool = False) -> str:
        """The services' ports here for the doc's; `bare`: also a port alone (a loop's)."""
        text = re.sub(
            r"(?:localhost|127\.0\.0\.1):(800[1-5])\b",
            lambda m: f"127.0.0.1:{self.ports[PORTS[m.group(1)]]}",
            text,
        )
        if bare:
            text = re.sub(r"\b(800[1-5])\b", lambda m: str(self.ports[PORTS[m.group(1)]]), text)
        return text

    def apply(self, text: str) -> str:
        for documented, real in self.values.items():
            text = text.replace(documented, real)
        return self.ports_in(text, bare=True)

    def same(self, documented: str, real: str, where: str) -> None:
        known = self.values.setdefault(documented, real)
        assert known == real, f"{where}: {real} where the doc's {documented} was {known}"


def _loose_json(text: str) -> Any:
    """JSON as the doc shows it: `…` outside strings marks trimmed members."""
    cleaned = re.sub(r"…(?!\")", "", text)
    cleaned = re.sub(r",\s*([}\]])", r"\1", cleaned)
    cleaned = re.sub(r",\s*,", ",", cleaned)
    return json.loads(cleaned)


def _match_text(documented: str, real: str, learned: Learned, where: str) -> None:
    documented = learned.ports_in(documented)
    if "…" in documented:
        prefix = documented.split("…")[0]
        if "eyJ" in prefix:  # a signed token: its payload differs on every run
            prefix = prefix.split(".")[0]
        assert learned.apply(real).startswith(learned.apply(prefix)) or real.startswith(
            learned.apply(prefix)
        ), f"{where}: {real!r} does not start like {prefix!r}"
        return
    ids = UUID.findall(documented)
    if not ids:
        assert real == documented, f"{where}: {real!r}, the doc says {documented!r}"
        return
    parts = UUID.split(documented)
    pattern = re.escape(parts[0]) + "".join(
        "(" + UUID.pattern + ")" + re.escape(rest) for rest in parts[1:]
    )
    found = re.fullmatch(pattern, real)
    assert found, f"{where}: {real!r}, the doc says {documented!r}"
    for doc_id, real_id in zip(ids, found.groups(), strict=True):
        learned.same(doc_id, real_id, where)


def match(documented: Any, real: Any, learned: Learned, where: str, trimmed: bool) -> None:
    if isinstance(documented, dict):
        assert isinstance(real, dict), f"{where}: {real!r} is not an object"
        if not trimmed:
            extra = set(real) - set(documented)
            assert not extra, f"{where}: members the doc does not show: {sorted(extra)}"
        for key, value in documented.items():
            assert key in real, f"{where}: no {key!r} in {real!r}"
            if key in IGNORED:
                continue
            if key in OPAQUE and isinstance(value, str) and "…" not in value:
                assert isinstance(real[key], str), f"{where}.{key}: {real[key]!r}"
                learned.same(value, real[key], f"{where}.{key}")
                continue
            match(value, real[key], learned, f"{where}.{key}", trimmed)
    elif isinstance(documented, list):
        assert isinstance(real, list), f"{where}: {real!r} is not a list"
        assert len(real) == len(documented), (
            f"{where}: {len(real)} items, the doc shows {len(documented)}: {real!r}"
        )
        for i, (d, r) in enumerate(zip(documented, real, strict=True)):
            match(d, r, learned, f"{where}[{i}]", trimmed)
    elif isinstance(documented, str) and MOMENT.match(documented):
        assert isinstance(real, str), f"{where}: {real!r} is not a moment"
        datetime.fromisoformat(real)
    elif isinstance(documented, str):
        assert isinstance(real, str), f"{where}: {real!r}, the doc says {documented!r}"
        _match_text(documented, real, learned, where)
    else:
        assert real == documented, f"{where}: {real!r}, the doc says {documented!r}"


def _json_lines(text: str) -> list[Any] | None:
    try:
        return [_loose_json(line) for line in text.splitlines() if line.strip()]
    except ValueError:
        return None


def compare(step: Step, output: str, learned: Learned) -> None:
    where = f"docs/api.md:{step.line}"
    documented = step.answer or ""
    trimmed = "…" in documented
    if documented.startswith("HTTP/"):
        head, _, body = output.replace("\r\n", "\n").partition("\n\n")
        doc_head, _, doc_body = documented.partition("\n\n")
        real_lines = head.splitlines()
        doc_lines = doc_head.splitlines()
        assert real_lines[0] == doc_lines[0], (
            f"{where}: {real_lines[0]!r}, the doc says {doc_lines[0]!r}"
        )
        headers = {n.lower(): v.strip() for n, _, v in (h.partition(":") for h in real_lines[1:])}
        for shown in doc_lines[1:]:
            name, _, value = shown.partition(":")
            assert name.lower() in headers, f"{where}: no header {name}"
            if name.lower() not in ("x-correlation-id", "x-request-id", "date", "server"):
                _match_text(value.strip(), headers[name.lower()], learned, f"{where} {name}")
        if doc_body.strip():
            match(_loose_json(doc_body), json.loads(body), learned, where, trimmed)
        return
    try:
        whole = _loose_json(documented)
    except ValueError:
        whole = None
    if whole is not None and "\n{" not in documented.strip():
        match(whole, json.loads(output), learned, where, trimmed)
        return
    doc_lines = [line for line in documented.splitlines() if line.strip()]
    real_lines = [line for line in output.splitlines() if line.strip()]
    assert len(real_lines) == len(doc_lines), (
        f"{where}: answered\n{output}\nthe doc shows\n{documented}"
    )
    for i, (d, r) in enumerate(zip(doc_lines, real_lines, strict=True)):
        try:
            doc_value = _loose_json(d)
        except ValueError:
            _match_text(d, r.strip(), learned, f"{where} line {i + 1}")
            continue
        match(doc_value, json.loads(r), learned, f"{where} line {i + 1}", "…" in d)


def no_problem_in(step: Step, output: str) -> None:
    for line in output.splitlines():
        assert "urn:dealflow:problem" not in line, f"docs/api.md:{step.line}: {line}"


class Shell:
    """One bash session, as a reader's terminal: variables carry over between blocks."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def run(self, command: str, timeout: float = 120) -> str:
        assert self.process.stdin
        assert self.process.stdout
        self.process.stdin.write(f"{command}\nprintf '\\n{DONE}\\n'\n".encode())
        await self.process.stdin.drain()
        lines: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.process.stdout.readline()).decode()
                assert line, "the shell ended"
                if line.rstrip("\n") == DONE:
                    break
                lines.append(line)
        return "".join(lines).rstrip("\n")


@pytest.fixture(scope="module")
async def fresh_system(
    stack: Any, schemas: list[str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, int]]:
    """Every service on a broker and schemas of its own: a system as `make run` starts it."""
    broker = EmbeddedBroker("127.0.0.1", free_port())
    broker.start()
    processes = []
    try:
        for name in installed_services():
            schema = new_schema_name(f"doc{name}")
            schemas.append(schema)
            processes.append(
                stack.service_process(name, schema=schema, bootstrap=broker.bootstrap_servers)
            )
        for process in processes:
            await process.start()
        for process in processes:
            await process.wait_ready(timeout=90)
        yield {p.name: p.port for p in processes}
    finally:
        for process in processes:
            await process.stop()
        broker.stop()


@pytest.fixture
async def shell(tmp_path: Path, jwt_secret: str) -> AsyncIterator[Shell]:
    """bash in a folder laid out as the repository after `make run`."""
    (tmp_path / "data" / "secrets").mkdir(parents=True)
    (tmp_path / "data" / "secrets" / "dealflow_jwt_secret").write_text(jwt_secret)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    tool = shutil.which("dealflow-token", path=str(Path(sys.executable).parent))
    assert tool, "dealflow-token is installed with libs/common"
    (tmp_path / ".venv" / "bin" / "dealflow-token").symlink_to(tool)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "--noprofile",
        "--norc",
        cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    try:
        yield Shell(process)
    finally:
        process.kill()
        await process.wait()


def test_the_walkthrough_has_requests_with_answers() -> None:
    found = steps(DOC.read_text())
    assert len(found) > 30
    assert sum(s.answer is not None for s in found) > 25


async def test_every_request_of_the_walkthrough_answers_as_documented(
    fresh_system: dict[str, int], shell: Shell
) -> None:
    learned = Learned(ports=fresh_system)
    drifted: list[str] = []
    for step in steps(DOC.read_text()):
        output = await shell.run(learned.apply(step.command))
        try:
            if step.answer is None:
                no_problem_in(step, output)
            else:
                compare(step, output, learned)
        except (AssertionError, ValueError) as error:
            # Go on: one run shows every place where the doc and the system differ.
            drifted.append(f"{error}\n--- answered:\n{output[:2000]}")
    assert not drifted, "\n\n".join(drifted)
