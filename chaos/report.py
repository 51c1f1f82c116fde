"""The report: a text table on stdout, what went wrong under it, and a JSON file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos.invariants import listed
from chaos.session import Row

COLUMNS = (
    "fault",
    "deals",
    "events checked",
    "lost",
    "duplicated-and-deduped",
    "stuck",
    "violations",
    "recovery s",
)
RESULTS = Path(__file__).parent / "results"


def _cells(row: Row) -> list[str]:
    f = row.findings
    return [
        row.title,
        str(len(row.deals)),
        str(f.events_checked),
        str(len(f.lost)),
        str(f.duplicates),
        str(len(f.stuck)),
        str(len(f.violations)),
        "-" if row.recovery is None else f"{row.recovery:.1f}",
    ]


def table(rows: list[Row]) -> str:
    body = [list(COLUMNS), *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(body[0]), rule, *(line(cells) for cells in body[1:])])


def details(rows: list[Row]) -> str:
    """Per phase: what the fault did, how the deals went, and every finding (capped)."""
    out = []
    for row in rows:
        s = row.summary()
        out.append(
            f"\n## {row.fault}: {row.title}  ({row.seconds:.0f}s; deals won {s['won']}, "
            f"lost {s['lost']}, gave up {s['gave_up']}, HTTP retries {s['http_retries']})"
        )
        out += [f"  fault: {note}" for note in row.notes]
        failures = [f"deal {d.number}: {d.failure[:160]}" for d in row.deals if d.failure]
        if row.fault == "whole-run":
            failures = []  # listed under their phase already
        for label, items in (
            ("LOST", row.findings.lost),
            ("STUCK", row.findings.stuck),
            ("VIOLATION", row.findings.violations),
            ("note", row.findings.notes),
            ("deal gave up", failures),
        ):
            out += [
                f"  {label}: {item}" for item in listed(items, 5 if label == "deal gave up" else 12)
            ]
    return "\n".join(out)


READ_AGAIN = "skipped offsets"
GONE_PAST = "has no record at offset"


def offset_holes(log_dir: Path, mark: str) -> list[str]:
    """The consumer loops' warnings of holes in what they read (`ConsumerLoop`), from
    every service log of the run. READ_AGAIN: a read skipped offsets and the partition
    was read again from the first; a client or broker that skips records is worth seeing
    even when nothing was lost. GONE_PAST: the broker answered with the same hole twice
    and the loop went on; on our uncompacted topics that may be a lost event."""
    return [
        f"{path.name}: {line.strip()}"
        for path in sorted(log_dir.glob("*.log"))
        if path.name != "broker.log"
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if mark in line
    ]


def to_json(rows: list[Row], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "rows": [
            {
                "fault": row.fault,
                "title": row.title,
                "deals": len(row.deals),
                "events_checked": row.findings.events_checked,
                "lost": len(row.findings.lost),
                "duplicated_and_deduped": row.findings.duplicates,
                "stuck": len(row.findings.stuck),
                "violations": len(row.findings.violations),
                "recovery_seconds": None if row.recovery is None else round(row.recovery, 1),
                "phase_seconds": round(row.seconds, 1),
                "deal_summary": row.summary(),
                "fault_notes": row.notes,
                "lost_items": row.findings.lost,
                "stuck_items": row.findings.stuck,
                "violation_items": row.findings.violations,
                "notes": row.findings.notes,
                "deal_failures": [
                    {"deal": d.number, "opportunity": d.opportunity_id, "failure": d.failure}
                    for d in row.deals
                    if d.failure
                ],
            }
            for row in rows
        ],
    }


def write_json(report: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"chaos-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
