"""Fault injection, shared by the compare tests: copy handrolled/ to a temporary directory, patch
one thing in the copy (the bugs people really write) and run the comparison with the copy as
the hand-rolled side.  A fault must turn the verdict to FAIL and the report must name it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Fault:
    name: str
    file: str
    old: str
    new: str
    kind: str  # ping | traceroute | smtp | paths
    scenario: str  # substring of the scenario name to run
    names: str  # what the failing rows must mention
    more: tuple[tuple[str, str], ...] = ()  # further (old, new) patches of the same file


def _copy(root: Path) -> Path:
    shutil.copytree(
        ROOT / "handrolled", root / "handrolled", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def clean_copy(tmp_path: Path) -> Path:
    """An unpatched copy of handrolled/ (the injection path itself must be innocent)."""
    return _copy(tmp_path / "clean")


def patched_copy(tmp_path: Path, fault: Fault) -> Path:
    """A copy of handrolled/ with ``fault`` patched into it."""
    root = _copy(tmp_path / "patched")
    target = root / "handrolled" / fault.file
    target.write_text(patched_source(target.read_text(), fault))
    return root


def patched_source(source: str, fault: Fault) -> str:
    for old, new in ((fault.old, fault.new), *fault.more):
        assert source.count(old) == 1, f"the fault's anchor moved: {old!r} in {fault.file}"
        source = source.replace(old, new)
    return source


def compare_cli(kind: str, copy: Path, only: str, out: Path) -> subprocess.CompletedProcess:
    """``wiretwin compare KIND`` with ``copy`` as the hand-rolled side, the report as JSON."""
    return subprocess.run(
        [sys.executable, "-m", "compare.cli", "compare", kind, "--handrolled-path", str(copy),
         "--only", only, "--json", str(out), "--no-progress", "-v"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def failed_checks(out: Path) -> str:
    """Each failing row of a JSON report: its check and its details."""
    rows = json.loads(out.read_text())["rows"]
    return "\n".join(f"{r['check']}: {r['details']}" for r in rows if r["verdict"] != "ok")


def cli_failures(tmp_path: Path, fault: Fault) -> str:
    """Run ``fault.scenario`` with ``fault`` patched in; the compare must exit 1 (a FAIL), and
    the failing checks are returned for the caller to look for what it must name."""
    out = tmp_path / "report.json"
    proc = compare_cli(fault.kind, patched_copy(tmp_path, fault), fault.scenario, out)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    return failed_checks(out)
