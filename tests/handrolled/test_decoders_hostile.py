"""The decoders under hostile input, with the quoted-datagram paths reached (issue 16).

Random bytes almost never get past an ICMP error's quoted IP header, so these tests start from
valid probe datagrams built by scapy (the independent encoder: IPv4/IPv6 with options and
extension headers, carrying an ICMP echo request, a UDP or a TCP probe), damage them (cut,
bits flipped, version/IHL/lengths/protocol/next-header/extension lengths rewritten, bytes
appended), wrap them in time-exceeded / unreachable / packet-too-big / parameter-problem
messages, and check what the decoder returns:

* malformed or not is decided by the RFC rules written out below (RFC 791 §3.1, RFC 8200 §3-4,
  RFC 792 / RFC 4443: at least 64 bits of the quoted datagram's data, RFC 4884's length
  attribute), never by asking the decoder;
* every field of a decoded header equals scapy's dissection of the same bytes, and the quoted
  ports / echo identifiers equal the fields of the UDP / TCP / ICMP layer scapy finds there;
* anything but a message or ``MalformedPacket`` fails the test.

``event()`` labels each example by the path it reached (see ``pytest --hypothesis-show-
statistics``), and ``test_generators_reach_the_quoted_paths`` fails if a generator change
stops reaching them.  The ``ci`` profile (tests/conftest.py) runs 2,000 examples a test.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_EOL,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
)
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from handrolled.errors import MalformedPacket
from handrolled.icmp import (
    DestinationUnreachable,
    IcmpError,
    OtherIcmp,
    PacketTooBig,
    ParameterProblem,
    TimeExceeded,
    decode_icmp,
    decode_icmp6,
)
from handrolled.ip import IPv4Header, IPv6Header, decode_ipv4, decode_ipv6
from handrolled.transport import decode_tcp, decode_tcp_quoted, decode_udp

V4 = ["198.51.100.1", "203.0.113.10", "198.51.100.254"]
V6 = ["2001:db8::1", "2001:db8:0:101::2", "2001:db8:ffff::abcd"]
ROUTER4, ROUTER6 = "198.51.100.6", "2001:db8:0:6::1"  # who sends the error
PROBER4, PROBER6 = "198.51.100.1", "2001:db8::1"  # who receives it

# ---- the RFCs' rules, written out independently of the decoder ----------------------------
# RFC 8200 §4.3-4.6: extension headers with a (next header, length in 8 octets - 1) layout,
# plus the fixed 8-octet fragment header: the ones the decoder's docstring says it walks.
V6_EXTENSIONS = {0, 43, 60}
V6_FRAGMENT = 44
# RFC 792 (types 3, 11, 12) / RFC 4443 §3 (types 1-4): the errors that quote a datagram.
ERRORS4 = {3: DestinationUnreachable, 11: TimeExceeded, 12: ParameterProblem}
ERRORS6 = {1: DestinationUnreachable, 2: PacketTooBig, 3: TimeExceeded, 4: ParameterProblem}
# RFC 4884 §4: the length attribute exists in ICMPv4 unreachable, time exceeded and parameter
# problem (octet 5, 32-bit words) and in ICMPv6 unreachable and time exceeded only (octet 4,
# 64-bit words); ICMPv6 packet too big and parameter problem use all 32 bits (MTU, pointer).
RFC4884_TYPES4 = {3, 11, 12}
RFC4884_TYPES6 = {1, 3}
OTHER4 = [4, 5, 13]  # source quench, redirect, timestamp: no quoted datagram is decoded
OTHER6 = [133, 135, 137]  # router / neighbour solicitation, redirect


def u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "big")


def rule_ipv4(data: bytes, truncated_ok: bool) -> tuple[int, int] | None:
    """(header length, end of the payload) by RFC 791 §3.1, or None if no IPv4 datagram."""
    if len(data) < 20:
        return None
    version, header_length, total = data[0] >> 4, (data[0] & 0xF) * 4, u16(data, 2)
    if version != 4 or header_length < 20 or header_length > len(data) or total < header_length:
        return None
    if total > len(data) and not truncated_ok:
        return None
    return header_length, min(total, len(data))


def rule_ipv6(data: bytes, truncated_ok: bool) -> tuple[int, int, int] | None:
    """(offset of the upper layer, end, upper protocol) by RFC 8200 §3-4, or None."""
    if len(data) < 40 or data[0] >> 4 != 6:
        return None
    end = 40 + u16(data, 4)
    if end > len(data):
        if not truncated_ok:
            return None
        end = len(data)
    next_header, offset = data[6], 40
    while next_header in V6_EXTENSIONS or next_header == V6_FRAGMENT:
        if end - offset < 8:
            return None
        size = 8 if next_header == V6_FRAGMENT else (data[offset + 1] + 1) * 8
        if offset + size > end:
            return None
        next_header, offset = data[offset], offset + size
    return offset, end, next_header


def rfc4884_cut(body: bytes, icmp_type: int, info: int, v6: bool) -> bytes:
    """The "original datagram" field: cut at RFC 4884's length attribute when it is set."""
    if v6:
        length = (info >> 24) * 8 if icmp_type in RFC4884_TYPES6 else 0
    else:
        length = ((info >> 16) & 0xFF) * 4 if icmp_type in RFC4884_TYPES4 else 0
    return body[:length] if 0 < length <= len(body) else body


