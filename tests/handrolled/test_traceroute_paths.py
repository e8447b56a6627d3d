"""traceroute over paths that branch and shrink (issue 12): Paris flows, the MDA, --mtu.

Pure tests check the flow arithmetic against scapy (an independent dissector and checksum)
and the MDA's stopping table against the paper's.  Lab tests trace the lab's fork (r2 hashes
flows over fork-a / fork-b: lab.promises()["fork"]) and its narrow link (r6 answers
frag-needed / Packet Too Big: promises()["mtu"]), the --mtu output beside traceroute(8)'s.
"""

from __future__ import annotations

import re
import sys
import time

import pytest

from handrolled.errors import UsageError
from handrolled.paths import stopping_point, stopping_table
from handrolled.requests import TraceRequest
from handrolled.results import Method
from handrolled.tracer_core import TraceScheduler
from handrolled.traceroute import Tracer

SRC4, DST4 = "198.51.100.1", "203.0.113.146"
SRC6, DST6 = "2001:db8:0:1::1", "2001:db8:0:124::2"
PAYLOAD = b"wiretwin:traceroute:same-bytes:)"


def _tracer(method: Method, family: int) -> Tracer:
    src, dst = (SRC6, DST6) if family == 6 else (SRC4, DST4)
    port = 33434 if method is Method.UDP else 80
    payload = b"" if method is Method.TCP else PAYLOAD
    return Tracer(None, TraceScheduler(), method=method, dst=dst, src=src, family=family,
                  ident=0x7774, port=port, payload=payload, resolver=None, paris=True)  # fmt: skip


def _scapy(family: int, src: str, dst: str, transport: bytes, proto: int):
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw

    if family == 6:
        return IPv6(bytes(IPv6(src=src, dst=dst, nh=proto) / Raw(transport)))
    return IP(bytes(IP(src=src, dst=dst, proto=proto) / Raw(transport)))


def _verifies(family: int, pkt, data: bytes, proto: int) -> bool:
    """scapy's checksum over ``data`` (with its pseudo-header where the protocol has one)
    comes out 0: the message's checksum field is right (RFC 1071 §1)."""
    from scapy.layers.inet6 import in6_chksum
    from scapy.utils import checksum

    if family == 6:
        return in6_chksum(proto, pkt, data) == 0
    if proto == 1:
        return checksum(data) == 0
    from scapy.layers.inet import in4_chksum

    return in4_chksum(proto, pkt, data) == 0


