"""``python -m handrolled.ping`` against iputils ping 20221126, flag by flag, on the same path.

Each test runs our command line and iputils ``ping`` with the same arguments (in the lab's
client, or in a private network namespace of their own for loopback-only cases) and checks
what a user compares: the lines with the numbers taken out, the counts, the exit codes, and,
from a capture of the client's interface (compare.capture), the TOS and payload bytes each put
on the wire.  Expectations come from iputils run the same way, never from our own code.

Private namespaces (``unshare --net``) hold what the lab does not offer: a scripted responder
(a raw socket answering with a duplicate, a bad checksum, a wrong payload byte, a reply from
another address) and Ctrl-C sent to a ping that runs without ``-c``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from handrolled.cli import ping as cli
from handrolled.ping import run_ping

OURS = [sys.executable, "-m", "handrolled.ping"]
UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
STATS = re.compile(r"^(\d+) packets transmitted, (\d+) received", re.M)
RTT = re.compile(r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms", re.M)
HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


def _shape(text: str) -> list[str]:
    """Lines with what varies from run to run (times, RTTs, epoch stamps) taken out."""
    text = re.sub(r"time=[\d.]+ ms", "time=T ms", text)
    text = re.sub(r"\[\d+\.\d{6}\] ", "[EPOCH] ", text)
    text = re.sub(r"time \d+ms", "time Tms", text)
    text = re.sub(r"= [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms", "= R ms", text)
    text = re.sub(r"ipg/ewma [\d.]+/[\d.]+ ms", "ipg/ewma R ms", text)
    text = re.sub(r"pipe \d+", "pipe N", text)  # how many were in flight: timing
    return text.splitlines()


def _counts(text: str) -> tuple[int, int]:
    m = STATS.search(text)
    assert m, text
    return int(m.group(1)), int(m.group(2))


# ---- private namespaces: a scripted responder, Ctrl-C --------------------------------------
def _private(shell: str) -> list[str]:
    """argv running ``shell`` in a fresh network namespace with lo up (nothing else there)."""
    return ["unshare", "--net", "sh", "-c", f"ip link set lo up; {shell}"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupted(shell: str, after: float) -> tuple[int, str, str]:
    """Run ``shell`` in a private namespace, Ctrl-C it ``after`` s: (exit status, out, err)."""
    proc = subprocess.Popen(
        _private(shell),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        time.sleep(after)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    return proc.returncode, out, err


@pytest.mark.root
@pytest.mark.parametrize(
    ("answers", "extra", "status"),
    [(True, "", 0), (False, "", 1), (True, "-c 50 -w 30 ", 1)],
    ids=["replies", "silent", "fewer-than-c-by-deadline"],
)
@pytest.mark.parametrize("tool", ["ours", "iputils"])
def test_without_count_runs_until_ctrl_c(tool: str, answers: bool, extra: str, status: int):
    # iputils without -c pings until interrupted; SIGINT prints the statistics and exits by
    # finish()'s rule: 0 with replies, 1 without, and 1 with -w when fewer than -c came back.
    ping = " ".join(OURS) if tool == "ours" else "ping"
    silence = "" if answers else "echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all; "
    # 1.7 s: past the 4 probes the old ping stopped at (iputils buffers a pipe)
    rc, out, err = _interrupted(f"{silence}cd {ROOT}; exec {ping} -n {extra}-i 0.2 127.0.0.1", 1.7)
    assert "Traceback" not in err and err == "", err
    sent, received = _counts(out)
    assert sent >= 6, out
    shape = _shape(out)
    assert shape[0] == "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data."
    assert "--- 127.0.0.1 ping statistics ---" in shape
    assert rc == status
    if answers:
        assert sent - 1 <= received <= sent
        assert RTT.search(out)
        assert shape[-1] == "rtt min/avg/max/mdev = R ms"
    else:
        assert received == 0 and "100% packet loss" in out and not RTT.search(out)
        assert shape[-1] == ""  # finish() ends with an empty figures line


@pytest.mark.root
def test_json_after_ctrl_c_is_the_result_so_far() -> None:
    status, out, err = _interrupted(
        f"cd {ROOT}; exec {' '.join(OURS)} --json -i 0.1 127.0.0.1", 1.2
    )
    assert status == 0 and err == ""
    doc = json.loads(out)
    assert doc["target"] == "127.0.0.1" and doc["address"] == "127.0.0.1"
    assert len(doc["probes"]) >= 5 and doc["summary"]["received"] >= 4
    seqs = [p["seq"] for p in doc["probes"]]
    assert seqs == list(range(1, len(seqs) + 1))
    for p in doc["probes"]:
        sent = bytes.fromhex(p["sent"])  # the ICMP message, bytes as hex
        assert sent[0] == 8 and int.from_bytes(sent[6:8], "big") == p["seq"]
        assert sent[24:] == bytes(range(16, 56))  # after the 8-byte header and the timeval


def _responder(sock: socket.socket, other: socket.socket, plan: dict, stop: threading.Event):
    """Answer echo requests on loopback as ``plan[seq]`` says (default: a plain reply)."""
    from handrolled.icmp import EchoMessage, decode_icmp, encode_echo_reply
    from handrolled.ip import decode_ipv4

    sock.settimeout(0.05)
    while not stop.is_set():
        try:
            datagram, _ = sock.recvfrom(65535)
        except TimeoutError:
            continue
        _ip, icmp = decode_ipv4(datagram)
        msg = decode_icmp(icmp)
        if not isinstance(msg, EchoMessage) or msg.is_reply:
            continue
        how = plan.get(str(msg.seq), "ok")
        reply = encode_echo_reply(msg.ident, msg.seq, msg.payload)
        if how == "badsum":
            reply = reply[:2] + bytes([reply[2] ^ 0x01]) + reply[3:]
        elif how == "wrongdata":
            data = bytearray(msg.payload)
            data[21] ^= 0xFF  # past iputils' timestamp area (octets 0-15)
            reply = encode_echo_reply(msg.ident, msg.seq, bytes(data))
        if how == "none":
            continue
        out = other if how == "elsewhere" else sock
        for _ in range(2 if how == "dup" else 1):
            out.sendto(reply, ("127.0.0.1", 0))


def _serve(plan: dict, argv: list[str]) -> dict:
    """In this (private) namespace: the kernel silent, the responder on, run ``argv``."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with open("/proc/sys/net/ipv4/icmp_echo_ignore_all", "w") as fh:
        fh.write("1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    other = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    other.bind(("127.0.0.2", 0))  # a reply from another address than the target
    stop = threading.Event()
    thread = threading.Thread(target=_responder, args=(sock, other, plan, stop), daemon=True)
    thread.start()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT)
    finally:
        stop.set()
        thread.join(2)
    return {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}


