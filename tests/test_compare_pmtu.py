"""compare ping's path-MTU scenarios (issue 12) catch a wrong MTU read from the ICMP error: the
fault patched into a copy of handrolled/ (tests/fault_injection.py) turns the verdict
to FAIL naming the field; the unpatched copy agrees with the reference and the lab's promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fault_injection import (
    Fault,
    clean_copy,
    cli_failures,
    compare_cli,
    failed_checks,
    patched_copy,
)

SCENARIO = "-M do"  # both families' "ping -N -M do -s SIZE narrow (path MTU)"
FAULTS = [
    Fault(
        "a wrong MTU read from frag-needed (next-hop MTU - 8)",
        "ping_rules.py",
        "return info & 0xFFFF",
        "return (info & 0xFFFF) - 8",
        "ping",
        "ping -4 -M do",
        "mtu in the ICMP error",
    ),
    Fault(
        "a wrong MTU read from Packet Too Big (the whole word shifted)",
        "ping_rules.py",
        "return info if icmp_type == Icmp6Type.PACKET_TOO_BIG else None",
        "return info >> 1 if icmp_type == Icmp6Type.PACKET_TOO_BIG else None",
        "ping",
        "ping -6 -M do",
        "mtu in the ICMP error",
    ),
]


def test_every_anchor_still_patches(tmp_path: Path) -> None:
    for i, fault in enumerate(FAULTS):
        patched_copy(tmp_path / str(i), fault)


@pytest.mark.lab
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_a_wrong_mtu_turns_the_verdict_to_fail(tmp_path: Path, fault: Fault) -> None:
    failed = cli_failures(tmp_path, fault)
    assert fault.names in failed and "mtu" in failed.split(fault.names, 1)[1], failed


@pytest.mark.lab
def test_unpatched_copy_agrees_on_the_path_mtu(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = compare_cli("ping", clean_copy(tmp_path), SCENARIO, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:] + failed_checks(out)
    rows = json.loads(out.read_text())["rows"]
    checks = [r["check"] for r in rows if "mtu in the ICMP error" in r["check"]]
    assert len(checks) == 2 and all("(1400)" in c or "(1280)" in c for c in checks), checks
