"""The only hand-rolled module that touches socket, select and time for ICMP.

ICMP sockets (raw or Linux/macOS "ping" datagram sockets, IPv4 and IPv6), TTL / hop limit,
kernel receive timestamps (SO_TIMESTAMPNS), received TTL (IP_RECVTTL / IPV6_RECVHOPLIMIT), the
datagram socket's error queue (IP_RECVERR: how a ping socket learns of time-exceeded and
unreachable) and clocks.  Names and routes are in ``handrolled.names``, socket options in
``handrolled.sockopts``.  Times are ``time.time_ns()`` nanoseconds
(CLOCK_REALTIME, the clock of kernel timestamps and pcaps).

API
---
``open_icmp_socket(family, kind="auto", *, ttl=None, ident=None) -> IcmpSocket``
    ``family``: 4 or 6 (``results.Family``, the one convention everywhere).  ``kind``:
    ``"raw"``, ``"dgram"`` or ``"auto"`` (raw, else dgram).  ``ident``: for a dgram socket,
    bind to this local port so the kernel's identifier is ours (falls back to any port if
    taken).  A raw socket accepts only ``DEFAULT_FILTER[family]`` (echo reply and the errors;
    ``.set_icmp_filter`` changes it).  To adopt a socket made elsewhere (e.g. inside a lab
    namespace), wrap it: ``IcmpSocket(sock, family, kind)``.  Raises
    ``RawSocketPermissionError`` (one line naming CAP_NET_RAW / net.ipv4.ping_group_range).
``IcmpSocket``: ``.sock``, ``.family`` (4 or 6), ``.af`` (AF_INET/AF_INET6), ``.kind``
    ("raw"/"dgram"), ``.v6``, ``.ident``
    (dgram: the identifier the kernel writes, i.e. the local port; raw: None),
    ``.set_ttl(ttl)``, ``.send(message, address) -> send_ns`` (the kernel's software
    transmit stamp, SO_TIMESTAMPING, when available as sendto returns, else the clock read right
    before sendto; ``.last_send_kernel`` says which),
    ``.recv(timeout) -> Received | None`` (None: nothing within ``timeout`` seconds),
    ``.fileno()``, ``.close()``, context manager.
``Received``: data (bytes as read: a raw IPv4 socket includes the IP header, ``has_ip_header``),
    source (canonical address; for a queued error, the router that sent it), recv_ns,
    kernel_timestamp (recv_ns is the kernel's), ttl (TTL / hop limit of the packet, or None),
    error (``QueuedError`` for a dgram socket's error queue entry, whose ``data`` is then our own
    ICMP message that provoked it, else None).
``QueuedError``: icmp_type, icmp_code, offender, errno, info (from ``sock_extended_err``).
``parse_ancillary(ancdata) -> Ancillary``: recvmsg's control messages read: recv_ns
    (SO_TIMESTAMPNS), tx_ns / tx_key (SO_TIMESTAMPING), ttl, error (``QueuedError``); each None
    when absent.  ``canonical(address) -> str``: canonical text, IPv6 zone dropped.
``address_family(family) -> AF_INET | AF_INET6``; ``check_family(family)``: 4 or 6, else
    ``UsageError``.
``open_ping_socket(family, kind="auto", *, ttl, ident, tos, source, device, pmtu)``:
    ``open_icmp_socket`` with ping's -Q, -I, -M (``handrolled.sockopts``).
``now_ns()``: wall clock ns (CLOCK_REALTIME); ``monotonic_ns()``: for deadlines.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import select
import socket
import struct
import time
from collections.abc import Iterable

from handrolled.errors import RawSocketPermissionError, UsageError
from handrolled.icmp import Icmp6Type, IcmpType
from handrolled.record import Record
from handrolled.results import Family
from handrolled.sockopts import bind_device, set_pmtu_discovery, set_tos, strerror

__all__ = [
    "DEFAULT_FILTER",
    "Ancillary",
    "IcmpSocket",
    "QueuedError",
    "Received",
    "address_family",
    "canonical",
    "check_family",
    "monotonic_ns",
    "now_ns",
    "open_icmp_socket",
    "open_ping_socket",
    "parse_ancillary",
]

log = logging.getLogger(__name__)

# Linux values; Python does not export all of them (uapi/asm-generic/socket.h, linux/in.h,
# linux/in6.h, linux/icmp.h, linux/errqueue.h).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
SOL_RAW = getattr(socket, "SOL_RAW", 255)
ICMP_FILTER = 1  # SOL_RAW option on IPPROTO_ICMP raw sockets
ICMP6_FILTER = 1  # IPPROTO_ICMPV6 option
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
SO_EE_ORIGIN_TIMESTAMPING = 4
SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37)
# Documentation/networking/timestamping.rst: software transmit stamps (taken by the driver as
# the packet leaves, where a capture sees it), an ID per packet, no payload echoed back.
SOF_TIMESTAMPING_TX = (1 << 1) | (1 << 4) | (1 << 7) | (1 << 11)  # TX_SOFTWARE|SOFTWARE|ID|TSONLY

_TIMESPEC = struct.Struct("@ll")
_EXTENDED_ERR = struct.Struct("@IBBBBII")  # ee_errno, origin, type, code, pad, info, data
_INT = struct.Struct("@i")

# Raw sockets see every ICMP message for the host; by default accept only what a ping or an
# ICMP traceroute can use: echo reply, destination unreachable, time exceeded, parameter problem
# (and packet too big for ICMPv6).
DEFAULT_FILTER: dict[Family, frozenset[int]] = {
    4: frozenset(
        {
            IcmpType.ECHO_REPLY,
            IcmpType.DEST_UNREACHABLE,
            IcmpType.TIME_EXCEEDED,
            IcmpType.PARAMETER_PROBLEM,
        }
    ),
    6: frozenset(
        {
            Icmp6Type.ECHO_REPLY,
            Icmp6Type.DEST_UNREACHABLE,
            Icmp6Type.PACKET_TOO_BIG,
            Icmp6Type.TIME_EXCEEDED,
            Icmp6Type.PARAMETER_PROBLEM,
        }
    ),
}

PERMISSION_FIX = (
    "cannot open an ICMP socket: run as root or grant CAP_NET_RAW "
    "(setcap cap_net_raw+ep), or allow datagram ICMP sockets with "
    "sysctl -w net.ipv4.ping_group_range='0 2147483647'"
)


def now_ns() -> int:
    """Wall-clock nanoseconds (CLOCK_REALTIME, as kernel timestamps and pcaps)."""
    return time.time_ns()


def monotonic_ns() -> int:
    return time.monotonic_ns()


class QueuedError(Record):
    """An ICMP error a datagram socket learnt of through its error queue (IP_RECVERR)."""

    icmp_type: int
    icmp_code: int
    offender: str | None
    errno: int
    info: int


class Received(Record):
    """One datagram (or error-queue entry) read from an ``IcmpSocket``, raw or datagram."""

    data: bytes
    source: str
    recv_ns: int
    kernel_timestamp: bool
    ttl: int | None = None
    has_ip_header: bool = False
    error: QueuedError | None = None


def canonical(address: str) -> str:
    """``address`` in canonical text, without an IPv6 zone (``fe80::1%eth0`` -> ``fe80::1``)."""
    return ipaddress.ip_address(address.split("%", 1)[0]).compressed


def _offender(raw: bytes) -> str | None:
    # SO_EE_OFFENDER: the sockaddr that follows struct sock_extended_err.
    if len(raw) < 8:
        return None
    family = struct.unpack_from("@H", raw)[0]
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if family == socket.AF_INET6 and len(raw) >= 24:
        return canonical(socket.inet_ntop(socket.AF_INET6, raw[8:24]))
    return None


class Ancillary(Record):
    """What recvmsg's control messages said about a datagram (None: not reported)."""

    recv_ns: int | None = None  # SO_TIMESTAMPNS: the kernel's receive stamp
    tx_ns: int | None = None  # SO_TIMESTAMPING: the software transmit stamp (ts[0])
    tx_key: int | None = None  # that transmit stamp's packet number (SOF_TIMESTAMPING_OPT_ID)
    ttl: int | None = None  # IP_TTL / IPV6_HOPLIMIT: TTL / hop limit of the packet
    error: QueuedError | None = None  # IP_RECVERR / IPV6_RECVERR: an ICMP error's details


