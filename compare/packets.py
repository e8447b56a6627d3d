"""Byte and field diffs of captured packets, with the named differences that are allowed.

The harness compares what the two implementations put on the wire.  Headers are laid out here
field by field (name, offset, width, as in the RFC diagrams) so that any difference is reported
as "field X at offset N: A vs B".  A difference is allowed only if a rule below names that field
for that layer, with its reason; anything else is a mismatch.  These layouts are the harness's
own reading of the RFCs, independent of both implementations' codecs.

``tcp_segments`` / ``tcp_stream`` rebuild one direction of a captured TCP connection (the SMTP
dialogue) from the frames, for the byte-for-byte comparison of streams.
"""

from __future__ import annotations

import re
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compare.capture import Frame

# (name, byte offset, byte width, bit mask or None); masks pick sub-byte fields.
Field = tuple[str, int, int, int | None]

IPV4_FIELDS: tuple[Field, ...] = (  # RFC 791 §3.1
    ("version", 0, 1, 0xF0),
    ("ihl", 0, 1, 0x0F),
    ("dscp_ecn", 1, 1, None),
    ("total_length", 2, 2, None),
    ("identification", 4, 2, None),
    ("flags", 6, 1, 0xE0),
    ("fragment_offset", 6, 2, 0x1FFF),
    ("ttl", 8, 1, None),
    ("protocol", 9, 1, None),
    ("header_checksum", 10, 2, None),
    ("source", 12, 4, None),
    ("destination", 16, 4, None),
)
IPV6_FIELDS: tuple[Field, ...] = (  # RFC 8200 §3
    ("version", 0, 1, 0xF0),
    ("traffic_class", 0, 2, 0x0FF0),
    ("flow_label", 1, 3, 0x0FFFFF),
    ("payload_length", 4, 2, None),
    ("next_header", 6, 1, None),
    ("hop_limit", 7, 1, None),
    ("source", 8, 16, None),
    ("destination", 24, 16, None),
)
ICMP_ECHO_FIELDS: tuple[Field, ...] = (  # RFC 792 (echo), RFC 4443 §4.1
    ("type", 0, 1, None),
    ("code", 1, 1, None),
    ("checksum", 2, 2, None),
    ("identifier", 4, 2, None),
    ("sequence", 6, 2, None),
)
UDP_FIELDS: tuple[Field, ...] = (  # RFC 768
    ("source_port", 0, 2, None),
    ("destination_port", 2, 2, None),
    ("length", 4, 2, None),
    ("checksum", 6, 2, None),
)
TCP_FIELDS: tuple[Field, ...] = (  # RFC 9293 §3.1
    ("source_port", 0, 2, None),
    ("destination_port", 2, 2, None),
    ("sequence_number", 4, 4, None),
    ("acknowledgment_number", 8, 4, None),
    ("data_offset", 12, 1, 0xF0),
    ("flags", 12, 2, 0x0FFF),
    ("window", 14, 2, None),
    ("checksum", 16, 2, None),
    ("urgent_pointer", 18, 2, None),
)
HEADER_LENGTH = {"icmp": 8, "icmpv6": 8, "udp": 8, "tcp": 20}
TRANSPORT_FIELDS = {
    "icmp": ICMP_ECHO_FIELDS,
    "icmpv6": ICMP_ECHO_FIELDS,
    "udp": UDP_FIELDS,
    "tcp": TCP_FIELDS,
}
PROTO_NAMES = {1: "icmp", 58: "icmpv6", 17: "udp", 6: "tcp"}


@dataclass(frozen=True, slots=True)
class Allowed:
    layer: str
    field: str
    reason: str