def _scripted(plan: dict, argv: list[str]) -> dict:
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, HERE, "--serve", json.dumps(plan), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.root
def test_duplicate_and_wrong_data_worded_as_iputils() -> None:
    # iputils gather_statistics(): a second reply is "(DUP!)" and "+N duplicates"; a wrong
    # payload byte past the timestamp is still received, with "wrong data byte #i ..." and a
    # dump of the data from octet 16, 32 to a line.
    plan = {"1": "dup", "2": "ok", "3": "wrongdata"}
    args = ["-n", "-c", "3", "-i", "0.2", "-W", "1", "127.0.0.1"]
    ours, theirs = _scripted(plan, [*OURS, *args]), _scripted(plan, ["ping", *args])
    assert ours["rc"] == theirs["rc"] == 0, (ours, theirs)
    assert ours["err"] == theirs["err"] == ""
    assert _shape(ours["out"]) == _shape(theirs["out"]), (ours["out"], theirs["out"])
    shape = _shape(theirs["out"])
    assert "64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=T ms (DUP!)" in shape
    assert "wrong data byte #21 should be 0x15 but was 0xea" in shape
    dump = " ".join(f"{b:x}" for b in bytes(range(16, 48))).replace("15", "ea", 1)
    assert f"#16\t{dump} " in shape
    assert "3 packets transmitted, 3 received, +1 duplicates, 0% packet loss, time Tms" in shape


