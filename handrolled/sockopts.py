"""Socket options the clients set on their sockets: device binding, TOS / traffic class, DF.

API
---
``bind_device(sock, device)``: SO_BINDTODEVICE; ``UsageError`` "SO_BINDTODEVICE eth9: No such
    device" as iputils words it.
``set_tos(sock, family, tos)``: IP_TOS (RFC 791 §3.1) or IPV6_TCLASS (RFC 8200 §7).
``set_pmtu_discovery(sock, family, mode)``: ping's -M ``do`` / ``want`` / ``dont``
    (IP_MTU_DISCOVER / IPV6_MTU_DISCOVER: DF and path-MTU discovery, RFC 1191 / RFC 8201).
``strerror(exc) -> str``: the OS's words for an ``OSError``.
"""

from __future__ import annotations

import socket

from handrolled.errors import UsageError
from handrolled.results import Family

__all__ = ["PMTU_MODES", "bind_device", "set_pmtu_discovery", "set_tos", "strerror"]

# linux/in6.h, uapi/asm-generic/socket.h: values Python does not always export
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)


def strerror(exc: OSError) -> str:
    """The OS's words for ``exc`` (as perror(3) prints them)."""
    return exc.strerror or str(exc)


def bind_device(sock: socket.socket, device: str) -> None:
    """SO_BINDTODEVICE: send and receive through ``device`` only; UsageError naming it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, device.encode() + b"\0")
    except OSError as exc:  # iputils: "SO_BINDTODEVICE eth9: No such device"
        raise UsageError(f"SO_BINDTODEVICE {device}: {strerror(exc)}") from exc


def set_tos(sock: socket.socket, family: Family, tos: int) -> None:
    """IPv4 type of service (RFC 791 §3.1) or IPv6 traffic class (RFC 8200 §7) of what we send."""
    if family == 6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, tos)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)


# linux/in.h, linux/in6.h: IP_PMTUDISC_* (the IPv6 values are the same numbers).  DO: DF set,
# what exceeds the known path MTU fails locally (EMSGSIZE); WANT: DF set up to the path MTU,
# larger datagrams fragmented here; DONT: DF clear, the path MTU ignored.
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
PMTU_MODES = {"dont": 0, "want": 1, "do": 2}


def set_pmtu_discovery(sock: socket.socket, family: Family, mode: str) -> None:
    """Path-MTU discovery mode ``mode`` (do, want, dont) on ``sock``, as iputils' -M."""
    value = PMTU_MODES[mode]
    if family == 6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, value)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, value)
