"""Sockets for traceroute: raw senders with a per-probe TTL, raw receivers with kernel timestamps,
and, without CAP_NET_RAW, datagram sockets whose error queue (IP_RECVERR) tells of the ICMP.

The only traceroute module that touches ``socket``/``select``/``time`` besides the driver.  One
``TraceSockets`` per trace; ``kind`` "auto" opens raw sockets and falls back to datagram ones
when raw sockets are refused (as ping does, and as traceroute(8) does for -I):

- raw, ICMP method: one raw ICMP/ICMPv6 socket sends echo requests and receives everything;
- raw, UDP method: a raw UDP socket sends headers we built (so ``Probe.sent`` is exactly the
  UDP datagram), a bound UDP socket reserves the source port, and the raw ICMP socket receives
  the errors;
- raw, TCP method: a raw TCP socket sends SYNs and receives SYN-ACK/RST; one bound TCP socket
  per probe reserves its source port (bound but never listening, so our kernel resets the
  destination's SYN-ACK: a half-open probe, as traceroute(8) -T does).  TCP has no datagram
  fallback (traceroute(8) -T needs root too).
- dgram, UDP method (traceroute(8)'s default and -U methods, which never need privileges):
  an ordinary UDP socket per source port (``reserve_udp_port``: one for the whole trace, or
  one per probe with a fixed destination port, as traceroute(8) opens) sends the payload to
  the probe's destination port; the kernel
  builds the 8-byte header from the same ports, length and RFC 768 checksum rules as
  ``transport.encode_udp``, so ``Probe.sent`` still names the bytes on the wire (a lab test
  checks them against a capture).  ICMP errors arrive on the socket's error queue
  (``recvmsg(MSG_ERRQUEUE)``, ``sock_extended_err`` with the offender; the name is the
  probe's destination and port, the data the probe's payload).
- dgram, ICMP method: a datagram ICMP socket ("ping" socket, allowed by
  net.ipv4.ping_group_range): the kernel writes the identifier (the socket's port, which
  the tracer then uses) and the checksum; echo replies are read as ICMP messages without IP
  header, errors from the error queue with our own echo request as their data.

Every sending socket gets traceroute(8)'s tune_socket(): IP_MTU_DISCOVER DONT (DF clear) or
PROBE with -F (DF set), IP_TOS / IPV6_TCLASS for -t, SO_BINDTODEVICE for -i (receivers too),
and a bind to the source address for -s.
Send times are ``time.time_ns()`` taken just before ``sendto`` (TraceSockets.send says why not
the kernel's transmit stamp).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import time

from handrolled import names, net
from handrolled.errors import RawSocketPermissionError, UsageError
from handrolled.record import Record
from handrolled.results import Family, Method

__all__ = ["RawReceived", "TraceSockets", "source_for"]

log = logging.getLogger(__name__)


# linux/in.h, linux/in6.h: path-MTU discovery modes (traceroute(8): DONT, or PROBE for -F)
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
PMTUDISC_DONT = 0  # never set DF; fragment locally
PMTUDISC_DO = 2
PMTUDISC_PROBE = 3  # set DF, ignore the path MTU the kernel learnt
IP_MTU = getattr(socket, "IP_MTU", 14)  # linux/in.h, linux/in6.h: a connected socket's MTU
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
# A datagram socket reports an ICMP error it queued once more as the errno of the next call
# (sk_err); the details are on the error queue, so such a send is simply tried again.
_PENDING_ERRORS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED, errno.EPROTO, errno.EACCES}
)
_CMSG_SPACE = 512
KINDS = ("auto", "raw", "dgram")


class RawReceived(Record):
    """One datagram (or error-queue entry) read from one of a trace's receivers.

    ``kind`` says which receiver and so how ``data`` reads:
    "icmp": the raw ICMP socket (IPv4: the whole IP datagram; IPv6: the ICMPv6 message);
    "tcp": the raw TCP socket (IPv4 with its IP header; IPv6 the segment);
    "dgram": the datagram ICMP socket: an ICMP message without IP header, or, with ``error``
    set, our own echo request that an ICMP error (from ``source``) quoted;
    "udp": a UDP socket's error queue: ``data`` is the quoted probe's payload, ``dst_port``
    the probe's destination port, ``src_port`` the socket's (the probe's source port),
    ``error`` the ICMP error from ``source``.
    """

    kind: str
    data: bytes
    source: str  # canonical address of the sender (for a queued error: the offender)
    recv_ns: int
    kernel_timestamp: bool
    ttl: int | None  # TTL / hop limit of the packet, when the kernel reported it
    error: net.QueuedError | None = None
    dst_port: int | None = None
    src_port: int | None = None


def _raw(af: int, proto: int) -> socket.socket:
    try:
        return socket.socket(af, socket.SOCK_RAW, proto)
    except PermissionError as exc:
        raise RawSocketPermissionError(
            "traceroute needs raw sockets: run as root or grant CAP_NET_RAW "
            "(e.g. setcap cap_net_raw+ep on the python binary)"
        ) from exc


def bind_to_device(sock: socket.socket, interface: str) -> None:
    """SO_BINDTODEVICE; ``UsageError`` naming the interface when the kernel refuses it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode() + b"\0")
    except OSError as exc:
        raise UsageError(f"interface {interface}: {exc.strerror or exc}") from exc