# Every field that may differ between the two implementations' packets, and why.
ALLOWED: tuple[Allowed, ...] = (
    Allowed(
        "ipv4",
        "identification",
        "chosen per datagram by the kernel for the hand-rolled socket and by scapy for the "
        "reference; it only has to be unique per (src, dst, protocol) while fragments live "
        "(RFC 6864 §4)",
    ),
    Allowed(
        "ipv4",
        "header_checksum",
        "covers the identification field, so it follows it (RFC 791 §3.1)",
    ),
    Allowed(
        "ipv6",
        "flow_label",
        "the kernel may hash a flow label (net.ipv6.auto_flowlabels); any value is valid "
        "(RFC 6437 §3)",
    ),
)
# Nothing in the ICMP, UDP or TCP headers may differ: ident, sequence, ports, TCP sequence
# number, window and options are inputs (or documented choices both sides share), so the
# transport bytes must be identical.
ALLOWED_INDEX = {(a.layer, a.field): a for a in ALLOWED}


@dataclass(frozen=True, slots=True)
class FieldDiff:
    layer: str
    field: str
    offset: int  # byte offset within the IP datagram
    left: str
    right: str
    allowed: Allowed | None = None

    def describe(self) -> str:
        why = f" (allowed: {self.allowed.reason})" if self.allowed else ""
        return (
            f"{self.layer}.{self.field} at offset {self.offset}: {self.left} vs {self.right}{why}"
        )


def _value(data: bytes, offset: int, width: int, mask: int | None) -> int:
    raw = int.from_bytes(data[offset : offset + width], "big")
    if mask is None:
        return raw
    shift = (mask & -mask).bit_length() - 1
    return (raw & mask) >> shift


def _show(name: str, value: int, width: int) -> str:
    if name in ("source", "destination") and width == 4:
        return ".".join(str(b) for b in value.to_bytes(4, "big"))
    if name in ("source", "destination") and width == 16:
        import ipaddress

        return str(ipaddress.IPv6Address(value))
    return f"{value} (0x{value:0{width * 2}x})"


def diff_layout(
    layer: str, fields: tuple[Field, ...], left: bytes, right: bytes, base: int
) -> list[FieldDiff]:
    """Field-by-field differences of two headers laid out as ``fields``."""
    diffs = []
    for name, offset, width, mask in fields:
        a, b = _value(left, offset, width, mask), _value(right, offset, width, mask)
        if a != b:
            diffs.append(
                FieldDiff(
                    layer,
                    name,
                    base + offset,
                    _show(name, a, width),
                    _show(name, b, width),
                    ALLOWED_INDEX.get((layer, name)),
                )
            )
    return diffs


def diff_bytes(layer: str, field: str, left: bytes, right: bytes, base: int) -> list[FieldDiff]:
    """The first differing byte of two byte strings, or a length difference."""
    allowed = ALLOWED_INDEX.get((layer, field))
    for i, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return [
                FieldDiff(layer, f"{field}[{i}]", base + i, f"0x{a:02x}", f"0x{b:02x}", allowed)
            ]
    if len(left) != len(right):
        return [FieldDiff(layer, f"{field} length", base, str(len(left)), str(len(right)), allowed)]
    return []


def split_ip(datagram: bytes) -> tuple[str, bytes, str, bytes]:
    """(ip layer name, IP header, transport name, transport bytes) of an IPv4/IPv6 datagram."""
    if not datagram:
        raise ValueError("empty datagram")
    version = datagram[0] >> 4
    if version == 4:
        ihl = (datagram[0] & 0x0F) * 4
        return (
            "ipv4",
            datagram[:ihl],
            PROTO_NAMES.get(datagram[9], str(datagram[9])),
            datagram[ihl:],
        )
    if version == 6:
        return "ipv6", datagram[:40], PROTO_NAMES.get(datagram[6], str(datagram[6])), datagram[40:]
    raise ValueError(f"IP version {version}")