@pytest.mark.parametrize("family", [4, 6])
def test_paris_udp_flow_constant_and_checksum_names_the_probe(family: int) -> None:
    from scapy.layers.inet import UDP

    t = _tracer(Method.UDP, family)
    src, dst = (SRC6, DST6) if family == 6 else (SRC4, DST4)
    for k in range(40):
        data = t._build(k, 1 + k // 3).data
        pkt = _scapy(family, src, dst, data, 17)
        udp = pkt[UDP]
        assert (udp.sport, udp.dport) == (0x7774, 33434)  # one flow
        assert udp.chksum == k + 1  # Paris: the checksum is the probe's number
        # and it verifies by scapy's own pseudo-header sum: the payload word made it so
        assert _verifies(family, pkt, data, 17)


@pytest.mark.parametrize("family", [4, 6])
def test_paris_icmp_identifier_and_checksum_fixed_while_seq_varies(family: int) -> None:
    t = _tracer(Method.ICMP, family)
    src, dst = (SRC6, DST6) if family == 6 else (SRC4, DST4)
    seen = set()
    for k in range(20):
        data = t._build(k, 1).data
        pkt = _scapy(family, src, dst, data, 58 if family == 6 else 1)
        icmp = pkt.payload
        seen.add((icmp.id, icmp.cksum if family == 6 else icmp.chksum))
        assert icmp.seq == k + 1
        assert _verifies(family, pkt, data, 58 if family == 6 else 1)
    assert len(seen) == 1


def test_paris_tcp_ports_fixed_sequence_varies() -> None:
    t = _tracer(Method.TCP, 4)
    heads = [t._build(k, 1).data for k in range(10)]
    assert {h[0:4] for h in heads} == {bytes.fromhex("77740050")}
    assert [int.from_bytes(h[4:8], "big") for h in heads] == list(range(1, 11))


def test_mda_stopping_table_is_the_papers() -> None:
    # Veitch et al. 2009 (and Augustin et al. 2007), 95 %: n_1..n_5 = 6, 11, 16, 21, 27
    assert stopping_table(0.95, 5) == (6, 11, 16, 21, 27)
    # 99 %: 2 * (1/2)^n <= 0.01 first holds at n = 8
    assert stopping_point(1, 0.99) == 8


def test_path_options_are_checked_once() -> None:
    with pytest.raises(UsageError):
        TraceRequest("x", method=Method.UDP, multipath=True, fixed_port=True)
    with pytest.raises(UsageError):
        TraceRequest("x", method=Method.TCP, mtu=True)
    with pytest.raises(UsageError):
        TraceRequest("x", method=Method.UDP, paris=True, payload=b"a")
    with pytest.raises(UsageError):
        TraceRequest("x", multipath=True, confidence=1.0)
    assert TraceRequest("x", mtu=True).data_len(4) == 65000 - 28


# -- the lab ----------------------------------------------------------------------------------


def _fork(lab, family: int) -> tuple[int, set[str]]:
    fork = lab.promises()["fork"]
    return fork["branch_ttl"], {b[f"ipv{family}"] for b in fork["branches"].values()}


def _request(lab, method: Method, family: int, **kw) -> TraceRequest:
    kw.setdefault("wait", (2.0, 3.0, 10.0))
    return TraceRequest(lab.nodes["multi"].addr(family), method=method, family=family,
                        max_hops=5, resolve=False, ident=0x7774,
                        payload=b"" if method is Method.TCP else PAYLOAD, **kw)  # fmt: skip


@pytest.mark.lab
@pytest.mark.parametrize("method", [Method.UDP, Method.TCP, Method.ICMP])
def test_lab_paris_flow_constant_on_the_wire(lab, method: Method) -> None:
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    from compare.capture import Capture

    request = _request(lab, method, 4, paris=True)
    with Capture(lab.ns("client"), "down0") as capture:
        result = lab.call("client", "handrolled.traceroute:run_trace", request)
        time.sleep(0.1)
    layer = {Method.UDP: UDP, Method.TCP: TCP, Method.ICMP: ICMP}[method]
    flows = set()
    for frame in capture.frames:
        if not frame.outgoing or not frame.ip or frame.ip[0] >> 4 != 4:
            continue
        pkt = IP(frame.ip)
        if layer in pkt and pkt[IP].dst == request.host:
            head = pkt[layer]
            flows.add((head.id, head.chksum) if method is Method.ICMP else (head.sport, head.dport))
    assert len(flows) == 1, flows
    ttl, branches = _fork(lab, 4)
    at_fork = {p.reply_from for hop in result.hops if hop.ttl == ttl for p in hop.probes}
    assert len(at_fork) == 1 and at_fork <= branches


@pytest.mark.lab
@pytest.mark.parametrize("method", [Method.UDP, Method.TCP])
def test_lab_classic_sees_both_branches_on_one_line(lab, method: Method) -> None:
    from handrolled.cli.traceroute import format_hop

    result = lab.call("client", "handrolled.traceroute:run_trace",
                      _request(lab, method, 4, probes_per_hop=6))  # fmt: skip
    ttl, branches = _fork(lab, 4)
    hop = next(h for h in result.hops if h.ttl == ttl)
    assert {p.reply_from for p in hop.probes} == branches
    assert {p.flow for p in hop.probes} and len({p.flow for p in hop.probes}) == 6
    line = format_hop(hop, numeric=True)
    assert all(f" {b}  " in line for b in branches), line  # traceroute(8): `3  a  1 ms b  2 ms`


@pytest.mark.lab
def test_lab_multipath_finds_exactly_the_two_branches_within_its_bound(lab) -> None:
    result = lab.call("client", "handrolled.traceroute:run_trace",
                      _request(lab, Method.UDP, 4, multipath=True))  # fmt: skip
    ttl, branches = _fork(lab, 4)
    for hop in result.hops:
        seen = {p.reply_from for p in hop.probes}
        assert seen == branches if hop.ttl == ttl else len(seen) == 1, (hop.ttl, seen)
        # the paper's n_1 = 6, n_2 = 11 at 95 %, one flow per probe
        assert len(hop.probes) == (11 if hop.ttl == ttl else 6)
        assert len({p.flow for p in hop.probes}) == len(hop.probes)
    assert [h.ttl for h in result.hops] == [1, 2, 3, 4, 5] and result.reached


F_MARK = re.compile(r"^ ?(\d+) .*?F=(\d+)", re.M)


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_lab_mtu_output_as_traceroute8(lab, family: int) -> None:
    narrow = lab.nodes["narrow"].addr(family)
    argv = [f"-{family}", "-n", "--mtu", "-f", "4", "-q", "2", "-w", "1", narrow]
    lab.forget_pmtu()
    ours = lab.exec("client", [sys.executable, "-m", "handrolled.cli.traceroute", *argv]).stdout
    lab.forget_pmtu()
    theirs = lab.exec("client", ["traceroute", *argv]).stdout
    lab.forget_pmtu()
    assert ours.splitlines()[0] == theirs.splitlines()[0]  # ... 65000 byte packets
    assert F_MARK.findall(ours) == F_MARK.findall(theirs), (ours, theirs)
    small = str(lab.promises()["mtu"]["mtu6" if family == 6 else "mtu4"])
    assert F_MARK.findall(ours)[-1] == (str(lab.nodes["narrow"].ttl), small), ours


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize("flow", [0, 3])
def test_both_engines_build_the_same_flow_probes(family: int, method: Method, flow: int) -> None:
    """The reference (scapy, its own compensation arithmetic) and the hand-rolled tracer lay
    out Paris (flow 0) and MDA (flow 3) probes byte for byte alike."""
    from scapy.compat import raw

    from reference.traceroute import build_probe

    t = _tracer(method, family)
    src, dst = (SRC6, DST6) if family == 6 else (SRC4, DST4)
    port = 33434 if method is Method.UDP else 80
    payload = b"" if method is Method.TCP else PAYLOAD
    for k in range(12):
        ours = t._build(k, 1 + k // 3, flow).data
        theirs = raw(build_probe(method, family, dst, ttl=1 + k // 3, index=k, ident=0x7774,
                                 port=port, payload=payload, src=src, flow=flow))  # fmt: skip
        assert ours == theirs[40 if family == 6 else 20 :], (k, ours.hex(), theirs.hex())
