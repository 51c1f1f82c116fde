"""Which interpreter `.venv` is built on (tools/venv_python.py)."""

from __future__ import annotations

import sys

from tools.venv_python import Interpreter, choose, describe

PYENV = Interpreter(
    "/root/.pyenv/versions/3.11.7/bin/python3",
    (3, 11),
    "'--prefix=/root/.pyenv/versions/3.11.7' '--enable-shared'",
    "/root/.pyenv/versions/3.11.7",
)
DEBIAN = Interpreter("/usr/bin/python3", (3, 11), "'--enable-shared' '--prefix=/usr'", "/usr")
OFFICIAL_IMAGE = Interpreter(
    "/usr/local/bin/python3",
    (3, 11),
    "'--enable-optimizations' '--enable-shared' '--with-lto'",
    "/usr/local",
)


def test_an_unoptimised_interpreter_gives_way_to_the_distributions() -> None:
    assert choose(PYENV, [DEBIAN]) is DEBIAN


def test_an_optimised_interpreter_running_is_kept() -> None:
    assert choose(OFFICIAL_IMAGE, [DEBIAN]) is OFFICIAL_IMAGE
    assert choose(DEBIAN, [OFFICIAL_IMAGE]) is DEBIAN


def test_a_distributions_interpreter_too_old_for_the_project_is_not_taken() -> None:
    old = Interpreter("/usr/bin/python3", (3, 9), "", "/usr")
    assert choose(PYENV, [old]) is PYENV


def test_without_another_interpreter_the_running_one_is_taken() -> None:
    assert choose(PYENV, [None]) is PYENV
    assert choose(PYENV, []) is PYENV


def test_the_running_interpreter_describes_itself() -> None:
    found = describe(sys.executable)
    assert found is not None
    assert found.version == sys.version_info[:2]
    assert found.base_prefix == sys.base_prefix


def test_a_missing_interpreter_is_none() -> None:
    assert describe("/nonexistent/python3") is None
