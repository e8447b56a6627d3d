"""Sockets for traceroute: raw senders with a per-probe TTL, raw receivers with kernel timestamps.

The only traceroute module that touches ``socket``/``select``/``time`` besides the driver.  One
``TraceSockets`` per trace:

- ICMP method: one raw ICMP/ICMPv6 socket sends echo requests and receives everything back;
- UDP method: a raw UDP socket sends headers we built (so ``Probe.sent`` is exactly the UDP
  datagram), a bound UDP socket reserves the source port, and the raw ICMP socket receives
  the errors;
- TCP method: a raw TCP socket sends SYNs and receives SYN-ACK/RST; one bound TCP socket per
  probe reserves its source port (bound but never listening, so our kernel resets the
  destination's SYN-ACK: a half-open probe, as traceroute(8) -T does).

The raw ICMP socket is ``handrolled.net``'s (kernel timestamps, received TTL, a type filter so
only echo replies and errors wake us); the raw TCP receiver gets the same SO_TIMESTAMPNS here.
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
from dataclasses import dataclass

from handrolled import net
from handrolled.errors import RawSocketPermissionError, UsageError
from handrolled.results import Family, Method

__all__ = ["RawReceived", "TraceSockets", "source_address"]

log = logging.getLogger(__name__)

source_address = net.source_address  # re-exported; it lives with the other socket helpers


@dataclass(frozen=True, slots=True)
class RawReceived:
    """One datagram read from one of a trace's raw receivers, tagged with which one.

    Unlike ``net.Received`` (any ``IcmpSocket``, raw or datagram, and its error queue) it comes
    from a raw socket only, the ICMP one or the TCP one (``kind``), so it never carries an
    error-queue entry, and on IPv4 ``data`` always starts with the IP header.
    """

    kind: str  # "icmp" or "tcp": which receiver it came from
    data: bytes  # IPv4: the whole IP datagram; IPv6: the ICMPv6 message / TCP segment
    source: str  # canonical address of the sender
    recv_ns: int
    kernel_timestamp: bool
    ttl: int | None  # TTL / hop limit of the packet, when the kernel reported it


def _raw(af: int, proto: int) -> socket.socket:
    try:
        return socket.socket(af, socket.SOCK_RAW, proto)
    except PermissionError as exc:
        raise RawSocketPermissionError(
            "traceroute needs raw sockets: run as root or grant CAP_NET_RAW "
            "(e.g. setcap cap_net_raw+ep on the python binary)"
        ) from exc


class TraceSockets:
    """The sockets of one trace.  Use as a context manager; everything is closed on exit."""

    def __init__(self, method: Method, family: Family, dst: str, src: str) -> None:
        self.method = method
        self.family = family
        self.dst = dst
        self.src = src
        self.v6 = family == 6
        af = socket.AF_INET6 if self.v6 else socket.AF_INET
        self._af = af
        self._owned: list[socket.socket] = []
        self._port_holders: list[socket.socket] = []
        try:
            # net.py's raw ICMP socket: kernel timestamps, received TTL, type filter
            self.icmp_socket = net.open_icmp_socket(family, "raw")
            self.icmp = self._own(self.icmp_socket.sock)
            self.tcp: socket.socket | None = None
            if method is Method.ICMP:
                self.sender = self.icmp
            elif method is Method.UDP:
                self.sender = self._own(_raw(af, socket.IPPROTO_UDP))
                # we never read the raw UDP socket: keep its queue (a copy of all UDP) tiny
                self.sender.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256)
            else:
                self.tcp = self._own(_raw(af, socket.IPPROTO_TCP))
                self._setup_receiver(self.tcp)
                self.sender = self.tcp
        except BaseException:
            self.close()
            raise

    # -- setup --------------------------------------------------------------------------------

    def _own(self, sock: socket.socket) -> socket.socket:
        self._owned.append(sock)
        return sock

    def _setup_receiver(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, net.SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if self.v6:
            sock.setsockopt(socket.IPPROTO_IPV6, net.IPV6_RECVHOPLIMIT, 1)

    def reserve_udp_port(self, port: int | None) -> int:
        """Bind a UDP socket to ``port`` (0/None: the kernel picks) so no one else gets it."""
        holder = self._own(socket.socket(self._af, socket.SOCK_DGRAM))
        return self._bind(holder, port)

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
        Raises ``OSError`` when the local stack refuses the probe (EHOSTUNREACH, EACCES...).
        """
        if self.method is Method.ICMP:
            self.icmp_socket.set_ttl(ttl)
        elif self.v6:
            self.sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            self.sender.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        # raw sockets ignore the port, but AF_INET6 wants a 4-tuple-compatible address
        address = (self.dst, 0, 0, 0) if self.v6 else (self.dst, 0)
        send_ns = time.time_ns()
        self.sender.sendto(data, address)
        return send_ns

    def receivers(self) -> list[socket.socket]:
        return [s for s in (self.icmp, self.tcp) if s is not None]

    def wait(self, timeout: float) -> list[RawReceived]:
        """Wait up to ``timeout`` seconds; return every datagram then queued on the receivers."""
        socks = self.receivers()
        try:
            ready, _, _ = select.select(socks, [], [], max(timeout, 0.0))
        except InterruptedError:
            ready = []
        out: list[RawReceived] = []
        for sock in ready:
            for _ in range(256):  # drain, boundedly
                if sock is self.tcp:
                    try:
                        data, ancdata, _flags, addr = sock.recvmsg(65535, 256)
                    except (BlockingIOError, InterruptedError):
                        break
                    out.append(self._received("tcp", data, ancdata, addr))
                    continue
                got = self.icmp_socket.recv(0)
                if got is None:
                    break
                out.append(
                    RawReceived(
                        "icmp", got.data, got.source, got.recv_ns, got.kernel_timestamp, got.ttl
                    )
                )
        return out

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