@pytest.mark.root
def test_bad_checksum_counted_as_corrupted() -> None:
    # gather_statistics() words a reply whose checksum fails "(BAD CHECKSUM!)" and counts it
    # as "+N corrupted", not received.  iputils 20221126 never gets there for IPv4: its
    # ping4_parse_reply passes 0 for csfailed (fixed upstream in bacf1b7, "ping: fix IPv4
    # checksum check always succeeding once again", iputils 20240905), so here it shows the
    # reply as a good one; apart from that mark and the count, the lines are the same.
    plan = {"1": "ok", "2": "badsum"}
    args = ["-n", "-c", "2", "-i", "0.2", "-W", "0.5", "127.0.0.1"]
    ours, theirs = _scripted(plan, [*OURS, *args]), _scripted(plan, ["ping", *args])
    mine = _shape(ours["out"])
    assert "64 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=T ms (BAD CHECKSUM!)" in mine
    assert "2 packets transmitted, 1 received, +1 corrupted, 50% packet loss, time Tms" in mine
    assert ours["rc"] == 0  # one good reply
    fixed = [line.replace(" (BAD CHECKSUM!)", "") for line in mine]
    theirs_shape = _shape(theirs["out"])
    stats = theirs_shape.index("--- 127.0.0.1 ping statistics ---")
    assert fixed[:stats] == theirs_shape[:stats]
    assert theirs_shape[stats + 1].startswith("2 packets transmitted, 2 received")  # the bug


@pytest.mark.root
def test_reply_from_another_address_is_not_counted() -> None:
    # Pinger's rule (issue 16): a reply with our identifier and sequence from an address other
    # than the target's is not an answer.  (iputils 20221126 counts it, flagged "(DIFFERENT
    # ADDRESS!)": a deliberate difference, documented in handrolled/cli/ping.py.)
    plan = {"1": "elsewhere", "2": "ok"}
    args = ["-n", "-c", "2", "-i", "0.2", "-W", "0.5", "127.0.0.1"]
    ours = _scripted(plan, [*OURS, "--json", *args])
    doc = json.loads(ours["out"])
    assert [(p["seq"], p["outcome"]) for p in doc["probes"]] == [(1, "timeout"), (2, "reply")]
    assert doc["probes"][1]["reply_from"] == "127.0.0.1"
    assert doc["summary"]["received"] == 1 and ours["rc"] == 0
    theirs = _scripted(plan, ["ping", *args])
    assert "icmp_seq=1 ttl=64 time=" in theirs["out"] and "(DIFFERENT ADDRESS!)" in theirs["out"]
    assert "icmp_seq=1" not in _scripted(plan, [*OURS, *args])["out"]


@pytest.mark.root
@pytest.mark.parametrize(
    "args",
    [
        ["-c", "2", "-w", "3", "-i", "0.2"],  # -c answers within the deadline: 0
        ["-c", "30", "-w", "1", "-i", "0.2"],  # fewer replies than asked by the deadline: 1
        ["-w", "1", "-i", "0.25"],  # no -c: until the deadline, 0 with replies
    ],
    ids=" ".join,
)
def test_exit_rule_with_count_and_deadline(args: list[str]) -> None:
    plan: dict = {}
    ours = _scripted(plan, [*OURS, "-n", *args, "127.0.0.1"])
    theirs = _scripted(plan, ["ping", "-n", *args, "127.0.0.1"])
    assert ours["rc"] == theirs["rc"], (ours, theirs)
    (sent_o, recv_o), (sent_t, recv_t) = _counts(ours["out"]), _counts(theirs["out"])
    assert abs(sent_o - sent_t) <= 1 and abs(recv_o - recv_t) <= 1, (ours, theirs)
    assert _shape(ours["out"])[-3:-1] == _shape(theirs["out"])[-3:-1] or abs(sent_o - sent_t)


