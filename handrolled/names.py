"""Names and routes: host names to addresses, addresses back to names, and which source
address a route lookup picks (no packet is sent).

API
---
``resolve(host, family=None) -> (address, family)``: first getaddrinfo answer (family 4 or 6);
    ``ResolveError``.
``source_address(dst, family) -> str``: the address our kernel sends from to reach ``dst``;
    ``UsageError`` "no route to ...".
``source_address_via(dst, family, device=None) -> str``: the same through ``device`` (-I), worded
    as iputils' probe socket: ``UsageError`` "connect: Network is unreachable".
``check_source_address(source, family)``: ``UsageError`` "bind: Cannot assign requested
    address" for an address this host does not have.
``path_mtu(dst, family) -> int | None``: the MTU of the route to ``dst`` as the kernel knows it
    (the device's, or a path MTU it has learnt: IP_MTU / IPV6_MTU of a connected socket).
``reverse_name(address) -> str | None``: PTR / hosts-file name, None when there is none.
``ReverseResolver``: ``reverse_name`` per distinct address in a few daemon threads, cached,
    each wait bounded (``.request(addr)`` starts a lookup, ``.name(addr)`` collects it).
``idna_encoded(host) -> str | bytes``: what to hand getaddrinfo so that an ASCII name does not
    load the IDNA codec.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable

from handrolled.errors import ResolveError, UsageError
from handrolled.net import address_family, canonical
from handrolled.results import Family
from handrolled.sockopts import bind_device, strerror

__all__ = [
    "ReverseResolver",
    "check_source_address",
    "idna_encoded",
    "path_mtu",
    "resolve",
    "reverse_name",
    "source_address",
    "source_address_via",
]

log = logging.getLogger(__name__)


def idna_encoded(host: str) -> str | bytes:
    """``host`` as getaddrinfo would send it: the bytes themselves when the IDNA codec would
    return them unchanged (ASCII, every label 1-63 octets, RFC 1035 §2.3.4; an empty last label
    is the root's), else the text, for getaddrinfo to encode (and refuse) itself.

    Start-up: a str makes getaddrinfo load the IDNA codec and unicodedata (~1 ms) even for
    ``target.lab.test`` or an address literal.
    """
    if not host.isascii():
        return host
    *labels, last = host.split(".")
    if all(0 < len(label) < 64 for label in labels) and len(last) < 64:
        return host.encode("ascii")
    return host


def resolve(host: str, family: Family | None = None) -> tuple[str, Family]:
    """Resolve ``host`` to (canonical address, 4 or 6): the first getaddrinfo answer."""
    af = socket.AF_UNSPEC if family is None else address_family(family)
    try:
        infos = socket.getaddrinfo(idna_encoded(host), None, af, socket.SOCK_RAW)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(host, str(exc.args[-1] if exc.args else exc)) from exc
    for fam, _type, _proto, _name, sockaddr in infos:
        if fam in (socket.AF_INET, socket.AF_INET6):
            return canonical(sockaddr[0]), 6 if fam == socket.AF_INET6 else 4
    raise ResolveError(host, "no IPv4 or IPv6 address")


def source_address(dst: str, family: Family) -> str:
    """The address our kernel would send from to reach ``dst`` (a route lookup, no packet).

    ``family`` is 4 or 6.  Needed wherever we compute a checksum over the pseudo-header
    ourselves (ICMPv6, UDP, TCP: RFC 8200 §8.1, RFC 768, RFC 9293 §3.1).
    """
    return _route_source(dst, family, None, 9, f"no route to {dst}")


def reverse_name(address: str) -> str | None:
    """The name ``address`` maps back to (hosts file or PTR), or None."""
    try:
        name = socket.gethostbyaddr(address)[0]
    except (OSError, UnicodeError):
        return None
    return name or None


class ReverseResolver:
    """``reverse_name`` per distinct address, cached, in a few daemon threads.

    ``request`` starts a lookup early (when a reply arrives); ``name`` waits for it at most
    ``per_name`` seconds after it was requested and never more than ``budget`` seconds in
    total over the resolver's life, so a dead resolver costs a bounded delay.
    """

    def __init__(
        self,
        *,
        per_name: float = 1.0,
        budget: float = 3.0,
        workers: int = 4,
        lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        import queue  # here, not at start-up: a numeric (-n) run never makes a resolver

        self.per_name = per_name
        self.budget = budget
        self._lookup = lookup or reverse_name
        self._jobs: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._results: dict[str, str | None] = {}
        self._events: dict[str, threading.Event] = {}
        self._requested_at: dict[str, float] = {}
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._waited = 0.0

    def request(self, addr: str) -> None:
        """Start looking ``addr`` up, unless that is already under way or done."""
        with self._lock:
            if addr in self._events:
                return
            self._events[addr] = threading.Event()
            self._requested_at[addr] = time.monotonic()
            if len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, daemon=True, name="wiretwin-rdns")
                self._threads.append(thread)
                thread.start()
        self._jobs.put(addr)

    def _work(self) -> None:
        while True:
            addr = self._jobs.get()
            try:
                name = self._lookup(addr)
            except Exception as exc:  # a lookup failure is "no name", never a crash
                log.debug("reverse lookup of %s failed: %s", addr, exc)
                name = None
            with self._lock:
                self._results[addr] = name
            self._events[addr].set()

    def name(self, addr: str) -> str | None:
        """The name of ``addr``, or None when it has none or did not answer in time."""
        self.request(addr)
        event = self._events[addr]
        if not event.is_set():
            left = self._requested_at[addr] + self.per_name - time.monotonic()
            left = min(left, self.budget - self._waited)
            if left > 0:
                started = time.monotonic()
                event.wait(left)
                self._waited += time.monotonic() - started
        with self._lock:
            return self._results.get(addr)


def source_address_via(dst: str, family: Family, device: str | None = None) -> str:
    """The address the kernel sends from to reach ``dst``, through ``device`` when given; no
    route is UsageError "connect: Network is unreachable", as iputils' probe socket says."""
    return _route_source(dst, family, device, 1025, "connect")  # as iputils' probe_fd


def _route_source(dst: str, family: Family, device: str | None, port: int, what: str) -> str:
    """The source a UDP socket connected to ``dst`` gets (a route lookup, no packet sent); no
    route is UsageError "WHAT: <the OS's words>"."""
    with socket.socket(address_family(family), socket.SOCK_DGRAM) as probe:
        if device is not None:
            bind_device(probe, device)
        try:
            probe.connect((dst, port))
        except OSError as exc:
            raise UsageError(f"{what}: {strerror(exc)}") from exc
        return ipaddress.ip_address(probe.getsockname()[0].split("%")[0]).compressed


def check_source_address(source: str, family: Family) -> None:
    """Refuse a source address this host does not have, as bind(2) would (iputils binds its
    socket before the PING header): UsageError "bind: Cannot assign requested address"."""
    with socket.socket(address_family(family), socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((source, 0))
        except OSError as exc:
            raise UsageError(f"bind: {strerror(exc)}") from exc


IP_MTU = getattr(socket, "IP_MTU", 14)  # linux/in.h
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)  # linux/in6.h


def path_mtu(dst: str, family: Family) -> int | None:
    """The route's MTU to ``dst`` (after a local EMSGSIZE: the path MTU the kernel learnt from
    a frag-needed, RFC 1191 §3, or a Packet Too Big, RFC 8201 §4), or None."""
    level, option = (socket.IPPROTO_IPV6, IPV6_MTU) if family == 6 else (socket.IPPROTO_IP, IP_MTU)
    with socket.socket(address_family(family), socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((dst, 9))
            return probe.getsockopt(level, option) or None
        except OSError as exc:
            log.debug("no route MTU to %s: %s", dst, exc)
            return None
