"""ping -M do|want|dont (issue 12) beside iputils on the lab's narrow link.

r6 answers what does not fit the link to ``narrow`` with frag-needed (next-hop MTU, RFC 1191 §4)
or Packet Too Big (RFC 4443 §3.2, RFC 8201); ``lab.promises()["mtu"]`` says which MTUs.  The
expectations are iputils' own lines, run in the same namespace right after ours, and the lab's
promise; ``lab.forget_pmtu()`` drops the learnt path MTU between runs.
"""

from __future__ import annotations

import re
import sys

import pytest

from handrolled.errors import UsageError
from handrolled.requests import PingRequest

TIME = re.compile(r" time=[0-9.]+ ms")
STATS_TIME = re.compile(r", time \d+ms")


def _lines(text: str) -> list[str]:
    """Output lines without the times (they differ run to run)."""
    return [
        STATS_TIME.sub("", TIME.sub("", line))
        for line in text.splitlines()
        if line and not line.startswith("rtt ")
    ]


def _both(lab, argv: list[str], *, forget: bool = True):
    """(ours, iputils') completed processes for ``ping argv`` on the client."""
    if forget:
        lab.forget_pmtu()
    ours = lab.exec("client", [sys.executable, "-m", "handrolled.cli.ping", *argv])
    if forget:
        lab.forget_pmtu()
    theirs = lab.exec("client", ["ping", *argv])
    if forget:
        lab.forget_pmtu()
    return ours, theirs


def _small(lab, family: int) -> int:
    return int(lab.promises()["mtu"]["mtu6" if family == 6 else "mtu4"])


def test_bad_mode_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="pmtu_discovery 'probe'"):
        PingRequest("203.0.113.250", pmtu_discovery="probe")
    assert PingRequest("203.0.113.250", pmtu_discovery="do").pmtu_discovery == "do"


def test_cli_bad_mode_exits_2(capsys) -> None:
    from handrolled.cli.ping import main

    assert main(["-M", "sometimes", "127.0.0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ping: ") and err.count("\n") == 1 and "sometimes" in err


@pytest.mark.lab
@pytest.mark.parametrize("family,size", [(4, 1400), (6, 1280)])
def test_lab_do_reports_the_mtu_as_iputils(lab, family: int, size: int) -> None:
    narrow = lab.nodes["narrow"].addr(family)
    argv = [f"-{family}", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", str(size), narrow]
    ours, theirs = _both(lab, argv)
    said = [line for line in _lines(theirs.stdout) if line.startswith("From ")]
    assert said and said == [line for line in _lines(ours.stdout) if line.startswith("From ")]
    mtu = _small(lab, family)
    want = f"Packet too big: mtu={mtu}" if family == 6 else f"Frag needed and DF set (mtu = {mtu})"
    assert said[0].endswith(f"icmp_seq=1 {want}"), said
    assert _lines(ours.stdout)[-1:] == _lines(theirs.stdout)[-1:]  # the statistics line
    assert ours.returncode == theirs.returncode == 1


@pytest.mark.lab
@pytest.mark.parametrize("family,size", [(4, 1400), (6, 1280)])
def test_lab_do_after_the_kernel_learnt_the_mtu_is_a_local_error(
    lab, family: int, size: int
) -> None:
    narrow = lab.nodes["narrow"].addr(family)
    argv = [f"-{family}", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", str(size), narrow]
    lab.forget_pmtu()
    lab.exec("client", ["ping", *argv])  # r6's error teaches the client's kernel the MTU
    ours, theirs = _both(lab, argv, forget=False)
    lab.forget_pmtu()
    mtu = _small(lab, family)
    sep = ": " if family == 6 else "="  # iputils 20221126: ping6_common.c / ping.c
    assert theirs.stderr.strip() == f"ping: local error: message too long, mtu{sep}{mtu}"
    assert ours.stderr.strip() == theirs.stderr.strip()
    assert _lines(ours.stdout)[1:] == _lines(theirs.stdout)[1:], (ours.stdout, theirs.stdout)
    assert ours.returncode == theirs.returncode == 1


@pytest.mark.lab
def test_lab_dont_gets_through_fragmented(lab) -> None:
    narrow = lab.nodes["narrow"].addr(4)
    argv = ["-4", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-M", "dont", "-s", "1400", narrow]
    ours, theirs = _both(lab, argv)
    assert ours.returncode == theirs.returncode == 0, (ours.stdout, theirs.stdout)
    assert _lines(ours.stdout) == _lines(theirs.stdout)
    assert any(line.startswith("1408 bytes from") for line in _lines(ours.stdout))


@pytest.mark.lab
def test_lab_want_errs_once_then_fragments_locally(lab) -> None:
    narrow = lab.nodes["narrow"].addr(4)
    argv = ["-4", "-n", "-c", "2", "-i", "0.3", "-W", "1", "-M", "want", "-s", "1400", narrow]
    ours, theirs = _both(lab, argv)
    assert _lines(ours.stdout) == _lines(theirs.stdout), (ours.stdout, theirs.stdout)
    assert ours.returncode == theirs.returncode
    assert any("Frag needed and DF set (mtu = 1400)" in line for line in _lines(ours.stdout))
