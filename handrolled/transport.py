"""UDP and TCP probe codecs for traceroute, with their pseudo-header checksums.  Pure: no I/O.

API
---
``pseudo_header(src, dst, protocol, length) -> bytes``
    The IPv4 (RFC 768, RFC 793 §3.1) or IPv6 (RFC 8200 §8.1) pseudo-header that a UDP or TCP
    checksum covers; the family follows the addresses (``handrolled.checksum``'s, re-exported).
``transport_checksum(src, dst, protocol, segment) -> int``
    RFC 1071 checksum of pseudo-header + ``segment`` (whose checksum field must be zero).
``UdpDatagram`` / ``encode_udp(datagram, *, src, dst) -> bytes`` / ``decode_udp(data)``
    RFC 768.  ``encode_udp`` fills length and checksum when they are None; a computed checksum
    of 0 is sent as 0xFFFF (RFC 768: zero means "no checksum").  ``decode_udp`` accepts the
    8-byte header alone, as quoted in an ICMP error (RFC 792: IP header + 64 bits).
``TcpSegment`` / ``encode_tcp(segment, *, src, dst) -> bytes`` / ``decode_tcp(data)``
    RFC 793 §3.1 (flags as ``TcpFlags``).  ``decode_tcp`` needs the full 20-byte header.
``decode_tcp_quoted(data) -> TcpQuoted``
    The first 8 bytes of a TCP header (ports and sequence number): all an ICMPv4 error has to
    quote of it (RFC 792).
``transport_checksum_ok(src, dst, protocol, segment) -> bool``

Speed (issue 17): structs compiled once; checksums summed in place (the header's words added
as numbers to the pseudo-header's and the payload's sums, ``handrolled.checksum``), so each
encoder packs its header once; TCP flags from a precomputed table.
"""

from __future__ import annotations

import enum
import functools
import operator
import struct

from handrolled.checksum import (
    checksum_verifies,
    ones_complement_sum,
    pseudo_header,
    pseudo_header_checksum,
)
from handrolled.errors import MalformedPacket, UsageError
from handrolled.ip import IpProto
from handrolled.record import Record

__all__ = [
    "TCP_MIN_HEADER",
    "UDP_HEADER",
    "TcpFlags",
    "TcpQuoted",
    "TcpSegment",
    "UdpDatagram",
    "checksum_compensation",
    "decode_tcp",
    "decode_tcp_quoted",
    "decode_udp",
    "encode_tcp",
    "encode_udp",
    "pseudo_header",
    "transport_checksum",
    "transport_checksum_ok",
]

UDP_HEADER = 8
TCP_MIN_HEADER = 20

# RFC 768: source port, destination port, length, checksum.
_UDP = struct.Struct("!HHHH")
# RFC 793 §3.1: ports, sequence, acknowledgment, data offset/reserved/flags, window,
# checksum, urgent pointer.
_TCP = struct.Struct("!HHIIHHHH")


class TcpFlags(enum.IntFlag):
    """The TCP control bits (RFC 793 §3.1, with ECE/CWR from RFC 3168 §6.1)."""

    NONE = 0
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


# Speed: TcpFlags(x) runs the enum machinery (about 0.5 us); each value is made once and cached
# (the same objects TcpFlags(x) returns).  Made on first sight, not as a table of all 256 at
# import: that table cost every ping and traceroute start ~3 ms.
_tcp_flags = functools.cache(TcpFlags)


def _pseudo_sum(src: str, dst: str, protocol: int, length: int) -> int:
    """The one's complement sum of the pseudo-header (RFC 768; RFC 8200 §8.1)."""
    return ones_complement_sum(pseudo_header(src, dst, protocol, length))


def transport_checksum(src: str, dst: str, protocol: int, segment: bytes) -> int:
    """Checksum over pseudo-header + segment (the segment's checksum field zeroed)."""
    return pseudo_header_checksum(src, dst, protocol, segment)


def transport_checksum_ok(src: str, dst: str, protocol: int, segment: bytes) -> bool:
    """True when a received segment's checksum verifies (sums to zero with its pseudo-header)."""
    return checksum_verifies(segment, _pseudo_sum(src, dst, protocol, len(segment)))


class UdpDatagram(Record):
    src_port: int
    dst_port: int
    payload: bytes = b""
    length: int | None = None  # None: encode_udp fills it in (header + payload)
    checksum: int | None = None  # None: encode_udp computes it


def encode_udp(datagram: UdpDatagram, *, src: str, dst: str) -> bytes:
    """Serialise a UDP datagram; the addresses feed the pseudo-header checksum (RFC 768)."""
    payload = bytes(datagram.payload)
    length = datagram.length if datagram.length is not None else UDP_HEADER + len(payload)
    src_port, dst_port, csum = datagram.src_port, datagram.dst_port, datagram.checksum
    try:
        if csum is None:
            # RFC 768: pseudo-header, header (checksum zero) and data, summed in place
            words = src_port + dst_port + length
            words += _pseudo_sum(src, dst, IpProto.UDP, UDP_HEADER + len(payload))
            csum = ~ones_complement_sum(payload, words) & 0xFFFF
            csum = csum or 0xFFFF  # RFC 768: a computed zero is transmitted as all ones
        return _UDP.pack(src_port, dst_port, length, csum) + payload
    except (struct.error, TypeError) as exc:  # pack checks the ranges, once, in C
        raise UsageError(f"cannot encode UDP header: {exc}") from exc