def diff_datagrams(left: bytes, right: bytes) -> list[FieldDiff]:
    """Every difference between two IP datagrams: IP header field by field, the transport
    header field by field, TCP options and payload byte by byte."""
    ip_l, head_l, proto_l, body_l = split_ip(left)
    ip_r, head_r, proto_r, body_r = split_ip(right)
    if ip_l != ip_r:
        return [FieldDiff("ip", "version", 0, ip_l, ip_r)]
    diffs = diff_layout(ip_l, IPV4_FIELDS if ip_l == "ipv4" else IPV6_FIELDS, head_l, head_r, 0)
    if ip_l == "ipv4" and head_l[20:] != head_r[20:]:
        diffs += diff_bytes("ipv4", "options", head_l[20:], head_r[20:], 20)
    base = len(head_l)
    if proto_l != proto_r or proto_l not in TRANSPORT_FIELDS:
        return [*diffs, *diff_bytes(proto_l, "payload", body_l, body_r, base)]
    diffs += diff_layout(proto_l, TRANSPORT_FIELDS[proto_l], body_l, body_r, base)
    if proto_l == "tcp":
        header_l, header_r = (body_l[12] >> 4) * 4, (body_r[12] >> 4) * 4
        diffs += diff_bytes("tcp", "options", body_l[20:header_l], body_r[20:header_r], base + 20)
        return [
            *diffs,
            *diff_bytes("tcp", "payload", body_l[header_l:], body_r[header_r:], base + header_l),
        ]
    header = HEADER_LENGTH[proto_l]
    return [
        *diffs,
        *diff_bytes(proto_l, "payload", body_l[header:], body_r[header:], base + header),
    ]


def transport(datagram: bytes) -> bytes:
    """The bytes after the IP header (what an ICMP or UDP socket is handed)."""
    return split_ip(datagram)[3]


ProbeKey = tuple[str, int, int]  # ("icmp", ident, seq) | ("udp"|"tcp", source port, dest port)
ICMP_ERRORS = {4: (3, 11), 6: (1, 3)}  # destination unreachable, time exceeded (RFC 792 / 4443)


def probe_key(datagram: bytes) -> ProbeKey | None:
    """The key of a probe as sent: an echo request's ident/seq, a UDP/TCP probe's ports."""
    try:
        _ip, _head, proto, body = split_ip(datagram)
    except ValueError:
        return None
    if proto in ("icmp", "icmpv6") and len(body) >= 8 and body[0] in (8, 128):
        return ("icmp", *struct.unpack_from("!HH", body, 4))
    if proto in ("udp", "tcp") and len(body) >= 4:
        return (proto, *struct.unpack_from("!HH", body, 0))
    return None


def reply_key(datagram: bytes) -> tuple[ProbeKey, str] | None:
    """(key of the probe it answers, kind) for a reply: an echo reply, an ICMP error quoting a
    probe (kind "icmp-error"), or a TCP segment from the probed port (kind "tcp")."""
    try:
        ip, _head, proto, body = split_ip(datagram)
    except ValueError:
        return None
    version = 6 if ip == "ipv6" else 4
    if proto in ("icmp", "icmpv6") and len(body) >= 8:
        if body[0] in (0, 129):
            return ("icmp", *struct.unpack_from("!HH", body, 4)), "echo-reply"
        if body[0] in ICMP_ERRORS[version]:
            quoted = probe_key(body[8:])
            return (quoted, "icmp-error") if quoted else None
    if proto == "tcp" and len(body) >= 4:
        sport, dport = struct.unpack_from("!HH", body, 0)
        return ("tcp", dport, sport), "tcp"
    return None


def echo_of_reply(received: bytes) -> tuple[int, int] | None:
    """(identifier, sequence) of an echo reply as an implementation recorded it: with its IP
    header (an IPv4 raw socket, a scapy packet) or without (an ICMPv6 socket).  None for
    anything else, an echo request included (a side reading back its own request is wrong)."""
    body = received
    if received and received[0] >> 4 in (4, 6):  # no ICMP echo type starts like this
        try:
            _ip, _head, proto, body = split_ip(received)
        except ValueError:
            return None
        if proto not in ("icmp", "icmpv6"):
            return None
    if len(body) < 8 or body[0] not in (0, 129):
        return None
    return struct.unpack_from("!HH", body, 4)


