"""reference.traceroute: probe fields, loopback, and the lab's promised path.

Bad input is the request's to refuse (tests/test_request_trace.py, for both engines).
"""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from handrolled.requests import PingRequest, TraceRequest
from handrolled.results import Method, Outcome
from reference.common import default_payload
from reference.traceroute import build_probe, run_trace, source_port

# Produced once with scapy 2.8 (build_probe index 7, ttl 3, ident 0x1234, src set by hand).
GOLDEN = {
    Method.ICMP: "450000200008400003011196c6336401cb00710a0800e3bf1234000800010203",
    Method.UDP: "450000200008400003111186c6336401cb00710a123482a1000c02bd00010203",
    Method.TCP: "4500002c0008400003061185c6336401cb00710a123b005000000008000000005002faf0"
    "3a17000000010203",
}
PORT = {Method.ICMP: 0, Method.UDP: 33434, Method.TCP: 80}


@pytest.mark.parametrize("method", list(Method))
def test_probe_bytes_match_golden(method: Method) -> None:
    # the golden bytes carry DF, as -F (traceroute(8)'s IP_PMTUDISC_PROBE) sets it
    pkt = build_probe(
        method, 4, "203.0.113.10", ttl=3, index=7, ident=0x1234, port=PORT[method],
        payload=default_payload(4), dont_fragment=True, src="198.51.100.1",
    )  # fmt: skip
    assert bytes(pkt).hex() == GOLDEN[method]


@pytest.mark.parametrize("method", list(Method))
def test_probe_knobs_set_the_ip_header(method: Method) -> None:
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    common = {"ttl": 3, "index": 7, "ident": 0x1234, "port": PORT[method], "payload": b""}
    plain = IP(bytes(build_probe(method, 4, "203.0.113.10", src="198.51.100.1", **common)))
    assert (plain.flags, plain.tos) == (0, 0)  # traceroute(8) without -F: DF clear
    knobs = build_probe(
        method, 4, "203.0.113.10", dont_fragment=True, tos=16, src="198.51.100.9", **common
    )
    parsed = IP(bytes(knobs))
    assert (int(parsed.flags), parsed.tos, parsed.src) == (2, 16, "198.51.100.9")  # RFC 791
    six = IPv6(bytes(build_probe(method, 6, "2001:db8::1", tos=16, src="2001:db8::9", **common)))
    assert (six.tc, six.src) == (16, "2001:db8::9")  # RFC 8200 §7: the traffic class


def test_ports_follow_the_documented_scheme() -> None:
    assert source_port(Method.UDP, 0x1234, 5) == 0x1234  # fixed per trace
    assert source_port(Method.TCP, 0x1234, 5) == 0x1234 + 5  # one per probe
    assert source_port(Method.TCP, 0xFFFF, 1) == 0  # wraps like a 16-bit field
    udp = build_probe(Method.UDP, 6, "2001:db8::1", ttl=1, index=4, ident=1, port=33434,
                      payload=b"")  # fmt: skip
    assert udp.payload.dport == 33438
    # -U (fixed_port): one destination port, a source port per probe
    fixed = build_probe(Method.UDP, 4, "203.0.113.10", ttl=1, index=4, ident=1, port=53,
                        payload=b"", fixed_port=True)  # fmt: skip
    assert (fixed.payload.sport, fixed.payload.dport) == (5, 53)


def test_run_trace_takes_a_request() -> None:
    with pytest.raises(TypeError):
        run_trace("127.0.0.1")  # type: ignore[arg-type]


@pytest.mark.root
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("method", list(Method))
def test_loopback_is_one_hop(host: str, method: Method) -> None:
    hops = []
    request = TraceRequest(host, method=method, max_hops=4, wait=(1.0, 3.0, 10.0))
    result = run_trace(request, on_hop=hops.append)
    assert result.reached
    assert [h.ttl for h in result.hops] == [1]
    assert list(result.hops) == hops
    probes = result.hops[0].probes
    assert [p.outcome for p in probes] == [Outcome.REPLY] * 3
    assert [p.seq for p in probes] == [1, 2, 3]
    if method is Method.UDP:
        assert [p.dst_port for p in probes] == [33434, 33435, 33436]
        assert {p.icmp_code for p in probes} == {3 if host == "127.0.0.1" else 4}
    if method is Method.TCP:
        assert len({p.src_port for p in probes}) == 3


# --- in the lab ---------------------------------------------------------------------------------


def _trace(lab, host: str, **kwargs):
    return lab.call("client", "reference.traceroute:run_trace", TraceRequest(host, **kwargs))


def _hop_rtts(result) -> dict[int, list[float | None]]:
    return {hop.ttl: [p.rtt_ms for p in hop.probes] for hop in result.hops}


