"""ICMP / ICMPv6 codec: golden bytes produced once by scapy, checked both ways; hypothesis."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import ICMP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

from handrolled.errors import MalformedPacket, UsageError
from handrolled.icmp import (
    DestinationUnreachable,
    EchoMessage,
    Icmp6Type,
    IcmpError,
    IcmpType,
    OtherIcmp,
    TimeExceeded,
    Unreach6Code,
    UnreachCode,
    decode_icmp,
    decode_icmp6,
    default_payload,
    encode_echo_reply,
    encode_echo_request,
    encode_icmp_error,
)
from handrolled.ip import IpProto, IPv4Header, IPv6Header, decode_ipv4
from handrolled.record import FrozenRecordError

P56 = default_payload(56)
P16 = bytes(range(16))
H1, H2 = "2001:db8::1", "2001:db8::2"

# scapy: raw(ICMP(type=8, id=0x1234, seq=1)/P56) and type=0
ECHO4_REQUEST = bytes.fromhex(
    "0800eeb712340001000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f3031323334353637"
)
ECHO4_REPLY = bytes.fromhex(
    "0000f6b712340001000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f3031323334353637"
)
# scapy: raw(IPv6(src=H1, dst=H2)/ICMPv6EchoRequest(id=7, seq=9, data=P16))[40:], and the
# reply from H2 to H1
ECHO6_REQUEST = bytes.fromhex("8000ebe700070009000102030405060708090a0b0c0d0e0f")
ECHO6_REPLY = bytes.fromhex("8100eae700070009000102030405060708090a0b0c0d0e0f")
# scapy: raw(IP(src="198.51.100.6", dst="198.51.100.1", ttl=63, id=77)/ICMP(type=11)/inner)
# where inner is an echo request (id 0x1234, seq 3) in an IPv4 header with a record-route
# option (IHL 6), from 198.51.100.1 to 203.0.113.10.
TIME_EXCEEDED4_WITH_IP = bytes.fromhex(
    "4500004c004d00003f0126f6c6336406c63364010b00f4ff000000004600003004d24000010102b9c633"
    "6401cb00710a070304000800ad8812340003000102030405060708090a0b0c0d0e0f"
)
# scapy: raw(ICMP(type=3, code=13)/IP(src="198.51.100.1", dst="203.0.113.18", ttl=58, id=9,
#            flags="DF")/ICMP(id=0x1234, seq=4)/P16)
UNREACH4_FILTERED = bytes.fromhex(
    "030dfcf2000000004500002c000940003a01da80c6336401cb0071120800ad8712340004000102030405"
    "060708090a0b0c0d0e0f"
)
# scapy: raw(IPv6(src="2001:db8:0:2::2", dst="2001:db8:0:1::1")/ICMPv6TimeExceeded()/
#            IPv6(src="2001:db8:0:1::1", dst="2001:db8:0:100::2", hlim=1)/
#            ICMPv6EchoRequest(id=0x1234, seq=5, data=P16))[40:]
TIME_EXCEEDED6 = bytes.fromhex(
    "0300073e000000006000000000183a0120010db800000001000000000000000120010db800000100"
    "00000000000000028000d8bd12340005000102030405060708090a0b0c0d0e0f"
)
# scapy: ICMPv6DestUnreach(code=1) from 2001:db8:0:101::2 to 2001:db8:0:1::1, quoting an echo
# request (seq 6) behind a hop-by-hop extension header
UNREACH6_PROHIBITED = bytes.fromhex(
    "010106ef00000000600000000020003c20010db800000001000000000000000120010db8000001010000"
    "0000000000023a000104000000008000d8bb12340006000102030405060708090a0b0c0d0e0f"
)
# scapy: raw(ICMP(type=11)/IP(src="198.51.100.1", dst="203.0.113.10", ttl=2, id=1)/
#            UDP(sport=40000, dport=33435)/(b"x"*12))
TIME_EXCEEDED4_UDP = bytes.fromhex(
    "0b005b6500000000450000280001000002115285c6336401cb00710a9c40829b0014a7d7787878787878"
    "787878787878"
)


def test_default_payload_is_iputils_fill():
    assert bytes(range(56)) == P56
    assert default_payload(300)[256:260] == b"\x00\x01\x02\x03"
    assert default_payload(0) == b""
    with pytest.raises(UsageError):
        default_payload(-1)


def test_encode_echo4_golden():
    assert encode_echo_request(0x1234, 1, P56) == ECHO4_REQUEST
    assert encode_echo_reply(0x1234, 1, P56) == ECHO4_REPLY


def test_decode_echo4_golden():
    msg = decode_icmp(ECHO4_REPLY)
    assert msg == EchoMessage(IcmpType.ECHO_REPLY, 0, 0xF6B7, 0x1234, 1, P56, False, True)
    assert msg.is_reply
    assert not decode_icmp(ECHO4_REQUEST).is_reply


def test_encode_echo6_golden_pseudo_header():
    assert encode_echo_request(7, 9, P16, v6=True, src=H1, dst=H2) == ECHO6_REQUEST
    assert encode_echo_reply(7, 9, P16, v6=True, src=H2, dst=H1) == ECHO6_REPLY


def test_echo6_without_addresses_leaves_checksum_to_the_kernel():
    assert (
        encode_echo_request(7, 9, P16, v6=True) == ECHO6_REQUEST[:2] + b"\0\0" + ECHO6_REQUEST[4:]
    )


def test_decode_echo6_golden():
    msg = decode_icmp6(ECHO6_REPLY, src=H2, dst=H1)
    assert isinstance(msg, EchoMessage) and msg.is_reply and msg.v6
    assert (msg.ident, msg.seq, msg.payload, msg.checksum_ok) == (7, 9, P16, True)
    assert decode_icmp6(ECHO6_REPLY, src=H1, dst=H2).checksum_ok is True  # symmetric sum
    assert decode_icmp6(ECHO6_REPLY, src=H1, dst="2001:db8::3").checksum_ok is False
    assert decode_icmp6(ECHO6_REPLY).checksum_ok is None


def test_corrupted_echo_is_reported_not_raised():
    flipped = ECHO4_REPLY[:20] + bytes([ECHO4_REPLY[20] ^ 0x40]) + ECHO4_REPLY[21:]
    msg = decode_icmp(flipped)
    assert isinstance(msg, EchoMessage) and msg.checksum_ok is False


def test_time_exceeded4_quotes_probe_behind_ip_options():
    outer, body = decode_ipv4(TIME_EXCEEDED4_WITH_IP)
    assert outer.src == "198.51.100.6"
    msg = decode_icmp(body)
    assert isinstance(msg, TimeExceeded) and msg.checksum_ok and msg.code == 0
    assert isinstance(msg.quoted.header, IPv4Header) and msg.quoted.header.ihl == 6
    assert (msg.quoted.src, msg.quoted.dst) == ("198.51.100.1", "203.0.113.10")
    assert msg.quoted.header.ttl == 1
    assert msg.quoted.echo == (0x1234, 3)
    assert msg.quoted.ports is None
    assert msg.quoted.leading == bytes.fromhex("0800ad8812340003")


def test_unreachable4_admin_filtered():
    msg = decode_icmp(UNREACH4_FILTERED)
    assert isinstance(msg, DestinationUnreachable) and msg.code == UnreachCode.ADMIN_PROHIBITED
    assert msg.quoted.dst == "203.0.113.18" and msg.quoted.echo == (0x1234, 4)


def test_time_exceeded4_quoting_udp_gives_ports():
    msg = decode_icmp(TIME_EXCEEDED4_UDP)
    assert isinstance(msg, TimeExceeded)
    assert msg.quoted.protocol == IpProto.UDP and msg.quoted.ports == (40000, 33435)
    assert msg.quoted.echo is None


def test_time_exceeded6_golden():
    msg = decode_icmp6(TIME_EXCEEDED6, src="2001:db8:0:2::2", dst="2001:db8:0:1::1")
    assert isinstance(msg, TimeExceeded) and msg.v6 and msg.checksum_ok
    assert isinstance(msg.quoted.header, IPv6Header) and msg.quoted.header.hop_limit == 1
    assert msg.quoted.dst == "2001:db8:0:100::2" and msg.quoted.echo == (0x1234, 5)


def test_unreachable6_behind_extension_header():
    msg = decode_icmp6(UNREACH6_PROHIBITED, src="2001:db8:0:101::2", dst="2001:db8:0:1::1")
    assert isinstance(msg, DestinationUnreachable) and msg.checksum_ok
    assert msg.code == Unreach6Code.ADMIN_PROHIBITED
    assert msg.quoted.protocol == IpProto.ICMPV6 and msg.quoted.echo == (0x1234, 6)


def test_encode_icmp_error_golden():
    quoted = UNREACH4_FILTERED[8:]
    assert encode_icmp_error(3, 13, quoted) == UNREACH4_FILTERED
    quoted6 = TIME_EXCEEDED6[8:]
    got = encode_icmp_error(3, 0, quoted6, v6=True, src="2001:db8:0:2::2", dst="2001:db8:0:1::1")
    assert got == TIME_EXCEEDED6


def test_other_types_are_messages_not_errors():
    # scapy: ICMPv6ND_RS() -> 85 00 checksum 00000000 (neighbour discovery on a raw socket)
    msg = decode_icmp6(bytes.fromhex("8500000000000000"))
    assert isinstance(msg, OtherIcmp) and msg.icmp_type == Icmp6Type.ROUTER_SOLICITATION


@pytest.mark.parametrize(
    "data",
    [
        ECHO4_REPLY[:7],
        UNREACH4_FILTERED[: 8 + 20 + 7],  # fewer than 8 quoted payload bytes
        UNREACH4_FILTERED[:8] + b"\x65" + UNREACH4_FILTERED[9:],  # quoted IP version 6
        UNREACH4_FILTERED[:12],
    ],
)
def test_malformed_icmp(data):
    with pytest.raises(MalformedPacket):
        decode_icmp(data)


def test_malformed_icmp6_quote():
    with pytest.raises(MalformedPacket):
        decode_icmp6(TIME_EXCEEDED6[: 8 + 40 + 4])


@pytest.mark.parametrize("bad", [{"ident": -1}, {"ident": 65536}, {"seq": 70000}])
def test_encode_rejects_out_of_range(bad):
    fields = {"ident": 1, "seq": 1} | bad
    with pytest.raises(UsageError):
        encode_echo_request(fields["ident"], fields["seq"])


@given(st.binary(max_size=200))
def test_decode_icmp_any_bytes(data):
    try:
        msg = decode_icmp(data)
    except MalformedPacket:
        return
    assert isinstance(msg, EchoMessage | IcmpError | OtherIcmp)


@given(st.binary(max_size=200), st.booleans())
def test_decode_icmp6_any_bytes(data, with_addresses):
    kwargs = {"src": H1, "dst": H2} if with_addresses else {}
    try:
        msg = decode_icmp6(data, **kwargs)
    except MalformedPacket:
        return
    assert isinstance(msg, EchoMessage | IcmpError | OtherIcmp)


@given(
    st.sampled_from([bytes([t, c]) for t in (3, 11, 12) for c in (0, 1, 13)]),
    st.binary(max_size=120),
)
def test_decode_error_shaped_garbage(head, tail):
    # error types with random quoted bytes: the quoted-datagram path under fuzz
    with contextlib.suppress(MalformedPacket):
        decode_icmp(head + b"\0\0\0\0\0\0" + b"\x45" + tail)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=300), st.booleans())
def test_echo_round_trip(ident, seq, payload, v6):
    kwargs = {"v6": v6, "src": H1, "dst": H2} if v6 else {}
    raw = encode_echo_request(ident, seq, payload, **kwargs)
    msg = decode_icmp6(raw, src=H1, dst=H2) if v6 else decode_icmp(raw)
    assert isinstance(msg, EchoMessage) and not msg.is_reply
    assert (msg.ident, msg.seq, msg.payload, msg.checksum_ok) == (ident, seq, payload, True)


# scapy as the independent builder and checksum for the encoder and the decoder's check
idents = st.integers(0, 0xFFFF)
payloads = st.binary(max_size=300)


@given(idents, idents, payloads)
def test_echo4_matches_scapy(ident, seq, payload):
    for ours, icmp_type in ((encode_echo_request, 8), (encode_echo_reply, 0)):
        assert ours(ident, seq, payload) == raw(ICMP(type=icmp_type, id=ident, seq=seq) / payload)


@given(idents, idents, payloads)
def test_echo6_matches_scapy(ident, seq, payload):
    theirs = raw(IPv6(src=H1, dst=H2) / ICMPv6EchoRequest(id=ident, seq=seq, data=payload))[40:]
    assert encode_echo_request(ident, seq, payload, v6=True, src=H1, dst=H2) == theirs


@given(st.sampled_from([3, 11, 12]), st.integers(0, 15), st.binary(min_size=28, max_size=120))
def test_icmp_error4_matches_scapy(icmp_type, code, quoted):
    assert encode_icmp_error(icmp_type, code, quoted) == raw(
        ICMP(type=icmp_type, code=code) / quoted
    )


@given(idents, idents, payloads, st.booleans())
def test_decode_checks_scapys_checksum(ident, seq, payload, corrupt):
    reply = raw(ICMP(type=0, id=ident, seq=seq) / payload)
    if corrupt:  # a wrong checksum field: any value but the right one
        reply = reply[:2] + bytes([reply[2] ^ 0x01]) + reply[3:]
    msg = decode_icmp(reply)
    assert isinstance(msg, EchoMessage) and msg.is_reply
    assert (msg.ident, msg.seq, msg.payload) == (ident, seq, payload)
    assert msg.checksum_ok is not corrupt


@given(idents, idents, payloads, st.booleans())
def test_decode6_checks_scapys_checksum(ident, seq, payload, corrupt):
    reply = raw(IPv6(src=H2, dst=H1) / ICMPv6EchoReply(id=ident, seq=seq, data=payload))[40:]
    if corrupt:
        reply = reply[:3] + bytes([reply[3] ^ 0x80]) + reply[4:]
    msg = decode_icmp6(reply, src=H2, dst=H1)
    assert isinstance(msg, EchoMessage) and msg.is_reply and msg.v6
    assert (msg.ident, msg.seq, msg.payload) == (ident, seq, payload)
    assert msg.checksum_ok is not corrupt


def test_decode_accepts_bytearray_and_memoryview():
    for view in (bytearray(ECHO4_REPLY), memoryview(ECHO4_REPLY)):
        assert decode_icmp(view) == decode_icmp(ECHO4_REPLY)
    assert encode_echo_request(0x1234, 1, bytearray(P56)) == ECHO4_REQUEST


def test_decoded_messages_are_immutable():
    msg = decode_icmp(ECHO4_REPLY)
    with pytest.raises(FrozenRecordError):
        msg.seq = 2  # type: ignore[misc]
    assert not hasattr(msg, "__dict__")  # slotted
