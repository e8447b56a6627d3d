"""compare ping's path-MTU scenarios (issue 12) catch a wrong MTU read from the ICMP error: the
fault patched into a copy of handrolled/ (tests/test_compare.py's mechanism) turns the verdict
to FAIL naming the field; the unpatched copy agrees with the reference and the lab's promise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_compare import ROOT, Fault, patched_copy

SCENARIO = "-M do"  # both families' "ping -N -M do -s SIZE narrow (path MTU)"
FAULTS = [
    Fault(
        "a wrong MTU read from frag-needed (next-hop MTU - 8)",
        "ping.py",
        "return info & 0xFFFF",
        "return (info & 0xFFFF) - 8",
        "ping",
        "ping -4 -M do",
        "mtu in the ICMP error",
    ),
    Fault(
        "a wrong MTU read from Packet Too Big (the whole word shifted)",
        "ping.py",
        "return info if icmp_type == Icmp6Type.PACKET_TOO_BIG else None",
        "return info >> 1 if icmp_type == Icmp6Type.PACKET_TOO_BIG else None",
        "ping",
        "ping -6 -M do",
        "mtu in the ICMP error",
    ),
]


def _compare(copy: Path, only: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compare.cli", "compare", "ping", "--handrolled-path", str(copy),
         "--only", only, "--json", str(out), "--no-progress", "-v"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def _failed(out: Path) -> str:
    rows = json.loads(out.read_text())["rows"]
    return "\n".join(f"{r['check']}: {r['details']}" for r in rows if r["verdict"] != "ok")


def test_every_anchor_still_patches(tmp_path: Path) -> None:
    for i, fault in enumerate(FAULTS):
        patched_copy(tmp_path / str(i), fault)


@pytest.mark.lab
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_a_wrong_mtu_turns_the_verdict_to_fail(tmp_path: Path, fault: Fault) -> None:
    copy = patched_copy(tmp_path, fault)
    out = tmp_path / "report.json"
    proc = _compare(copy, fault.scenario, out)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    failed = _failed(out)
    assert fault.names in failed and "mtu" in failed.split(fault.names, 1)[1], failed


@pytest.mark.lab
def test_unpatched_copy_agrees_on_the_path_mtu(tmp_path: Path) -> None:
    root = tmp_path / "clean"
    shutil.copytree(ROOT / "handrolled", root / "handrolled",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    out = tmp_path / "report.json"
    proc = _compare(root, SCENARIO, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:] + _failed(out)
    rows = json.loads(out.read_text())["rows"]
    checks = [r["check"] for r in rows if "mtu in the ICMP error" in r["check"]]
    assert len(checks) == 2 and all("(1400)" in c or "(1280)" in c for c in checks), checks