def _check_path(lab, result, family: int, end_role: str = "target", again=None) -> None:
    truth = lab.hops(end_role)
    assert [h.ttl for h in result.hops] == [n.ttl for n in truth]
    for hop, node in zip(result.hops, truth, strict=True):
        outcomes = {p.outcome for p in hop.probes}
        if not node.answers:
            assert outcomes == {Outcome.TIMEOUT}, f"hop {hop.ttl} should be silent"
            continue
        assert {p.reply_from for p in hop.probes} == {node.addr(family)}, f"hop {hop.ttl}"
        assert {p.reply_name for p in hop.probes} == {node.hostname}, f"hop {hop.ttl}"
    # A hop's probes fly together, so one CPU pause delays all of them: a late minimum is
    # measured again (a whole new trace), an early one fails at once (see Lab.settle_min_rtts).
    answering = {n.ttl: n for n in truth if n.answers}
    verdict = lab.settle_min_rtts(
        answering,
        _hop_rtts(result),
        (lambda: _hop_rtts(again())) if again is not None else None,
    )
    assert verdict.ok, verdict.why


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("method", list(Method))
def test_lab_trace_meets_the_promised_path(lab, family: int, method: Method) -> None:
    # Warm neighbour caches on every link (the first packet of a fresh path waits for ND/ARP).
    lab.call("client", "reference.ping:run_ping", PingRequest(lab.target.addr(family), count=1))

    # One hop in flight at a time: a burst of 16+ probes queues in the lab's single delay
    # process and shows up as a few ms of extra RTT (seen: 22 ms for an 18 ms hop).
    def trace():
        return _trace(lab, lab.target.hostname, method=method, family=family, sim_queries=3,
                      wait=(1, 3, 10))  # fmt: skip

    result = trace()
    assert result.reached
    assert result.address == lab.target.addr(family)
    _check_path(lab, result, family, again=trace)
    last = result.hops[-1].probes
    assert {p.outcome for p in last} == {Outcome.REPLY}
    assert all(p.method is method for h in result.hops for p in h.probes)


@pytest.mark.lab
@pytest.mark.parametrize(("family", "code"), [(4, 13), (6, 1)])
def test_lab_trace_to_prohibited_ends_unreachable(lab, family: int, code: int) -> None:
    result = _trace(lab, lab.prohibited.addr(family), wait=(2, 3, 10), resolve=False)  # N=16
    assert not result.reached
    assert [h.ttl for h in result.hops] == [n.ttl for n in lab.hops("prohibited")]
    last = result.hops[-1].probes
    assert {p.outcome for p in last} == {Outcome.UNREACHABLE}
    assert {p.icmp_code for p in last} == {code}
    assert all(p.reply_name is None for h in result.hops for p in h.probes)  # resolve=False


@pytest.mark.lab
def test_lab_first_ttl_and_max_hops_bound_the_trace(lab) -> None:
    result = _trace(lab, lab.target.addr4, first_ttl=2, max_hops=4, probes_per_hop=1,
                    wait=(1, 3, 10))  # fmt: skip
    assert [h.ttl for h in result.hops] == [2, 3, 4]
    assert not result.reached
    assert [len(h.probes) for h in result.hops] == [1, 1, 1]


def _wire(lab, target: str, family: int, request: TraceRequest) -> list[tuple[int, bytes]]:
    """(time, IP datagram) of what the client sent to the target while ``target`` ran."""
    from compare.capture import Capture

    dst = ipaddress.ip_address(lab.target.addr(family)).packed
    with Capture(lab.ns("client"), None) as cap:
        lab.call("client", target, request)
    out = []
    for frame in cap.frames:
        ip = frame.ip
        ours = frame.outgoing and ip and ip[0] >> 4 == family
        if ours and (ip[16:20] if family == 4 else ip[24:40]) == dst:
            out.append((frame.time_ns, ip))
    return out


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("method", list(Method))
def test_lab_both_engines_honour_the_traceroute8_knobs(lab, family, method) -> None:
    # one request with traceroute(8)'s packet_len, -F, -t, -s and -z; each engine's probes on
    # the wire carry them, read back from a capture (RFC 791 §3.1 / RFC 8200 §3 offsets)
    src = lab.client.addr(family)
    request = TraceRequest(
        "target.lab.test", method=method, family=family, probes_per_hop=1, max_hops=3,
        wait=(1.0, 3.0, 10.0), ident=0x7775, resolve=False, packet_len=300,
        dont_fragment=True, tos=16, source=src, send_wait=0.05,
    )  # fmt: skip
    header = 20 if family == 4 else 40
    length = header + 20 if method is Method.TCP else 300  # traceroute(8) -T ignores the length
    seen = {}
    for side in ("handrolled", "reference"):
        packets = _wire(lab, f"{side}.traceroute:run_trace", family, request)
        assert len(packets) == 3, side
        fields = set()
        for _, ip in packets:
            if family == 4:
                total, tos, df = int.from_bytes(ip[2:4], "big"), ip[1], ip[6] >> 6 & 1
                source = ip[12:16]
            else:
                total, df = 40 + int.from_bytes(ip[4:6], "big"), None
                tos, source = ((ip[0] & 0x0F) << 4) | (ip[1] >> 4), ip[8:24]
            fields.add((total, tos, df, source))
        want_df = 1 if family == 4 else None
        assert fields == {(length, 16, want_df, ipaddress.ip_address(src).packed)}, side
        times = sorted(t for t, _ in packets)
        assert min(b - a for a, b in itertools.pairwise(times)) >= 45_000_000, side
        seen[side] = fields
    assert seen["handrolled"] == seen["reference"]
