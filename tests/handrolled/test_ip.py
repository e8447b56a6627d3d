"""IPv4 (and quoted IPv6) header codec: golden bytes from scapy, both ways; hypothesis."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.utils import checksum as scapy_checksum

from handrolled.errors import MalformedPacket
from handrolled.ip import (
    IpProto,
    IPv4Flags,
    IPv4Header,
    IPv6Header,
    decode_ipv4,
    decode_ipv6,
    encode_ipv4,
    encode_ipv6,
)

# scapy: raw(IP(src="198.51.100.1", dst="203.0.113.10", ttl=1, id=0x4d2, flags="DF",
#               options=[IPOption_RR()]) / ICMP(type=8, id=0x1234, seq=3) / bytes(range(16)))
WITH_OPTIONS = bytes.fromhex(
    "4600003004d24000010102b9c6336401cb00710a070304000800ad8812340003"
    "000102030405060708090a0b0c0d0e0f"
)
# scapy: raw(IPv6(src="2001:db8:0:1::1", dst="2001:db8:0:101::2", hlim=60)
#            / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest(id=0x1234, seq=6, data=bytes(range(16))))
V6_HOP_BY_HOP = bytes.fromhex(
    "600000000020003c20010db800000001000000000000000120010db8000001010000000000000002"
    "3a000104000000008000d8bb12340006000102030405060708090a0b0c0d0e0f"
)


def test_decode_golden_with_options():
    header, payload = decode_ipv4(WITH_OPTIONS)
    assert header.ihl == 6 and header.header_length == 24
    assert header.options == bytes.fromhex("07030400")  # record route, pointer 4, padded
    assert (header.src, header.dst) == ("198.51.100.1", "203.0.113.10")
    assert header.identification == 0x4D2 and header.flags == IPv4Flags.DF
    assert header.ttl == 1 and header.protocol == IpProto.ICMP
    assert header.total_length == 48 and header.checksum == 0x02B9 and header.checksum_ok
    assert payload == WITH_OPTIONS[24:]


def test_encode_golden_with_options():
    header = IPv4Header(
        src="198.51.100.1",
        dst="203.0.113.10",
        ttl=1,
        identification=0x4D2,
        flags=IPv4Flags.DF,
        options=bytes.fromhex("070304"),  # padded to 32 bits by the encoder
    )
    assert encode_ipv4(header, WITH_OPTIONS[24:]) == WITH_OPTIONS


def test_decoded_header_reencodes_identically():
    header, payload = decode_ipv4(WITH_OPTIONS)
    assert encode_ipv4(header, payload) == WITH_OPTIONS


def test_bad_header_checksum_is_reported_not_raised():
    broken = WITH_OPTIONS[:10] + b"\x00\x00" + WITH_OPTIONS[12:]
    header, _ = decode_ipv4(broken)
    assert header.checksum_ok is False


def test_payload_stops_at_total_length():
    _header, payload = decode_ipv4(WITH_OPTIONS + b"trailing ethernet padding")
    assert payload == WITH_OPTIONS[24:]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (WITH_OPTIONS[:19], "20 bytes"),
        (b"\x65" + WITH_OPTIONS[1:], "version 6"),
        (b"\x44" + WITH_OPTIONS[1:], "IHL 4"),
        (b"\x4f" + WITH_OPTIONS[1:], "IHL past the data"),
        (WITH_OPTIONS[:40], "total length"),
        (WITH_OPTIONS[:2] + b"\x00\x10" + WITH_OPTIONS[4:], "total length < header"),
    ],
)
def test_malformed(data, why):
    with pytest.raises(MalformedPacket):
        decode_ipv4(data)


def test_truncated_ok_for_quoted_datagrams():
    header, payload = decode_ipv4(WITH_OPTIONS[:32], truncated_ok=True)
    assert header.total_length == 48 and payload == WITH_OPTIONS[24:32]


def test_ipv6_walks_hop_by_hop():
    header, payload = decode_ipv6(V6_HOP_BY_HOP)
    assert header.next_header == IpProto.HOPOPT and header.upper_protocol == IpProto.ICMPV6
    assert (header.src, header.dst) == ("2001:db8:0:1::1", "2001:db8:0:101::2")
    assert header.hop_limit == 60 and header.payload_length == 32
    assert payload == V6_HOP_BY_HOP[48:]


def test_ipv6_encode_fixed_header():
    header = IPv6Header(src="2001:db8:0:1::1", dst="2001:db8:0:101::2", hop_limit=60, next_header=0)
    assert encode_ipv6(header, V6_HOP_BY_HOP[40:]) == V6_HOP_BY_HOP


@given(st.binary(max_size=120), st.booleans())
def test_decoders_return_or_raise_malformed(data, truncated_ok):
    for decode in (decode_ipv4, decode_ipv6):
        try:
            _header, payload = decode(data, truncated_ok=truncated_ok)
        except MalformedPacket:
            continue
        assert len(payload) <= len(data)


@st.composite
def mutated_golden(draw) -> bytes:
    """A golden datagram after up to four edits: a byte set, a bit flipped, cut, extended.

    Random bytes almost never get past the version and length checks; about half of these do,
    so the option, extension-header and truncation paths are fuzzed too.
    """
    data = bytearray(draw(st.sampled_from([WITH_OPTIONS, V6_HOP_BY_HOP])))
    for _ in range(draw(st.integers(0, 4))):
        edit = draw(st.sampled_from(["set", "flip", "truncate", "extend"]))
        if edit == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif edit == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif edit == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        else:
            data += draw(st.binary(min_size=1, max_size=24))
    return bytes(data)


@given(mutated_golden(), st.booleans())
def test_decoders_on_mutated_golden_return_or_raise_malformed(data, truncated_ok):
    try:
        header, payload = decode_ipv4(data, truncated_ok=truncated_ok)
    except MalformedPacket:
        pass
    else:
        assert isinstance(header, IPv4Header)
        assert payload == data[header.header_length : header.total_length]
        assert header.options == data[20 : header.header_length]
        # every field was read as sent: encoding the header back gives the same bytes
        assert encode_ipv4(header, payload) == data[: header.header_length] + payload
    try:
        header6, payload6 = decode_ipv6(data, truncated_ok=truncated_ok)
    except MalformedPacket:
        pass
    else:
        assert isinstance(header6, IPv6Header)
        assert data[40 : 40 + header6.payload_length].endswith(payload6)
        assert encode_ipv6(header6) == data[:40]


@given(
    st.builds(
        IPv4Header,
        src=st.ip_addresses(v=4).map(str),
        dst=st.ip_addresses(v=4).map(str),
        protocol=st.integers(0, 255),
        ttl=st.integers(0, 255),
        tos=st.integers(0, 255),
        identification=st.integers(0, 0xFFFF),
        flags=st.integers(0, 7),
        fragment_offset=st.integers(0, 0x1FFF),
        options=st.binary(max_size=40).map(lambda b: b + b"\0" * (-len(b) % 4)),
    ),
    st.binary(max_size=64),
)
def test_ipv4_round_trip(header, payload):
    raw = encode_ipv4(header, payload)
    decoded, got = decode_ipv4(raw)
    assert got == payload and decoded.checksum_ok
    assert (decoded.src, decoded.dst, decoded.ttl, decoded.options) == (
        header.src,
        header.dst,
        header.ttl,
        header.options,
    )
    assert (decoded.flags, decoded.fragment_offset, decoded.identification) == (
        header.flags,
        header.fragment_offset,
        header.identification,
    )
    assert encode_ipv4(decoded, got) == raw


@given(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=4).map(str),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(0, 7),
    st.integers(0, 0x1FFF),
    st.binary(max_size=40),
)
def test_ipv4_matches_scapy(src, dst, ttl, tos, ident, flags, frag, payload):
    # scapy builds the same header and computes its own checksum
    header = IPv4Header(
        src=src, dst=dst, ttl=ttl, tos=tos, identification=ident, flags=flags, fragment_offset=frag
    )
    ours = encode_ipv4(header, payload)
    theirs = IP(src=src, dst=dst, ttl=ttl, tos=tos, id=ident, flags=flags, frag=frag, proto=1)
    assert ours == raw(theirs / payload)
    decoded, _ = decode_ipv4(ours)
    dissected = IP(ours)
    assert (decoded.src, decoded.dst, decoded.checksum) == (
        dissected.src,
        dissected.dst,
        dissected.chksum,
    )


@given(st.binary(min_size=1, max_size=40).map(lambda b: b + b"\0" * (-len(b) % 4)))
def test_ipv4_checksum_with_options_matches_scapy(options):
    # RFC 791 §3.1: the checksum covers the options too; scapy.utils.checksum as the witness
    ours = encode_ipv4(IPv4Header(src="198.51.100.1", dst="203.0.113.10", options=options))
    zeroed = ours[:10] + b"\0\0" + ours[12:]
    assert struct.unpack_from("!H", ours, 10)[0] == scapy_checksum(zeroed)


# RFC 5952 text, except IPv4-mapped addresses: §5 recommends ::ffff:192.0.2.1, which scapy
# (inet_ntop) writes and Python 3.11's ipaddress does not.
v6_unmapped = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)


@given(v6_unmapped, v6_unmapped)
def test_ipv6_address_text_matches_scapy(src6, dst6):
    wire = raw(IPv6(src=src6, dst=dst6, nh=59))
    header, _ = decode_ipv6(wire)
    theirs = IPv6(wire)
    assert (header.src, header.dst) == (theirs.src, theirs.dst)
    assert encode_ipv6(IPv6Header(src=src6, dst=dst6, next_header=59)) == wire
