"""``wiretwin traceroute`` under hostile argument lists (issue 16).

Every argument list ends cleanly: no traceback, no run past its time, exit 0, 1 or 2, and a
refusal is one line on stderr with no probe on the wire.  Each case runs in-process
(``compare.cli.run_client``, the ``wiretwin traceroute`` front end) in a forked child that
first enters a network namespace of its own with only ``lo`` up, so

* a capture on that ``lo`` (a raw AF_PACKET socket) sees every packet the case sends and
  nothing from anyone else: a refusal must leave it without a single probe;
* nothing a hostile argument asks for (a name to resolve, an interface, a source address) can
  reach beyond the machine: the namespace has no other interface and no route.

The options are read from the CLI's own parser, so flags added later are fuzzed too; their
values are numbers at the edges (0, negative, NaN, inf, huge, empty, non-ASCII digits),
option-looking strings and arbitrary text.  The target is 127.0.0.1 or ::1, which answers at
the first hop, so an accepted run is quick unless its own -z spacing makes it long.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import io
import json
import os
import select
import signal
import socket
import struct
import time
import traceback

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

import handrolled.traceroute  # noqa: F401  (imported once here, not in every forked child)
from compare.cli import _pop_impl
from handrolled.cli import traceroute as cli
from handrolled.errors import UsageError

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BUDGET = 2.0  # seconds a case may run in its child (a loopback trace takes milliseconds)
HARD_LIMIT = 20.0  # the parent kills a child that outlives this: a hang
CLONE_NEWNET = 0x40000000  # linux/sched.h
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1  # linux/sockios.h, linux/if.h
ETH_P_ALL, PACKET_OUTGOING = 0x0003, 4  # linux/if_ether.h, linux/if_packet.h

pytestmark = pytest.mark.root


class _Watchdog(BaseException):
    """Raised by SIGALRM in the child: not an Exception, so no ``except`` in the CLI eats it."""


def _private_loopback() -> None:
    """Enter a new network namespace and bring its ``lo`` up (127.0.0.1 and ::1)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack_from("16sH", ifreq)[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _nameservers() -> set[str]:
    """The resolvers in /etc/resolv.conf: a lookup sent to one of them is not a probe."""
    with contextlib.suppress(OSError), open("/etc/resolv.conf") as conf:
        return {line.split()[1] for line in conf if line.split()[:1] == ["nameserver"]}
    return set()


NAMESERVERS = _nameservers()


def _probe_kind(frame: bytes) -> str | None:
    """What a packet sent on ``lo`` is as a probe ("icmp echo", "udp", "tcp syn", "IP protocol
    N"); None for an answer (ICMP other than echo request, TCP other than SYN), a DNS query
    to a resolver, or anything not IP."""
    ethertype, ip = struct.unpack_from("!H", frame, 12)[0], frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20:
        proto, transport, echo = ip[9], ip[(ip[0] & 0xF) * 4 :], 8
        dst = socket.inet_ntop(socket.AF_INET, ip[16:20])
    elif ethertype == 0x86DD and len(ip) >= 40:
        proto, transport, echo = ip[6], ip[40:], 128
        dst = socket.inet_ntop(socket.AF_INET6, ip[24:40])
        proto = 1 if proto == 58 else proto
    else:
        return None
    dns = len(transport) >= 4 and struct.unpack_from("!H", transport, 2)[0] == 53
    if proto in (6, 17) and dns and dst in NAMESERVERS:
        return None
    if proto == 1:  # the loopback's own answers (echo reply, errors) are replies, not probes
        return "icmp echo" if transport[:1] == bytes([echo]) else None
    if proto == 17:
        return "udp"
    if proto == 6:  # RFC 793: a SYN without ACK opens; RST, SYN-ACK are the answers
        return "tcp syn" if len(transport) >= 14 and transport[13] & 0x12 == 0x02 else None
    return f"IP protocol {proto}"


def _child(argv: list[str]) -> dict:
    """Run one case in this (forked) process: private loopback, capture, watchdog, the CLI."""
    _private_loopback()
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    capture.bind(("lo", 0))
    capture.setblocking(False)

    import handrolled.traceroute as engine  # the CLI imports run_trace from here when it runs

    calls: list[object] = []
    real_run_trace = engine.run_trace

    def spy(request, **kwargs):  # the real engine; only the call is noted
        calls.append(request)
        return real_run_trace(request, **kwargs)

    engine.run_trace = spy

    def on_alarm(_signum, _frame):
        raise _Watchdog

    signal.signal(signal.SIGALRM, on_alarm)
    from compare.cli import run_client

    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    cut_short = False
    signal.setitimer(signal.ITIMER_REAL, BUDGET)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = run_client("traceroute", argv)
            except SystemExit as exc:  # argparse's --help
                status = exc.code
    except _Watchdog:
        status, cut_short = None, True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    elapsed = time.monotonic() - started
    probes = []
    with contextlib.suppress(BlockingIOError):
        while True:
            frame, address = capture.recvfrom(65535)
            kind = _probe_kind(frame)
            if address[2] == PACKET_OUTGOING and kind is not None:
                probes.append(kind)
    return {
        "status": status,
        "out": out.getvalue(),
        "err": err.getvalue(),
        "probes": probes,
        "engine_called": bool(calls),
        "elapsed": elapsed,
        "cut_short": cut_short,
    }


def run_isolated(argv: list[str]) -> dict:
    """Fork, run ``argv`` through ``wiretwin traceroute`` in the child, return what it saw."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_end)
        try:
            result = _child(argv)
        except BaseException:
            result = {"crash": traceback.format_exc()}
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + HARD_LIMIT
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([pipe], [], [], max(left, 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"traceroute {argv!r} still running after {HARD_LIMIT} s (a hang)")
            chunk = pipe.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def _parsed(argv: list[str]) -> tuple[str, object]:
    """(the --impl asked for, the request or the UsageError that refuses it): parsing only,
    nothing resolves or sends.  ``--impl`` belongs to the front end, not the parser."""
    impl, rest = _pop_impl(argv)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return impl, cli.request_from_args(rest)[0]
    except UsageError as exc:
        return impl, exc
    except SystemExit:  # -h / --help: argparse prints the help and exits 0
        return impl, "help"


def _note(label: str) -> None:
    """hypothesis ``event()`` when under @given (the plain tests share check_case)."""
    if currently_in_test_context():
        event(label)


def check_case(argv: list[str]) -> dict:
    """Run ``argv`` and check the properties; returns the child's report."""
    seen = run_isolated(argv)
    assert "crash" not in seen, f"traceroute {argv!r} raised:\n{seen.get('crash')}"
    err, status = seen["err"], seen["status"]
    assert "Traceback" not in err, f"traceroute {argv!r}:\n{err}"
    impl, parsed = _parsed(argv)
    if seen["cut_short"]:
        # only a run whose own spacing (-z) outlasts the budget may still be going
        assert not isinstance(parsed, Exception), f"refused {argv!r} still running"
        floor = parsed.send_wait * (parsed.probes_per_hop - 1)
        assert floor >= BUDGET / 2, f"traceroute {argv!r} ran past {BUDGET} s"
        _note("cut short by its own -z spacing")
        return seen
    assert status in (0, 1, 2), (argv, status, err)
    if status == 2:
        lines = err.splitlines()
        assert len(lines) == 1, f"traceroute {argv!r}: not one line:\n{err}"
        assert lines[0].startswith(("traceroute: ", "wiretwin traceroute: ")), err
        if not seen["engine_called"]:
            assert seen["probes"] == [], f"refused {argv!r} but sent {seen['probes']}"
    if parsed == "help" and impl == "handrolled":
        assert status == 0 and seen["out"].startswith("usage: "), (argv, seen)
        assert seen["probes"] == [] and not seen["engine_called"]
        _note("help")
    elif impl != "handrolled" or isinstance(parsed, UsageError):
        # a bad option or front end: refused before the engine starts, nothing on the wire
        assert status == 2 and not seen["engine_called"], (argv, status)
        assert seen["probes"] == [] and seen["out"] == "", (argv, seen)
        _note("refused")
    elif seen["engine_called"]:
        _note(f"ran: exit {status}, {'probes sent' if seen['probes'] else 'no probe'}")
    else:
        _note(f"exit {status} before the engine")
    return seen


# ---- the argument lists ----------------------------------------------------------------------
def _parser_options() -> tuple[list[str], list[str]]:
    """(options taking a value, switches) as the CLI's parser defines them right now."""
    with_value, switches = [], []
    for action in cli._parser()._actions:
        if action.option_strings:
            (switches if action.nargs == 0 else with_value).extend(action.option_strings)
    return sorted(with_value), sorted(switches)


WITH_VALUE, SWITCHES = _parser_options()
EDGE = [
    "0", "-0", "1", "-1", "2", "10", "255", "256", "65535", "65536", "70000", "2147483648",
    "9" * 40, "nan", "-nan", "inf", "-inf", "1e10", "1e306", "1e-9", "0.0001", "86400",
    "86401", "0x10", "0b1", "1_0", "\u0661", "\uff11", "", " ", "1 ", "5,3,10", "1,2", "1/2/3",
    "1,nan", "nan,1,1", "1,-1,0", "inf,0,0", "1,1e10,0", "0,0,0", "1,,", "lo", "nosuch0",
    "a" * 16, "lo:1", ".", "127.0.0.1", "::1", "198.51.100.1", "-", "--", "-x", "--json",
]  # fmt: skip
HOSTS = ["127.0.0.1", "::1", "localhost", "", "-x", "no such host", "256.1.1.1", "127.1", "::1%lo"]
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10)
GOOD = st.sampled_from(["1", "2", "3", "0", "0.5", "5,3,10", "lo", "127.0.0.1"])
EDGES = st.sampled_from(EDGE)
OPTIONS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(WITH_VALUE), st.one_of(GOOD, GOOD, EDGES, TEXT)).map(list),
        st.sampled_from(SWITCHES).map(lambda s: [s]),
    ),
    max_size=3,
).map(lambda groups: [a for g in groups for a in g])
# now and then something the parser never defined: a stray word, an --impl for the front end
STRAY = st.sampled_from(
    [["--impl", "bogus"], ["--impl=reference!"], ["--impl"], ["--"]]
) | TEXT.map(lambda t: [t])