def tcp_segments(frames: Sequence[Frame], port: int, outgoing: bool) -> list[bytes]:
    """The TCP payloads one way (client->server if ``outgoing``) of the connection to ``port``,
    in sequence order, retransmissions dropped."""
    segments: dict[int, bytes] = {}
    for frame in frames:
        if frame.outgoing != outgoing or not frame.ip:
            continue
        try:
            _ip, _head, proto, body = split_ip(frame.ip)
        except ValueError:
            continue
        if proto != "tcp" or len(body) < 20:
            continue
        sport, dport, seq = struct.unpack_from("!HHI", body)
        if (dport if outgoing else sport) != port:
            continue
        payload = body[(body[12] >> 4) * 4 :]
        if payload and seq not in segments:
            segments[seq] = payload
    if not segments:
        return []
    first = min(segments)
    return [segments[s] for s in sorted(segments, key=lambda s: (s - first) & 0xFFFFFFFF)]


def tcp_stream(frames: Sequence[Frame], port: int, outgoing: bool) -> bytes:
    """The TCP payload one way of the connection to ``port`` (see tcp_segments)."""
    return b"".join(tcp_segments(frames, port, outgoing))


# ---- TLS: the decrypted streams (tshark with the NSS key log) ---------------------------------
TSHARK = "/usr/bin/tshark"
_TLS_RECORD = re.compile(rb"\r\n[\x14-\x17]\x03[\x00-\x04]")  # CRLF, then a TLS record header


def plaintext_prefix(stream: bytes) -> bytes:
    """The cleartext before a TLS handshake in one direction of a TCP stream: up to the CRLF
    after which a TLS record starts (RFC 3207 §4: TLS begins right after the 220 to STARTTLS;
    RFC 8446 §5.1: a record starts with its content type and version), all of it if TLS never
    starts, nothing if TLS starts with the first byte (RFC 8314 implicit TLS)."""
    if stream[:1] in (b"\x16", b"\x15") and stream[1:2] == b"\x03":
        return b""
    found = _TLS_RECORD.search(stream)
    return stream if found is None else stream[: found.start() + 2]


def tls_streams(pcap: str | Path, keylog: str | Path, port: int) -> tuple[bytes, bytes]:
    """The decrypted application data of the pcap's first TCP connection, (client to server,
    server to client), as tshark's ``follow,tls,raw`` shows it with the key log: an
    independent decryption (Wireshark's TLS dissector), not our clients' view."""
    proc = subprocess.run(
        [TSHARK, "-n", "-r", str(pcap), "-o", f"tls.keylog_file:{keylog}", "-q",
         "-z", "follow,tls,raw,0"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"tshark: {proc.stderr.decode(errors='replace').strip()[:200]}")
    flush, tabbed = bytearray(), bytearray()
    body = proc.stdout.decode("ascii", "replace").split("=" * 67)
    lines = body[1].splitlines() if len(body) > 2 else []
    nodes = [line.split(": ", 1)[1] for line in lines if re.match(r"Node [01]: ", line)]
    for line in lines:
        text = line.strip()
        if re.fullmatch(r"[0-9a-fA-F]+", text):  # not a header line (Follow:, Node N:, ...)
            # follow's raw output: node 0's data flush left, node 1's tab-indented
            (tabbed if line.startswith("\t") else flush).extend(bytes.fromhex(text))
    if not nodes or not flush + tabbed:
        return b"", b""
    # Node 0 is whichever end tshark met first; the one on the server's port is the server.
    if nodes[0].endswith(f":{port}"):
        return bytes(tabbed), bytes(flush)
    if len(nodes) > 1 and nodes[1].endswith(f":{port}"):
        return bytes(flush), bytes(tabbed)
    raise RuntimeError(f"tshark follow: no node on port {port} in {nodes}")


def decrypted_streams(
    frames: Sequence[Frame], port: int, keylog: str | Path, pcap: str | Path
) -> tuple[bytes, bytes]:
    """Both directions of the connection to ``port`` as the application saw them: the
    cleartext before TLS from the TCP stream, then what tshark decrypts with the key log
    file ``keylog`` from the frames, written to ``pcap`` for it."""
    from compare.capture import write_pcap

    out_plain = plaintext_prefix(tcp_stream(frames, port, outgoing=True))
    in_plain = plaintext_prefix(tcp_stream(frames, port, outgoing=False))
    write_pcap(pcap, list(frames))
    client, server = tls_streams(pcap, keylog, port)
    return out_plain + client, in_plain + server