def source_for(dst: str, family: Family, interface: str | None = None) -> str:
    """The address the kernel sends from to reach ``dst`` (through ``interface``, if given)."""
    if interface is None:
        return names.source_address(dst, family)
    with socket.socket(net.address_family(family), socket.SOCK_DGRAM) as probe:
        bind_to_device(probe, interface)
        try:
            probe.connect((dst, 9))
        except OSError as exc:
            raise UsageError(f"no route to {dst} via {interface}: {exc.strerror or exc}") from exc
        return net.canonical(probe.getsockname()[0])


class TraceSockets:
    """The sockets of one trace.  Use as a context manager; everything is closed on exit.

    ``kind``: "raw", "dgram" or "auto" (raw, else dgram; ``.kind`` says which it got).
    ``ident``: the datagram ICMP socket binds this port, so the kernel's identifier is ours
    (another one if it is taken; ``.icmp_ident`` is the one in use).  ``bind_source``: bind
    the senders to ``src`` (-s).  ``dont_fragment``, ``tos``, ``interface``: see the module
    docstring.
    """

    def __init__(
        self,
        method: Method,
        family: Family,
        dst: str,
        src: str,
        *,
        kind: str = "auto",
        ident: int | None = None,
        dont_fragment: bool = False,
        tos: int = 0,
        interface: str | None = None,
        bind_source: bool = False,
        mtu_discovery: bool = False,
    ) -> None:
        if kind not in KINDS:
            raise UsageError(f"socket kind {kind!r}: expected auto, raw or dgram")
        self.method = method
        self.family = family
        self.dst = dst
        self.src = src
        self.v6 = family == 6
        af = socket.AF_INET6 if self.v6 else socket.AF_INET
        self._af = af
        self.dont_fragment = dont_fragment
        self.tos = tos
        self.interface = interface
        self.bind_source = bind_source
        # --mtu: DF set (PMTUDISC_PROBE: the kernel refuses what exceeds the device's MTU
        # with EMSGSIZE and leaves the rest to the routers' frag-needed / Packet Too Big)
        self.mtu_discovery = mtu_discovery
        if mtu_discovery:
            self.dont_fragment = True
        self._owned: list[socket.socket] = []
        self.icmp_socket: net.IcmpSocket | None = None
        self.icmp: socket.socket | None = None
        self.tcp: socket.socket | None = None
        self.udp: dict[int, socket.socket] | None = None  # dgram UDP: source port -> socket
        self.icmp_ident: int | None = None  # dgram ICMP: the identifier the kernel writes
        tried = (
            ["raw"] if method is Method.TCP else (["raw", "dgram"] if kind == "auto" else [kind])
        )
        if method is Method.TCP and kind == "dgram":
            raise UsageError("TCP probes need a raw socket; there is no datagram TCP traceroute")
        last: BaseException | None = None
        for attempt in tried:
            try:
                self._open(attempt, ident)
            except RawSocketPermissionError as exc:
                log.debug("%s sockets refused: %s", attempt, exc)
                self.close()
                last = exc
                continue
            except BaseException:
                self.close()
                raise
            self.kind = attempt
            break
        else:
            assert last is not None
            if method is Method.TCP:
                message = (
                    "traceroute -T needs a raw socket: run as root or grant CAP_NET_RAW "
                    "(traceroute(8) -T does too)"
                )
            elif method is Method.ICMP and tried[-1] == "dgram":
                message = net.PERMISSION_FIX
            else:
                message = str(last)
            raise RawSocketPermissionError(message) from last

    # -- setup --------------------------------------------------------------------------------

    def _open(self, kind: str, ident: int | None) -> None:
        af = self._af
        if kind == "raw":
            # net.py's raw ICMP socket: kernel timestamps, received TTL, type filter
            self.icmp_socket = net.open_icmp_socket(self.family, "raw")
            self.icmp = self._own(self.icmp_socket.sock)
            self._tune(self.icmp, sender=self.method is Method.ICMP)
            if self.method is Method.ICMP:
                self.sender = self.icmp
            elif self.method is Method.UDP:
                self.sender = self._own(_raw(af, socket.IPPROTO_UDP))
                # we never read the raw UDP socket: keep its queue (a copy of all UDP) tiny
                self.sender.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256)
                self._tune(self.sender)
            else:
                self.tcp = self._own(_raw(af, socket.IPPROTO_TCP))
                self._setup_receiver(self.tcp)
                self._tune(self.tcp)
                self.sender = self.tcp
            return
        if self.method is Method.UDP:
            self.udp = {}  # filled by reserve_udp_port: the senders are per source port
            return
        proto = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        try:
            sock = self._own(socket.socket(af, socket.SOCK_DGRAM, proto))
        except PermissionError as exc:
            raise RawSocketPermissionError(net.PERMISSION_FIX) from exc
        address = self.src if self.bind_source else ("::" if self.v6 else "0.0.0.0")
        try:
            sock.bind((address, ident or 0))
        except OSError as exc:
            if not ident or exc.errno != errno.EADDRINUSE:
                raise UsageError(f"cannot bind {address}: {exc.strerror or exc}") from exc
            log.info("identifier %d taken; letting the kernel choose", ident)
            sock.bind((address, 0))
        self.icmp_socket = net.IcmpSocket(sock, self.family, "dgram")
        # sends are timed by the clock (see send()): no transmit stamps on the error queue
        sock.setsockopt(socket.SOL_SOCKET, net.SO_TIMESTAMPING, 0)
        self.icmp_ident = self.icmp_socket.ident = sock.getsockname()[1]
        self.icmp = sock
        self._tune(sock, bind=False)
        self.sender = sock

    def _own(self, sock: socket.socket) -> socket.socket:
        self._owned.append(sock)
        return sock

    def _tune(self, sock: socket.socket, *, sender: bool = True, bind: bool = True) -> None:
        """traceroute(8)'s tune_socket(): device, source, DF and TOS of what ``sock`` sends."""
        if self.interface is not None:
            bind_to_device(sock, self.interface)
        if not sender:
            return
        if bind and self.bind_source:
            try:
                sock.bind((self.src, 0))
            except OSError as exc:
                raise UsageError(f"cannot send from {self.src}: {exc.strerror or exc}") from exc
        level, option = (
            (socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER)
            if self.v6
            else (socket.IPPROTO_IP, IP_MTU_DISCOVER)
        )
        mode = PMTUDISC_PROBE if self.dont_fragment else PMTUDISC_DONT
        try:
            sock.setsockopt(level, option, mode)
        except OSError:
            if not self.dont_fragment:
                raise
            sock.setsockopt(level, option, PMTUDISC_DO)  # kernels without PROBE
        if self.tos:
            if self.v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, self.tos)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, self.tos)

    def _setup_receiver(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, net.SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if self.v6:
            sock.setsockopt(socket.IPPROTO_IPV6, net.IPV6_RECVHOPLIMIT, 1)
        elif sock.type == socket.SOCK_DGRAM:
            sock.setsockopt(socket.IPPROTO_IP, net.IP_RECVTTL, 1)  # the ICMP error's TTL

    def _set_recverr(self, sock: socket.socket) -> None:
        if self.v6:
            sock.setsockopt(socket.IPPROTO_IPV6, net.IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, net.IP_RECVERR, 1)

    def reserve_udp_port(self, port: int | None) -> int:
        """Hold a UDP source port (0/None: the kernel picks); return it.

        Raw sockets: a bound UDP socket holds it.  Datagram: a new sending socket binds it (a
        port taken by someone else is then an error: we could not send from it); its error
        queue tells of the probes sent from it.  ``release_udp_port`` closes it.
        """
        if self.udp is None:
            holder = self._own(socket.socket(self._af, socket.SOCK_DGRAM))
            return self._bind(holder, port)
        sock = self._own(socket.socket(self._af, socket.SOCK_DGRAM))
        self._setup_receiver(sock)
        self._set_recverr(sock)
        self._tune(sock, bind=False)
        try:
            sock.bind((self.src, port or 0))
        except OSError as exc:
            raise UsageError(f"cannot bind source port {port or 0}: {exc.strerror or exc}") from exc
        bound = sock.getsockname()[1]
        self.udp[bound] = sock
        return bound

    def release_udp_port(self, port: int) -> None:
        """Datagram UDP: close the socket of a source port whose probes are all settled."""
        if self.udp is not None and (sock := self.udp.pop(port, None)) is not None:
            self._owned.remove(sock)
            sock.close()

    def reserve_tcp_port(self, port: int | None) -> int:
        """Bind (never listen) a TCP socket to hold a source port for one SYN probe."""
        holder = self._own(socket.socket(self._af, socket.SOCK_STREAM))
        return self._bind(holder, port)

    def _bind(self, holder: socket.socket, port: int | None) -> int:
        try:
            holder.bind((self.src, port or 0))
        except OSError as exc:
            if port and exc.errno == errno.EADDRINUSE:
                log.debug("source port %d in use; probing from it anyway", port)
                return port
            raise UsageError(f"cannot bind source port {port}: {exc.strerror or exc}") from exc
        return holder.getsockname()[1]

    # -- I/O ----------------------------------------------------------------------------------

    def send(self, data: bytes, ttl: int) -> int:
        """Send ``data`` (ICMP message or transport segment) with ``ttl``; return send time (ns).

        The send time is the clock read right before sendto, for every method.  The ICMP socket
        could hand back the kernel's transmit stamp (ping uses it), but on veth that stamp is
        taken in the driver, after the capture tap: a CPU pause between the two makes an RTT
        read shorter than the wire's, and a trace is a burst, where that hits several probes
        at once (seen in CI: three probes 0.5-0.7 ms early).  The clock before sendto errs only
        the other way, by the system call's entry.
        A datagram UDP socket is handed the payload (``data[8:]``) for the destination port in
        ``data``'s header; the kernel writes the header.
        Raises ``OSError`` when the local stack refuses the probe (EHOSTUNREACH, EACCES...).
        """
        sender = self.sender if self.udp is None else None
        port = 0
        if self.udp is not None:
            # RFC 768: source port, destination port; the source port picks the socket
            sender = self.udp[int.from_bytes(data[0:2], "big")]
            port = int.from_bytes(data[2:4], "big")
            data = data[8:]
        assert sender is not None
        if self.v6:
            sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        # raw sockets ignore the port, but AF_INET6 wants a 4-tuple-compatible address
        address = (self.dst, port, 0, 0) if self.v6 else (self.dst, port)
        send_ns = time.time_ns()
        try:
            sender.sendto(data, address)
        except OSError as exc:
            if self.kind != "dgram" or exc.errno not in _PENDING_ERRORS:
                raise
            log.debug("sendto reported a queued error (%s); sending again", exc)
            send_ns = time.time_ns()
            sender.sendto(data, address)
        return send_ns

    def local_mtu(self) -> int | None:
        """--mtu, after a send failed with EMSGSIZE: the MTU of the route to the destination
        as the kernel knows it (IP_MTU / IPV6_MTU of a connected datagram socket: the device's,
        or a path MTU it has learnt), or None."""
        level, option = (socket.IPPROTO_IPV6, IPV6_MTU) if self.v6 else (socket.IPPROTO_IP, IP_MTU)
        with socket.socket(self._af, socket.SOCK_DGRAM) as probe:
            if self.interface is not None:
                bind_to_device(probe, self.interface)
            try:
                probe.connect((self.dst, 9))
                return probe.getsockopt(level, option) or None
            except OSError as exc:
                log.debug("no route MTU to %s: %s", self.dst, exc)
                return None

    def receivers(self) -> list[socket.socket]:
        socks = [s for s in (self.icmp, self.tcp) if s is not None]
        return socks + list((self.udp or {}).values())

    def wait(self, timeout: float) -> list[RawReceived]:
        """Wait up to ``timeout`` seconds; return every datagram then queued on the receivers."""
        socks = self.receivers()
        try:
            ready, _, _ = select.select(socks, [], [], max(timeout, 0.0))
        except InterruptedError:
            ready = []
        out: list[RawReceived] = []
        udp = {id(sock): port for port, sock in (self.udp or {}).items()}
        for sock in ready:
            if id(sock) in udp:
                self._drain_udp(sock, udp[id(sock)], out)
                continue
            for _ in range(256):  # drain, boundedly
                if sock is self.tcp:
                    try:
                        data, ancdata, _flags, addr = sock.recvmsg(65535, 256)
                    except (BlockingIOError, InterruptedError):
                        break
                    out.append(self._received("tcp", data, ancdata, addr))
                    continue
                assert self.icmp_socket is not None
                got = self.icmp_socket.recv(0)
                if got is None:
                    break
                kind = "icmp" if self.kind == "raw" else "dgram"
                out.append(
                    RawReceived(
                        kind,
                        got.data,
                        got.source,
                        got.recv_ns,
                        got.kernel_timestamp,
                        got.ttl,
                        error=got.error,
                    )
                )
        return out

    def _drain_udp(self, sock: socket.socket, src_port: int, out: list[RawReceived]) -> None:
        for _ in range(256):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(65535, _CMSG_SPACE, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            anc = net.parse_ancillary(ancdata)
            if anc.error is None:  # a local error (e.g. EMSGSIZE with -F): nothing answered
                log.debug("local error on the UDP socket: %s", ancdata)
                continue
            kernel = anc.recv_ns is not None
            recv_ns = anc.recv_ns if kernel else time.time_ns()
            source = anc.error.offender or ""
            port = addr[1] if addr else None  # the quoted probe's destination port
            out.append(
                RawReceived(
                    "udp", data, source, recv_ns, kernel, anc.ttl, anc.error, port, src_port
                )
            )
        for _ in range(256):  # datagrams the destination sent back: not ours to read
            try:
                sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # the error reported once more; its entry was read above
                log.debug("UDP socket error: %s", exc)

    def _received(self, kind: str, data: bytes, ancdata: list, addr: tuple) -> RawReceived:
        anc = net.parse_ancillary(ancdata)
        kernel = anc.recv_ns is not None
        recv_ns = anc.recv_ns if anc.recv_ns is not None else time.time_ns()
        return RawReceived(kind, data, net.canonical(addr[0]), recv_ns, kernel, anc.ttl)

    def close(self) -> None:
        for sock in self._owned:
            with contextlib.suppress(OSError):
                sock.close()
        self._owned.clear()

    def __enter__(self) -> TraceSockets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
