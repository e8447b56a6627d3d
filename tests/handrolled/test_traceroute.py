"""Hand-rolled traceroute: the pure scheduler, reply matching, output, and real traces.

Pure tests use a fake clock and real packet bytes (our codecs, which have their own golden
tests).  Loopback tests need root (raw sockets); the lab tests trace the lab's 7-hop path with
every method over IPv4 and IPv6 and run traceroute(8) on the same path in the same test.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import sys
import time

import pytest

from handrolled import transport as tp
from handrolled.cli.traceroute import (
    annotation,
    backward_hops,
    format_hop,
    main,
    parse_sendwait,
    parse_wait,
    result_to_json,
)
from handrolled.errors import UsageError
from handrolled.icmp import (
    decode_icmp,
    decode_icmp6,
    encode_echo_reply,
    encode_echo_request,
    encode_icmp_error,
)
from handrolled.ip import IpProto, IPv4Header, IPv6Header, encode_ipv4, encode_ipv6
from handrolled.names import ReverseResolver
from handrolled.net import QueuedError
from handrolled.requests import TraceRequest
from handrolled.results import Hop, Method, Outcome, Probe, TraceResult
from handrolled.tracenet import RawReceived, TraceSockets
from handrolled.tracer_core import WAIT_PRECISION, TraceScheduler
from handrolled.traceroute import (
    DEFAULT_PAYLOAD,
    NO_NAME,
    TCP_WINDOW,
    Tracer,
    build_packet,
    route_rows,
    run_trace,
)

# -- the scheduler (pure, fake clock) ---------------------------------------------------------


def test_window_keeps_at_most_sim_queries_in_flight() -> None:
    s = TraceScheduler(first_ttl=1, max_hops=10, probes_per_hop=3, sim_queries=4)
    first = s.to_send()
    assert first == [0, 1, 2, 3]
    for k in first:
        s.mark_sent(k, 0.0)
    assert s.to_send() == []
    assert s.ttl_of(3) == 2
    assert s.on_reply(1, rtt=0.010, final=False)
    assert s.to_send() == [4]  # one slot freed, the next probe in order takes it


def test_here_rule_shortens_the_wait_of_a_hop_that_already_answered() -> None:
    s = TraceScheduler(max_hops=5, probes_per_hop=3, sim_queries=16, wait=(5.0, 3.0, 10.0))
    for k in s.to_send():
        s.mark_sent(k, 0.0)
    assert s.timeout_for(1) == 5.0  # nothing heard yet: MAX
    s.on_reply(0, rtt=0.020, final=False)  # 20 ms from hop 1
    assert s.timeout_for(1) == pytest.approx((0.020 + WAIT_PRECISION) * 3.0)
    assert s.deadline_of(1) == pytest.approx(0.063)
    assert s.expire(0.062) == []
    assert s.expire(0.064) == [1, 2]


def test_near_rule_expires_a_silent_hop_after_a_few_rtts() -> None:
    # hop 1 answers, hop 2 is silent, hop 3 answers: hop 2 waits NEAR * hop 3's RTT
    s = TraceScheduler(max_hops=3, probes_per_hop=2, sim_queries=16, wait=(5.0, 3.0, 10.0))
    for k in s.to_send():
        s.mark_sent(k, 0.0)
    s.on_reply(0, rtt=0.003, final=False)
    s.on_reply(1, rtt=0.003, final=False)
    assert s.timeout_for(2) == 5.0  # nothing later answered yet
    s.on_reply(4, rtt=0.010, final=True)
    assert s.timeout_for(2) == pytest.approx((0.010 + WAIT_PRECISION) * 10.0)
    assert s.pop_complete_hops() == [1]
    assert s.expire(0.05) == [5]  # hop 3's second probe waits HERE * 11 ms
    assert s.expire(0.10) == []
    assert s.expire(0.12) == [2, 3]  # the silent hop: NEAR * 11 ms
    assert s.pop_complete_hops() == [2, 3]
    assert s.finished and s.reached


def test_near_rule_looks_only_at_probes_already_sent() -> None:
    s = TraceScheduler(max_hops=4, probes_per_hop=1, sim_queries=2, wait=(5.0, 0.0, 10.0))
    for k in s.to_send():
        s.mark_sent(k, 0.0)
    assert s.timeout_for(0) == 5.0
    s.on_reply(1, rtt=0.004, final=False)
    assert s.timeout_for(0) == pytest.approx(0.05)
    s.mark_sent(2, 0.01)
    s.slots[3].rtt = 0.001  # a reply recorded on an unsent probe is past the scan's stop
    assert s.timeout_for(2) == 5.0


def test_factors_of_zero_disable_here_and_near() -> None:
    s = TraceScheduler(max_hops=2, probes_per_hop=2, wait=(2.0, 0.0, 0.0))
    for k in s.to_send():
        s.mark_sent(k, 0.0)
    s.on_reply(0, rtt=0.001, final=False)
    s.on_reply(2, rtt=0.001, final=False)
    assert s.timeout_for(1) == 2.0
    assert s.next_deadline() == 2.0


def test_a_final_reply_ends_the_trace_at_its_hop() -> None:
    s = TraceScheduler(max_hops=30, probes_per_hop=3, sim_queries=16)
    sent = s.to_send()
    for k in sent:
        s.mark_sent(k, 0.0)
    assert s.on_reply(7, rtt=0.01, final=True)  # ttl 3 reached the destination
    assert s.end == 9
    assert not s.on_reply(12, rtt=0.01, final=False)  # beyond the destination: ignored
    for k in range(9):
        s.on_reply(k, rtt=0.01, final=False)
    assert s.pop_complete_hops() == [1, 2, 3]
    assert s.finished and s.to_send() == []


def test_hops_are_released_in_order_only() -> None:
    s = TraceScheduler(max_hops=3, probes_per_hop=1, sim_queries=3)
    for k in s.to_send():
        s.mark_sent(k, 0.0)
    s.on_reply(2, rtt=0.01, final=True)
    s.on_reply(1, rtt=0.01, final=False)
    assert s.pop_complete_hops() == []  # hop 1 still pending
    s.on_reply(0, rtt=0.01, final=False)
    assert s.pop_complete_hops() == [1, 2, 3]
    assert s.pop_complete_hops() == []


def test_a_probe_that_could_not_be_sent_is_done_at_once() -> None:
    s = TraceScheduler(max_hops=2, probes_per_hop=1, sim_queries=1)
    assert s.to_send() == [0]
    s.mark_lost(0, 0.0)
    assert s.in_flight == 0 and s.next_deadline() is None and s.to_send() == [1]
    assert s.pop_complete_hops() == [1]
    assert not s.on_reply(0, rtt=0.01, final=True)  # a reply to what never left does not count


def test_first_ttl_numbers_probes_from_there() -> None:
    s = TraceScheduler(first_ttl=5, max_hops=6, probes_per_hop=2)
    assert [s.ttl_of(k) for k in range(4)] == [5, 5, 6, 6]
    assert not s.on_reply(0, rtt=1.0, final=False)  # never sent


def test_send_wait_spaces_the_sends() -> None:
    # traceroute(8) -z: "Minimal time interval between probes"; one probe at a time, each
    # no sooner than send_wait after the previous one
    s = TraceScheduler(max_hops=3, probes_per_hop=2, sim_queries=16, send_wait=0.5)
    assert s.to_send(0.0) == [0]
    s.mark_sent(0, 0.0)
    assert s.next_send_at() == 0.5
    assert s.to_send(0.4) == []
    assert s.to_send(0.5) == [1]
    s.mark_sent(1, 0.5)
    s.on_reply(0, rtt=0.01, final=True)  # the trace ends at hop 1
    s.on_reply(1, rtt=0.01, final=False)
    assert s.next_send_at() is None  # nothing left to send: no reason to wake up
    assert s.to_send(9.0) == []


def test_parse_wait() -> None:
    # traceroute 2.1 set_wait_specs(): HERE and NEAR start at 0, so MAX alone is a fixed wait
    # and MAX,HERE leaves NEAR off (man traceroute: "Here and near are always set to zero if
    # only max is specified")
    assert parse_wait("5") == (5.0, 0.0, 0.0)
    assert parse_wait("2,1") == (2.0, 1.0, 0.0)
    assert parse_wait("5,3,10") == (5.0, 3.0, 10.0)
    assert parse_wait("1.5/0/0") == (1.5, 0.0, 0.0)  # traceroute(8) takes "/" too
    assert parse_wait("1e0,2") == (1.0, 2.0, 0.0)  # strtod() syntax
    # it reads numbers only; their ranges are TraceRequest's (tests/test_request_trace.py)
    assert parse_wait("-1") == (-1.0, 0.0, 0.0)
    for bad in ("", "x", "1,2,3,4", "1,,3", "5,", "1,2,"):
        with pytest.raises(UsageError):
            parse_wait(bad)


def test_parse_sendwait() -> None:
    # traceroute(8) -z: "If the value is more than 10, then it specifies a number in
    # milliseconds" (the code: 10 or more)
    assert parse_sendwait("0.5") == 0.5
    assert parse_sendwait("9.5") == 9.5
    assert parse_sendwait("10") == pytest.approx(0.010)
    assert parse_sendwait("250") == pytest.approx(0.250)
    for bad in ("-1", "x", "1s"):
        with pytest.raises(UsageError):
            parse_sendwait(bad)


def test_backward_hops_is_traceroute8s_ttl2hops() -> None:
    assert [backward_hops(t) for t in (64, 60, 128, 120, 255, 250)] == [1, 5, 1, 9, 1, 6]


# -- reply matching with real bytes ------------------------------------------------------------

US4, TARGET4, ROUTER4 = "198.51.100.1", "203.0.113.10", "198.51.100.6"
US6, TARGET6, ROUTER6 = "2001:db8:0:1::1", "2001:db8:0:100::2", "2001:db8:0:2::2"


def _tracer(method: Method, family: int = 4, ident: int = 0x4242, port: int = 33434) -> Tracer:
    dst, src = (TARGET6, US6) if family == 6 else (TARGET4, US4)
    sched = TraceScheduler(max_hops=10, probes_per_hop=3)
    payload = b"" if method is Method.TCP else DEFAULT_PAYLOAD
    return Tracer(
        None,
        sched,
        method=method,
        dst=dst,
        src=src,
        family=family,
        ident=ident,
        port=port,
        payload=payload,
        resolver=None,
    )


def _received4(src: str, icmp: bytes, proto: int = IpProto.ICMP, kind: str = "icmp") -> RawReceived:
    datagram = encode_ipv4(IPv4Header(src=src, dst=US4, protocol=proto, ttl=61), icmp)
    return RawReceived(kind, datagram, src, 1, True, 61)


def _quote4(probe: bytes, proto: int, dst: str = TARGET4) -> bytes:
    return encode_ipv4(IPv4Header(src=US4, dst=dst, protocol=proto, ttl=1), probe)


def test_icmp_probes_carry_the_documented_fields() -> None:
    t = _tracer(Method.ICMP)
    sent = t._build(4, 2)
    msg = decode_icmp(sent.data)
    assert (msg.icmp_type, msg.ident, msg.seq, msg.payload) == (8, 0x4242, 5, DEFAULT_PAYLOAD)
    assert msg.checksum_ok
    assert bytes(range(32)) == DEFAULT_PAYLOAD


def test_icmp_replies_match_by_ident_and_seq() -> None:
    t = _tracer(Method.ICMP)
    probes = [t._build(k, 1 + k // 3) for k in range(6)]
    # a router's time exceeded quoting probe 4
    error = encode_icmp_error(11, 0, _quote4(probes[4].data, IpProto.ICMP)[:28])
    match = t._match(_received4(ROUTER4, error))
    assert match is not None
    assert (match.k, match.outcome, match.final, match.reply_ttl) == (
        4,
        Outcome.TIME_EXCEEDED,
        False,
        61,
    )
    # the destination's echo reply to probe 2
    reply = encode_echo_reply(0x4242, 3, DEFAULT_PAYLOAD)
    match = t._match(_received4(TARGET4, reply))
    assert match is not None and (match.k, match.outcome, match.final) == (2, Outcome.REPLY, True)
    # someone else's ident, a seq we never sent, a reply from elsewhere, a quote to elsewhere
    assert t._match(_received4(TARGET4, encode_echo_reply(0x4243, 3, DEFAULT_PAYLOAD))) is None
    assert t._match(_received4(TARGET4, encode_echo_reply(0x4242, 99, DEFAULT_PAYLOAD))) is None
    assert t._match(_received4(ROUTER4, reply)) is None
    other = encode_icmp_error(11, 0, _quote4(probes[4].data, IpProto.ICMP, "203.0.113.99"))
    assert t._match(_received4(ROUTER4, other)) is None
    # a mangled echo is matched but CORRUPT, and does not end the trace
    bad = encode_echo_reply(0x4242, 3, DEFAULT_PAYLOAD[:-1] + b"!")
    match = t._match(_received4(TARGET4, bad))
    assert match is not None and match.outcome is Outcome.CORRUPT and match.note
    # garbage is ignored, not raised
    assert t._match(RawReceived("icmp", b"\x45\x00", ROUTER4, 1, True, None)) is None


def test_udp_probes_and_their_replies() -> None:
    t = _tracer(Method.UDP, ident=40000, port=33434)
    sent = t._build(7, 3)
    udp = tp.decode_udp(sent.data)
    assert (udp.src_port, udp.dst_port, udp.payload) == (40000, 33441, DEFAULT_PAYLOAD)
    assert tp.transport_checksum_ok(US4, TARGET4, IpProto.UDP, sent.data)
    quoted = _quote4(sent.data, IpProto.UDP)[:28]
    te = t._match(_received4(ROUTER4, encode_icmp_error(11, 0, quoted)))
    assert te is not None and (te.k, te.outcome) == (7, Outcome.TIME_EXCEEDED)
    port = t._match(_received4(TARGET4, encode_icmp_error(3, 3, quoted)))
    assert port is not None and (port.k, port.outcome, port.final) == (7, Outcome.REPLY, True)
    admin = t._match(_received4(ROUTER4, encode_icmp_error(3, 13, quoted)))
    assert admin is not None and (admin.outcome, admin.icmp_code) == (Outcome.UNREACHABLE, 13)
    # same ports but another source port: not ours
    foreign = tp.encode_udp(tp.UdpDatagram(40001, 33441, b""), src=US4, dst=TARGET4)
    err = encode_icmp_error(11, 0, _quote4(foreign, IpProto.UDP)[:28])
    assert t._match(_received4(ROUTER4, err)) is None


def test_fixed_port_udp_probes_take_a_source_port_each() -> None:
    # -U: one destination port, source port ident + k
    sched = TraceScheduler(max_hops=10, probes_per_hop=3)
    t = Tracer(
        None, sched, method=Method.UDP, dst=TARGET4, src=US4, family=4, ident=40000, port=53,
        payload=DEFAULT_PAYLOAD, resolver=None, fixed_port=True,
    )  # fmt: skip
    sent = [t._build(k, 1 + k // 3) for k in range(4)]
    ports = [(tp.decode_udp(p.data).src_port, tp.decode_udp(p.data).dst_port) for p in sent]
    assert ports == [(40000 + k, 53) for k in range(4)]
    quoted = _quote4(sent[2].data, IpProto.UDP)[:28]
    te = t._match(_received4(ROUTER4, encode_icmp_error(11, 0, quoted)))
    assert te is not None and te.k == 2


def test_error_queue_entries_match_by_port_and_by_echo() -> None:
    # a datagram socket's error queue: the kernel hands back our own payload (UDP) or echo
    # request (ICMP), the destination port, and the error's type, code and offender
    udp = _tracer(Method.UDP, ident=40000, port=33434)
    udp._build(4, 2)
    exceeded = QueuedError(11, 0, ROUTER4, 113, 0)  # EHOSTUNREACH
    rec = RawReceived("udp", DEFAULT_PAYLOAD, ROUTER4, 1, True, 63, exceeded, 33438, 40000)
    match = udp._match(rec)
    assert match is not None and (match.k, match.outcome, match.reply_ttl) == (
        4,
        Outcome.TIME_EXCEEDED,
        63,
    )
    port = QueuedError(3, 3, TARGET4, 111, 0)  # ECONNREFUSED
    rec = RawReceived("udp", DEFAULT_PAYLOAD, TARGET4, 1, True, 58, port, 33438, 40000)
    assert udp._match(rec).outcome is Outcome.REPLY  # type: ignore[union-attr]
    other = RawReceived("udp", b"", ROUTER4, 1, True, 63, exceeded, 33438, 40001)
    assert udp._match(other) is None  # another socket's probe
    icmp = _tracer(Method.ICMP, ident=0x4242)
    probe = icmp._build(5, 2)
    rec = RawReceived("dgram", probe.data, ROUTER4, 1, True, 63, exceeded)
    assert icmp._match(rec).k == 5  # type: ignore[union-attr]
    reply = encode_echo_reply(0x4242, probe.seq, DEFAULT_PAYLOAD)
    rec = RawReceived("dgram", reply, TARGET4, 1, True, 58)  # no IP header on a ping socket
    match = icmp._match(rec)
    assert match is not None and (match.k, match.outcome) == (5, Outcome.REPLY)


def test_tcp_probes_and_their_replies() -> None:
    t = _tracer(Method.TCP, ident=50000, port=80)
    sent = t._build(5, 2)
    syn = tp.decode_tcp(sent.data)
    assert (syn.src_port, syn.dst_port, syn.seq, syn.ack) == (50005, 80, 6, 0)
    assert (syn.flags, syn.window, syn.options) == (tp.TcpFlags.SYN, TCP_WINDOW, b"")
    te = encode_icmp_error(11, 0, _quote4(sent.data, IpProto.TCP)[:28])
    match = t._match(_received4(ROUTER4, te))
    assert match is not None and (match.k, match.outcome) == (5, Outcome.TIME_EXCEEDED)
    for flags in (tp.TcpFlags.RST | tp.TcpFlags.ACK, tp.TcpFlags.SYN | tp.TcpFlags.ACK):
        answer = tp.TcpSegment(80, 50005, seq=0, ack=7, flags=flags, window=0)
        wire = tp.encode_tcp(answer, src=TARGET4, dst=US4)
        match = t._match(_received4(TARGET4, wire, IpProto.TCP, "tcp"))
        assert match is not None and (match.k, match.outcome, match.final) == (
            5,
            Outcome.REPLY,
            True,
        )
        assert match.note == ""
    wrong_ack = tp.encode_tcp(
        tp.TcpSegment(80, 50005, ack=8, flags=tp.TcpFlags.RST), src=TARGET4, dst=US4
    )
    assert t._match(_received4(TARGET4, wrong_ack, IpProto.TCP, "tcp")) is None
    bare_ack = tp.encode_tcp(
        tp.TcpSegment(80, 50005, ack=7, flags=tp.TcpFlags.ACK), src=TARGET4, dst=US4
    )
    assert t._match(_received4(TARGET4, bare_ack, IpProto.TCP, "tcp")) is None


def test_ipv6_matching() -> None:
    t = _tracer(Method.ICMP, family=6)
    sent = t._build(0, 1)
    assert decode_icmp6(sent.data, src=US6, dst=TARGET6).checksum_ok
    quoted = encode_ipv6(IPv6Header(src=US6, dst=TARGET6, hop_limit=1), sent.data)
    error = encode_icmp_error(3, 0, quoted, v6=True, src=ROUTER6, dst=US6)
    match = t._match(RawReceived("icmp", error, ROUTER6, 1, True, 63))
    assert match is not None and (match.k, match.outcome, match.reply_ttl) == (
        0,
        Outcome.TIME_EXCEEDED,
        63,
    )
    reply = encode_echo_reply(0x4242, 1, DEFAULT_PAYLOAD, v6=True, src=TARGET6, dst=US6)
    match = t._match(RawReceived("icmp", reply, TARGET6, 1, True, 60))
    assert match is not None and match.outcome is Outcome.REPLY
    prohibited = encode_icmp_error(1, 1, quoted, v6=True, src=TARGET6, dst=US6)
    match = t._match(RawReceived("icmp", prohibited, TARGET6, 1, True, 60))
    assert match is not None and match.outcome is Outcome.UNREACHABLE
    assert annotation(match.icmp_type, match.icmp_code, True) == "!X"


def test_build_packet_is_a_valid_echo_request() -> None:
    msg = decode_icmp(build_packet())
    assert msg.icmp_type == 8 and msg.checksum_ok and msg.seq == 1
    assert decode_icmp(build_packet(ident=7, seq=9, payload=b"abc")).ident == 7
    assert build_packet(ident=1) == encode_echo_request(1, 1, DEFAULT_PAYLOAD)


# -- output -------------------------------------------------------------------------------------


def _probe(ttl: int, src: str | None, rtt: float | None, **kw) -> Probe:
    outcome = kw.pop("outcome", Outcome.TIME_EXCEEDED if src else Outcome.TIMEOUT)
    return Probe(
        seq=1,
        ident=1,
        ttl=ttl,
        sent=b"\x08\x00",
        send_ns=1,
        outcome=outcome,
        reply_from=src,
        rtt_ms=rtt,
        **kw,
    )


def test_annotations_match_traceroute8() -> None:
    assert [annotation(3, c, False) for c in (0, 1, 2, 3, 4, 5, 9, 10, 13, 14, 15)] == [
        "!N",
        "!H",
        "!P",
        "",
        "!F",
        "!S",
        "!X",
        "!X",
        "!X",
        "!V",
        "!C",
    ]
    assert annotation(3, 8, False) == "!<8>"
    assert [annotation(1, c, True) for c in (0, 1, 3, 4, 6)] == ["!N", "!X", "!H", "", "!<6>"]
    assert annotation(11, 0, False) == "" and annotation(None, None, False) == ""


def test_hop_lines_have_traceroute8s_shape() -> None:
    hop = Hop(
        3,
        (
            _probe(3, "198.51.100.10", 9.87654, reply_name="r3.lab.test"),
            _probe(3, None, None),
            _probe(3, "198.51.100.10", 10.0, reply_name="r3.lab.test"),
        ),
    )
    assert format_hop(hop) == " 3  r3.lab.test (198.51.100.10)  9.877 ms *  10.000 ms"
    assert format_hop(hop, numeric=True) == " 3  198.51.100.10  9.877 ms *  10.000 ms"
    silent = Hop(12, (_probe(12, None, None),) * 3)
    assert format_hop(silent) == "12  * * *"
    mixed = Hop(
        7,
        (
            _probe(7, "203.0.113.18", 1.0, outcome=Outcome.UNREACHABLE, icmp_type=3, icmp_code=13),
            _probe(7, "203.0.113.19", 2.0),
        ),
    )
    assert (
        format_hop(mixed)
        == " 7  203.0.113.18 (203.0.113.18)  1.000 ms !X 203.0.113.19 (203.0.113.19)  2.000 ms"
    )


def _result(hops: list[Hop]) -> TraceResult:
    from handrolled.results import Implementation

    return TraceResult(
        "t", "203.0.113.10", 4, Method.ICMP, tuple(hops), True, Implementation.HANDROLLED
    )


def test_seed_rows_and_json() -> None:
    hops = [
        Hop(1, (_probe(1, "198.51.100.2", 3.4, reply_name="r1.lab.test"),)),
        Hop(2, (_probe(2, None, None),)),
        Hop(3, (_probe(3, "198.51.100.18", 12.5),)),
        Hop(
            4,
            (
                _probe(4, None, None),
                _probe(4, "203.0.113.10", 30.49, reply_name="t", outcome=Outcome.REPLY),
            ),
        ),
    ]
    assert route_rows(_result(hops)) == [
        ["1", "3ms", "198.51.100.2", "r1.lab.test"],
        ["2", "*", "Request timed out"],
        ["3", "12ms", "198.51.100.18", NO_NAME],
        ["4", "30ms", "203.0.113.10", "t"],
    ]
    data = json.loads(json.dumps(result_to_json(_result(hops))))
    assert data["method"] == "icmp" and data["hops"][0]["probes"][0]["sent"] == "0800"
    assert data["hops"][3]["probes"][1]["outcome"] == "reply"


def test_reverse_resolver_caches_and_bounds_its_wait() -> None:
    import threading

    calls: list[str] = []
    release = threading.Event()

    def lookup(addr: str) -> str | None:
        calls.append(addr)
        if addr == "198.51.100.99":
            release.wait(5)  # a resolver that hangs
            return "late.example"
        return None if addr.endswith(".18") else f"name-{addr}"

    resolver = ReverseResolver(per_name=0.2, budget=0.5, lookup=lookup)
    assert resolver.name("198.51.100.2") == "name-198.51.100.2"
    assert resolver.name("198.51.100.2") == "name-198.51.100.2"
    assert resolver.name("198.51.100.18") is None
    assert resolver.name("198.51.100.99") is None  # gave up after per_name seconds
    release.set()
    assert calls.count("198.51.100.2") == 1


def test_cli_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--bogus", "127.0.0.1"], ["-w", "x", "127.0.0.1"], [], ["-I", "-T", "x"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("traceroute: ") and err.count("\n") == 1


def test_cli_validates_options_before_tracing(capsys: pytest.CaptureFixture[str]) -> None:
    # nothing printed, nothing resolved: "nowhere.invalid" (RFC 6761) would fail to resolve
    assert main(["-q", "0", "nowhere.invalid"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("traceroute: probes_per_hop 0:")
    with pytest.raises(TypeError):
        run_trace("127.0.0.1")  # type: ignore[arg-type]  # a request, not keywords


# -- loopback (root: raw sockets) ---------------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_trace(method: Method, host: str) -> None:
    request = TraceRequest(host, method=method, ident=30000, resolve=False, wait=(2.0, 3.0, 10.0))
    result = run_trace(request)
    assert result.reached and len(result.hops) == 1
    probes = result.hops[0].probes
    assert [p.outcome for p in probes] == [Outcome.REPLY] * 3
    assert all(p.reply_from == host and p.kernel_timestamp and p.rtt_ms >= 0 for p in probes)
    for k, p in enumerate(probes):
        if method is Method.ICMP:
            assert (p.ident, p.seq) == (30000, k + 1)
        elif method is Method.UDP:
            udp = tp.decode_udp(p.sent)
            assert (udp.src_port, udp.dst_port) == (30000, 33434 + k)
        else:
            assert tp.decode_tcp(p.sent).src_port == 30000 + k


@pytest.mark.root
@pytest.mark.parametrize(("host", "family"), [("127.0.0.1", 4), ("::1", 6)])
def test_icmp_probes_are_timed_by_the_clock_before_sendto(host: str, family: int) -> None:
    # not the kernel's transmit stamp (taken after the capture tap; see TraceSockets.send)
    with TraceSockets(Method.ICMP, family, host, host) as sockets:
        probe = encode_echo_request(0x4343, 1, DEFAULT_PAYLOAD, v6=family == 6, src=host, dst=host)
        before = time.time_ns()
        send_ns = sockets.send(probe, 1)
        assert before <= send_ns <= time.time_ns()
        assert not sockets.icmp_socket.last_send_kernel
        assert sockets.icmp_socket.get_ttl() == 1
        replies = sockets.wait(1.0)
        assert replies and all(0 < r.recv_ns - send_ns < 1_000_000_000 for r in replies)


@pytest.mark.root
def test_cli_on_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-n", "-q", "2", "127.0.0.1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "traceroute to 127.0.0.1 (127.0.0.1), 30 hops max, 60 byte packets"
    assert re.fullmatch(r" 1  127\.0\.0\.1  \d+\.\d{3} ms  \d+\.\d{3} ms", out[1])
    assert main(["--json", "-T", "::1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reached"] and data["method"] == "tcp" and data["family"] == 6


# -- the lab ------------------------------------------------------------------------------------


def _system_hops(lab, method_flag: str, family: int, host: str) -> dict[int, set[str]]:
    """traceroute(8) -n on the lab path: TTL -> addresses that answered."""
    proc = lab.exec("client", ["traceroute", f"-{family}", "-n", method_flag, host], timeout=60)
    assert proc.returncode == 0, proc.stderr
    hops: dict[int, set[str]] = {}
    for line in proc.stdout.splitlines()[1:]:
        ttl, _, rest = line.strip().partition(" ")
        addrs = set()
        for token in rest.split():
            with contextlib.suppress(ValueError):
                addrs.add(ipaddress.ip_address(token).compressed)
        hops[int(ttl)] = addrs
    return hops


def _our_hops(result: TraceResult) -> dict[int, set[str]]:
    return {h.ttl: {p.reply_from for p in h.probes if p.reply_from} for h in result.hops}


METHODS = [(Method.ICMP, "-I"), (Method.UDP, "-U"), (Method.TCP, "-T")]


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("method", "flag"), METHODS)
def test_lab_trace_matches_the_truth_and_traceroute8(lab, method, flag, family) -> None:
    request = TraceRequest("target.lab.test", method=method, family=family)
    result = lab.call("client", "handrolled.traceroute:run_trace", request)
    truth = lab.hops()
    assert result.reached and result.family == family
    assert [h.ttl for h in result.hops] == [n.ttl for n in truth]
    for hop, node in zip(result.hops, truth, strict=True):
        want = node.addr6 if family == 6 else node.addr4
        if not node.answers:  # the silent router: every probe timed out
            assert {p.outcome for p in hop.probes} == {Outcome.TIMEOUT}
            continue
        assert {p.reply_from for p in hop.probes} == {want}, hop
        assert {p.reply_name for p in hop.probes} == {node.hostname}
        expected = Outcome.REPLY if node.role == "target" else Outcome.TIME_EXCEEDED
        assert {p.outcome for p in hop.probes} == {expected}
        assert all(p.kernel_timestamp for p in hop.probes)
    assert _our_hops(result) == _system_hops(lab, flag, family, "target.lab.test")


@pytest.mark.lab
@pytest.mark.parametrize("method", list(Method))
def test_lab_refused_probes_settle_at_once_with_a_note(lab, method) -> None:
    # the client's stack refuses probes to the limited broadcast address (no route to it, and
    # no SO_BROADCAST): nothing leaves, and each probe settles at once, saying why, as in ping,
    # instead of waiting out MAX
    sched = TraceScheduler(max_hops=3, probes_per_hop=2, wait=(5.0, 3.0, 10.0))
    with lab.entered("client"), TraceSockets(method, 4, "255.255.255.255", lab.client.addr4) as s:
        tracer = Tracer(
            s,
            sched,
            method=method,
            dst="255.255.255.255",
            src=lab.client.addr4,
            family=4,
            ident=0x4545,
            port=33434,
            payload=DEFAULT_PAYLOAD,
            resolver=None,
        )
        started = time.monotonic()
        hops = tracer.run()
        elapsed = time.monotonic() - started
    assert [h.ttl for h in hops] == [1, 2, 3] and elapsed < 1.0
    for hop in hops:
        assert [p.outcome for p in hop.probes] == [Outcome.TIMEOUT] * 2
        assert all(p.note.startswith("sendto: ") and p.send_ns for p in hop.probes), hop


@pytest.mark.lab
def test_lab_rtts_match_the_promised_delays(lab) -> None:
    # one probe at a time: a burst of 16 would queue in the lab's delay stages and measure that
    def measure() -> dict[int, list[float | None]]:
        request = TraceRequest(
            "target.lab.test", family=4, probes_per_hop=2, sim_queries=1, wait=(0.3, 3.0, 10.0)
        )
        result = lab.call("client", "handrolled.traceroute:run_trace", request)
        assert [h.ttl for h in result.hops] == [n.ttl for n in lab.hops()]
        return {hop.ttl: [p.rtt_ms for p in hop.probes] for hop in result.hops}

    # two probes per hop are few on a VM that pauses: a late minimum is measured again
    answering = {n.ttl: n for n in lab.hops() if n.answers}
    verdict = lab.settle_min_rtts(answering, measure(), measure)
    assert verdict.ok, verdict.why


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_lab_prohibited_host_is_marked_x(lab, family) -> None:
    request = TraceRequest("prohibited.lab.test", family=family)
    result = lab.call("client", "handrolled.traceroute:run_trace", request)
    assert not result.reached
    last = result.hops[-1]
    assert last.ttl == lab.prohibited.ttl
    node = lab.prohibited
    assert {p.reply_from for p in last.probes} == {node.addr6 if family == 6 else node.addr4}
    assert {p.outcome for p in last.probes} == {Outcome.UNREACHABLE}
    assert {annotation(p.icmp_type, p.icmp_code, family == 6) for p in last.probes} == {"!X"}
    proc = lab.exec(
        "client",
        [sys.executable, "-m", "handrolled.traceroute", f"-{family}", "prohibited.lab.test"],
    )
    assert proc.returncode == 0  # traceroute(8) exits 0 after any finished trace
    assert proc.stdout.splitlines()[-1].count("!X") == 3
    assert _our_hops(result) == _system_hops(lab, "-I", family, "prohibited.lab.test")


@pytest.mark.lab
def test_lab_seed_get_route_rows(lab) -> None:
    rows = lab.call("client", "handrolled.traceroute:get_route", "target.lab.test")
    assert len(rows) == 7
    for row, node in zip(rows, lab.hops(), strict=True):
        if not node.answers:
            assert row == [str(node.ttl), "*", "Request timed out"]
            continue
        assert row[0] == str(node.ttl) and re.fullmatch(r"\d+ms", row[1])
        assert row[2:] == [node.addr4, node.hostname or "hostname not returnable"]
    assert rows[-1][2:] == [lab.target.addr4, "target.lab.test"]
    assert all(isinstance(cell, str) for row in rows for cell in row)


@pytest.mark.lab
def test_lab_cli(lab) -> None:
    cmd = [sys.executable, "-m", "handrolled.traceroute"]
    proc = lab.exec("client", [*cmd, "-4", "target.lab.test"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        f"traceroute to target.lab.test ({lab.target.addr4}), 30 hops max, 60 byte packets"
    )
    assert lines[3] == " 3  * * *"
    assert lines[5].startswith(f" 5  {lab.nodes['r5'].addr4} ({lab.nodes['r5'].addr4})  ")
    assert lines[7].startswith(f" 7  target.lab.test ({lab.target.addr4})  ")
    bad = lab.exec("client", [*cmd, "nowhere.lab.test"])
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("traceroute: cannot resolve") and bad.stderr.count("\n") == 1
    # the blackhole never answers: a short trace that does not reach it still exits 0, as
    # traceroute(8) does (its main() returns 0 after do_it())
    hole = lab.exec("client", [*cmd, "-n", "-q", "1", "-m", "8", "-w", "0.5", lab.blackhole4])
    assert hole.returncode == 0, hole.stderr
    assert "!" not in hole.stdout.splitlines()[-1]
