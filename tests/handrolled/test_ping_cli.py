"""``python -m handrolled.ping`` against iputils ping 20221126, flag by flag, on the same path.

Each test runs our command line and iputils ``ping`` with the same arguments (in a private
network namespace of their own for loopback-only cases; the lab's client in
test_ping_cli_lab.py) and checks what a user compares: the lines with the numbers taken out,
the counts, the exit codes.  Expectations come from iputils run the same way, never from our
own code.

Private namespaces (``unshare --net``) hold what the lab does not offer: a scripted responder
(a raw socket answering with a duplicate, a bad checksum, a wrong payload byte, a reply from
another address) and Ctrl-C sent to a ping that runs without ``-c``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ping_cli_shared import OURS, ROOT, RTT, counts, shape_of

from handrolled.cli import ping as cli
from handrolled.ping import run_ping
from handrolled.record import replace

HERE = os.path.abspath(__file__)


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
    sent, received = counts(out)
    assert sent >= 6, out
    shape = shape_of(out)
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
    assert shape_of(ours["out"]) == shape_of(theirs["out"]), (ours["out"], theirs["out"])
    shape = shape_of(theirs["out"])
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
    mine = shape_of(ours["out"])
    assert "64 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=T ms (BAD CHECKSUM!)" in mine
    assert "2 packets transmitted, 1 received, +1 corrupted, 50% packet loss, time Tms" in mine
    assert ours["rc"] == 0  # one good reply
    fixed = [line.replace(" (BAD CHECKSUM!)", "") for line in mine]
    theirs_shape = shape_of(theirs["out"])
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
    (sent_o, recv_o), (sent_t, recv_t) = counts(ours["out"]), counts(theirs["out"])
    assert abs(sent_o - sent_t) <= 1 and abs(recv_o - recv_t) <= 1, (ours, theirs)
    assert shape_of(ours["out"])[-3:-1] == shape_of(theirs["out"])[-3:-1] or abs(sent_o - sent_t)


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
    assert shape_of(ours.stdout) == shape_of(theirs.stdout)
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
    assert shape_of(ours.stdout) == shape_of(theirs.stdout)
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
    assert shape_of(ours.stdout) == shape_of(theirs.stdout), (ours.stdout, theirs.stdout)
    assert sum("no answer yet for icmp_seq=" in line for line in shape_of(ours.stdout)) == 2


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

        request = replace(request, deadline=0.05, count=None, interval=max(request.interval, 0.01))
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


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    sys.stdout.write(json.dumps(_serve(json.loads(sys.argv[2]), sys.argv[3:])))