def text6(address: str) -> str:
    return str(ipaddress.IPv6Address(address))  # RFC 5952 text, as the decoder gives it


# ---- scapy's dissection as the independent reader -----------------------------------------
def assert_ipv4_as_scapy(header: IPv4Header, data: bytes) -> None:
    theirs = IP(data)
    assert isinstance(header, IPv4Header)
    assert (header.version, header.ihl, header.tos) == (4, theirs.ihl, theirs.tos)
    assert (header.total_length, header.identification) == (theirs.len, theirs.id)
    assert (header.flags, header.fragment_offset) == (int(theirs.flags), theirs.frag)
    assert (header.ttl, header.protocol, header.checksum) == (
        theirs.ttl,
        theirs.proto,
        theirs.chksum,
    )
    assert (header.src, header.dst) == (theirs.src, theirs.dst)
    assert header.options == data[20 : theirs.ihl * 4]
    assert header.checksum_ok is (scapy_checksum(data[: theirs.ihl * 4]) == 0)


def assert_ipv6_as_scapy(header: IPv6Header, data: bytes, upper: int) -> None:
    theirs = IPv6(data)
    assert isinstance(header, IPv6Header)
    assert (header.version, header.traffic_class, header.flow_label) == (6, theirs.tc, theirs.fl)
    assert (header.payload_length, header.next_header) == (theirs.plen, theirs.nh)
    assert header.hop_limit == theirs.hlim
    assert (header.src, header.dst) == (text6(theirs.src), text6(theirs.dst))
    assert header.upper_protocol == upper


_SCAPY_EXTENSIONS = (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrFragment, IPv6ExtHdrDestOpt)


def scapy_upper(data: bytes, v6: bool):
    """The upper-layer packet scapy dissects in ``data`` (an IP datagram), or None."""
    layer = IPv6(data).payload if v6 else IP(data).payload
    while isinstance(layer, _SCAPY_EXTENSIONS):
        if isinstance(layer, IPv6ExtHdrRouting) and layer.len % 2:
            # RFC 8200 §4.4: the header is (len + 1) * 8 octets; scapy reads its address list
            # in whole 16-octet addresses, so with an odd len it ends the header 8 octets early
            # and misplaces the upper layer: no independent reading to compare against.
            return None
        layer = layer.payload
    if isinstance(layer, UDP | TCP | ICMP | ICMPv6EchoRequest):
        return layer
    return None  # Raw (a fragment, a cut header), nothing, or some other layer


def assert_upper_as_scapy(quoted_data: bytes, protocol: int, ports, echo, datagram: bytes, v6):
    """Ports / echo ids equal scapy's UDP, TCP or echo layer wherever scapy finds one."""
    layer = scapy_upper(datagram, v6)
    if protocol in (6, 17):
        assert ports == struct.unpack_from("!HH", quoted_data)
        if isinstance(layer, UDP | TCP) and len(quoted_data) >= 8:
            assert ports == (layer.sport, layer.dport)
            event("quoted ports checked against scapy")
    else:
        assert ports is None
    request = 128 if v6 else 8
    if protocol == (58 if v6 else 1) and quoted_data[0] == request:
        assert echo == struct.unpack_from("!HH", quoted_data, 4)
        if isinstance(layer, ICMP | ICMPv6EchoRequest) and layer.type == request:
            assert echo == (layer.id, layer.seq)
            event("quoted echo checked against scapy")
    else:
        assert echo is None


