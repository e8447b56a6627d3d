"""UDP/TCP probe codecs: golden bytes from scapy (both directions) and hypothesis round trips."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, in4_chksum
from scapy.layers.inet6 import IPv6, in6_chksum

from handrolled.errors import MalformedPacket, UsageError
from handrolled.transport import (
    TcpFlags,
    TcpSegment,
    UdpDatagram,
    decode_tcp,
    decode_tcp_quoted,
    decode_udp,
    encode_tcp,
    encode_udp,
    pseudo_header,
    transport_checksum_ok,
)

SRC4, DST4 = "198.51.100.1", "203.0.113.7"
SRC6, DST6 = "2001:db8:1::1", "2001:db8:7::7"
PAYLOAD = bytes(0x40 + (i & 0x3F) for i in range(32))

# Produced once with scapy 2.8 (raw(IP(src, dst)/UDP(sport=40000, dport=33434)/PAYLOAD) and
# raw(IP(src, dst)/TCP(sport=40001, dport=80, seq=1, flags="S", window=64240)), IP header
# stripped; the same for IPv6) and pasted here.
UDP4 = bytes.fromhex(
    "9c40829a00288581404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
)
UDP6 = bytes.fromhex(
    "9c40829a0028903c404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
)
TCP4 = bytes.fromhex("9c41005000000001000000005002faf0b2220000")
TCP6 = bytes.fromhex("9c41005000000001000000005002faf0bcdd0000")


@pytest.mark.parametrize(("src", "dst", "golden"), [(SRC4, DST4, UDP4), (SRC6, DST6, UDP6)])
def test_udp_golden_both_directions(src: str, dst: str, golden: bytes) -> None:
    assert encode_udp(UdpDatagram(40000, 33434, PAYLOAD), src=src, dst=dst) == golden
    decoded = decode_udp(golden)
    assert (decoded.src_port, decoded.dst_port, decoded.length) == (40000, 33434, 40)
    assert decoded.payload == PAYLOAD
    assert decoded.checksum == struct.unpack_from("!H", golden, 6)[0]
    assert transport_checksum_ok(src, dst, 17, golden)
    assert not transport_checksum_ok(src, dst, 17, golden[:-1] + b"\x00")


@pytest.mark.parametrize(("src", "dst", "golden"), [(SRC4, DST4, TCP4), (SRC6, DST6, TCP6)])
def test_tcp_syn_golden_both_directions(src: str, dst: str, golden: bytes) -> None:
    segment = TcpSegment(40001, 80, seq=1, flags=TcpFlags.SYN, window=64240)
    assert encode_tcp(segment, src=src, dst=dst) == golden
    decoded = decode_tcp(golden)
    assert (decoded.src_port, decoded.dst_port, decoded.seq, decoded.ack) == (40001, 80, 1, 0)
    assert decoded.flags == TcpFlags.SYN
    assert (decoded.window, decoded.data_offset, decoded.options, decoded.payload) == (
        64240,
        5,
        b"",
        b"",
    )
    assert transport_checksum_ok(src, dst, 6, golden)
    quoted = decode_tcp_quoted(golden[:8])
    assert (quoted.src_port, quoted.dst_port, quoted.seq) == (40001, 80, 1)


def test_pseudo_headers_follow_the_rfc_layouts() -> None:
    # RFC 768 / RFC 793 §3.1: src, dst, zero, protocol, 16-bit length
    assert pseudo_header(SRC4, DST4, 17, 40) == (
        ipaddress.ip_address(SRC4).packed + ipaddress.ip_address(DST4).packed + b"\x00\x11\x00\x28"
    )
    # RFC 8200 §8.1: src, dst, 32-bit length, three zero bytes, next header
    assert pseudo_header(SRC6, DST6, 6, 20) == (
        ipaddress.ip_address(SRC6).packed
        + ipaddress.ip_address(DST6).packed
        + b"\x00\x00\x00\x14\x00\x00\x00\x06"
    )
    with pytest.raises(UsageError):
        pseudo_header(SRC4, DST6, 17, 8)
    with pytest.raises(UsageError):
        pseudo_header("not-an-address", DST4, 17, 8)


def test_udp_zero_checksum_is_sent_as_all_ones() -> None:
    # RFC 768: a computed checksum of zero is transmitted as 0xFFFF.  Find a payload whose
    # checksum computes to zero by making the last word cancel the rest of the sum.
    base = encode_udp(UdpDatagram(1, 2, b"\x00\x00"), src=SRC4, dst=DST4)
    target = struct.unpack_from("!H", base, 6)[0]  # the word that would cancel the sum
    datagram = encode_udp(UdpDatagram(1, 2, struct.pack("!H", target)), src=SRC4, dst=DST4)
    assert datagram[6:8] == b"\xff\xff"
    assert transport_checksum_ok(SRC4, DST4, 17, datagram)


def test_short_and_bad_headers_are_malformed() -> None:
    with pytest.raises(MalformedPacket):
        decode_udp(UDP4[:7])
    with pytest.raises(MalformedPacket):
        decode_udp(UDP4[:4] + b"\x00\x07" + UDP4[6:])  # length 7 < 8
    with pytest.raises(MalformedPacket):
        decode_tcp(TCP4[:19])
    with pytest.raises(MalformedPacket):
        decode_tcp(TCP4[:12] + b"\x40\x02" + TCP4[14:])  # data offset 4
    with pytest.raises(MalformedPacket):
        decode_tcp(TCP4[:12] + b"\x60\x02" + TCP4[14:])  # offset 6 but no options present
    with pytest.raises(MalformedPacket):
        decode_tcp_quoted(TCP4[:7])
    with pytest.raises(UsageError):
        encode_udp(UdpDatagram(70000, 1), src=SRC4, dst=DST4)
    with pytest.raises(UsageError):
        encode_tcp(TcpSegment(1, 2, options=b"\x01" * 41), src=SRC4, dst=DST4)


ports = st.integers(0, 0xFFFF)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(lambda a: a.compressed)
address_pairs = st.one_of(st.tuples(v4, v4), st.tuples(v6, v6))


@given(address_pairs, ports, ports, st.binary(max_size=200))
def test_udp_round_trip_and_checksum(addrs: tuple[str, str], sp: int, dp: int, data: bytes) -> None:
    src, dst = addrs
    wire = encode_udp(UdpDatagram(sp, dp, data), src=src, dst=dst)
    assert transport_checksum_ok(src, dst, 17, wire)
    back = decode_udp(wire)
    assert (back.src_port, back.dst_port, back.payload, back.length) == (sp, dp, data, len(wire))


@given(
    address_pairs,
    ports,
    ports,
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFF),
    st.binary(max_size=40).map(lambda b: b[: len(b) - len(b) % 4]),
    st.binary(max_size=64),
)
def test_tcp_round_trip_and_checksum(
    addrs: tuple[str, str],
    sp: int,
    dp: int,
    seq: int,
    ack: int,
    flags: int,
    options: bytes,
    data: bytes,
) -> None:
    src, dst = addrs
    segment = TcpSegment(sp, dp, seq, ack, flags, window=1234, options=options, payload=data)
    wire = encode_tcp(segment, src=src, dst=dst)
    assert transport_checksum_ok(src, dst, 6, wire)
    back = decode_tcp(wire)
    assert (back.src_port, back.dst_port, back.seq, back.ack, int(back.flags)) == (
        sp,
        dp,
        seq,
        ack,
        flags,
    )
    assert (back.options, back.payload, back.window) == (options, data, 1234)
    assert decode_tcp_quoted(wire) == decode_tcp_quoted(wire[:8])


@given(st.binary(max_size=80))
def test_decoders_raise_only_malformed(data: bytes) -> None:
    for decode in (decode_udp, decode_tcp, decode_tcp_quoted):
        with contextlib.suppress(MalformedPacket):
            decode(data)


def _scapy_sum(src: str, dst: str, protocol: int, segment: bytes) -> int:
    """scapy's pseudo-header checksum (in4_chksum / in6_chksum): the independent witness."""
    if ":" in src:
        return in6_chksum(protocol, IPv6(src=src, dst=dst), segment)
    return in4_chksum(protocol, IP(src=src, dst=dst), segment)