def parse_ancillary(ancdata: list) -> Ancillary:
    """Read the control messages of ``socket.recvmsg`` (timestamps, TTL, queued errors)."""
    recv_ns = tx_ns = tx_key = ttl = None
    queued: QueuedError | None = None
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = _TIMESPEC.unpack_from(cdata)
            recv_ns = sec * 1_000_000_000 + nsec
        elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING:
            sec, nsec = _TIMESPEC.unpack_from(cdata)  # ts[0]: the software stamp
            tx_ns = sec * 1_000_000_000 + nsec
        elif (level, kind) in (
            (socket.IPPROTO_IP, socket.IP_TTL),
            (socket.IPPROTO_IPV6, IPV6_HOPLIMIT),
        ):
            ttl = _INT.unpack_from(cdata)[0]
        elif (level, kind) in (
            (socket.IPPROTO_IP, IP_RECVERR),
            (socket.IPPROTO_IPV6, IPV6_RECVERR),
        ):
            ee_errno, origin, ee_type, ee_code, _pad, info, ee_data = _EXTENDED_ERR.unpack_from(
                cdata
            )
            if origin == SO_EE_ORIGIN_TIMESTAMPING:
                tx_key = ee_data
            elif origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                queued = QueuedError(
                    ee_type, ee_code, _offender(cdata[_EXTENDED_ERR.size :]), ee_errno, info
                )
    return Ancillary(recv_ns, tx_ns, tx_key, ttl, queued)


