"""Names, meanings and RFC sections the dissector writes beside the values."""

from __future__ import annotations

import string

from handrolled.icmp import Icmp6Type, IcmpType, TimeExceededCode, Unreach6Code, UnreachCode
from handrolled.ip import IpProto
from handrolled.transport import TcpFlags

IP4 = "RFC 791 §3.1"
IP6 = "RFC 8200 §3"
UDP = "RFC 768"
TCP = "RFC 9293 §3.1"
ECHO4 = "RFC 792 p.14"  # RFC 792 has no sections: its pages
ECHO6 = "RFC 4443 §4.1"
ICMP6_ERRORS = {1: "RFC 4443 §3.1", 2: "RFC 4443 §3.2", 3: "RFC 4443 §3.3", 4: "RFC 4443 §3.4"}
ICMP4_ERRORS = {3: "RFC 792 p.4", 11: "RFC 792 p.6", 12: "RFC 792 p.8"}


def _enum_name(enum_cls, value: int) -> str:
    try:
        return enum_cls(value).name.lower().replace("_", " ")
    except ValueError:
        return f"unassigned ({value})"


def proto_name(value: int) -> str:
    try:
        name = IpProto(value).name
    except ValueError:
        return f"protocol {value}"
    return name.replace("ICMPV6", "ICMPv6").replace("IPV6_", "IPv6-")


def icmp_type_name(value: int, v6: bool) -> str:
    return _enum_name(Icmp6Type if v6 else IcmpType, value)


def icmp_code_name(icmp_type: int, code: int, v6: bool) -> str:
    if v6 and icmp_type == Icmp6Type.DEST_UNREACHABLE:
        return _enum_name(Unreach6Code, code)
    if not v6 and icmp_type == IcmpType.DEST_UNREACHABLE:
        return _enum_name(UnreachCode, code)
    if icmp_type == (Icmp6Type.TIME_EXCEEDED if v6 else IcmpType.TIME_EXCEEDED):
        return {0: "TTL exceeded in transit", 1: "fragment reassembly time exceeded"}.get(
            code, _enum_name(TimeExceededCode, code)
        )
    return "always 0 for this type" if code == 0 else f"code {code}"


def shown_bytes(data: bytes) -> str:
    """Printable text in quotes when it all is, else hex."""
    text = data.decode("latin-1")
    if data and all(c in string.printable and c not in "\t\n\r\x0b\x0c" for c in text):
        return repr(data.decode("ascii"))
    return data.hex()


TCP_FLAG_MEANING = {
    TcpFlags.CWR: "congestion window reduced",
    TcpFlags.ECE: "ECN echo",
    TcpFlags.URG: "urgent pointer is valid",
    TcpFlags.ACK: "acknowledgment is valid",
    TcpFlags.PSH: "push",
    TcpFlags.RST: "reset the connection",
    TcpFlags.SYN: "synchronise sequence numbers",
    TcpFlags.FIN: "no more data",
}
