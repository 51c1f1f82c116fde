"""Print the interpreter `.venv` is built on: `make` passes it to `uv sync --python`.

    python3 tools/venv_python.py

An optimised CPython if the machine has one, else the one running this. CPython built
with profile-guided optimisation and link-time optimisation runs our code in fewer
instructions, and fewer cycles each. The python:3.11-slim image our Dockerfile builds on
is such a build, and so is Debian's /usr/bin/python3. pyenv and asdf build CPython from
source without either unless asked, and as a shared library. On the development machine the deal's
requests ran 13.5 % more instructions on pyenv's 3.11.7 than on Debian's 3.11.2
(`make bench-instructions`, docs/performance.md, issue 13's twenty-ninth round): the
benchmarks measured an interpreter slower than the one production runs.

Run with the bare interpreter (`make`'s `$(PYTHON)`), before any dependency is installed:
standard library only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass

OLDEST = (3, 11)
"""The project's `requires-python`."""
DISTRIBUTION = "/usr/bin/python3"
"""Where a Linux distribution installs its CPython."""

_DESCRIBE = (
    "import json, sys, sysconfig; print(json.dumps({"
    "'version': list(sys.version_info[:2]), "
    "'config': sysconfig.get_config_var('CONFIG_ARGS') or '', "
    "'prefix': sys.base_prefix}))"
)


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: tuple[int, int]
    config_args: str
    base_prefix: str

    @property
    def optimised(self) -> bool:
        """Built with PGO and LTO, as far as the interpreter tells: `--enable-optimizations`
        (python.org's builds, the official images, python-build-standalone), or a
        distribution's build, installed under /usr. Debian's says so only in its
        changelog ("Enable LTO/PGO builds"): it keeps the flags out of `CONFIG_ARGS`."""
        return "--enable-optimizations" in self.config_args or self.base_prefix == "/usr"


def describe(path: str) -> Interpreter | None:
    """What `path` is, or None if it does not run."""
    try:
        answer = subprocess.run(
            [path, "-I", "-c", _DESCRIBE], capture_output=True, text=True, timeout=30, check=True
        )
        found = json.loads(answer.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    major, minor = found["version"]
    return Interpreter(path, (major, minor), found["config"], found["prefix"])


def choose(running: Interpreter, others: Iterable[Interpreter | None]) -> Interpreter:
    """The running interpreter if it is optimised, else the first optimised one of
    `others` recent enough for the project, else the running one."""
    if running.optimised:
        return running
    for other in others:
        if other is not None and other.optimised and other.version >= OLDEST:
            return other
    return running


def main() -> None:
    running = describe(sys.executable)
    if running is None:  # pragma: no cover - it is running this
        print(sys.executable)
        return
    print(choose(running, [describe(DISTRIBUTION)]).path)


if __name__ == "__main__":
    main()
