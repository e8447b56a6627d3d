"""ICMP (RFC 792) and ICMPv6 (RFC 4443) codec.  Pure: no socket, time or random imports.

Messages are bytes starting at the ICMP type octet (no IP header: for a raw IPv4 socket,
strip it first with ``handrolled.ip.decode_ipv4``).

Speed (issue 17) comes from a few choices, each commented where it is made: structs compiled
once; the RFC 1071 sum as ``int.from_bytes`` modulo 0xFFFF (``handrolled.checksum``), added
to the header's words by arithmetic instead of summing a concatenated copy; type tests against
plain ints instead of enum members; one ``bytes()`` conversion per call; parsed addresses
cached.  Messages stay frozen, slotted records (handrolled/record.py;
``benchmarks/bench_codec.py`` measures).

API
---
``IcmpType``, ``Icmp6Type``: IntEnums of message types; ``UnreachCode`` / ``Unreach6Code``,
``TimeExceededCode``: IntEnums of codes.
``default_payload(size) -> bytes``
    The documented fixed payload: byte i is ``i & 0xFF`` (iputils' fill pattern, without the
    timestamp iputils writes over the first bytes).  Deterministic, so two pingers agree.
``encode_echo_request(ident, seq, payload=b"", *, v6=False, src=None, dst=None) -> bytes``
``encode_echo_reply(...)``: same signature.
    ICMPv4: checksum over the message (RFC 792).  ICMPv6: checksum over the RFC 8200 §8.1
    pseudo-header, so ``src`` and ``dst`` are needed; without them the checksum field is 0 and
    the kernel fills it in (it always does for ICMPv6 raw and datagram sockets).
``encode_icmp_error(icmp_type, code, quoted, *, info=0, v6=False, src=None, dst=None) -> bytes``
    A time-exceeded / unreachable / ... message quoting ``quoted`` (an IP datagram's bytes).
``decode_icmp(data) -> IcmpMessage``; ``decode_icmp6(data, *, src=None, dst=None)``
    Return one of the message types below, or raise ``MalformedPacket`` (nothing else, for any
    input).  A wrong checksum is *not* an exception: ``checksum_ok`` is False (ICMPv6: None
    when src/dst were not given, so the pseudo-header is unknown).
``EchoMessage``: icmp_type, code, checksum, ident, seq, payload, v6, checksum_ok; ``is_reply``.
``TimeExceeded``, ``DestinationUnreachable``, ``ParameterProblem``, ``PacketTooBig``
    (subclasses of ``IcmpError``): icmp_type, code, checksum, info (the 32-bit field after the
    checksum: unused / next-hop MTU / pointer), quoted, v6, checksum_ok.
``QuotedDatagram``: the datagram an ICMP error quotes: ``header`` (IPv4Header or IPv6Header),
    ``protocol`` (upper layer), ``data`` (its bytes after the IP header(s); at least 8),
    ``leading`` (the first 8 of those), ``src``, ``dst``, ``echo`` ((ident, seq) if it was an
    echo request, else None), ``ports`` ((src_port, dst_port) for UDP/TCP, else None).
``OtherIcmp``: any other well-formed type (neighbour discovery, redirects...): icmp_type, code,
    checksum, body (bytes after the checksum), v6, checksum_ok.
``icmp6_pseudo_header(src, dst, length) -> bytes``; ``icmp_checksum(message, *, v6, src, dst)``.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import struct

from handrolled.checksum import (
    checksum_verifies,
    internet_checksum,
    ones_complement_sum,
    pseudo_header,
    pseudo_header_checksum,
)
from handrolled.errors import MalformedPacket, UsageError
from handrolled.ip import IpProto, IPv4Header, IPv6Header, decode_ipv4, decode_ipv6
from handrolled.record import Record

__all__ = [
    "DestinationUnreachable",
    "EchoMessage",
    "Icmp6Type",
    "IcmpError",
    "IcmpMessage",
    "IcmpType",
    "OtherIcmp",
    "PacketTooBig",
    "ParameterProblem",
    "QuotedDatagram",
    "TimeExceeded",
    "TimeExceededCode",
    "Unreach6Code",
    "UnreachCode",
    "decode_icmp",
    "decode_icmp6",
    "default_payload",
    "encode_echo",
    "encode_echo_reply",
    "encode_echo_request",
    "encode_icmp_error",
    "icmp6_pseudo_header",
    "icmp_checksum",
]

ICMP_HEADER_LENGTH = 8  # type, code, checksum, 32 bits of ident/seq or unused/info
# Precompiled structs: the format string is parsed once here, not on every pack/unpack.
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, ident, seq (RFC 792 "Echo")
_ERROR_HEADER = struct.Struct("!BBHI")  # type, code, checksum, info


class IcmpType(enum.IntEnum):
    """ICMPv4 message types (RFC 792)."""

    ECHO_REPLY = 0
    DEST_UNREACHABLE = 3
    SOURCE_QUENCH = 4
    REDIRECT = 5
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12
    TIMESTAMP = 13
    TIMESTAMP_REPLY = 14


class Icmp6Type(enum.IntEnum):
    """ICMPv6 message types (RFC 4443 §2.1, RFC 4861 §4)."""

    DEST_UNREACHABLE = 1
    PACKET_TOO_BIG = 2
    TIME_EXCEEDED = 3
    PARAMETER_PROBLEM = 4
    ECHO_REQUEST = 128
    ECHO_REPLY = 129
    ROUTER_SOLICITATION = 133
    ROUTER_ADVERTISEMENT = 134
    NEIGHBOR_SOLICITATION = 135
    NEIGHBOR_ADVERTISEMENT = 136
    REDIRECT = 137


class UnreachCode(enum.IntEnum):
    """ICMPv4 destination-unreachable codes (RFC 792, RFC 1122 §3.2.2.1, RFC 1812 §5.2.7.1)."""

    NET = 0
    HOST = 1
    PROTOCOL = 2
    PORT = 3
    FRAGMENTATION_NEEDED = 4
    SOURCE_ROUTE_FAILED = 5
    NET_UNKNOWN = 6
    HOST_UNKNOWN = 7
    HOST_ISOLATED = 8
    NET_PROHIBITED = 9
    HOST_PROHIBITED = 10
    NET_TOS = 11
    HOST_TOS = 12
    ADMIN_PROHIBITED = 13
    PRECEDENCE_VIOLATION = 14
    PRECEDENCE_CUTOFF = 15


class Unreach6Code(enum.IntEnum):
    """ICMPv6 destination-unreachable codes (RFC 4443 §3.1)."""

    NO_ROUTE = 0
    ADMIN_PROHIBITED = 1
    BEYOND_SCOPE = 2
    ADDRESS = 3
    PORT = 4
    POLICY_FAILED = 5
    REJECT_ROUTE = 6


class TimeExceededCode(enum.IntEnum):
    """RFC 792 / RFC 4443 §3.3: the same two codes in both versions."""

    TTL = 0
    REASSEMBLY = 1


# Plain ints for the type tests on the decode path: comparing with an IntEnum member costs an
# attribute lookup on the enum class each time; a frozenset of ints is one hash probe.
_ECHO4 = frozenset({IcmpType.ECHO_REQUEST.value, IcmpType.ECHO_REPLY.value})
_ECHO6 = frozenset({Icmp6Type.ECHO_REQUEST.value, Icmp6Type.ECHO_REPLY.value})
_ECHO_REQUEST4 = IcmpType.ECHO_REQUEST.value
_ECHO_REQUEST6 = Icmp6Type.ECHO_REQUEST.value
_ECHO_REPLY4 = IcmpType.ECHO_REPLY.value
_ECHO_REPLY6 = Icmp6Type.ECHO_REPLY.value
_FILL = bytes(range(256))


def default_payload(size: int) -> bytes:
    """The fixed default payload: byte i is ``i & 0xFF`` (iputils' fill, no timestamp)."""
    if size < 0:
        raise UsageError(f"payload size {size} is negative")
    return (_FILL * (size // 256 + 1))[:size]  # whole copies of 0..255, cut (no per-byte loop)


# Cached: ipaddress parses an address in a few microseconds, and a run checksums against the
# same pair again and again; a raise is never cached, so bad input always gets its UsageError.
@functools.lru_cache(maxsize=256)
def _require_v6(src: str, dst: str) -> None:
    try:
        ipaddress.IPv6Address(src)
        ipaddress.IPv6Address(dst)
    except ValueError as exc:
        raise UsageError(f"bad IPv6 pseudo-header address: {exc}") from exc


def icmp6_pseudo_header(src: str, dst: str, length: int) -> bytes:
    """RFC 8200 §8.1: source, destination, upper-layer length (32 bits), 3 zeros, next header."""
    _require_v6(src, dst)
    return pseudo_header(src, dst, IpProto.ICMPV6, length)


def _icmp6_checksum(data: bytes, src: str, dst: str) -> int:
    """RFC 4443 §2.3: checksum over the pseudo-header and ``data`` (0 if it verifies)."""
    _require_v6(src, dst)
    return pseudo_header_checksum(src, dst, IpProto.ICMPV6, data)


def icmp_checksum(
    message: bytes, *, v6: bool = False, src: str | None = None, dst: str | None = None
) -> int:
    """Checksum of ``message`` as if its checksum field (octets 2-3) were zero."""
    zeroed = bytes(message[:2]) + b"\x00\x00" + bytes(message[4:])
    if not v6:
        return internet_checksum(zeroed)  # RFC 792: over the ICMP message only
    if src is None or dst is None:
        raise UsageError("ICMPv6 checksum needs src and dst (pseudo-header, RFC 4443 §2.3)")
    return _icmp6_checksum(zeroed, src, dst)


def _checksum_field(words: int, body: bytes, v6: bool, src: str | None, dst: str | None) -> int:
    """The checksum field for a message whose header words sum to ``words`` (checksum zero).

    The header's words are added as numbers and ``body`` is summed where it lies, instead of
    summing a concatenated copy (the body starts at octet 8, so its words stay aligned).
    """
    total = ones_complement_sum(body, words)
    if not v6:
        return ~total & 0xFFFF  # RFC 792: over the ICMP message only
    if src is None or dst is None:
        return 0  # the kernel computes ICMPv6 checksums (RFC 3542 §3.1)
    # RFC 4443 §2.3: the pseudo-header's words join the sum
    pseudo = icmp6_pseudo_header(src, dst, ICMP_HEADER_LENGTH + len(body))
    return ~ones_complement_sum(pseudo, total) & 0xFFFF


def _echo(
    icmp_type: int,
    code: int,
    ident: int,
    seq: int,
    payload: bytes,
    v6: bool,
    src: str | None,
    dst: str | None,
) -> bytes:
    """The echo encoder the public names share (one call less on the way to the bytes)."""
    if type(payload) is not bytes:  # bytearray, memoryview: one copy; bytes pass through
        payload = bytes(payload)
    try:
        csum = _checksum_field((icmp_type << 8 | code) + ident + seq, payload, v6, src, dst)
        # No range checks in Python: pack checks every field once, in C.
        return _HEADER.pack(icmp_type, code, csum, ident, seq) + payload
    except (struct.error, TypeError) as exc:  # TypeError: a field that is not a number
        raise UsageError(f"bad echo field (type, code: 0-255; ident, seq: 0-65535): {exc}") from exc


def encode_echo(
    icmp_type: int,
    ident: int,
    seq: int,
    payload: bytes = b"",
    *,
    code: int = 0,
    v6: bool = False,
    src: str | None = None,
    dst: str | None = None,
) -> bytes:
    """An echo message of ``icmp_type`` (RFC 792 "Echo or Echo Reply", RFC 4443 §4)."""
    return _echo(icmp_type, code, ident, seq, payload, v6, src, dst)


def encode_echo_request(
    ident: int,
    seq: int,
    payload: bytes = b"",
    *,
    v6: bool = False,
    src: str | None = None,
    dst: str | None = None,
) -> bytes:
    """ICMP echo request (type 8) or ICMPv6 echo request (type 128)."""
    icmp_type = _ECHO_REQUEST6 if v6 else _ECHO_REQUEST4
    return _echo(icmp_type, 0, ident, seq, payload, v6, src, dst)


def encode_echo_reply(
    ident: int,
    seq: int,
    payload: bytes = b"",
    *,
    v6: bool = False,
    src: str | None = None,
    dst: str | None = None,
) -> bytes:
    """ICMP echo reply (type 0) or ICMPv6 echo reply (type 129)."""
    icmp_type = _ECHO_REPLY6 if v6 else _ECHO_REPLY4
    return _echo(icmp_type, 0, ident, seq, payload, v6, src, dst)


def encode_icmp_error(
    icmp_type: int,
    code: int,
    quoted: bytes,
    *,
    info: int = 0,
    v6: bool = False,
    src: str | None = None,
    dst: str | None = None,
) -> bytes:
    """An error message (time exceeded, unreachable...) quoting the datagram ``quoted``."""
    quoted = bytes(quoted)
    try:
        words = (icmp_type << 8 | code) + (info >> 16) + (info & 0xFFFF)
        csum = _checksum_field(words, quoted, v6, src, dst)
        return _ERROR_HEADER.pack(icmp_type, code, csum, info) + quoted
    except (struct.error, TypeError) as exc:
        raise UsageError(f"bad ICMP error field: {exc}") from exc


# The decoded messages are frozen, slotted records (handrolled/record.py: a frozen dataclass's
# behaviour, made without compiling six methods per class at import).  __slots__ makes them
# smaller and their fields quicker to read; frozen costs about 0.1 us a field when building
# one (each field goes through object.__setattr__), which a NamedTuple would avoid, but a
# NamedTuple equals any tuple of the same values: the decoder is fast enough (see
# benchmarks/bench_codec.py) with the stricter type.
class EchoMessage(Record):
    icmp_type: int
    code: int
    checksum: int
    ident: int
    seq: int
    payload: bytes
    v6: bool = False
    checksum_ok: bool | None = True

    @property
    def is_reply(self) -> bool:
        return self.icmp_type == (_ECHO_REPLY6 if self.v6 else _ECHO_REPLY4)


class QuotedDatagram(Record):
    """The invoking datagram quoted by an ICMP error (RFC 792: IP header + first 64 bits)."""

    header: IPv4Header | IPv6Header
    protocol: int
    data: bytes  # everything quoted after the IP header(s); at least 8 bytes

    @property
    def leading(self) -> bytes:
        return self.data[:8]

    @property
    def src(self) -> str:
        return self.header.src

    @property
    def dst(self) -> str:
        return self.header.dst

    @property
    def echo(self) -> tuple[int, int] | None:
        """(ident, seq) if the quoted datagram was an echo request, else None."""
        if isinstance(self.header, IPv6Header):
            request, proto = Icmp6Type.ECHO_REQUEST, IpProto.ICMPV6
        else:
            request, proto = IcmpType.ECHO_REQUEST, IpProto.ICMP
        if self.protocol != proto or self.data[0] != request:
            return None
        ident, seq = struct.unpack_from("!HH", self.data, 4)
        return ident, seq

    @property
    def ports(self) -> tuple[int, int] | None:
        """(source port, destination port) if the quoted datagram was UDP or TCP."""
        if self.protocol not in (IpProto.UDP, IpProto.TCP):
            return None
        return struct.unpack_from("!HH", self.data, 0)


class IcmpError(Record):
    icmp_type: int
    code: int
    checksum: int
    info: int  # the 32 bits after the checksum: unused, length (RFC 4884), MTU or pointer
    quoted: QuotedDatagram
    v6: bool = False
    checksum_ok: bool | None = True


class TimeExceeded(IcmpError):
    pass


class DestinationUnreachable(IcmpError):
    pass


class ParameterProblem(IcmpError):
    pass


class PacketTooBig(IcmpError):
    pass


class OtherIcmp(Record):
    icmp_type: int
    code: int
    checksum: int
    body: bytes
    v6: bool = False
    checksum_ok: bool | None = True


IcmpMessage = EchoMessage | IcmpError | OtherIcmp

_ERRORS4: dict[int, type[IcmpError]] = {
    IcmpType.DEST_UNREACHABLE: DestinationUnreachable,
    IcmpType.TIME_EXCEEDED: TimeExceeded,
    IcmpType.PARAMETER_PROBLEM: ParameterProblem,
}
_ERRORS6: dict[int, type[IcmpError]] = {
    Icmp6Type.DEST_UNREACHABLE: DestinationUnreachable,
    Icmp6Type.PACKET_TOO_BIG: PacketTooBig,
    Icmp6Type.TIME_EXCEEDED: TimeExceeded,
    Icmp6Type.PARAMETER_PROBLEM: ParameterProblem,
}


# RFC 4884 §4 defines its length field for these ICMPv6 types only: in Packet Too Big the same
# 32 bits are the MTU (RFC 4443 §3.2), in Parameter Problem the pointer (§3.4).
_LENGTH_TYPES6 = frozenset({Icmp6Type.DEST_UNREACHABLE, Icmp6Type.TIME_EXCEEDED})


def _quoted(body: bytes, icmp_type: int, info: int, v6: bool) -> QuotedDatagram:
    # RFC 4884 §4: a non-zero length field says where the original datagram ends and ICMP
    # extensions begin (ICMPv4: octet 5, 32-bit words; ICMPv6: octet 4, 64-bit words).
    if v6:
        length = (info >> 24) * 8 if icmp_type in _LENGTH_TYPES6 else 0
    else:
        length = ((info >> 16) & 0xFF) * 4
    if length and length <= len(body):
        body = body[:length]
    header: IPv4Header | IPv6Header
    if v6:
        header, data = decode_ipv6(body, truncated_ok=True)
        protocol = header.upper_protocol if header.upper_protocol is not None else -1
    else:
        header, data = decode_ipv4(body, truncated_ok=True)
        protocol = header.protocol
    if len(data) < 8:  # RFC 792 / RFC 4443: at least the first 64 bits of the payload
        raise MalformedPacket(f"ICMP error quotes {len(data)} payload bytes, needs 8")
    return QuotedDatagram(header=header, protocol=protocol, data=data)


def _decode(data: bytes, v6: bool, checksum_ok: bool | None) -> IcmpMessage:
    """Build the message from ``data`` (bytes: the callers converted it)."""
    if len(data) < ICMP_HEADER_LENGTH:
        raise MalformedPacket(f"ICMP message needs {ICMP_HEADER_LENGTH} bytes, got {len(data)}")
    icmp_type, code, csum, ident, seq = _HEADER.unpack_from(data)
    if icmp_type in (_ECHO6 if v6 else _ECHO4):  # the common case first, positional fields
        return EchoMessage(icmp_type, code, csum, ident, seq, data[8:], v6, checksum_ok)
    error_cls = (_ERRORS6 if v6 else _ERRORS4).get(icmp_type)
    info = ident << 16 | seq
    if error_cls is None:
        return OtherIcmp(icmp_type, code, csum, data[4:], v6, checksum_ok)
    return error_cls(
        icmp_type, code, csum, info, _quoted(data[8:], icmp_type, info, v6), v6, checksum_ok
    )


def decode_icmp(data: bytes) -> IcmpMessage:
    """Decode an ICMPv4 message (no IP header in front); raise ``MalformedPacket`` if malformed."""
    if type(data) is not bytes:  # bytearray, memoryview: one copy; bytes pass through
        data = bytes(data)
    return _decode(data, False, checksum_verifies(data))  # RFC 792: over the message alone


def decode_icmp6(data: bytes, *, src: str | None = None, dst: str | None = None) -> IcmpMessage:
    """Decode an ICMPv6 message; its checksum is checked only when ``src`` and ``dst`` are given."""
    if type(data) is not bytes:
        data = bytes(data)
    checksum_ok: bool | None = None
    if src is not None and dst is not None and len(data) >= 4:
        # RFC 4443 §2.3: the pseudo-header's sum, then the message's
        pseudo = ones_complement_sum(icmp6_pseudo_header(src, dst, len(data)))
        checksum_ok = checksum_verifies(data, pseudo)
    return _decode(data, True, checksum_ok)
