"""Shared plumbing for the scapy references: scapy setup, resolution, sockets, payloads, names.

How scapy picks sockets and interfaces, and what we choose instead
------------------------------------------------------------------
- ``sr``/``sr1``/``send`` open ``conf.L3socket`` (``L3PacketSocket`` on Linux): an AF_PACKET
  socket per output interface, the interface taken from ``conf.route`` for each packet.  That
  bypasses the kernel's IP output path (scapy does its own ARP / neighbour discovery and the
  client's netfilter hooks never see the probe).  We use ``L3RawSocket`` / ``L3RawSocket6``
  instead: the probe goes out through a kernel raw socket (IPv4 ``IP_HDRINCL``; IPv6
  ``IPPROTO_RAW``) so the kernel routes it exactly as it routes the hand-rolled probes, and
  replies are read from one unbound AF_PACKET socket (every interface of the namespace) with
  kernel receive timestamps (SO_TIMESTAMPNS cmsg for IPv4, the SIOCGSTAMP ioctl for IPv6).
- ``conf.route`` / ``conf.route6`` are read when scapy is imported, from the namespace the
  process is in then.  Our runners run in a fresh process started with ``ip netns exec``, so
  the import already happens inside the namespace; :func:`scapy_conf` resyncs the tables
  anyway (cheap), because scapy still uses them to pick each probe's source address.
- Loopback: every packet crosses ``lo`` twice for an AF_PACKET socket (once PACKET_OUTGOING,
  once PACKET_HOST).  scapy drops the outgoing copy, so we see our own request once as an
  *incoming* packet; matching with ``answers()`` never takes a request for its own reply.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Any

from handrolled.errors import RawSocketPermissionError, ResolveError, UsageError
from handrolled.requests import check_family, check_host
from handrolled.results import Family, Outcome

log = logging.getLogger(__name__)

# ICMP error types that quote a datagram, by IP version, and what they mean for the probe they
# quote (RFC 792; RFC 4443 3.3 time exceeded, 3.1 destination unreachable).
ICMP_ERRORS = {
    4: {11: Outcome.TIME_EXCEEDED, 3: Outcome.UNREACHABLE},
    6: {3: Outcome.TIME_EXCEEDED, 1: Outcome.UNREACHABLE},
}
PORT_UNREACHABLE = {4: 3, 6: 4}  # the unreachable code of a closed port (RFC 792; RFC 4443 3.1)

DEFAULT_DNS_BUDGET_S = 2.0
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # asm-generic/socket.h
_SOL_PACKET = 263  # linux/socket.h
_PACKET_AUXDATA = 8  # linux/if_packet.h


def default_payload(size: int) -> bytes:
    """The reference's fixed payload: byte i is ``i & 0xff`` (iputils' fill, no timestamp)."""
    if size < 0:
        raise UsageError(f"payload size must be >= 0, not {size}")
    return bytes(i & 0xFF for i in range(size))


def scapy_conf() -> Any:
    """Import scapy quietly, refresh its routing tables for this namespace, return ``conf``."""
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    import scapy.layers.inet
    import scapy.layers.inet6
    import scapy.route
    import scapy.route6  # noqa: F401  (importing these fills conf.route / conf.route6)
    from scapy.config import conf

    conf.verb = 0
    for table in (conf.route, conf.route6):
        if table is not None:
            table.resync()
    return conf


def resolve(host: str, family: Family | None) -> tuple[str, Family]:
    """Resolve ``host`` (a name or literal) to (canonical address text, 4 or 6).

    The host and family are held to the requests' rules (a request has checked them already).
    """
    check_family(family)
    check_host("host", host)
    af = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[family]
    try:
        infos = socket.getaddrinfo(host, None, af, socket.SOCK_RAW)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(host, str(exc)) from exc
    for info_family, *_rest, sockaddr in infos:
        if info_family in (socket.AF_INET, socket.AF_INET6):
            addr = ipaddress.ip_address(sockaddr[0].split("%")[0])
            return addr.compressed, addr.version
    raise ResolveError(host, "no IPv4 or IPv6 address")


def ip_header(version: int, dst: str, ttl: int, ip_id: int) -> Any:
    """The IP header of every reference probe as a scapy layer, each field chosen deliberately.

    IPv4 (RFC 791) -- what differs from a kernel-built header (iputils ``ping`` over a raw
    ICMP socket, checked with tcpdump on this kernel: DF set, ttl 64, hashed ID):
      - ``flags=DF``: scapy's default is no flags; Linux sets DF on raw ICMP sockets because
        the default PMTU discovery mode is "want" (net.ipv4.ip_no_pmtu_disc = 0).
      - ``id=ip_id``: scapy defaults to 1, the kernel draws from a hashed per-destination
        counter that nobody can reproduce; callers pass the probe's sequence number so it is
        deterministic (the one field compare must allow to differ).  An ID of 0 is left to the
        kernel to fill.
      - ``ttl``: the caller's (scapy would say 64).
      - ``tos=0``, no options, checksum and length computed by scapy (and by the kernel again
        under IP_HDRINCL: same values).
    IPv6 (RFC 8200): ``tc=0``, ``fl=0`` (Linux puts a hashed flow label on by default,
    net.ipv6.auto_flowlabels = 1: another field compare must allow to differ), ``hlim=ttl``.
    """
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    if version == 4:
        return IP(dst=dst, ttl=ttl, id=ip_id & 0xFFFF, flags="DF", tos=0)
    return IPv6(dst=dst, hlim=ttl, tc=0, fl=0)


def open_l3(version: int) -> Any:
    """Open scapy's kernel-routed L3 socket for IPv4 or IPv6 (see the module docstring)."""
    from scapy.supersocket import L3RawSocket, L3RawSocket6

    try:
        sock = L3RawSocket() if version == 4 else L3RawSocket6()
    except PermissionError as exc:
        raise RawSocketPermissionError(
            "scapy needs raw and packet sockets: run as root or grant CAP_NET_RAW "
            "(e.g. setcap cap_net_raw+ep on the interpreter)"
        ) from exc
    if version == 6:
        # scapy quirk: L3RawSocket6 skips the SO_TIMESTAMPNS / PACKET_AUXDATA setup that
        # L3RawSocket does, and falls back to the SIOCGSTAMP ioctl, whose first call only
        # *enables* stamping: the first reply then gets the ioctl's time (~1-2 ms late, seen
        # on ::1).  Turn the cmsg timestamps on as scapy does for IPv4.
        sock.ins.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.ins.setsockopt(_SOL_PACKET, _PACKET_AUXDATA, 1)
        sock.auxdata_available = True
    return sock


