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


def _configured(results: Path, name: str, value: float, **config: object) -> Path:
    path = results / name
    path.write_text(json.dumps({"config": config, "median": {"cpu": value}}))
    return path


def test_the_newest_report_run_with_the_same_options_is_the_baseline(tmp_path: Path) -> None:
    _configured(tmp_path, "deals-1.json", 10.0, deals=600, half_load_rate=None)
    _configured(tmp_path, "deals-2.json", 30.0, deals=600, half_load_rate=5.0)
    current = _configured(tmp_path, "deals-3.json", 11.0, deals=600, half_load_rate=None)

    lines = compare_with_previous(tmp_path, current, "deals-*.json", {"cpu": "CPU"})

    assert lines == ["against deals-1.json:", "  CPU: 10.0 -> 11.0 (+10.0 %)"]


def test_an_option_an_older_report_does_not_record_counts_as_its_default(
    tmp_path: Path,
) -> None:
    _configured(tmp_path, "deals-1.json", 10.0, deals=600)
    current = _configured(tmp_path, "deals-2.json", 11.0, deals=600, half_load_rate=None)

    lines = compare_with_previous(tmp_path, current, "deals-*.json", {"cpu": "CPU"})

    assert lines == ["against deals-1.json:", "  CPU: 10.0 -> 11.0 (+10.0 %)"]


def test_with_no_report_of_the_same_options_the_newest_is_used_and_the_difference_said(
    tmp_path: Path,
) -> None:
    _configured(tmp_path, "deals-1.json", 10.0, deals=600, half_load_rate=5.0)
    current = _configured(tmp_path, "deals-2.json", 11.0, deals=600, half_load_rate=None)

    lines = compare_with_previous(tmp_path, current, "deals-*.json", {"cpu": "CPU"})

    assert lines == [
        "against deals-1.json:",
        "  (no earlier report ran with these options; that one differs in"
        " half_load_rate 5.0 -> None)",
        "  CPU: 10.0 -> 11.0 (+10.0 %)",
    ]