@given(address_pairs, ports, ports, st.binary(max_size=200))
def test_udp_checksum_matches_scapy(addrs: tuple[str, str], sp: int, dp: int, data: bytes) -> None:
    src, dst = addrs
    wire = encode_udp(UdpDatagram(sp, dp, data), src=src, dst=dst)
    expected = _scapy_sum(src, dst, 17, wire[:6] + b"\0\0" + wire[8:]) or 0xFFFF  # RFC 768
    assert struct.unpack_from("!H", wire, 6)[0] == expected


@given(
    address_pairs,
    ports,
    ports,
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFF),
    ports,
    ports,
    st.binary(max_size=40).map(lambda b: b[: len(b) - len(b) % 4]),
    st.binary(max_size=64),
)
def test_tcp_checksum_matches_scapy(
    addrs: tuple[str, str],
    sp: int,
    dp: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int,
    options: bytes,
    data: bytes,
) -> None:
    # the encoder sums seq and ack as numbers, not as words: scapy sums the words
    src, dst = addrs
    segment = TcpSegment(sp, dp, seq, ack, flags, window, urgent, options, data)
    wire = encode_tcp(segment, src=src, dst=dst)
    assert (
        wire[:16] + wire[18:]
        == struct.pack(
            "!HHIIHHH", sp, dp, seq, ack, (5 + len(options) // 4) << 12 | flags, window, urgent
        )
        + options
        + data
    )
    expected = _scapy_sum(src, dst, 6, wire[:16] + b"\0\0" + wire[18:])
    assert struct.unpack_from("!H", wire, 16)[0] == expected


def test_decoded_flags_are_tcpflags_members() -> None:
    flags = decode_tcp(TCP4[:13] + b"\x12" + TCP4[14:]).flags
    assert flags == TcpFlags.SYN | TcpFlags.ACK and isinstance(flags, TcpFlags)
