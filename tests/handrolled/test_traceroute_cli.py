"""``python -m handrolled.traceroute`` against traceroute(8) 2.1, flag by flag, on the lab's path.

Each test runs our command line and traceroute(8) with the same arguments inside the lab's
client and checks what a user compares: the hops and their annotations, and, from a capture of
the client's interface (compare.capture, an AF_PACKET socket in the namespace), what each tool
put on the wire: packet length, DF, TOS / traffic class, protocol, source, send spacing.
Expectations come from traceroute(8) run the same way and from the lab's truth, never from our
own code.  The unprivileged tests drop root with setpriv(1) (uid/gid 65534, no capabilities)
in a subprocess inside the client, for both tools.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import shutil
import sys
import time

import pytest

from handrolled.cli.traceroute import format_hop
from handrolled.results import Hop, Method, Outcome, Probe

pytestmark = pytest.mark.lab

OURS = [sys.executable, "-m", "handrolled.traceroute"]
UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
IPPROTO = {"icmp": (1, 58), "udp": (17, 17), "tcp": (6, 6)}


def _run(lab, argv: list[str], *, unprivileged: bool = False, timeout: float = 90):
    prefix = UNPRIVILEGED if unprivileged else []
    started = time.monotonic()
    proc = lab.exec("client", [*prefix, *argv], timeout=timeout)
    return proc, time.monotonic() - started


def _hops(stdout: str) -> dict[int, tuple[frozenset[str], tuple[str, ...], int]]:
    """TTL -> (addresses, annotations such as !X or '-3', stars) from traceroute(8)'s lines."""
    hops = {}
    for line in stdout.splitlines()[1:]:
        ttl, _, rest = line.strip().partition(" ")
        addrs, marks, stars = set(), [], 0
        for token in rest.split():
            with contextlib.suppress(ValueError):
                addrs.add(ipaddress.ip_address(token.strip("()")).compressed)
                continue
            if token.startswith("!") or token.startswith("'-"):
                marks.append(token)
            stars += token == "*"
        hops[int(ttl)] = (frozenset(addrs), tuple(sorted(marks)), stars)
    return hops


def _both(lab, args: list[str], *, unprivileged: bool = False):
    """(ours, traceroute(8)) CompletedProcesses for the same arguments."""
    ours, _ = _run(lab, [*OURS, *args], unprivileged=unprivileged)
    theirs, _ = _run(lab, ["traceroute", *args], unprivileged=unprivileged)
    return ours, theirs


def _same_trace(ours, theirs) -> None:
    assert ours.returncode == theirs.returncode == 0, (ours.stderr, theirs.stderr)
    assert ours.stdout.splitlines()[0] == theirs.stdout.splitlines()[0]  # the header line
    assert _hops(ours.stdout) == _hops(theirs.stdout), (ours.stdout, theirs.stdout)


def _truth_hops(lab, family: int = 4) -> dict[int, tuple[frozenset[str], tuple, int]]:
    # what the lab promises for -q 1: one address per answering hop, a star for the silent one
    out = {}
    for node in lab.hops():
        if node.answers:
            out[node.ttl] = (frozenset({node.addr(family)}), (), 0)
        else:
            out[node.ttl] = (frozenset(), (), 1)
    return out


def _captured(lab, argv: list[str], family: int = 4, *, unprivileged: bool = False):
    """Run ``argv`` in the client while capturing; return (proc, outgoing IP datagrams to
    the target)."""
    from compare.capture import Capture

    target = ipaddress.ip_address(lab.target.addr(family)).packed
    with Capture(lab.ns("client"), None) as cap:
        proc, _ = _run(lab, argv, unprivileged=unprivileged)
        time.sleep(0.2)  # let the reader thread take the last frames
    packets = []
    for frame in cap.frames:
        ip = frame.ip
        if not frame.outgoing or not ip or ip[0] >> 4 != family:
            continue
        dst = ip[16:20] if family == 4 else ip[24:40]
        if dst == target:
            packets.append((frame.time_ns, ip))
    return proc, packets


def _fields(ip: bytes) -> dict[str, int]:
    """The IP fields the flags set (RFC 791 §3.1, RFC 8200 §3)."""
    if ip[0] >> 4 == 4:
        return {
            "length": int.from_bytes(ip[2:4], "big"),
            "df": (ip[6] >> 6) & 1,
            "tos": ip[1],
            "proto": ip[9],
        }
    return {
        "length": 40 + int.from_bytes(ip[4:6], "big"),
        "tos": ((ip[0] & 0x0F) << 4) | (ip[1] >> 4),
        "proto": ip[6],
    }


