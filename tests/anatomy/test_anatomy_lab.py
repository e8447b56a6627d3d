"""`--lab`: packets captured live from one probe in a lab the command builds (and tears down).

The lab's truth says who answers: the routers r1..r6 at TTL 1..6 (r3 silent, RFC 1812 allows
a router not to send time exceeded), the target behind them.  Run these under the lab lock:
``flock /tmp/wiretwin-lab.lock .venv/bin/python -m pytest -m lab tests/anatomy``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from compare.anatomy.sources import read_pcap
from compare.lab import Lab

pytestmark = pytest.mark.lab
PLAN = Lab("plan").nodes  # the addresses a lab promises (its plan is pure)


def _cli(*argv: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "compare.cli", "anatomy", *argv],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _check(doc: dict) -> dict:
    pos = 0
    for f in sorted(doc["fields"], key=lambda f: f["bit_offset"]):
        assert f["bit_offset"] == pos
        pos += f["bit_length"]
    assert pos == len(bytes.fromhex(doc["packet"])) * 8
    assert not [f for f in doc["fields"] if f["agree"] is False]
    return {(f["layer"], f["name"]): f["value"] for f in doc["fields"]}


def test_time_exceeded_from_hop_4():
    values = _check(json.loads(_cli("time-exceeded", "--lab", "--hop", "4", "--json")))
    assert values["IPv4", "src"] == PLAN["r4"].addr4
    assert values["ICMP", "type"] == 11 and values["ICMP", "code"] == 0  # RFC 792 p.6
    assert values["IPv4 (quoted)", "ttl"] == 1  # as r4 received it
    assert values["IPv4 (quoted)", "dst"] == PLAN["target"].addr4


def test_echo_reply_v6_from_the_target():
    values = _check(json.loads(_cli("echo-reply", "-6", "--lab", "--json")))
    assert values["IPv6", "src"] == PLAN["target"].addr6
    assert values["ICMPv6", "type"] == 129  # RFC 4443 §4.2


def test_worksheet_from_the_lab(tmp_path):
    saved = tmp_path / "trace.pcap"
    text = _cli("--worksheet", "--lab", "--save-pcap", str(saved))
    questions, answers = text.split("## Answer key")
    assert f"Why does hop 1 ({PLAN['r1'].addr4}) answer with type 11" in questions
    assert f"Why does hop 6 ({PLAN['r6'].addr4}) answer with type 11" in questions
    assert "sent with TTL 6" in answers and "router 6 took it to 0" in answers
    assert "(TTL 3). Give a reason." in questions  # r3 stays silent
    assert "an echo-reply, not a time exceeded" in questions  # TTL 7 reaches the target
    assert any(p.ip for p in read_pcap(saved))