@pytest.mark.root
def test_deadline_ends_at_the_first_icmp_error() -> None:
    # iputils main_loop: "if (rts->deadline && rts->nerrors) break;"
    plan: dict = {}
    shell = (
        "nft add table inet t; nft add chain inet t in '{ type filter hook input priority 0; }';"
        " nft add rule inet t in icmp type echo-request reject with icmp type host-prohibited;"
        f" cd {ROOT}; exec "
    )
    runs = {}
    for tool, ping in (("ours", " ".join(OURS)), ("iputils", "ping")):
        runs[tool] = subprocess.run(
            _private(shell + f"{ping} -n -c 3 -w 5 -i 0.2 127.0.0.1"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    del plan
    ours, theirs = runs["ours"], runs["iputils"]
    assert ours.returncode == theirs.returncode == 1
    assert _shape(ours.stdout) == _shape(theirs.stdout)
    assert "From 127.0.0.1 icmp_seq=1 Destination Host Prohibited" in ours.stdout
    assert "1 packets transmitted, 0 received, +1 errors" in ours.stdout


@pytest.mark.root
@pytest.mark.parametrize("target", ["198.51.100.77", "2001:db8::77"])
def test_no_route_refused_before_the_header_as_iputils(target: str) -> None:
    # ping4_run()/ping6_run() connect a probe socket first: "connect: Network is unreachable"
    # (a namespace with only lo has no route to it; nothing can leave)
    runs = [
        subprocess.run(
            _private(f"cd {ROOT}; exec {ping} -n -c 1 {target}"),
            capture_output=True,
            text=True,
            timeout=30,
        )
        for ping in (" ".join(OURS), "ping")
    ]
    for proc in runs:
        assert proc.returncode == 2
        assert proc.stdout == "" and proc.stderr == "ping: connect: Network is unreachable\n"


@pytest.mark.root
def test_send_errors_counted_quietly_as_iputils() -> None:
    # netfilter dropping our requests on output makes sendto fail (EPERM): pinger() counts the
    # probe as transmitted and, its error queue empty, prints nothing
    shell = (
        "nft add table inet t; nft add chain inet t out '{ type filter hook output priority 0; }';"
        f" nft add rule inet t out icmp type echo-request drop; cd {ROOT}; exec "
    )
    runs = [
        subprocess.run(
            _private(shell + f"{ping} -n -c 2 -i 0.2 -W 1 127.0.0.1"),
            capture_output=True,
            text=True,
            timeout=30,
        )
        for ping in (" ".join(OURS), "ping")
    ]
    ours, theirs = runs
    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr == theirs.stderr == ""
    assert _shape(ours.stdout) == _shape(theirs.stdout)
    assert "2 packets transmitted, 0 received, 100% packet loss" in ours.stdout


@pytest.mark.root
@pytest.mark.parametrize("flags", [["-O"], ["-q", "-O"], ["-O", "-D"]], ids=" ".join)
def test_outstanding_reports_as_iputils_even_when_quiet(flags: list[str]) -> None:
    # pinger() prints "no answer yet" before each send whatever -q says
    silence = "echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all; "
    argv = " ".join([*flags, "-n", "-c", "3", "-i", "0.2", "-W", "1", "127.0.0.1"])
    ours, theirs = (
        subprocess.run(
            _private(f"{silence}cd {ROOT}; exec {ping} {argv}"),
            capture_output=True,
            text=True,
            timeout=30,
        )
        for ping in (" ".join(OURS), "ping")
    )
    assert ours.returncode == theirs.returncode == 1
    assert _shape(ours.stdout) == _shape(theirs.stdout), (ours.stdout, theirs.stdout)
    assert sum("no answer yet for icmp_seq=" in line for line in _shape(ours.stdout)) == 2


# ---- bad input: one line, exit 2, nothing sent (issue 16) -----------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["-w", "1e306", "-i", "0", "127.0.0.1"],
        ["-W", "1e10", "127.0.0.1"],
        ["-W", "inf", "127.0.0.1"],
        ["-i", "nan", "127.0.0.1"],
        ["-Q", "256", "127.0.0.1"],
        ["-Q", "abc", "127.0.0.1"],
        ["-p", "zz", "127.0.0.1"],
        ["-I", "fe80::zz", "127.0.0.1"],
        ["-I", "a/b", "127.0.0.1"],
        ["-I", "::1", "127.0.0.1"],  # a source of the other family
    ],
    ids=" ".join,
)
def test_bad_values_are_one_line_exit_2(argv: list[str], capsys) -> None:
    called = []
    assert cli.main(argv, runner=lambda *a, **k: called.append(a)) == 2
    out, err = capsys.readouterr()
    assert out == "" and not called
    assert err.startswith("ping: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-Q", "256"], "ping: the decimal value of TOS bits must be in range 0-255: 256\n"),
        (["-Q", "abc"], "ping: bad TOS value: abc\n"),
        (["-p", "12zz"], "ping: patterns must be specified as hex digits: zz\n"),
    ],
)
def test_refusals_worded_as_iputils(argv: list[str], message: str, capsys) -> None:
    # iputils' own words (ping/ping.c parsetos, ping_common.c fill), checked against it too
    theirs = subprocess.run(["ping", "-c", "1", *argv, "127.0.0.1"], capture_output=True, text=True)
    assert theirs.returncode == 2 and theirs.stderr == message
    assert cli.main([*argv, "127.0.0.1"]) == 2
    assert capsys.readouterr().err == message