# ---- generators ---------------------------------------------------------------------------
V4_OPTIONS = [
    [],
    [IPOption_NOP()] * 4,
    [IPOption_Router_Alert()],  # RFC 2113
    [IPOption_RR(routers=["198.51.100.1"]), IPOption_EOL()],  # RFC 791 record route
]
ports = st.integers(0, 0xFFFF)


@st.composite
def probe_layer(draw, v6: bool):
    """What traceroute and ping send after the IP header(s): echo, UDP or TCP SYN."""
    kind = draw(st.sampled_from(["echo", "udp", "tcp"]))
    payload = draw(st.binary(max_size=40))
    if kind == "echo":
        ident, seq = draw(ports), draw(ports)
        if v6:
            return ICMPv6EchoRequest(id=ident, seq=seq, data=payload)
        return ICMP(type=8, id=ident, seq=seq) / Raw(payload)
    if kind == "udp":
        return UDP(sport=draw(ports), dport=draw(ports)) / Raw(payload)
    options = draw(st.sampled_from([[], [("MSS", 1460)], [("NOP", None), ("WScale", 7)]]))
    return TCP(sport=draw(ports), dport=draw(ports), seq=draw(st.integers(0, 2**32 - 1)),
               flags="S", options=options)  # fmt: skip


@st.composite
def datagram4(draw) -> bytes:
    """A valid IPv4 probe datagram, built and checksummed by scapy."""
    packet = IP(
        src=draw(st.sampled_from(V4)),
        dst=draw(st.sampled_from(V4)),
        ttl=draw(st.integers(1, 255)),
        tos=draw(st.integers(0, 255)),
        id=draw(ports),
        flags=draw(st.sampled_from([0, 2])),
        options=draw(st.sampled_from(V4_OPTIONS)),
    ) / draw(probe_layer(False))
    return bytes(packet)


@st.composite
def datagram6(draw) -> tuple[bytes, list[int], int]:
    """A valid IPv6 probe datagram (scapy), the offsets of its extension headers and of the
    upper-layer header."""
    chain = draw(
        st.lists(st.sampled_from(["hop", "routing", "fragment", "dest"]), max_size=3, unique=True)
    )
    packet = IPv6(
        src=draw(st.sampled_from(V6)),
        dst=draw(st.sampled_from(V6)),
        hlim=draw(st.integers(1, 255)),
        tc=draw(st.integers(0, 255)),
        fl=draw(st.integers(0, 0xFFFFF)),
    )
    for name in chain:
        if name == "hop":
            packet /= IPv6ExtHdrHopByHop()
        elif name == "routing":
            packet /= IPv6ExtHdrRouting(addresses=draw(st.sampled_from([[], [V6[1]]])))
        elif name == "fragment":
            packet /= IPv6ExtHdrFragment(offset=0, m=draw(st.integers(0, 1)), id=draw(ports))
        else:
            packet /= IPv6ExtHdrDestOpt()
    packet /= draw(probe_layer(True))
    data = bytes(packet)
    offsets, layer, offset = [], packet.payload, 40
    for _ in chain:
        offsets.append(offset)
        offset += len(layer) - len(layer.payload)
        layer = layer.payload
    return data, offsets, offset


def _at(draw, data: bytearray) -> int:
    return draw(st.integers(0, len(data) - 1))


@st.composite
def mutated4(draw) -> bytes:
    """A scapy IPv4 datagram after up to three edits aimed at what the decoder checks."""
    data = bytearray(draw(datagram4()))
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(
            ["cut", "quote8", "flip", "set", "ihl", "version", "length", "proto", "frag", "extend"]
        ))  # fmt: skip
        if edit == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif edit == "quote8" and data:  # RFC 792: what a router must quote at least
            del data[(data[0] & 0xF) * 4 + 8 :]
        elif edit == "flip" and data:
            data[_at(draw, data)] ^= 1 << draw(st.integers(0, 7))
        elif edit == "set" and data:
            data[_at(draw, data)] = draw(st.integers(0, 255))
        elif edit == "ihl" and data:
            data[0] = data[0] & 0xF0 | draw(st.integers(0, 15))
        elif edit == "version" and data:
            data[0] = draw(st.integers(0, 15)) << 4 | data[0] & 0x0F
        elif edit == "length" and len(data) >= 4:
            near = [0, 19, 20, len(data) - 1, len(data), len(data) + 1, 0xFFFF]
            data[2:4] = draw(st.sampled_from(near) | st.integers(0, 0xFFFF)).to_bytes(2, "big")
        elif edit == "proto" and len(data) >= 10:
            data[9] = draw(st.sampled_from([1, 6, 17, 58, 0, 255]))
        elif edit == "frag" and len(data) >= 8:  # MF and/or a non-zero fragment offset
            data[6:8] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        elif edit == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@st.composite