@st.composite
def argument_lists(draw) -> list[str]:
    """Options with edge values; in one list of eight, a stray group somewhere among them."""
    args = draw(OPTIONS)
    if draw(st.integers(0, 7)) == 0:
        at = draw(st.integers(0, len(args)))
        args[at:at] = draw(STRAY)
    return args


@settings(
    max_examples=300 if IN_CI else 80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    argument_lists(),
    st.sampled_from(["127.0.0.1", "::1"]) | st.sampled_from(HOSTS),
    st.none() | st.none() | EDGES,  # the packet_len positional
    st.booleans(),
)
def test_any_argument_list_ends_cleanly(args, host, packet_len, host_first) -> None:
    tail = [host] if packet_len is None else [host, packet_len]
    check_case([*tail, *args] if host_first else [*args, *tail])


# ---- the cases issue 16 names, and the capture shown to see probes ----------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["-w", "1e10"], ["-w", "inf"], ["-w", "nan"], ["-w", "0"], ["-w", "-1"], ["-w", "1,nan"],
        ["-w", "1,1e10,0"], ["-w", ""], ["-z", "1e10"], ["-z", "nan"], ["-z", "-1"],
        ["-z", "inf"], ["-q", "0"], ["-q", "11"], ["-m", "0"], ["-m", "256"], ["-f", "0"],
        ["-f", "5", "-m", "4"], ["-N", "0"], ["-p", "0"], ["-p", "70000"], ["-p", "-1"],
        ["-t", "256"], ["-t", "-1"], ["--ident", "65536"], ["-i", ""], ["-i", "a" * 16],
        ["-i", "lo:1"], ["-s", ""], ["-q", "9" * 40], ["-4", "-6"],
        ["-I", "-T"], ["--impl", "bogus"],
    ],
    ids=lambda a: " ".join(a) or "none",
)  # fmt: skip
def test_bad_option_refused_with_nothing_sent(args: list[str]) -> None:
    seen = check_case(["-n", *args, "127.0.0.1"])
    assert seen["status"] == 2 and seen["probes"] == [] and not seen["engine_called"], seen
    assert seen["out"] == ""  # not even the header line


@pytest.mark.parametrize(
    ("args", "kind"),
    [(["-I"], "icmp echo"), (["-U"], "udp"), (["-T"], "tcp syn"), (["-I", "-6"], "icmp echo")],
    ids=["icmp", "udp", "tcp", "icmp6"],
)
def test_capture_sees_the_probes_of_an_accepted_run(args: list[str], kind: str) -> None:
    """The capture is not blind: a good run's probes are there (so "none" above means none)."""
    host = "::1" if "-6" in args else "127.0.0.1"
    seen = check_case(["-n", "-q", "1", "-w", "1", *args, host])
    assert seen["status"] == 0, seen
    assert seen["engine_called"] and seen["probes"] and set(seen["probes"]) == {kind}, seen
    assert seen["out"].splitlines()[0].startswith(f"traceroute to {host} ({host})")


@pytest.mark.parametrize("packet_len", ["0", "28", "65000"])
def test_accepted_edges_work(packet_len: str) -> None:
    """Values at the legal edges are accepted and the run works (RFC 791: 65535 at most)."""
    seen = check_case(["-n", "-q", "1", "-I", "127.0.0.1", packet_len])
    assert seen["status"] == 0 and seen["probes"], seen