class _TxStamp(Record):
    key: int  # SOF_TIMESTAMPING_OPT_ID: the packet's number on this socket
    time_ns: int


class IcmpSocket:
    """An ICMP socket with kernel timestamps and received-TTL reporting switched on."""

    def __init__(self, sock: socket.socket, family: Family, kind: str) -> None:
        self.sock = sock
        self.family: Family = check_family(family)
        self.af = address_family(family)
        self.kind = kind
        self.v6 = family == 6
        self.ident: int | None = None
        self._cmsg_space = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_INT.size) * 2
        self._cmsg_space += socket.CMSG_SPACE(_EXTENDED_ERR.size + 28)
        self._cmsg_space += socket.CMSG_SPACE(3 * _TIMESPEC.size)
        self._errqueue = False
        self._tx_stamps = False
        self._tx_key = 0
        self._stash: list[Received] = []
        self.last_send_kernel = False  # the last send() returned the kernel's transmit stamp
        self._setup()

    def _setup(self) -> None:
        s = self.sock
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError as exc:  # pragma: no cover - every Linux has it
            log.debug("SO_TIMESTAMPNS unavailable: %s", exc)
        try:
            if self.v6:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            else:
                s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        except OSError as exc:  # pragma: no cover
            log.debug("received TTL unavailable: %s", exc)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, SOF_TIMESTAMPING_TX)
            self._tx_stamps = self._errqueue = True
        except OSError as exc:  # pragma: no cover
            log.debug("SO_TIMESTAMPING unavailable: %s", exc)
        if self.kind == "dgram":
            try:
                if self.v6:
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
                else:
                    s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
                self._errqueue = True
            except OSError as exc:  # pragma: no cover
                log.debug("IP_RECVERR unavailable: %s", exc)
        s.setblocking(False)

    def set_icmp_filter(self, accept: Iterable[int] | None) -> None:
        """Raw sockets only: let the kernel drop ICMP types not in ``accept`` (None: all)."""
        if self.kind != "raw":
            return
        if self.v6:
            # struct icmp6_filter: 256 bits, a set bit blocks that type (Linux semantics).
            words = [0 if accept is None else 0xFFFFFFFF] * 8
            for t in accept or ():
                words[t >> 5] &= ~(1 << (t & 31)) & 0xFFFFFFFF
            self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("@8I", *words))
        else:
            # ICMP_FILTER: 32-bit mask of blocked types 0..31.
            mask = 0 if accept is None else 0xFFFFFFFF
            for t in accept or ():
                if t < 32:
                    mask &= ~(1 << t) & 0xFFFFFFFF
            self.sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("@I", mask))

    def set_ttl(self, ttl: int) -> None:
        """Unicast TTL (IPv4) or hop limit (IPv6) of what we send next."""
        if not 1 <= ttl <= 255:
            raise UsageError(f"TTL {ttl} out of range 1-255")
        if self.v6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)

    def get_ttl(self) -> int:
        if self.v6:
            return self.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)
        return self.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)

    def bind_ident(self, ident: int | None) -> None:
        """Dgram sockets: bind so the kernel's identifier (the local port) is ``ident``."""
        if self.kind != "dgram":
            return
        any_addr = "::" if self.v6 else "0.0.0.0"
        try:
            self.sock.bind((any_addr, ident or 0))
        except OSError as exc:
            if ident is None:
                raise
            log.info("identifier %d taken (%s); letting the kernel choose", ident, exc)
            self.sock.bind((any_addr, 0))
        self.ident = self.sock.getsockname()[1]

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: bytes, address: str) -> int:
        """Send ``message`` (an ICMP message) to ``address``; return the send time (ns).

        The kernel's software transmit stamp when it is there by the time sendto returns (it
        is on veth and loopback: the driver stamps the packet inside the call), else the clock
        read right before sendto.  ``last_send_kernel`` says which.
        """
        sent_ns = time.time_ns()
        self.sock.sendto(message, (address, 0))
        key = self._tx_key
        self._tx_key += 1
        if self.kind == "dgram" and self.ident is None:
            self.ident = self.sock.getsockname()[1]  # autobound on the first send
        self.last_send_kernel = False
        while self._tx_stamps:
            got = self._try_recv(socket.MSG_ERRQUEUE)
            if got is None:
                break
            if isinstance(got, _TxStamp):
                self._tx_key = max(self._tx_key, got.key + 1)
                if got.key >= key:
                    self.last_send_kernel = True
                    return got.time_ns
            else:
                self._stash.append(got)  # an ICMP error for recv() to hand out
        return sent_ns

    def _parse(
        self, data: bytes, ancdata: list, address: tuple | None, error_queue: bool
    ) -> Received | _TxStamp:
        anc = parse_ancillary(ancdata)
        recv_ns, ttl, queued = anc.recv_ns, anc.ttl, anc.error
        if error_queue and anc.tx_key is not None:
            return _TxStamp(anc.tx_key, anc.tx_ns if anc.tx_ns is not None else time.time_ns())
        kernel = recv_ns is not None
        if recv_ns is None:
            recv_ns = time.time_ns()
        source = canonical(address[0]) if address else ""
        has_ip_header = self.kind == "raw" and not self.v6 and not error_queue
        if has_ip_header and ttl is None and len(data) >= 9:
            ttl = data[8]  # RFC 791 §3.1: TTL is octet 8 of the header
        if queued is not None and queued.offender:
            source = queued.offender
        return Received(data, source, recv_ns, kernel, ttl, has_ip_header, queued)

    def _try_recv(self, flags: int) -> Received | _TxStamp | None:
        try:
            data, ancdata, _flags, address = self.sock.recvmsg(65535, self._cmsg_space, flags)
        except (BlockingIOError, InterruptedError):
            return None
        return self._parse(data, ancdata, address, bool(flags & socket.MSG_ERRQUEUE))

    def recv(self, timeout: float) -> Received | None:
        """The next ICMP message, or None if none arrives within ``timeout`` seconds."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            if self._stash:
                return self._stash.pop(0)
            if self._errqueue:
                got = self._try_recv(socket.MSG_ERRQUEUE)
                if isinstance(got, _TxStamp):
                    continue  # a transmit stamp that came after its send() returned
                if got is not None:
                    return got
            try:
                got = self._try_recv(0)
            except OSError as exc:
                # A dgram socket may report a pending ICMP error as the errno of recv; the
                # details are on the error queue, read on the next pass.
                if self._errqueue and exc.errno in (
                    errno.EHOSTUNREACH,
                    errno.ENETUNREACH,
                    errno.ECONNREFUSED,
                    errno.EACCES,
                    errno.EPROTO,
                ):
                    got = None
                else:
                    raise
            if got is not None:
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, errored = select.select([self.sock], [], [self.sock], remaining)
            if not readable and not errored and time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> IcmpSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_family(family: object) -> Family:
    """``family`` itself if it is 4 or 6 (the project's one convention), else ``UsageError``."""
    if family not in (4, 6):
        raise UsageError(f"address family {family!r}: expected 4 or 6")
    return family  # type: ignore[return-value]


def address_family(family: Family) -> socket.AddressFamily:
    """The socket module's constant for IP version ``family`` (4 or 6)."""
    return socket.AF_INET6 if check_family(family) == 6 else socket.AF_INET


def _make(family: Family, kind: str) -> socket.socket:
    proto = socket.IPPROTO_ICMPV6 if family == 6 else socket.IPPROTO_ICMP
    sock_type = socket.SOCK_RAW if kind == "raw" else socket.SOCK_DGRAM
    return socket.socket(address_family(family), sock_type, proto)


def open_icmp_socket(
    family: Family,
    kind: str = "auto",
    *,
    ttl: int | None = None,
    ident: int | None = None,
) -> IcmpSocket:
    """Open an ICMP socket; see the module docstring."""
    check_family(family)
    if kind not in ("auto", "raw", "dgram"):
        raise UsageError(f"socket kind {kind!r}: expected auto, raw or dgram")
    tried = ["raw", "dgram"] if kind == "auto" else [kind]
    for attempt in tried:
        try:
            sock = _make(family, attempt)
        except PermissionError as exc:
            log.debug("%s ICMP socket refused: %s", attempt, exc)
            last = exc
            continue
        kind = attempt
        break
    else:
        if tried == ["raw"]:
            message = "cannot open a raw ICMP socket: run as root or grant CAP_NET_RAW"
        elif tried == ["dgram"]:
            message = (
                "cannot open a datagram ICMP socket: allow it with "
                "sysctl -w net.ipv4.ping_group_range='0 2147483647'"
            )
        else:
            message = PERMISSION_FIX
        raise RawSocketPermissionError(message) from last
    icmp = IcmpSocket(sock, family, kind)
    try:
        if kind == "raw":
            icmp.set_icmp_filter(DEFAULT_FILTER[family])
        else:
            icmp.bind_ident(ident)
        if ttl is not None:
            icmp.set_ttl(ttl)
    except BaseException:
        icmp.close()
        raise
    return icmp


def open_ping_socket(
    family: Family,
    kind: str = "auto",
    *,
    ttl: int | None = None,
    ident: int | None = None,
    tos: int | None = None,
    source: str | None = None,
    device: str | None = None,
    pmtu: str | None = None,
) -> IcmpSocket:
    """``open_icmp_socket`` with ping's options: ``tos`` (-Q), ``source`` and ``device`` (-I),
    ``pmtu`` (-M do / want / dont).

    The device is bound first (SO_BINDTODEVICE), then the source address: a raw socket binds
    to (source, 0), a datagram socket to (source, ident) so the kernel's identifier stays ours.
    A device or address that cannot be used is a ``UsageError`` worded as iputils words it.
    """
    if source is None and device is None:
        icmp = open_icmp_socket(family, kind, ttl=ttl, ident=ident)
        try:
            if tos is not None:
                set_tos(icmp.sock, family, tos)
            if pmtu is not None:
                set_pmtu_discovery(icmp.sock, family, pmtu)
        except BaseException:
            icmp.close()
            raise
        return icmp
    icmp = _open_unbound(family, kind)
    try:
        if ttl is not None:
            icmp.set_ttl(ttl)
        if device is not None:
            bind_device(icmp.sock, device)
        if tos is not None:
            set_tos(icmp.sock, family, tos)
        if pmtu is not None:
            set_pmtu_discovery(icmp.sock, family, pmtu)
        if source is not None or icmp.kind == "dgram":
            host = source or ("::" if family == 6 else "0.0.0.0")
            port = 0 if icmp.kind == "raw" else (ident or 0)
            try:
                icmp.sock.bind((host, port))
            except OSError as exc:
                if icmp.kind == "raw" or not port:
                    raise UsageError(f"bind: {strerror(exc)}") from exc
                log.info("identifier %d taken (%s); letting the kernel choose", port, exc)
                try:
                    icmp.sock.bind((host, 0))
                except OSError as again:
                    raise UsageError(f"bind: {strerror(again)}") from again
            if icmp.kind == "dgram":
                icmp.ident = icmp.sock.getsockname()[1]
    except BaseException:
        icmp.close()
        raise
    return icmp


def _open_unbound(family: Family, kind: str) -> IcmpSocket:
    """An ICMP socket as ``open_icmp_socket`` opens it, but a datagram one left unbound."""
    if kind in ("auto", "raw"):
        try:
            return open_icmp_socket(family, "raw")
        except RawSocketPermissionError:
            if kind == "raw":
                raise
    try:
        sock = _make(family, "dgram")
    except PermissionError as exc:
        message = (
            PERMISSION_FIX
            if kind == "auto"
            else (
                "cannot open a datagram ICMP socket: allow it with "
                "sysctl -w net.ipv4.ping_group_range='0 2147483647'"
            )
        )
        raise RawSocketPermissionError(message) from exc
    return IcmpSocket(sock, family, "dgram")