def icmp6_layer(pkt: Any) -> Any:
    """The first ICMPv6 layer of ``pkt`` or None.

    scapy quirk: ``pkt.getlayer(_ICMPv6)`` matches the exact class only, so it never finds an
    ``ICMPv6TimeExceeded`` or ``ICMPv6DestUnreach``; walk the layers with isinstance instead.
    """
    from scapy.layers.inet6 import _ICMPv6

    layer = pkt
    while layer is not None and layer.__class__.__name__ != "NoPayload":
        if isinstance(layer, _ICMPv6):
            return layer
        layer = layer.payload
    return None


def to_ns(seconds: float) -> int:
    """scapy's float seconds (``sent_time``, ``pkt.time``) to integer ns; ~0.2 us resolution."""
    return round(float(seconds) * 1e9)


def reply_fields(reply: Any, version: int, sent_time: float) -> dict[str, Any]:
    """The Probe fields that come from a scapy reply to a probe sent at ``sent_time``.

    The RTT is taken from the same integer-ns stamps that are reported, so a probe's ``rtt_ms``
    always equals ``(recv_ns - send_ns) / 1e6`` (float seconds would differ from it by the
    0.24 us a double resolves at today's epoch).
    """
    send_ns, recv_ns = to_ns(sent_time), to_ns(reply.time)
    return {
        "recv_ns": recv_ns,
        "rtt_ms": (recv_ns - send_ns) / 1e6,
        "reply_from": reply.src,
        "reply_ttl": reply.ttl if version == 4 else reply.hlim,
        "received": bytes(reply),
        "kernel_timestamp": True,
    }


def reverse_names(
    addresses: Iterable[str], budget_s: float = DEFAULT_DNS_BUDGET_S
) -> dict[str, str | None]:
    """Reverse DNS for each distinct address with ``socket.gethostbyaddr``, all within a budget.

    Lookups run in a small thread pool; an address without an answer before the budget ends
    (or with no name) maps to None.  Threads still blocked are left to finish on their own.
    """
    unique = list(dict.fromkeys(addresses))
    names: dict[str, str | None] = dict.fromkeys(unique)
    if not unique:
        return names
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(unique)))
    futures = {pool.submit(_lookup, addr): addr for addr in unique}
    try:
        for future in concurrent.futures.as_completed(futures, timeout=budget_s):
            names[futures[future]] = future.result()
    except concurrent.futures.TimeoutError:  # as_completed's own deadline: the budget is spent
        log.info("reverse DNS budget of %.1fs ran out", budget_s)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return names


def _lookup(addr: str) -> str | None:
    try:
        return socket.gethostbyaddr(addr)[0]
    except (OSError, UnicodeError):
        return None