# -- the default method, packet length, -F, -t on the wire --------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_default_method_is_udp_on_the_wire(lab, family) -> None:
    args = [f"-{family}", "-n", "-q", "1", "target.lab.test"]
    ours, ours_pkts = _captured(lab, [*OURS, *args], family)
    theirs, their_pkts = _captured(lab, ["traceroute", *args], family)
    _same_trace(ours, theirs)
    assert _hops(ours.stdout) == _truth_hops(lab, family)
    udp = IPPROTO["udp"][family == 6]
    assert ours_pkts and {_fields(ip)["proto"] for _, ip in ours_pkts} == {udp}
    assert {_fields(ip)["proto"] for _, ip in their_pkts} == {udp}
    # traceroute(8)'s default ports: 33434 + probe number
    offset = 20 if family == 4 else 40
    ports = sorted(int.from_bytes(ip[offset + 2 : offset + 4], "big") for _, ip in ours_pkts)
    assert ports == list(range(33434, 33434 + len(ports)))


def test_without_a_family_a_name_with_both_is_traced_over_ipv4(lab) -> None:
    # man traceroute: "If resolving a host name returns both IPv4 and IPv6 addresses,
    # traceroute will use IPv4"
    ours, theirs = _both(lab, ["-n", "-q", "1", "target.lab.test"])
    _same_trace(ours, theirs)
    assert f"({lab.target.addr4})" in ours.stdout.splitlines()[0]


@pytest.mark.parametrize("unprivileged", [False, True])
def test_dash_u_probes_one_port_from_a_port_per_probe(lab, unprivileged) -> None:
    # traceroute(8) -U: "Use UDP to particular destination port for tracerouting (instead of
    # increasing the port per each probe). Default port is 53"; a socket (port) per probe
    args = ["-4", "-n", "-q", "2", "-U", "target.lab.test"]
    ours, ours_pkts = _captured(lab, [*OURS, *args], unprivileged=unprivileged)
    theirs, their_pkts = _captured(lab, ["traceroute", *args], unprivileged=unprivileged)
    _same_trace(ours, theirs)
    for pkts in (ours_pkts, their_pkts):
        assert {_fields(ip)["proto"] for _, ip in pkts} == {17}
        assert {int.from_bytes(ip[22:24], "big") for _, ip in pkts} == {53}
        sources = [int.from_bytes(ip[20:22], "big") for _, ip in pkts]
        # at least 7 hops x 2 probes (more are in flight, -N 16, when the target answers)
        assert len(set(sources)) == len(sources) >= 14


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("method", ["", "-I"])
def test_packet_length_argument(lab, family, method) -> None:
    args = [f"-{family}", "-n", "-q", "1", *([method] if method else []), "target.lab.test"]
    for length in ("1400", "10"):
        ours, ours_pkts = _captured(lab, [*OURS, *args, length], family)
        theirs, their_pkts = _captured(lab, ["traceroute", *args, length], family)
        _same_trace(ours, theirs)
        header = 20 if family == 4 else 40
        want = int(length) if int(length) > header + 8 else header + 8  # no payload at all
        assert f"{want} byte packets" in ours.stdout.splitlines()[0]
        assert {_fields(ip)["length"] for _, ip in ours_pkts} == {want}
        assert {_fields(ip)["length"] for _, ip in their_pkts} == {want}


@pytest.mark.parametrize("method", ["", "-I", "-T"])
def test_dont_fragment_flag_as_traceroute8_sets_it(lab, method) -> None:
    base = ["-4", "-n", "-q", "1", "-m", "2", *([method] if method else []), "target.lab.test"]
    for flag, want in (([], 0), (["-F"], 1)):
        _, ours = _captured(lab, [*OURS, *flag, *base])
        _, theirs = _captured(lab, ["traceroute", *flag, *base])
        assert ours and theirs
        assert {_fields(ip)["df"] for _, ip in theirs} == {want}  # what traceroute(8) does
        assert {_fields(ip)["df"] for _, ip in ours} == {want}