def mutated6(draw) -> bytes:
    """A scapy IPv6 datagram after up to three edits, some aimed at its extension chain."""
    built, offsets, upper = draw(datagram6())
    data = bytearray(built)
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(
            ["cut", "quote", "flip", "set", "version", "plen", "next", "extlen", "extend"]
        ))  # fmt: skip
        if edit == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif edit == "quote":  # RFC 4443 §2.4(c): a quote cut near the 64 bits it must hold
            del data[upper + draw(st.integers(0, 12)) :]
        elif edit == "flip" and data:
            data[_at(draw, data)] ^= 1 << draw(st.integers(0, 7))
        elif edit == "set" and data:
            data[_at(draw, data)] = draw(st.integers(0, 255))
        elif edit == "version" and data:
            data[0] = draw(st.integers(0, 15)) << 4 | data[0] & 0x0F
        elif edit == "plen" and len(data) >= 6:
            near = [0, 7, 8, len(data) - 41, len(data) - 40, len(data) - 39, 0xFFFF]
            value = draw(st.sampled_from([n for n in near if n >= 0]) | st.integers(0, 0xFFFF))
            data[4:6] = value.to_bytes(2, "big")
        elif edit == "next":  # a next-header field: the fixed header's or an extension's
            where = draw(st.sampled_from([6, *offsets]))
            if where < len(data):
                data[where] = draw(st.sampled_from([0, 6, 17, 43, 44, 58, 59, 60, 51, 255]))
        elif edit == "extlen" and offsets:
            where = draw(st.sampled_from(offsets)) + 1
            if where < len(data):
                data[where] = draw(st.sampled_from([0, 1, 2, 255]) | st.integers(0, 255))
        elif edit == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@dataclass(frozen=True)
class ErrorCase:
    """An ICMP message around a (damaged) datagram, and what the RFCs say it contains."""

    message: bytes
    icmp_type: int
    code: int
    info: int
    quoted: bytes  # the original-datagram field (RFC 4884 length applied)
    checksum_ok: bool


def _outer4(icmp_type: int, code: int, info: int, body: bytes, corrupt: bool) -> bytes:
    head = struct.pack("!BBHI", icmp_type, code, 0, info)
    csum = scapy_checksum(head + body)  # RFC 792: over the ICMP message
    if corrupt:
        csum ^= 0x0001  # never the same residue mod 0xFFFF: the sum no longer verifies
    return head[:2] + struct.pack("!H", csum) + head[4:] + body


def _pseudo6(length: int) -> bytes:
    # RFC 8200 §8.1: source, destination, upper-layer length, 3 zeros, next header 58
    return (
        ipaddress.IPv6Address(ROUTER6).packed
        + ipaddress.IPv6Address(PROBER6).packed
        + struct.pack("!I", length)
        + b"\0\0\0\x3a"
    )


def _outer6(icmp_type: int, code: int, info: int, body: bytes, corrupt: bool) -> bytes:
    head = struct.pack("!BBHI", icmp_type, code, 0, info)
    csum = scapy_checksum(_pseudo6(8 + len(body)) + head + body)
    if corrupt:
        csum ^= 0x0001
    return head[:2] + struct.pack("!H", csum) + head[4:] + body


