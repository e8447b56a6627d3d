"""The report: a tabulate table for the terminal, JSON for machines, pcaps for Wireshark."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path

from tabulate import tabulate

from compare.capture import write_pcap
from compare.scenario import Row, SideRun

CELL_WIDTH = 44


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cell(text: str) -> str:
    return "\n".join(textwrap.wrap(text, CELL_WIDTH)) or text


def table(rows: Iterable[Row]) -> str:
    body = [
        (r.scenario, _cell(r.check), _cell(r.handrolled), _cell(r.reference), r.verdict)
        for r in rows
    ]
    return tabulate(
        body, headers=("scenario", "check", "handrolled", "reference", "verdict"), tablefmt="simple"
    )


def failures(rows: Iterable[Row]) -> str:
    lines = []
    for r in rows:
        if not r.ok:
            lines.append(f"FAIL {r.scenario}: {r.check}")
            lines += [f"    {d}" for d in r.details] or ["    (no detail)"]
    return "\n".join(lines)


def allowed_notes(rows: Iterable[Row]) -> list[str]:
    """The allowed differences met in this run, each once, with its reason."""
    seen: dict[str, None] = {}
    for r in rows:
        for a in r.allowed:
            seen.setdefault(f"{a.layer}.{a.field}: {a.reason}", None)
    return list(seen)


def closing_line(rows: list[Row]) -> str:
    failed = sum(not r.ok for r in rows)
    return f"{len(rows) - failed} passed, {failed} failed"


def to_json(rows: list[Row], meta: dict) -> dict:
    return {
        **meta,
        "passed": sum(r.ok for r in rows),
        "failed": sum(not r.ok for r in rows),
        "rows": [
            {
                "scenario": r.scenario,
                "check": r.check,
                "handrolled": r.handrolled,
                "reference": r.reference,
                "verdict": r.verdict,
                "details": r.details,
                "allowed": [
                    {"layer": a.layer, "field": a.field, "reason": a.reason} for a in r.allowed
                ],
            }
            for r in rows
        ],
    }


def write_json(path: str | Path, rows: list[Row], meta: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(rows, meta), indent=2, default=str) + "\n")


def write_pcaps(
    directory: str | Path, scenario: str, runs: dict[str, SideRun], run_index: int = 0
) -> list[Path]:
    """One pcap per side per scenario: ``<dir>/<scenario>.<impl>.pcap``."""
    written = []
    suffix = f".run{run_index}" if run_index else ""
    for impl, run in runs.items():
        path = Path(directory) / f"{slug(scenario)}{suffix}.{impl}.pcap"
        write_pcap(path, run.frames)
        written.append(path)
    return written
