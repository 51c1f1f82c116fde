"""How a benchmark's report is compared with the one before it (bench/measure.py)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.measure import compare_with_previous


def _report(results: Path, name: str, python: str, value: float, *, nested: bool) -> Path:
    path = results / name
    ran = {"machine": {"python": python}} if nested else {"python": python}
    path.write_text(json.dumps({**ran, "median": {"cpu": value}}))
    return path


def test_a_change_of_interpreter_is_said_beside_the_figures(tmp_path: Path) -> None:
    _report(tmp_path, "deals-1.json", "3.11.7", 10.0, nested=True)
    current = _report(tmp_path, "deals-2.json", "3.11.2", 9.0, nested=True)

    lines = compare_with_previous(tmp_path, current, "deals-*.json", {"cpu": "CPU"})

    assert lines == [
        "against deals-1.json:",
        "  (that report ran on Python 3.11.7, this one on 3.11.2)",
        "  CPU: 10.0 -> 9.0 (-10.0 %)",
    ]


def test_the_same_interpreter_adds_nothing(tmp_path: Path) -> None:
    _report(tmp_path, "instructions-1.json", "3.11.2", 100, nested=False)
    current = _report(tmp_path, "instructions-2.json", "3.11.2", 110, nested=False)

    lines = compare_with_previous(tmp_path, current, "instructions-*.json", {"cpu": "CPU"})

    assert lines == ["against instructions-1.json:", "  CPU: 100 -> 110 (+10.0 %)"]