def test_pattern_and_tos_parse_as_iputils() -> None:
    # sscanf("%2x" x16): pairs of digits, an odd last digit on its own, at most 16 bytes
    assert cli.parse_pattern("abc") == b"\xab\x0c"
    assert cli.parse_pattern("ff" * 20) == b"\xff" * 16
    assert cli.parse_pattern("") == b""
    assert cli.parse_tos("0x10") == 16 and cli.parse_tos("40") == 40
    assert cli.parse_tos("") == 0 and cli.parse_tos("0x") == 0  # strtol of no digits


# A tiny run for the property test: whatever the arguments asked for, at most 0.05 s of it;
# every probe about to be sent is counted.
def _capped_runner(calls: list, sends: list):
    def runner(request, **kwargs):
        calls.append(request)
        inner = kwargs.get("on_send")

        def on_send(seq: int) -> None:
            sends.append(seq)
            if inner is not None:
                inner(seq)

        request = dataclasses.replace(
            request, deadline=0.05, count=None, interval=max(request.interval, 0.01)
        )
        return run_ping(request, **{**kwargs, "on_send": on_send})

    return runner


_EDGE_NUMBERS = st.sampled_from(
    ["0", "-1", "1", "nan", "inf", "-inf", "1e306", "1e10", "65536", "2147483648", "", " ",
     "0x10", "-0", "0.0001", "1e-9", "9" * 40, "0b1", "1_0", "\u0661"]
)  # fmt: skip
_FLAGS = st.sampled_from(["-c", "-i", "-W", "-w", "-s", "-t", "-p", "-Q", "-I", "--ident"])
_SWITCHES = st.sampled_from(["-4", "-6", "-q", "-n", "-D", "-O", "-a", "-U", "-f", "--json"])
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_ARGS = st.lists(
    st.one_of(
        st.tuples(_FLAGS, st.one_of(_EDGE_NUMBERS, _TEXT)).map(list),
        _SWITCHES.map(lambda s: [s]),
        _TEXT.map(lambda t: [t]),
    ),
    max_size=5,
).map(lambda groups: [a for g in groups for a in g])


