"""traceroute's exit status beside traceroute 2.1 (Butskoy) in the lab's client.

traceroute.c's main() returns 0 once do_it() has run the trace, whatever it met: a destination
that answered, one that is never reached (a silent path cut off by -m) or a trace ending in
!H / !N annotations.  ex_error() and a failed CLIF_parse() exit 2 (bad options and values, an
unknown host: set_host() fails inside the parse); error() exits 1 after a system call the OS
refused (socket, bind, setsockopt).  Each case runs traceroute(8) and ours with the same
arguments; the expected status is the one traceroute(8) gives here.
"""

from __future__ import annotations

import sys

import pytest

OURS = [sys.executable, "-m", "handrolled.traceroute"]


def _both(lab, args: list[str]):
    ours = lab.exec("client", [*OURS, *args], timeout=90)
    theirs = lab.exec("client", ["traceroute", *args], timeout=90)
    return ours, theirs


def _last_marks(stdout: str) -> list[str]:
    return [t for t in stdout.splitlines()[-1].split() if t.startswith("!")]


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(
    ("node", "flags", "mark"),
    [
        ("hostunreach", [], "!H"),  # ICMP host unreachable / ICMPv6 address unreachable
        ("netunreach", [], "!N"),  # net unreachable / ICMPv6 no route
        ("blackhole", ["-m", "3", "-w", "0.5"], None),  # silent path, -m stops short
        ("blackhole", ["-I", "-m", "3", "-w", "0.5"], None),
        ("target", ["-m", "2"], None),  # reached nothing but routers
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_a_finished_trace_exits_0_reached_or_not(lab, family, node, flags, mark) -> None:
    if node == "blackhole":
        address = lab.blackhole6 if family == 6 else lab.blackhole4
    else:
        address = lab.nodes[node].addr(family)
    ours, theirs = _both(lab, [f"-{family}", "-n", "-q", "1", *flags, address])
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == theirs.returncode, (ours.stdout, ours.stderr)
    assert ours.stderr == theirs.stderr == ""
    if mark is not None:  # the trace really ended on the annotation, on both
        assert _last_marks(ours.stdout) == _last_marks(theirs.stdout) == [mark]
    else:
        assert len(ours.stdout.splitlines()) == len(theirs.stdout.splitlines())


@pytest.mark.lab
@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["nowhere.lab.test"], 2),  # unknown host: refused while parsing the command line
        (["-q", "0", "TARGET"], 2),  # ex_error("no more than 10 probes per hop")
        (["-f", "9", "-m", "3", "TARGET"], 2),  # ex_error("first hop out of range")
        (["-s", "203.0.113.250", "TARGET"], 1),  # error("bind"): in the lab range, held by no node
        (["-i", "nosuchdev0", "TARGET"], 1),  # error("setsockopt SO_BINDTODEVICE")
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_error_exits_as_traceroute8(lab, args: list[str], status: int) -> None:
    args = ["-4", "-n", *[lab.target.addr4 if a == "TARGET" else a for a in args]]
    ours, theirs = _both(lab, args)
    assert theirs.returncode == status, (theirs.stdout, theirs.stderr)
    assert ours.returncode == status, (ours.stdout, ours.stderr)
    assert ours.stderr.startswith("traceroute: ") and ours.stderr.count("\n") == 1
