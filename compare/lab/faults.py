"""Deterministic faults on chosen ICMP echo packets: the rule language and its matcher.  Pure.

A rule is one line, ``ACTION DIRECTION [family=4|6] [ident=N] [seq=N] [byte=K] [after=M]``:

    duplicate reply seq=3                 the echo reply to seq 3 arrives twice
    corrupt reply seq=4 byte=20           payload byte 20 of that reply flipped, checksum fixed
    corrupt-bad-checksum reply seq=5      the same, with the checksum left as it was (wrong)
    drop request seq=6                    the echo request with seq 6 never arrives
    hold reply seq=1 after=2              the reply to seq 1 held until the one to seq 2 has gone
    forge request                         for each request: a reply with its identifier and
                                          sequence from FORGER4/FORGER6, and one from the target
                                          with another identifier (ident XOR 0xFFFF)

A rule selects packets by (family, ICMP type, identifier, sequence); a field left out matches
any value.  DIRECTION picks the ICMP type: request = echo request (RFC 792 type 8, RFC 4443
type 128), reply = echo reply (0, 129).  Nothing else is ever touched: only an IPv4 datagram
with protocol 1 or an IPv6 one whose next header is 58 is an echo packet here.  The link stage
(compare/lab/delay.py) applies the first rule a packet matches; this module only decides and
rewrites bytes, with no I/O.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import StrEnum

from handrolled.errors import WiretwinError

ECHO_TYPES = {4: {"request": 8, "reply": 0}, 6: {"request": 128, "reply": 129}}
DEFAULT_BYTE = 20  # past iputils' 16-byte timestamp, so ping(8) checks the byte it reads
HOLD_LIMIT_S = 3.0  # a held reply goes anyway after this long (its release never came)
FORGER4 = "203.0.113.77"  # the address forged replies come from (no node has it)
FORGER6 = "2001:db8:0:1fe::77"
FORGED_IDENT_XOR = 0xFFFF


class FaultRuleError(WiretwinError, ValueError):
    """A fault rule that does not parse."""


class Action(StrEnum):
    DUPLICATE = "duplicate"
    CORRUPT = "corrupt"
    CORRUPT_BAD_CHECKSUM = "corrupt-bad-checksum"
    DROP = "drop"
    HOLD = "hold"
    FORGE = "forge"


# What a client should report for the probe a rule hits (the lab's truth).
OUTCOMES = {
    Action.DUPLICATE: "duplicate",
    Action.CORRUPT: "corrupt-valid-checksum",
    Action.CORRUPT_BAD_CHECKSUM: "corrupt-bad-checksum",
    Action.DROP: "lost",
    Action.HOLD: "reordered",
    Action.FORGE: "reply (forged replies ignored)",
}


@dataclass(frozen=True, slots=True)
class Echo:
    """The fields of an ICMP echo packet a rule selects on, and where its ICMP header starts."""

    family: int
    icmp_type: int
    ident: int
    seq: int
    icmp_offset: int


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    direction: str  # "request" or "reply"
    family: int | None = None  # None: both
    ident: int | None = None  # None: any
    seq: int | None = None  # None: any
    byte: int = DEFAULT_BYTE  # corrupt*: the payload byte flipped (0 = first after the header)
    after: int | None = None  # hold: the seq whose reply releases this one

    def selects(self, echo: Echo) -> bool:
        """Whether this rule applies to ``echo``: every selector field equal or left open."""
        return (
            (self.family is None or echo.family == self.family)
            and echo.icmp_type == ECHO_TYPES[echo.family][self.direction]
            and (self.ident is None or echo.ident == self.ident)
            and (self.seq is None or echo.seq == self.seq)
        )

    def text(self) -> str:
        """The rule as a line of the language (parse_rule(rule.text()) == rule)."""
        words = [self.action.value, self.direction]
        for name in ("family", "ident", "seq", "after"):
            if getattr(self, name) is not None:
                words.append(f"{name}={getattr(self, name)}")
        if self.action in (Action.CORRUPT, Action.CORRUPT_BAD_CHECKSUM):
            words.append(f"byte={self.byte}")
        return " ".join(words)


def parse_rule(line: str) -> Rule:
    """One rule line -> Rule; FaultRuleError says what is wrong."""
    words = line.split()
    if len(words) < 2:
        raise FaultRuleError(f"expected ACTION DIRECTION [key=value ...], got {line!r}")
    try:
        action = Action(words[0])
    except ValueError:
        choices = ", ".join(a.value for a in Action)
        raise FaultRuleError(f"unknown action {words[0]!r} (one of {choices})") from None
    if words[1] not in ("request", "reply"):
        raise FaultRuleError(f"direction must be request or reply, got {words[1]!r}")
    fields: dict[str, int] = {}
    for word in words[2:]:
        key, sep, value = word.partition("=")
        if not sep or key not in ("family", "ident", "seq", "byte", "after") or key in fields:
            raise FaultRuleError(f"bad or repeated field {word!r} in {line!r}")
        try:
            fields[key] = int(value, 0)
        except ValueError:
            raise FaultRuleError(f"{key} must be a number, got {value!r}") from None
    for key, value in fields.items():
        if not 0 <= value <= 0xFFFF or (key == "family" and value not in (4, 6)):
            raise FaultRuleError(f"{key}={value} out of range in {line!r}")
    if action is Action.FORGE and words[1] != "request":
        raise FaultRuleError(f"forge answers requests: {line!r}")
    if (action is Action.HOLD) != ("after" in fields):
        raise FaultRuleError(f"after= goes with hold, and hold needs it: {line!r}")
    if "byte" in fields and action not in (Action.CORRUPT, Action.CORRUPT_BAD_CHECKSUM):
        raise FaultRuleError(f"byte= goes with corrupt only: {line!r}")
    return Rule(action, words[1], **fields)  # type: ignore[arg-type]


def parse_plan(text: str) -> tuple[Rule, ...]:
    """Rules separated by newlines or ';' (blank ones and ``#`` comments skipped)."""
    lines = [part.split("#", 1)[0].strip() for part in text.replace(";", "\n").splitlines()]
    return tuple(parse_rule(line) for line in lines if line)


def plan_text(rules: tuple[Rule, ...]) -> str:
    return ";".join(rule.text() for rule in rules)


def decode_echo(packet: bytes) -> Echo | None:
    """The echo fields of an IP datagram, or None when it is not an ICMP(v6) echo packet."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        offset = (packet[0] & 0x0F) * 4
        if offset < 20 or packet[9] != 1:  # RFC 791: IHL >= 5; protocol 1 = ICMP
            return None
        family, echo_types = 4, (0, 8)
    elif version == 6 and len(packet) >= 40:
        offset = 40
        if packet[6] != 58:  # RFC 8200: next header 58 = ICMPv6 (no extension headers)
            return None
        family, echo_types = 6, (128, 129)
    else:
        return None
    if len(packet) < offset + 8 or packet[offset] not in echo_types or packet[offset + 1] != 0:
        return None
    ident, seq = struct.unpack_from("!HH", packet, offset + 4)
    return Echo(family, packet[offset], ident, seq, offset)


def first_match(rules: tuple[Rule, ...], packet: bytes) -> tuple[Rule, Echo] | None:
    """The first rule that selects ``packet``, with its decoded echo fields."""
    echo = decode_echo(packet)
    if echo is None:
        return None
    for rule in rules:
        if rule.selects(echo):
            return rule, echo
    return None


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmp_checksum(packet: bytes, offset: int) -> int:
    body = packet[offset : offset + 2] + b"\0\0" + packet[offset + 4 :]
    if packet[0] >> 4 == 6:  # RFC 4443 2.3: over the RFC 8200 8.1 pseudo-header too
        body = packet[8:40] + struct.pack("!I3xB", len(body), 58) + body
    return internet_checksum(body)


def corrupted(packet: bytes, echo: Echo, byte: int, fix_checksum: bool) -> bytes | None:
    """``packet`` with echo payload byte ``byte`` inverted (checksum recomputed or left stale);
    None when the payload is too short to have that byte."""
    at = echo.icmp_offset + 8 + byte
    if at >= len(packet):
        return None
    out = bytearray(packet)
    out[at] ^= 0xFF
    if fix_checksum:
        struct.pack_into(
            "!H", out, echo.icmp_offset + 2, _icmp_checksum(bytes(out), echo.icmp_offset)
        )
    return bytes(out)


def checksum_ok(packet: bytes, echo: Echo) -> bool:
    """Whether the ICMP checksum of an echo packet verifies (RFC 1071 / RFC 4443 2.3)."""
    stored = struct.unpack_from("!H", packet, echo.icmp_offset + 2)[0]
    return stored == _icmp_checksum(packet, echo.icmp_offset)


def _ip_header(family: int, src: str, dst: str, payload_len: int) -> bytes:
    if family == 4:  # RFC 791; TTL 64, DF clear, id 0 (the kernel fills it in for a raw send)
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 0, 0, 64, 1, 0,
            ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
        )  # fmt: skip
        return header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return struct.pack(  # RFC 8200 3: version 6, no traffic class or flow label
        "!IHBB16s16s", 6 << 28, payload_len, 58, 64,
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed,
    )  # fmt: skip


def echo_reply(family: int, src: str, dst: str, ident: int, seq: int, data: bytes) -> bytes:
    """A whole IP datagram carrying an echo reply, checksums right."""
    icmp_type = ECHO_TYPES[family]["reply"]
    icmp = struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq) + data
    packet = _ip_header(family, src, dst, len(icmp)) + icmp
    offset = len(packet) - len(icmp)
    return packet[: offset + 2] + struct.pack("!H", _icmp_checksum(packet, offset)) + icmp[4:]


def addresses(packet: bytes) -> tuple[str, str]:
    """(source, destination) of an IPv4 or IPv6 datagram, as text."""
    if packet[0] >> 4 == 4:
        return str(ipaddress.IPv4Address(packet[12:16])), str(ipaddress.IPv4Address(packet[16:20]))
    return str(ipaddress.IPv6Address(packet[8:24])), str(ipaddress.IPv6Address(packet[24:40]))


def forgeries(request: bytes, echo: Echo) -> list[bytes]:
    """The forger's answer to an echo request: a reply with the probe's identifier and
    sequence from FORGER4/FORGER6 (not the target), and one from the target with another
    identifier.  A correct client accepts neither (RFC 792: the identifier and sequence match
    a reply to its request; the reply comes from the address the request went to)."""
    client, target = addresses(request)
    data = request[echo.icmp_offset + 8 :]
    forger = FORGER6 if echo.family == 6 else FORGER4
    return [
        echo_reply(echo.family, forger, client, echo.ident, echo.seq, data),
        echo_reply(echo.family, target, client, echo.ident ^ FORGED_IDENT_XOR, echo.seq, data),
    ]


def outcomes(rules: tuple[Rule, ...], family: int, seqs: range) -> dict[int, str]:
    """Per sequence number, what a ping with any identifier meets under ``rules``."""
    table: dict[int, str] = {}
    for seq in seqs:
        table[seq] = "reply"
        for direction in ("request", "reply"):
            echo = Echo(family, ECHO_TYPES[family][direction], 0, seq, 0)
            hit = next((r for r in rules if r.selects(echo) and r.ident is None), None)
            if hit is not None and table[seq] == "reply":
                table[seq] = OUTCOMES[hit.action]
    return table