@st.composite
def error_case(draw, v6: bool) -> ErrorCase:
    """An ICMP(v6) error (or, now and then, another type) quoting a mutated datagram."""
    datagram = draw(mutated6() if v6 else mutated4())
    errors = ERRORS6 if v6 else ERRORS4
    others = OTHER6 if v6 else OTHER4
    icmp_type = draw(st.sampled_from(sorted(errors) * 3 + others))  # an error 4 times in 5
    code = draw(st.sampled_from([0, 1, 3, 4, 13]) | st.integers(0, 255))
    info = draw(st.sampled_from([0, 1280, 1500, 0xFFFF]) | st.integers(0, 2**32 - 1))
    unit = 8 if v6 else 4
    body = datagram
    if draw(st.booleans()):  # RFC 4884 §4.1: padded original datagram + extension structure
        padded = datagram + b"\0" * (-len(datagram) % unit)
        words = len(padded) // unit
        if 0 < words <= 255:
            shift = 24 if v6 else 16
            info = info & ~(0xFF << shift) | words << shift
            body = padded + draw(st.binary(min_size=4, max_size=20))
    corrupt = draw(st.integers(0, 9)) == 0
    message = (_outer6 if v6 else _outer4)(icmp_type, code, info, body, corrupt)
    quoted = rfc4884_cut(body, icmp_type, info, v6)
    return ErrorCase(message, icmp_type, code, info, quoted, not corrupt)


# ---- what the decoder must return ---------------------------------------------------------
def expected_quote(case: ErrorCase, v6: bool) -> tuple | None:
    """(offset of the quoted data, its end, upper protocol) or None when RFC 792/4443 says no."""
    if v6:
        found = rule_ipv6(case.quoted, truncated_ok=True)
    else:
        v4 = rule_ipv4(case.quoted, truncated_ok=True)
        found = None if v4 is None else (v4[0], v4[1], case.quoted[9])
    if found is None or found[1] - found[0] < 8:  # at least the first 64 bits of the data
        return None
    return found


def check_error_case(case: ErrorCase, v6: bool, with_addresses: bool = True) -> str:
    """Decode ``case`` and check every field; returns the path it took (for the counts)."""
    errors = ERRORS6 if v6 else ERRORS4
    expected = expected_quote(case, v6) if case.icmp_type in errors else None
    try:
        if v6:
            kwargs = {"src": ROUTER6, "dst": PROBER6} if with_addresses else {}
            msg = decode_icmp6(case.message, **kwargs)
        else:
            msg = decode_icmp(case.message)
    except MalformedPacket:
        assert case.icmp_type in errors and expected is None, "a valid message was refused"
        return "malformed quote"
    checksum_ok = case.checksum_ok if (with_addresses or not v6) else None
    if case.icmp_type not in errors:
        assert isinstance(msg, OtherIcmp)
        assert (msg.icmp_type, msg.code, msg.body) == (case.icmp_type, case.code, case.message[4:])
        assert (msg.v6, msg.checksum_ok) == (v6, checksum_ok)
        return "other type"
    assert expected is not None, f"malformed quote decoded as {msg!r}"
    assert expected_path(case, v6).startswith("quoted")
    assert type(msg) is errors[case.icmp_type] and isinstance(msg, IcmpError)
    assert (msg.icmp_type, msg.code, msg.info) == (case.icmp_type, case.code, case.info)
    assert msg.checksum == u16(case.message, 2)
    assert (msg.v6, msg.checksum_ok) == (v6, checksum_ok)
    offset, end, protocol = expected
    quoted = msg.quoted
    if v6:
        assert_ipv6_as_scapy(quoted.header, case.quoted, protocol)
    else:
        assert_ipv4_as_scapy(quoted.header, case.quoted)
    assert quoted.protocol == protocol
    assert quoted.data == case.quoted[offset:end] and quoted.leading == quoted.data[:8]
    assert (quoted.src, quoted.dst) == (quoted.header.src, quoted.header.dst)
    assert_upper_as_scapy(quoted.data, protocol, quoted.ports, quoted.echo, case.quoted, v6)
    return f"quoted protocol {protocol}" if protocol in (1, 6, 17, 58) else "quoted other"


_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]


@settings(suppress_health_check=_HEALTH)
@given(error_case(v6=False))
def test_icmp4_error_around_mutated_datagram(case: ErrorCase) -> None:
    event(check_error_case(case, v6=False))


@settings(suppress_health_check=_HEALTH)
@given(error_case(v6=True), st.booleans())
def test_icmp6_error_around_mutated_datagram(case: ErrorCase, with_addresses: bool) -> None:
    event(check_error_case(case, v6=True, with_addresses=with_addresses))


def expected_path(case: ErrorCase, v6: bool) -> str:
    """The path the RFCs send ``case`` down (the labels check_error_case returns)."""
    if case.icmp_type not in (ERRORS6 if v6 else ERRORS4):
        return "other type"
    expected = expected_quote(case, v6)
    if expected is None:
        return "malformed quote"
    return f"quoted protocol {expected[2]}" if expected[2] in (1, 6, 17, 58) else "quoted other"


