"""reference.ping: header choices (golden bytes), statistics, usage errors, loopback, the lab."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handrolled.errors import ResolveError, UsageError
from handrolled.requests import PingRequest
from handrolled.results import Outcome, Probe
from reference.common import default_payload
from reference.ping import build_request, run_ping, summarize

# Produced once with scapy 2.8 (build_request, then src set by hand), pasted as hex.
GOLDEN_V4 = bytes.fromhex(
    "45000024000140004001d498c6336401cb00710a0800d9ba123400010001020304050607"
)
GOLDEN_V6 = bytes.fromhex(
    "6000000000103a4020010db800000001000000000000000120010db8000001000000000000000002"
    "800004fa123400010001020304050607"
)


def test_default_payload_is_the_documented_pattern() -> None:
    assert default_payload(0) == b""
    assert default_payload(4) == b"\x00\x01\x02\x03"
    assert default_payload(258)[255:] == b"\xff\x00\x01"


def test_ipv4_request_matches_golden_bytes_and_kernel_like_fields() -> None:
    pkt = build_request(4, "203.0.113.10", 0x1234, 1, default_payload(8), 64)
    pkt.src = "198.51.100.1"
    wire = bytes(pkt)
    assert wire == GOLDEN_V4
    assert wire[6] & 0x40  # DF, as Linux sets it on raw ICMP sockets
    assert wire[4:6] == b"\x00\x01"  # IP ID = seq (deterministic)
    assert wire[8] == 64


def test_ipv6_request_matches_golden_bytes_with_zero_flow_label() -> None:
    pkt = build_request(6, "2001:db8:0:100::2", 0x1234, 1, default_payload(8), 64)
    pkt.src = "2001:db8:0:1::1"
    wire = bytes(pkt)
    assert wire == GOLDEN_V6
    assert wire[:4] == b"\x60\x00\x00\x00"  # traffic class 0, flow label 0


@given(ident=st.integers(0, 0xFFFF), seq=st.integers(0, 0xFFFF), data=st.binary(max_size=64))
def test_request_carries_callers_ident_seq_payload(ident: int, seq: int, data: bytes) -> None:
    pkt = build_request(4, "203.0.113.10", ident, seq, data, 7)
    pkt.src = "198.51.100.1"
    wire = bytes(pkt)
    assert wire[20] == 8 and wire[21] == 0
    assert int.from_bytes(wire[24:26], "big") == ident
    assert int.from_bytes(wire[26:28], "big") == seq
    assert wire[28:] == data
    assert wire[8] == 7


def _probe(outcome: Outcome, rtt: float | None = None, seq: int = 1) -> Probe:
    return Probe(seq=seq, ident=1, ttl=64, sent=b"", send_ns=0, outcome=outcome, rtt_ms=rtt)


def test_summary_counts_like_iputils() -> None:
    probes = [
        _probe(Outcome.REPLY, 1.0, 1),
        _probe(Outcome.DUPLICATE, 1.5, 1),
        _probe(Outcome.REPLY, 3.0, 2),
        _probe(Outcome.TIMEOUT, None, 3),
        _probe(Outcome.UNREACHABLE, 2.0, 4),
    ]
    s = summarize(probes)
    assert (s.transmitted, s.received, s.duplicates, s.errors) == (4, 2, 1, 1)
    assert s.loss_percent == 50.0
    assert (s.min_ms, s.avg_ms, s.max_ms) == (1.0, 2.0, 3.0)
    assert s.mdev_ms == pytest.approx(1.0)
    assert s.stdev_ms == pytest.approx(2**0.5)


def test_summary_of_nothing_received() -> None:
    s = summarize([_probe(Outcome.TIMEOUT)])
    assert (s.received, s.loss_percent, s.min_ms, s.stdev_ms) == (0, 100.0, None, None)


def test_datagram_socket_is_refused_before_anything_is_sent() -> None:
    # A valid request this side cannot carry out: scapy builds the IP header itself.
    with pytest.raises(UsageError, match="dgram"):
        run_ping(PingRequest("127.0.0.1", socket_kind="dgram"))


def test_payload_too_big_for_ipv4() -> None:
    # 65508 + 8 + 20 > 65535, IPv4's total length (RFC 791 §3.1); checked once resolved.
    with pytest.raises(UsageError, match="IPv4"):
        run_ping(PingRequest("127.0.0.1", payload=b"x" * 65508))


@pytest.mark.root
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_replies_and_wire_bytes_equal_sent(host: str) -> None:
    from scapy.sendrecv import AsyncSniffer

    sniffer = AsyncSniffer(iface="lo", store=True)
    sniffer.start()
    time.sleep(0.3)  # let the sniffer's socket open before the first probe
    try:
        result = run_ping(PingRequest(host, count=3, interval=0.05, ident=0x4242, seq_start=10))
    finally:
        time.sleep(0.1)
        captured = sniffer.stop()
    assert [p.outcome for p in result.probes] == [Outcome.REPLY] * 3  # no DUPLICATE from lo
    assert [p.seq for p in result.probes] == [10, 11, 12]
    assert result.summary.received == 3 and result.summary.duplicates == 0
    assert all(p.kernel_timestamp and p.rtt_ms is not None and p.rtt_ms > 0 for p in result.probes)
    assert all(p.recv_ns > p.send_ns for p in result.probes)
    on_wire = [bytes(pkt.payload) for pkt in captured]  # strip lo's Ethernet header
    for probe in result.probes:
        # scapy quirk: a sniffer on lo sees every packet twice (outgoing, then incoming)
        assert on_wire.count(probe.sent) == 2
        assert probe.received in on_wire
    if host == "127.0.0.1":
        assert all(p.sent[6] & 0x40 for p in result.probes)  # DF really on the wire


@pytest.mark.root
def test_on_probe_callback_sees_each_probe() -> None:
    seen: list[Probe] = []
    result = run_ping(PingRequest("127.0.0.1", count=2, interval=0.05), on_probe=seen.append)
    assert seen == list(result.probes)


@pytest.mark.root
def test_reply_stamped_in_time_counts_though_read_after_a_pause() -> None:
    # Both requests leave at once; the first reply's callback stalls the reader for longer than
    # the timeout while the second reply already waits in the socket, stamped in time.  Judged
    # by when it is read, it would become TIMEOUT and then a "late reply"; by its stamp, a reply.
    def pause(probe: Probe) -> None:
        if probe.seq == 1:
            time.sleep(0.6)

    result = run_ping(PingRequest("127.0.0.1", count=2, interval=0.0, timeout=0.3), on_probe=pause)
    assert [p.outcome for p in result.probes] == [Outcome.REPLY, Outcome.REPLY]
    assert all(p.rtt_ms is not None and p.rtt_ms < 300 for p in result.probes)


# --- in the lab ---------------------------------------------------------------------------------


def _ping(lab, host: str, **kwargs):
    # The request is pickled to the child in the client namespace (default timeout 1 s).
    return lab.call("client", "reference.ping:run_ping", PingRequest(host, **kwargs))


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_lab_target_replies_with_promised_rtt(lab, family: int) -> None:
    target = lab.target

    def measure():
        return _ping(lab, target.hostname, family=family, count=5, interval=0.1)

    result = measure()
    assert result.address == target.addr(family)
    assert result.family == family
    assert result.summary.received == 5 and result.summary.loss_percent == 0.0
    assert all(p.reply_from == target.addr(family) for p in result.probes)
    # The first probe of a fresh path also waits for neighbour discovery on every link,
    # so the promise is about the minimum (as the lab states it), settled by measuring a late
    # one again (Lab.settle_min_rtts).
    verdict = lab.settle_min_rtts(
        {"target": target},
        {"target": [p.rtt_ms for p in result.probes]},
        lambda: {"target": [p.rtt_ms for p in measure().probes]},
    )
    assert verdict.ok, verdict.why


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_lab_small_ttl_gets_time_exceeded_from_the_right_router(lab, family: int) -> None:
    r2 = lab.hops()[1]
    result = _ping(lab, lab.target.addr(family), ttl=2, count=2, interval=0.1)
    assert [p.outcome for p in result.probes] == [Outcome.TIME_EXCEEDED] * 2
    assert all(p.reply_from == r2.addr(family) for p in result.probes)
    assert result.summary.received == 0 and result.summary.errors == 2


@pytest.mark.lab
@pytest.mark.parametrize(("family", "code"), [(4, 13), (6, 1)])
def test_lab_prohibited_host_is_unreachable_admin_prohibited(lab, family: int, code: int) -> None:
    result = _ping(lab, lab.prohibited.addr(family), count=2, interval=0.1)
    assert [p.outcome for p in result.probes] == [Outcome.UNREACHABLE] * 2
    assert {p.icmp_code for p in result.probes} == {code}
    assert {p.reply_from for p in result.probes} == {lab.prohibited.addr(family)}


@pytest.mark.lab
def test_lab_blackhole_is_all_timeouts(lab) -> None:
    result = _ping(lab, lab.blackhole_name, family=4, count=2, interval=0.1)
    assert result.address == lab.blackhole4
    assert [p.outcome for p in result.probes] == [Outcome.TIMEOUT] * 2
    assert result.summary.loss_percent == 100.0


@pytest.mark.lab
def test_lab_unknown_name_fails_fast_with_resolve_error(lab) -> None:
    with pytest.raises(ResolveError):
        _ping(lab, "nosuchhost.lab.test", count=1)


@pytest.mark.lab
def test_lab_deadline_cuts_the_run_short(lab) -> None:
    result = _ping(lab, lab.blackhole4, count=10, interval=0.2, deadline=0.5)
    assert 1 <= len(result.probes) <= 4
    assert all(p.outcome is Outcome.TIMEOUT for p in result.probes)


def test_family_is_4_or_6_only() -> None:
    """One convention for the address family: the IP version; AF_INET (2) is refused."""
    from reference.common import resolve

    assert resolve("::1", 6) == ("::1", 6) and resolve("127.0.0.1", 4) == ("127.0.0.1", 4)
    for bad in (5, socket.AF_INET, socket.AF_INET6):
        with pytest.raises(UsageError):
            resolve("127.0.0.1", bad)


# ---- iputils' options on the wire: TOS, source, pattern, timestamp (both engines) ------------
def test_request_carries_tos_and_source() -> None:
    pkt = build_request(4, "203.0.113.10", 0x1234, 1, b"", 64, tos=0x28, src="198.51.100.1")
    wire = bytes(pkt)
    assert wire[1] == 0x28 and wire[12:16] == socket.inet_aton("198.51.100.1")
    pkt6 = build_request(6, "2001:db8:0:100::2", 0x1234, 1, b"", 64, tos=0x28, src="2001:db8::1")
    wire6 = bytes(pkt6)
    # RFC 8200 §3: version (4 bits), traffic class (8 bits), flow label (20 bits)
    assert ((wire6[0] & 0x0F) << 4 | wire6[1] >> 4) == 0x28
    assert wire6[8:24] == socket.inet_pton(socket.AF_INET6, "2001:db8::1")


def test_default_payload_is_iputils_fill_with_a_timeval() -> None:
    from reference.ping import fill_payload, timestamped

    assert fill_payload(5, b"\xa5\xb6") == b"\xa5\xb6\xa5\xb6\xa5"
    stamped = timestamped(fill_payload(56, None), 1_700_000_000_123_456_789)
    assert struct.unpack("@ll", stamped[:16]) == (1_700_000_000, 123_456)
    assert stamped[16:] == bytes(range(16, 56))
    assert timestamped(b"short", 1) == b"short"  # under 16 octets: no timestamp (iputils)


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_lab_both_engines_put_the_same_options_on_the_wire(lab, family: int) -> None:
    from compare.capture import Capture

    request = PingRequest(
        lab.target.addr(family), count=None, deadline=0.5, interval=0.2, timeout=1,
        tos=0x28, pattern=b"\xa5\xb6", interface="down0", ident=0x6161,
    )  # fmt: skip
    seen = {}
    for side in ("handrolled.ping:run_ping", "reference.ping:run_ping"):
        with Capture(lab.ns("client"), "down0") as cap:
            result = lab.call("client", side, request)
            time.sleep(0.2)
        out = [f.ip for f in cap.frames if f.outgoing and f.ip and f.ip[0] >> 4 == family]
        header = 20 if family == 4 else 40
        out = [ip for ip in out if ip[header] in (8, 128)]  # echo requests
        assert len(out) == len(result.probes) >= 2, side  # until the deadline: 0.0, 0.2, 0.4
        assert [p.outcome for p in result.probes] == [Outcome.REPLY] * len(result.probes)
        seen[side] = out
    src = socket.inet_pton(socket.AF_INET6 if family == 6 else socket.AF_INET,
                           lab.nodes["client"].addr(family))  # fmt: skip
    for side, packets in seen.items():
        for ip in packets:
            tos = ip[1] if family == 4 else ((ip[0] & 0x0F) << 4) | (ip[1] >> 4)
            got_src = ip[12:16] if family == 4 else ip[8:24]
            data = ip[(20 if family == 4 else 40) + 8 :]
            assert tos == 0x28 and got_src == src, side
            assert data[16:] == (b"\xa5\xb6" * 28)[16:56], side
            sec, usec = struct.unpack("@ll", data[:16])
            assert abs(time.time() - sec) < 30 and usec < 10**6, side