@pytest.mark.parametrize("family", [4, 6])
def test_tos_sets_the_tos_byte_or_traffic_class(lab, family) -> None:
    args = [f"-{family}", "-n", "-q", "1", "-t", "16", "target.lab.test"]
    ours, ours_pkts = _captured(lab, [*OURS, *args], family)
    theirs, their_pkts = _captured(lab, ["traceroute", *args], family)
    _same_trace(ours, theirs)
    assert {_fields(ip)["tos"] for _, ip in their_pkts} == {16}
    assert {_fields(ip)["tos"] for _, ip in ours_pkts} == {16}


# -- -w, -z: timing ---------------------------------------------------------------------------


def test_single_wait_value_is_a_fixed_wait_past_a_silent_hop(lab) -> None:
    # traceroute 2.1: "-w 2" turns HERE and NEAR off, so the silent hop (TTL 3) waits 2 s
    # although later hops answered within milliseconds; with the default 5,3,10 it does not
    args = ["-4", "-n", "-q", "1", "-w", "2", "target.lab.test"]
    ours, ours_s = _run(lab, [*OURS, *args])
    theirs, theirs_s = _run(lab, ["traceroute", *args])
    _same_trace(ours, theirs)
    assert theirs_s >= 2.0 and ours_s >= 2.0, (ours_s, theirs_s)
    quick, quick_s = _run(lab, [*OURS, "-4", "-n", "-q", "1", "target.lab.test"])
    assert quick.returncode == 0 and quick_s < 2.0, quick_s  # NEAR cut the silent hop short


def test_sendwait_spaces_the_probes(lab) -> None:
    args = ["-4", "-n", "-q", "1", "-m", "4", "-z", "200", "target.lab.test"]  # >= 10: ms
    for argv in ([*OURS, *args], ["traceroute", *args]):
        proc, pkts = _captured(lab, argv)
        # 4 hops do not reach TTL 7: traceroute(8) exits 0 whatever happened, and so do we
        assert proc.returncode == 0, proc.stderr
        times = sorted(t for t, _ in pkts)
        assert len(times) == 4, argv
        gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 195.0, (argv[0], gaps)  # 0.2 s, less the capture's stamp jitter


# -- -s, -i, --back -----------------------------------------------------------------------------


def _client_iface(lab) -> str:
    proc = lab.exec("client", ["ip", "-o", "-4", "addr", "show"], check=True)
    for line in proc.stdout.splitlines():
        fields = line.split()
        if fields[3].split("/")[0] == lab.client.addr4:
            return fields[1]
    raise AssertionError(proc.stdout)


def test_source_address(lab) -> None:
    src = lab.client.addr4
    args = ["-4", "-n", "-q", "1", "-s", src, "target.lab.test"]
    ours, ours_pkts = _captured(lab, [*OURS, *args])
    theirs, _ = _captured(lab, ["traceroute", *args])
    _same_trace(ours, theirs)
    assert {ipaddress.ip_address(ip[12:16]).compressed for _, ip in ours_pkts} == {src}
    # an IPv6 source for an IPv4 trace: refused by both before anything is sent
    bad = ["-n", "-s", lab.client.addr6, lab.target.addr4]
    ours, theirs = _both(lab, bad)
    assert theirs.returncode == ours.returncode == 2
    assert "IP version mismatch" in theirs.stderr and "IP version mismatch" in ours.stderr
    assert ours.stderr.count("\n") == 1


def test_interface(lab) -> None:
    iface = _client_iface(lab)
    _same_trace(*_both(lab, ["-4", "-n", "-q", "1", "-i", iface, "target.lab.test"]))
    ours, theirs = _both(lab, ["-4", "-n", "-i", "nosuchdev0", "target.lab.test"])
    # traceroute(8)'s error() after setsockopt SO_BINDTODEVICE: exit 1
    assert theirs.returncode == ours.returncode == 1, (ours.stderr, theirs.stderr)
    assert "No such device" in theirs.stderr and "No such device" in ours.stderr
    assert ours.stderr.count("\n") == 1


@pytest.mark.parametrize("method", ["", "-I"])
def test_back_prints_what_traceroute8_prints(lab, method) -> None:
    args = ["-4", "-n", "-q", "2", "--back", *([method] if method else []), "target.lab.test"]
    _same_trace(*_both(lab, args))