def _sample_paths(v6: bool) -> tuple[list[str], list[str]]:
    """For a fixed sample of 300 generated messages: the RFCs' path, and what the decoder did
    (a quoted datagram, MalformedPacket or another type), whether or not it was right."""
    paths: list[str] = []
    decoded: list[str] = []

    @settings(max_examples=300, derandomize=True, database=None, suppress_health_check=_HEALTH)
    @given(error_case(v6=v6))
    def sample(case: ErrorCase) -> None:
        paths.append(expected_path(case, v6))
        try:
            msg = (decode_icmp6 if v6 else decode_icmp)(case.message)
        except MalformedPacket:
            decoded.append("malformed")
        else:
            decoded.append("quote" if isinstance(msg, IcmpError) else "other")

    sample()
    return paths, decoded


def test_generators_reach_the_quoted_paths() -> None:
    """A fixed sample of each generator: most quotes decode, and every path is reached (a
    generator that stops building decodable quotes fails here, not silently)."""
    for v6 in (False, True):
        paths, decoded = _sample_paths(v6)
        assert decoded.count("quote") >= 0.4 * len(decoded), (v6, decoded.count("quote"))
        assert decoded.count("malformed") >= 0.05 * len(decoded), v6
        assert "other" in decoded and "other type" in paths
        upper = {58, 17, 6} if v6 else {1, 17, 6}
        for protocol in upper:  # each probe kind's quote reached: echo, UDP, TCP
            assert paths.count(f"quoted protocol {protocol}") >= 0.05 * len(paths), (v6, protocol)


# ---- RFC 4884's length attribute, by type (a decoder bug found by the tests above) --------
def _ptb_datagram() -> bytes:
    inner = IPv6(src=PROBER6, dst=V6[1], hlim=5) / UDP(sport=40000, dport=33434) / Raw(b"x" * 32)
    return bytes(inner)


@pytest.mark.parametrize(
    ("icmp_type", "info"),
    [(2, 0x0500_0000), (4, 0x0500_0000)],  # MTU 80 MiB (RFC 2675 jumbo links); a pointer
    ids=["packet-too-big", "parameter-problem"],
)
def test_icmp6_mtu_or_pointer_is_not_an_rfc4884_length(icmp_type: int, info: int) -> None:
    """RFC 4884 §4: ICMPv6 packet too big and parameter problem carry no length attribute:
    their top octet is part of the MTU / pointer, so the whole quote is the datagram."""
    datagram = _ptb_datagram()
    msg = decode_icmp6(_outer6(icmp_type, 0, info, datagram, False), src=ROUTER6, dst=PROBER6)
    assert isinstance(msg, ERRORS6[icmp_type]) and msg.info == info
    assert msg.quoted.ports == (40000, 33434)
    assert msg.quoted.data == datagram[40:]


# ---- the IP decoders alone ----------------------------------------------------------------
@settings(suppress_health_check=_HEALTH)
@given(mutated4(), st.booleans())
def test_decode_ipv4_mutated(data: bytes, truncated_ok: bool) -> None:
    expected = rule_ipv4(data, truncated_ok)
    try:
        header, payload = decode_ipv4(data, truncated_ok=truncated_ok)
    except MalformedPacket:
        assert expected is None, "a valid IPv4 datagram was refused"
        event("malformed")
        return
    assert expected is not None, f"decoded {header!r}"
    assert_ipv4_as_scapy(header, data)
    header_length, end = expected
    assert payload == data[header_length:end]
    event("decoded with options" if header_length > 20 else "decoded")


@settings(suppress_health_check=_HEALTH)
@given(mutated6(), st.booleans())
def test_decode_ipv6_mutated(data: bytes, truncated_ok: bool) -> None:
    expected = rule_ipv6(data, truncated_ok)
    try:
        header, payload = decode_ipv6(data, truncated_ok=truncated_ok)
    except MalformedPacket:
        assert expected is None, "a valid IPv6 datagram was refused"
        event("malformed")
        return
    assert expected is not None, f"decoded {header!r}"
    offset, end, upper = expected
    assert_ipv6_as_scapy(header, data, upper)
    assert payload == data[offset:end]
    layer = scapy_upper(data, v6=True)
    if isinstance(layer, UDP | TCP) and upper in (6, 17) and len(payload) >= 8:
        assert struct.unpack_from("!HH", payload) == (layer.sport, layer.dport)
    event(f"decoded past {(offset - 40) // 8} extension octets x8")


