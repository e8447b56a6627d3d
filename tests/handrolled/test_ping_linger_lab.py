"""ping -W as iputils 20221126 means it, beside iputils ping in the lab's client.

iputils' -W is its linger time (ping.c: ``rts.lingertime``, default MAXWAIT 10 s), not a wait
per probe.  A reply counts whenever it comes before ping ends; a -c run without -w ends once
every probe is answered or, from its last probe on, after __schedule_exit()'s wait (ping_common.c):
twice the longest RTT so far, at least the interval, if any reply came, else -W; a zero wait
arms no timer, so nothing but the answers or Ctrl-C ends it (man ping: "0 means infinite
timeout").  With -w the deadline alone bounds the run.

The lab's ``faulty`` node holds the reply to seq 1 until the one to seq 2 has gone and drops the
request with seq 6 (compare/lab/plan.py FAULTY_RULES); the blackhole never answers.  Each test
runs iputils and ours with the same arguments and checks both against what iputils does: the
counts and exit codes equal, the elapsed time within iputils' rule, with margins wide enough for
Python's start-up and a loaded 2-core machine (never a tight wall-clock check).  The -c runs
without -w are also run through ``wiretwin ping --impl reference``: -W travels in the request
(``PingRequest.linger``), so the scapy engine must keep the same end-of-run rule.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from ping_cli_shared import OURS, counts, shape_of

SLACK_S = 1.5  # start-up (ip netns exec, Python's imports) and scheduling on a loaded machine
REFERENCE = [sys.executable, "-m", "compare.cli", "ping", "--impl", "reference"]
IMPLS = {"handrolled": OURS, "reference": REFERENCE}
# the scapy engine imports scapy (about 0.5 s unloaded) before its first probe
EXTRA_SLACK_S = {"handrolled": 0.0, "reference": 1.0}


def _timed(lab, argv: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = lab.exec("client", argv, timeout=60)
    return proc, time.monotonic() - started


def _both(lab, args: list[str], impl: str = "handrolled"):
    return _timed(lab, [*IMPLS[impl], *args]), _timed(lab, ["ping", *args])


def _max_rtt_s(out: str) -> float:
    return max(float(t) for t in re.findall(r"time=([\d.]+) ms", out)) / 1000


@pytest.mark.lab
@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("family", [4, 6])
def test_a_lost_last_reply_waits_two_rtts_not_the_linger_time(lab, family: int, impl: str) -> None:
    # faulty drops seq 6: replies came before it was sent, so ping waits max(2 * tmax, -i)
    # after it (tmax: seq 1's held reply, about one interval), not -W 4.
    args = [f"-{family}", "-n", "-c", "6", "-i", "0.2", "-W", "4", lab.nodes["faulty"].addr(family)]
    (ours, t_ours), (theirs, t_theirs) = _both(lab, args, impl)
    assert ours.returncode == theirs.returncode == 0, (ours.stdout, theirs.stdout, ours.stderr)
    sent_o, recv_o = counts(ours.stdout)
    sent_t, recv_t = counts(theirs.stdout)
    assert sent_o == sent_t == 6
    # seq 5's bad checksum: iputils' ICMP datagram socket never sees it (the kernel drops it);
    # our raw IPv4 socket does and counts it "+1 corrupted", not received
    assert recv_o == recv_t == 4, (ours.stdout, theirs.stdout)
    assert " +1 duplicates" in ours.stdout and " +1 duplicates" in theirs.stdout
    mine = SLACK_S + EXTRA_SLACK_S[impl]
    runs = ((ours.stdout, t_ours, mine), (theirs.stdout, t_theirs, SLACK_S))
    for out, elapsed, slack in runs:
        rule = 5 * 0.2 + max(2 * _max_rtt_s(out), 0.2)  # last send, then __schedule_exit()
        assert rule - 0.05 <= elapsed <= rule + slack, (elapsed, rule, out)
        assert elapsed < 5 * 0.2 + 4, elapsed  # not the per-probe -W wait


@pytest.mark.lab
@pytest.mark.parametrize("impl", list(IMPLS))
def test_a_reply_later_than_w_still_counts_and_prints_as_iputils(lab, impl: str) -> None:
    # -c 2 -i 1 -W 0.5: seq 1's reply is held until seq 2's has gone, about 1 s after seq 1
    # left, twice -W; iputils prints and counts it (and -O reported it missing at seq 2).
    args = ["-4", "-n", "-O", "-c", "2", "-i", "1", "-W", "0.5", lab.nodes["faulty"].addr4]
    (ours, t_ours), (theirs, t_theirs) = _both(lab, args, impl)
    assert ours.returncode == theirs.returncode == 0, (ours.stdout, theirs.stdout)
    assert counts(ours.stdout) == counts(theirs.stdout) == (2, 2)
    assert shape_of(ours.stdout) == shape_of(theirs.stdout), (ours.stdout, theirs.stdout)
    assert "no answer yet for icmp_seq=1" in ours.stdout
    late = re.search(r"icmp_seq=1 ttl=\d+ time=([\d.]+) ms", ours.stdout)
    assert late and float(late.group(1)) > 500, ours.stdout
    # ends with the second answer, before 1 s + -W
    for elapsed, slack in ((t_ours, SLACK_S + EXTRA_SLACK_S[impl]), (t_theirs, SLACK_S)):
        assert 1.0 <= elapsed <= 1.0 + 0.5 + slack, elapsed


@pytest.mark.lab
@pytest.mark.parametrize("impl", list(IMPLS))
def test_a_silent_target_waits_the_linger_time_after_the_last_probe(lab, impl: str) -> None:
    args = ["-4", "-n", "-c", "3", "-i", "0.2", "-W", "1.5", lab.blackhole4]
    (ours, t_ours), (theirs, t_theirs) = _both(lab, args, impl)
    assert ours.returncode == theirs.returncode == 1
    assert counts(ours.stdout) == counts(theirs.stdout) == (3, 0)
    assert shape_of(ours.stdout) == shape_of(theirs.stdout)
    rule = 2 * 0.2 + 1.5
    for elapsed, slack in ((t_ours, SLACK_S + EXTRA_SLACK_S[impl]), (t_theirs, SLACK_S)):
        assert rule - 0.05 <= elapsed <= rule + slack, elapsed


@pytest.mark.lab
@pytest.mark.parametrize(
    ("node", "args", "sent", "received", "status", "seconds"),
    [
        # the deadline bounds the run; -W shorter than the held reply's wait changes nothing:
        # seq 1's late reply is the second answer, so seq 3 is never sent
        ("faulty", ["-c", "2", "-w", "3", "-W", "0.1", "-i", "1"], 2, 2, 0, 1.0),
        ("blackhole", ["-c", "2", "-w", "2", "-W", "0.2", "-i", "0.5"], 4, 0, 1, 2.0),
    ],
    ids=["faulty", "blackhole"],
)
def test_with_a_deadline_w_changes_nothing(lab, node, args, sent, received, status, seconds):
    address = lab.blackhole4 if node == "blackhole" else lab.nodes[node].addr4
    (ours, t_ours), (theirs, t_theirs) = _both(lab, ["-4", "-n", *args, address])
    assert ours.returncode == theirs.returncode == status, (ours.stdout, theirs.stdout)
    assert counts(ours.stdout) == counts(theirs.stdout) == (sent, received)
    for elapsed in (t_ours, t_theirs):
        assert seconds - 0.05 <= elapsed <= seconds + SLACK_S, elapsed


def _interrupted_after(lab, argv: list[str], seconds: float) -> tuple[bool, int, str]:
    """Run ``argv`` in the client; whether it was still running ``seconds`` later; then Ctrl-C:
    its exit status and output."""
    proc = lab.popen(
        "client",
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        time.sleep(seconds)
        running = proc.poll() is None
        proc.send_signal(signal.SIGINT)  # ip netns exec has exec'd the program: its pid
        out, _err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    return running, proc.returncode, out


@pytest.mark.lab
@pytest.mark.parametrize(
    ("node", "args", "sent", "received", "status"),
    [
        # -W 0 and nothing came back: no timer, ping waits for the answer
        ("blackhole", ["-c", "1", "-W", "0"], 1, 0, 1),
        # replies came, but with -i 0 and no timestamp (-s 8) twice tmax and the interval are
        # both 0: no timer either, and seq 6 never comes back (root only: -i 0)
        ("faulty", ["-c", "6", "-i", "0", "-s", "8"], 6, 5, 0),
    ],
    ids=["W0-blackhole", "zero-wait-faulty"],
)
def test_a_zero_wait_arms_no_timer_as_iputils(lab, node, args, sent, received, status):
    address = lab.blackhole4 if node == "blackhole" else lab.nodes[node].addr4
    results = {}
    for tool, prog in (("ours", OURS), ("iputils", ["ping"])):
        running, rc, out = _interrupted_after(lab, [*prog, "-4", "-n", *args, address], 3.0)
        assert running, (tool, out)  # still waiting after 3 s
        assert rc == status and counts(out) == (sent, received), (tool, rc, out)
        results[tool] = shape_of(out)
    assert results["ours"] == results["iputils"]