def test_back_marks_a_reply_that_came_back_another_way() -> None:
    # traceroute(8): " '-N'" after the address when ttl2hops(reply TTL) differs from the TTL,
    # the address repeated when the reply TTL changes
    def probe(ttl: int) -> Probe:
        return Probe(
            seq=1,
            ident=1,
            ttl=3,
            sent=b"",
            send_ns=0,
            outcome=Outcome.TIME_EXCEEDED,
            method=Method.UDP,
            rtt_ms=1.0,
            reply_from="198.51.100.10",
            reply_ttl=ttl,
        )

    hop = Hop(ttl=3, probes=(probe(62), probe(60), probe(60)))
    line = format_hop(hop, numeric=True, back=True)
    assert line == (" 3  198.51.100.10  1.000 ms 198.51.100.10 '-5'  1.000 ms  1.000 ms")
    assert format_hop(hop, numeric=True) == " 3  198.51.100.10  1.000 ms  1.000 ms  1.000 ms"


# -- without CAP_NET_RAW ----------------------------------------------------------------------


def test_setpriv_really_drops_raw_sockets(lab) -> None:
    assert shutil.which("setpriv")
    code = "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)"
    proc, _ = _run(lab, [sys.executable, "-c", code], unprivileged=True)
    assert proc.returncode != 0 and "PermissionError" in proc.stderr


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("method", ["", "-I"])
def test_unprivileged_trace_matches_truth_and_traceroute8(lab, family, method) -> None:
    args = [f"-{family}", "-n", "-q", "1", *([method] if method else []), "target.lab.test"]
    ours, theirs = _both(lab, args, unprivileged=True)
    _same_trace(ours, theirs)
    assert _hops(ours.stdout) == _truth_hops(lab, family)


@pytest.mark.parametrize("family", [4, 6])
def test_unprivileged_prohibited_host_marks_x(lab, family) -> None:
    args = [f"-{family}", "-n", "-q", "1", "prohibited.lab.test"]
    ours, theirs = _both(lab, args, unprivileged=True)
    assert ours.returncode == theirs.returncode == 0  # a finished trace, reached or not
    assert _hops(ours.stdout) == _hops(theirs.stdout)
    assert _hops(ours.stdout)[lab.prohibited.ttl][1] == ("!X",)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("method", [Method.UDP, Method.ICMP])
def test_unprivileged_probe_bytes_are_what_went_on_the_wire(lab, family, method) -> None:
    # the kernel writes the UDP header (and the ICMP identifier and checksum): Probe.sent must
    # still be the transport bytes the capture saw
    flag = ["-I"] if method is Method.ICMP else []
    argv = [*OURS, f"-{family}", "-n", "-q", "1", "-m", "3", "--json", *flag, "target.lab.test"]
    proc, pkts = _captured(lab, argv, family, unprivileged=True)
    assert proc.returncode == 0, proc.stderr  # -m 3 does not reach target: still 0
    header = 20 if family == 4 else 40
    wire = sorted(ip[header:] for _, ip in pkts)
    sent = sorted(
        bytes.fromhex(p["sent"]) for h in json.loads(proc.stdout)["hops"] for p in h["probes"]
    )
    assert len(sent) == 3 and sent == wire


def test_unprivileged_tcp_is_refused_in_one_line(lab) -> None:
    ours, theirs = _both(lab, ["-4", "-n", "-T", "target.lab.test"], unprivileged=True)
    # traceroute(8) -T needs privileges too: error_or_perm("socket"), exit 1
    assert theirs.stdout == ours.stdout == ""  # no header before the sockets are open
    assert ours.returncode == theirs.returncode == 1 and ours.stderr.count("\n") == 1
    assert "CAP_NET_RAW" in ours.stderr


@pytest.mark.root
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_icmp_without_raw_or_ping_sockets_is_one_clear_line(host: str) -> None:
    # a private namespace (loopback only) whose net.ipv4.ping_group_range admits no group:
    # neither a raw nor a datagram ICMP socket; traceroute(8) -I gives up there too
    import subprocess

    drop = " ".join(UNPRIVILEGED)
    script = (
        "ip link set lo up && sysctl -q -w net.ipv4.ping_group_range='1 0' && "
        f"{drop} {sys.executable} -m handrolled.traceroute -I -n {host}; echo ours=$?; "
        f"{drop} traceroute -I -n {host}; echo theirs=$?"
    )
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert "ours=1" in proc.stdout and "theirs=1" in proc.stdout, proc  # error(): exit 1
    assert "traceroute to" not in proc.stdout  # no header: the socket never opened
    ours = [line for line in proc.stderr.splitlines() if line.startswith("traceroute: ")]
    assert len(ours) == 1 and "ping_group_range" in ours[0] and "CAP_NET_RAW" in ours[0]