@pytest.mark.root
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    args=st.one_of(_ARGS, st.lists(_SWITCHES, max_size=4)),
    host=st.sampled_from(["127.0.0.1", "::1", "", "no such host", "-x"]),
)
@example(args=["-p", "\n"], host="127.0.0.1")  # found by it: a newline echoed in the error
@example(args=["-I", "\u2028"], host="127.0.0.1")
def test_any_argument_list_ends_cleanly(args: list[str], host: str) -> None:
    """Arbitrary argument lists: no traceback, no hang, nothing sent after a refusal."""
    calls: list = []
    sends: list = []
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            status = cli.main([*args, host], runner=_capped_runner(calls, sends))
        except SystemExit as exc:  # argparse's --help / -h only: usage, exit 0, nothing sent
            assert exc.code == 0 and not calls
            return
    assert time.monotonic() - started < 5.0
    assert status in (0, 1, 2), status
    assert "Traceback" not in err.getvalue()
    if status == 2:
        # a refusal (or an error the engine met before its first probe): one line, nothing sent
        assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("ping: ")
        assert sends == [], (args, host, err.getvalue())
    else:
        assert calls and sends  # it ran: at least the first probe went


# ---- the lab -----------------------------------------------------------------------------
def _lab_run(lab, argv: list[str], *, unprivileged: bool = False, timeout: float = 60):
    prefix = UNPRIVILEGED if unprivileged else []
    return lab.exec("client", [*prefix, *argv], timeout=timeout)


def _both(lab, args: list[str], *, unprivileged: bool = False):
    ours = _lab_run(lab, [*OURS, *args], unprivileged=unprivileged)
    theirs = _lab_run(lab, ["ping", *args], unprivileged=unprivileged)
    return ours, theirs


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(
    "flags",
    [[], ["-n"], ["-n", "-D"], ["-n", "-a"], ["-n", "-p", "a5b"], ["-n", "-q"], ["-n", "-U"],
     ["-n", "-I", "down0"], ["-n", "-s", "8"], ["-n", "-Q", "0x28"]],
    ids=lambda f: " ".join(f) or "plain",
)  # fmt: skip
def test_lines_match_iputils(lab, family: int, flags: list[str]) -> None:
    args = [f"-{family}", *flags, "-c", "3", "-i", "0.2", lab.target.hostname]
    ours, theirs = _both(lab, args)
    assert ours.returncode == theirs.returncode == 0, (ours.stderr, theirs.stderr)
    assert ours.stderr == theirs.stderr == ""
    assert _shape(ours.stdout) == _shape(theirs.stdout), (ours.stdout, theirs.stdout)
    if "-a" in flags:
        assert ours.stdout.count(" ms\a\n") == theirs.stdout.count(" ms\a\n") == 3
    if "-U" in flags:  # user-space times are still the path's RTT, not something else
        low, _high = lab.rtt_tolerance(lab.target)
        times = [float(t) for t in re.findall(r"time=([\d.]+) ms", ours.stdout)]
        assert min(times) >= low, times


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_source_address_header_matches_iputils(lab, family: int) -> None:
    src = lab.nodes["client"].addr(family)
    args = [f"-{family}", "-n", "-I", src, "-c", "2", "-i", "0.2", lab.target.addr(family)]
    ours, theirs = _both(lab, args)
    assert ours.returncode == theirs.returncode == 0
    assert _shape(ours.stdout) == _shape(theirs.stdout)
    assert f" from {src} : " in ours.stdout.splitlines()[0]