# ---- UDP and TCP ---------------------------------------------------------------------------
@st.composite
def mutated_segment(draw, tcp: bool) -> bytes:
    """A scapy UDP datagram or TCP segment after up to three edits (cut, bits, length fields)."""
    if tcp:
        options = draw(st.sampled_from([[], [("MSS", 1460)], [("NOP", None), ("WScale", 7)]]))
        segment = TCP(
            sport=draw(ports), dport=draw(ports), seq=draw(st.integers(0, 2**32 - 1)),
            ack=draw(st.integers(0, 2**32 - 1)), flags=draw(st.integers(0, 0x1FF)),
            window=draw(ports), options=options,
        ) / Raw(draw(st.binary(max_size=24)))  # fmt: skip
    else:
        segment = UDP(sport=draw(ports), dport=draw(ports)) / Raw(draw(st.binary(max_size=24)))
    data = bytearray(bytes(segment))
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(["cut", "flip", "length", "extend"]))
        if edit == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif edit == "flip" and data:
            data[_at(draw, data)] ^= 1 << draw(st.integers(0, 7))
        elif edit == "length" and tcp and len(data) > 12:  # data offset (RFC 793 §3.1)
            data[12] = draw(st.integers(0, 15)) << 4 | data[12] & 0x0F
        elif edit == "length" and not tcp and len(data) >= 6:  # UDP length (RFC 768)
            value = draw(st.sampled_from([0, 7, 8, len(data), len(data) + 1]) | ports)
            data[4:6] = value.to_bytes(2, "big")
        elif edit == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@settings(suppress_health_check=_HEALTH)
@given(mutated_segment(tcp=False))
def test_decode_udp_mutated(data: bytes) -> None:
    # RFC 768: an 8-octet header whose length counts itself; a quote may cut the data short
    valid = len(data) >= 8 and u16(data, 4) >= 8
    try:
        datagram = decode_udp(data)
    except MalformedPacket:
        assert not valid
        event("malformed")
        return
    assert valid
    theirs = UDP(data)
    assert (datagram.src_port, datagram.dst_port) == (theirs.sport, theirs.dport)
    assert (datagram.length, datagram.checksum) == (theirs.len, theirs.chksum)
    assert datagram.payload == data[8 : u16(data, 4)]
    event("decoded" if u16(data, 4) <= len(data) else "decoded, cut short")


@settings(suppress_health_check=_HEALTH)
@given(mutated_segment(tcp=True))
def test_decode_tcp_mutated(data: bytes) -> None:
    # RFC 793 §3.1: 20 octets at least; data offset in 32-bit words, 5 to 15, within the data
    offset = data[12] >> 4 if len(data) > 12 else 0
    valid = len(data) >= 20 and offset >= 5 and offset * 4 <= len(data)
    try:
        segment = decode_tcp(data)
    except MalformedPacket:
        assert not valid
        event("malformed")
    else:
        assert valid
        theirs = TCP(data)
        assert (segment.src_port, segment.dst_port) == (theirs.sport, theirs.dport)
        assert (segment.seq, segment.ack, segment.window) == (theirs.seq, theirs.ack, theirs.window)
        assert (segment.checksum, segment.urgent) == (theirs.chksum, theirs.urgptr)
        assert segment.data_offset == theirs.dataofs
        assert segment.flags == int(theirs.flags) & 0xFF  # CWR..FIN (RFC 3168 §6.1); not NS
        assert segment.options == data[20 : offset * 4]
        assert segment.payload == data[offset * 4 :]
        event("decoded with options" if offset > 5 else "decoded")
    # RFC 792: an ICMPv4 error quotes 64 bits of it: ports and sequence number
    try:
        quoted = decode_tcp_quoted(data)
    except MalformedPacket:
        assert len(data) < 8
        return
    assert len(data) >= 8
    theirs = TCP(data[:8] + bytes(12))  # scapy reads the first 8 octets; the rest is filler
    assert (quoted.src_port, quoted.dst_port, quoted.seq) == (
        theirs.sport,
        theirs.dport,
        theirs.seq,
    )