def decode_udp(data: bytes) -> UdpDatagram:
    """Decode a UDP header and whatever payload follows it (possibly truncated when quoted)."""
    data = bytes(data)
    if len(data) < UDP_HEADER:
        raise MalformedPacket(f"UDP header needs {UDP_HEADER} bytes, got {len(data)}")
    src_port, dst_port, length, csum = _UDP.unpack_from(data)
    if length < UDP_HEADER:
        raise MalformedPacket(f"UDP length {length} < {UDP_HEADER}")
    return UdpDatagram(src_port, dst_port, data[UDP_HEADER:length], length, csum)  # field order


class TcpSegment(Record):
    src_port: int
    dst_port: int
    seq: int = 0
    ack: int = 0
    flags: int = TcpFlags.SYN
    window: int = 0
    urgent: int = 0
    options: bytes = b""  # raw option bytes; encode_tcp pads them to 32 bits with zeros (EOL)
    payload: bytes = b""
    data_offset: int | None = None  # 32-bit words; None: encode_tcp computes it from options
    checksum: int | None = None  # None: encode_tcp computes it

    @property
    def header_length(self) -> int:
        return (self.data_offset or 5) * 4


def encode_tcp(segment: TcpSegment, *, src: str, dst: str) -> bytes:
    """Serialise a TCP segment; the addresses feed the pseudo-header checksum (RFC 793 §3.1)."""
    options = bytes(segment.options)
    if len(options) % 4:  # RFC 793 §3.1: the header is padded to a 32-bit boundary
        options += b"\x00" * (4 - len(options) % 4)
    header_length = TCP_MIN_HEADER + len(options)
    if header_length > 60:
        raise UsageError(f"TCP options too long: header would be {header_length} bytes")
    offset = segment.data_offset if segment.data_offset is not None else header_length // 4
    fields = (
        segment.src_port,
        segment.dst_port,
        segment.seq,
        segment.ack,
        # operator.index: a TcpFlags member's own "&" builds a new flag (about 1 us)
        (offset & 0xF) << 12 | (operator.index(segment.flags) & 0xFF),
        segment.window,
    )
    body = options + bytes(segment.payload)
    try:
        csum = segment.checksum
        if csum is None:
            # RFC 793 §3.1: pseudo-header, header (checksum zero), options and data.  The
            # header is summed as numbers: seq and ack are two words each, and 2**16 = 1
            # (mod 0xFFFF), so a 32-bit field adds the same as its two halves.
            words = sum(fields) + segment.urgent
            words += _pseudo_sum(src, dst, IpProto.TCP, TCP_MIN_HEADER + len(body))
            csum = ~ones_complement_sum(body, words) & 0xFFFF
        return _TCP.pack(*fields, csum, segment.urgent) + body
    except (struct.error, TypeError) as exc:
        raise UsageError(f"cannot encode TCP header: {exc}") from exc


def decode_tcp(data: bytes) -> TcpSegment:
    """Decode a TCP header (options kept raw) and its payload."""
    data = bytes(data)
    if len(data) < TCP_MIN_HEADER:
        raise MalformedPacket(f"TCP header needs {TCP_MIN_HEADER} bytes, got {len(data)}")
    src_port, dst_port, seq, ack, off_flags, window, csum, urgent = _TCP.unpack_from(data)
    offset = off_flags >> 12
    header_length = offset * 4
    if offset < 5:  # RFC 793 §3.1: data offset counts 32-bit words, at least 5
        raise MalformedPacket(f"TCP data offset {offset} < 5")
    if header_length > len(data):
        raise MalformedPacket(f"TCP data offset says {header_length} bytes, got {len(data)}")
    # Speed: positional arguments, in the record's field order (keywords are matched by
    # name on every call).
    return TcpSegment(
        src_port,
        dst_port,
        seq,
        ack,
        _tcp_flags(off_flags & 0xFF),  # flags
        window,
        urgent,
        data[TCP_MIN_HEADER:header_length],  # options
        data[header_length:],  # payload
        offset,  # data_offset
        csum,  # checksum
    )


class TcpQuoted(Record):
    """The part of a TCP header an ICMPv4 error is sure to quote (RFC 792: 64 bits)."""

    src_port: int
    dst_port: int
    seq: int


_TCP_QUOTED = struct.Struct("!HHI")


def decode_tcp_quoted(data: bytes) -> TcpQuoted:
    """Ports and sequence number from the first 8 bytes of a (possibly truncated) TCP header."""
    data = bytes(data)
    if len(data) < _TCP_QUOTED.size:
        raise MalformedPacket(f"quoted TCP header needs 8 bytes, got {len(data)}")
    return TcpQuoted(*_TCP_QUOTED.unpack_from(data))


def checksum_compensation(checksum: int, word: int, target: int) -> int:
    """The 16-bit word that, in place of ``word``, turns a message's ``checksum`` into ``target``.

    RFC 1071 §2(4) (incremental update, as RFC 1624 §3 writes it): the checksum is the one's
    complement of the sum S of the words, so swapping ``word`` w for w' makes it
    ~(S - w + w'); solving ~(S - w + w') = target gives w' = ~target + ~S + w, and ~S is
    ``checksum``.  Paris traceroute sets the UDP checksum (or holds the ICMP one) this way.
    """
    return ones_complement_sum(b"", (~target & 0xFFFF) + (checksum & 0xFFFF) + (word & 0xFFFF))