@pytest.mark.lab
@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["-I", "nosuch0"], "ping: SO_BINDTODEVICE nosuch0: No such device\n"),
        (["-I", "192.0.2.1"], "ping: bind: Cannot assign requested address\n"),
    ],
)
def test_bad_interface_or_source_refused_as_iputils(lab, flag, message) -> None:
    ours, theirs = _both(lab, ["-n", *flag, "-c", "1", lab.target.addr4])
    assert ours.returncode == theirs.returncode == 2
    assert ours.stderr == theirs.stderr == message
    assert ours.stdout == theirs.stdout == ""  # refused before the PING header


@pytest.mark.lab
def test_outstanding_reports_match_iputils(lab) -> None:
    args = ["-n", "-O", "-c", "3", "-i", "0.3", "-W", "1", lab.blackhole4]
    ours, theirs = _both(lab, args)
    assert ours.returncode == theirs.returncode == 1
    assert _shape(ours.stdout) == _shape(theirs.stdout)
    assert "no answer yet for icmp_seq=2" in ours.stdout


@pytest.mark.lab
@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["-c", "2", "-w", "5"], 0),
        (["-c", "20", "-w", "1", "-i", "0.2"], 1),
        (["-w", "1", "-i", "0.2"], 0),
        (["-w", "3", "-t", "2"], 1),  # the first time-exceeded ends a run with a deadline
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_exit_rule_on_the_lab_path(lab, args: list[str], status: int) -> None:
    ours, theirs = _both(lab, ["-n", *args, lab.target.addr4])
    assert ours.returncode == theirs.returncode == status, (ours.stdout, theirs.stdout)
    (sent_o, recv_o), (sent_t, recv_t) = _counts(ours.stdout), _counts(theirs.stdout)
    assert abs(sent_o - sent_t) <= 1 and recv_o - recv_t in (-1, 0, 1)


@pytest.mark.lab
def test_blackhole_until_deadline(lab) -> None:
    ours, theirs = _both(lab, ["-n", "-w", "1", "-i", "0.25", lab.blackhole4])
    assert ours.returncode == theirs.returncode == 1
    assert abs(_counts(ours.stdout)[0] - _counts(theirs.stdout)[0]) <= 1
    assert _shape(ours.stdout)[-2:] == _shape(theirs.stdout)[-2:]


def _echo_requests(lab, argv: list[str], family: int):
    """Run ``argv`` in the client while capturing its interface: the echo requests sent."""
    from compare.capture import Capture

    with Capture(lab.ns("client"), "down0") as cap:
        proc = _lab_run(lab, argv)
        time.sleep(0.2)
    found = []
    for frame in cap.frames:
        ip = frame.ip
        if not frame.outgoing or not ip or ip[0] >> 4 != family:
            continue
        header = 20 if family == 4 else 40
        proto = ip[9] if family == 4 else ip[6]
        if proto in (1, 58) and ip[header] in (8, 128):
            found.append((frame.time_ns, ip, ip[header + 8 :]))
    return proc, found


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_tos_and_pattern_on_the_wire_as_iputils(lab, family: int) -> None:
    args = [f"-{family}", "-n", "-Q", "0x28", "-p", "a5b6c", "-c", "2", "-i", "0.2"]
    target = lab.target.addr(family)
    wire = {}
    for tool, prog in (("ours", OURS), ("iputils", ["ping"])):
        proc, found = _echo_requests(lab, [*prog, *args, target], family)
        assert proc.returncode == 0, proc.stderr
        assert len(found) == 2, found
        wire[tool] = found
    for tool, found in wire.items():
        for frame_ns, ip, data in found:
            tos = ip[1] if family == 4 else ((ip[0] & 0x0F) << 4) | (ip[1] >> 4)
            assert tos == 0x28, tool
            # iputils fill(): the pattern from the first data octet (a5 b6 0c), then the
            # timestamp over octets 0-15: a struct timeval of the send time
            assert len(data) == 56
            assert data[16:] == (b"\xa5\xb6\x0c" * 20)[16:56], (tool, data.hex())
            sec, usec = struct.unpack("@ll", data[:16])
            assert abs(frame_ns - (sec * 10**9 + usec * 1000)) < 50_000_000, tool
    assert [d[16:] for _, _, d in wire["ours"]] == [d[16:] for _, _, d in wire["iputils"]]


@pytest.mark.lab
def test_default_payload_on_the_wire_as_iputils(lab) -> None:
    wire = {}
    for tool, prog in (("ours", OURS), ("iputils", ["ping"])):
        proc, found = _echo_requests(lab, [*prog, "-n", "-c", "1", lab.target.addr4], 4)
        assert proc.returncode == 0 and len(found) == 1
        wire[tool] = found[0]
    for _tool, (frame_ns, ip, data) in wire.items():
        assert data[16:] == bytes(range(16, 56)) and ip[1] == 0
        sec, usec = struct.unpack("@ll", data[:16])
        assert abs(frame_ns - (sec * 10**9 + usec * 1000)) < 50_000_000


@pytest.mark.lab
def test_flood_dots_and_rate_bound_as_iputils(lab) -> None:
    ours, theirs = _both(lab, ["-f", "-c", "20", lab.target.addr4])
    assert ours.returncode == theirs.returncode == 0
    for proc in (ours, theirs):
        line = proc.stdout.split("\n")[1]  # one dot sent, one backspace back, in any order
        assert line.count(".") == line.count("\b \b") == 20 and len(line) == 80, repr(line)
        assert "ipg/ewma" in proc.stdout
    shapes = _shape(ours.stdout), _shape(theirs.stdout)
    assert shapes[0][:1] + shapes[0][2:] == shapes[1][:1] + shapes[1][2:]
    # nothing comes back from the blackhole: iputils' bound is one probe per 10 ms
    ours, theirs = _both(lab, ["-f", "-w", "1", lab.blackhole4])
    assert ours.returncode == theirs.returncode == 1
    sent_o, sent_t = _counts(ours.stdout)[0], _counts(theirs.stdout)[0]
    assert 40 <= sent_t <= 105 and 40 <= sent_o <= 105, (sent_o, sent_t)
    assert ours.stdout.split("\n")[1] == "." * sent_o


@pytest.mark.lab
def test_flood_refused_without_root_as_iputils(lab) -> None:
    for args in (["-f", "-c", "2"], ["-i", "0.001", "-c", "2"]):
        ours, theirs = _both(lab, ["-n", *args, lab.target.addr4], unprivileged=True)
        assert ours.returncode == theirs.returncode == 2
        assert (
            ours.stderr
            == theirs.stderr
            == ("ping: cannot flood; minimal interval allowed for user is 2ms\n")
        )
        assert ours.stdout == theirs.stdout  # the header, printed before setup() refuses


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_json_is_the_result_with_bytes_as_hex(lab, family: int) -> None:
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6EchoRequest

    proc = _lab_run(lab, [*OURS, "--json", f"-{family}", "-c", "2", "-i", "0.2", "target.lab.test"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["target"] == "target.lab.test" and doc["address"] == lab.target.addr(family)
    assert doc["family"] == family and doc["implementation"] == "handrolled"
    assert doc["summary"]["transmitted"] == doc["summary"]["received"] == 2
    assert [p["outcome"] for p in doc["probes"]] == ["reply", "reply"]
    for p in doc["probes"]:
        sent = bytes.fromhex(p["sent"])  # scapy reads what we say we sent
        echo = ICMP(sent) if family == 4 else ICMPv6EchoRequest(sent)
        assert (echo.id, echo.seq) == (doc["ident"], p["seq"])
        assert bytes.fromhex(p["received"]) and p["reply_from"] == lab.target.addr(family)
    assert bytes.fromhex(doc["payload"])[16:] == bytes(range(16, 56))


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    sys.stdout.write(json.dumps(_serve(json.loads(sys.argv[2]), sys.argv[3:])))
