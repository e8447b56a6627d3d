"""The input contract shared by handrolled/, reference/ and compare/: one request per job.

A request is a frozen record (handrolled/record.py) validated once, in ``__post_init__``: every
rule raises ``UsageError`` with one line that names the field and the rule.  The command lines
build a request, the harness builds one and hands the *same object* to both implementations, so
a bad input gets the same verdict whichever side runs it.  Checks that need the resolved address
family (does the payload fit an IPv4 packet?) are methods here too, called by both engines.

Data and validation only: no sockets, no clocks, no name resolution (pure; see
tests/test_boundaries.py).  ``MailRequest`` and ``MailSessionRequest`` live in
handrolled/requests_smtp.py and load on first use through this module, so that ping and
traceroute do not create them at start-up (see handrolled/results.py).
"""

from __future__ import annotations

import math

from handrolled.errors import UsageError
from handrolled.record import Record
from handrolled.results import Family, Method, lazy_names

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see results.py)

# The longest wait any request may ask for.  select()/settimeout() overflow near 2**31 ms on
# some platforms; a day is far beyond any useful probe wait and far below that.
MAX_SECONDS = 86_400.0


def check_seconds(name: str, value: float, *, allow_zero: bool = False) -> None:
    """``value`` is a finite number of seconds, positive (or >= 0), at most ``MAX_SECONDS``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise UsageError(f"{name} {value!r}: must be a number of seconds")
    low_ok = value >= 0 if allow_zero else value > 0
    if not low_ok or value > MAX_SECONDS:
        low = "at least 0" if allow_zero else "more than 0"
        raise UsageError(f"{name} {value}: must be {low} and at most {MAX_SECONDS:g} seconds")


def check_int(name: str, value: int, low: int, high: int) -> None:
    """``value`` is an int (not a bool) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} {value!r}: must be a whole number")
    if not low <= value <= high:
        raise UsageError(f"{name} {value}: must be {low}-{high}")


def check_family(value: object) -> Family | None:
    """The one address-family convention: None (either), 4 or 6."""
    if value not in (None, 4, 6) or isinstance(value, bool):
        raise UsageError(f"family {value!r}: must be 4 or 6")
    return value  # type: ignore[return-value]


def check_host(name: str, value: str) -> None:
    """A host name or address literal: non-empty text without controls or spaces."""
    if not isinstance(value, str) or not value:
        raise UsageError(f"{name}: must not be empty")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UsageError(f"{name} {value!r}: must not contain spaces or control characters")


# -- ping -------------------------------------------------------------------------------------
PING_DEFAULT_SIZE = 56  # iputils' default: 64 ICMP bytes with the header
PING_MAX_COUNT = 2**31 - 1
# Largest echo payload that fits one datagram: IPv4's total length (16 bits) counts the 20-byte
# IP and 8-byte ICMP headers (RFC 791 §3.1); IPv6's payload length counts the 8-byte ICMPv6
# header only (RFC 8200 §3; no jumbograms).  iputils agrees: -s 65507 / -6 -s 65527.
PING_MAX_PAYLOAD: dict[Family, int] = {4: 65535 - 20 - 8, 6: 65535 - 8}
PING_MAX_PATTERN = 16  # iputils -p: "up to 16 pad bytes"
# iputils' default payload starts with the send time as a struct timeval (tv_sec, tv_usec:
# two native longs, 16 octets on 64-bit Linux); a payload shorter than that carries none.
PING_TIMESTAMP_SIZE = 16
IFNAMSIZ = 16  # linux/if.h: an interface name is at most 15 octets and a NUL
SOCKET_KINDS = ("auto", "raw", "dgram")


def _check_ping_source(source: object) -> None:
    """An IPv4 or IPv6 address literal (no name, no zone: the zone is ``interface``)."""
    if not isinstance(source, str) or not source:
        raise UsageError(f"source {source!r}: must be an IPv4 or IPv6 address")
    if _ip_version(source) is None:
        raise UsageError(f"source {source!r}: must be an IPv4 or IPv6 address")


def _ip_version(text: str) -> int | None:
    """4 or 6 if ``text`` is an IPv4 / IPv6 address literal (no zone), else None."""
    import ipaddress  # only requests that name a source pay for it

    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return None


def _check_interface(name: object) -> None:
    # linux/if.h and dev_valid_name(): 1-15 octets, not "." or "..", no "/", ":" or spaces.
    bad = not isinstance(name, str) or not name or name in (".", "..")
    if bad or len(name.encode("utf-8", "surrogatepass")) >= IFNAMSIZ:  # type: ignore[union-attr]
        raise UsageError(f"interface {name!r}: must be a device name of 1-{IFNAMSIZ - 1} octets")
    if any(c in "/:" or c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in name):  # type: ignore[union-attr]
        raise UsageError(f"interface {name!r}: must not contain '/', ':', spaces or controls")


PING_PMTU_MODES = ("do", "want", "dont")  # ping -M


class PingRequest(Record):
    """One ping job: echo requests to ``host``, ``interval`` s apart.

    ``count``: how many to send; None: until the deadline or until interrupted (iputils without
    -c).  With a ``deadline`` the count is, as iputils' -c with -w, the number of answers
    (replies and ICMP errors) that ends the run early: probes go on being sent until then or
    until the deadline, and the first ICMP error ends it (iputils 20221126 main_loop).
    ``timeout``: how long each probe waits for its answer after it was sent (> 0).
    ``linger``: iputils' -W linger time instead (seconds, 0: no limit): no probe expires on its
    own, an answer counts whenever it comes before the run ends, and a ``count`` run without a
    ``deadline`` ends, once its last probe is sent, after twice the longest RTT so far (at
    least ``interval``) if any reply came, else after ``linger`` (__schedule_exit()); None:
    ``timeout`` per probe.
    ``deadline``: stop everything that many seconds after the start (None: when every probe
    has settled).  ``interval`` 0: as fast as answers come back, at least every 10 ms (iputils'
    MININTERVAL bound for -i 0 and -f).

    The payload: ``payload`` bytes are sent as given in every probe (the harness's fixed bytes).
    ``payload`` None is iputils' default: ``size`` bytes (default 56) filled with byte i = i
    (or with ``pattern`` repeated, -p), the first 16 overwritten at each send by the send time
    as a struct timeval when ``size`` is at least 16 (``timestamped``).
    ``tos``: IPv4 type of service / IPv6 traffic class octet (-Q); None: the socket's default.
    ``source``: send from this address (-I ADDR); ``interface``: bind to this device (-I IFACE).
    ``user_latency``: time in user space (-U): the clock read before the send call and after
    the receive call instead of the kernel's stamps.
    ``ttl`` None: the system default.  ``family`` None: the first address ``host`` resolves to.
    ``pmtu_discovery`` (-M): "do" (DF set, no fragmenting), "want" (DF up to the path MTU),
    "dont" (DF clear); None: the system default.
    ``ident`` None: the engine's choice (the pid).  ``socket_kind``: how the hand-rolled engine
    opens its ICMP socket.
    """

    host: str
    count: int | None = 4
    interval: float = 1.0
    timeout: float = 1.0
    deadline: float | None = None
    size: int | None = None
    payload: bytes | None = None
    ttl: int | None = None
    family: Family | None = None
    ident: int | None = None
    seq_start: int = 1
    socket_kind: str = "auto"
    pattern: bytes | None = None
    tos: int | None = None
    source: str | None = None
    interface: str | None = None
    user_latency: bool = False
    pmtu_discovery: str | None = None
    linger: float | None = None

    def __post_init__(self) -> None:
        check_host("host", self.host)
        if self.pmtu_discovery is not None and self.pmtu_discovery not in PING_PMTU_MODES:
            # iputils -M: IP_PMTUDISC_DO / WANT / DONT (RFC 1191, RFC 8201)
            raise UsageError(f"pmtu_discovery {self.pmtu_discovery!r}: must be do, want or dont")
        if self.count is not None:
            # At least one probe, as iputils' -c (1..LONG_MAX); None: no limit (no -c).
            check_int("count", self.count, 1, PING_MAX_COUNT)
        check_seconds("interval", self.interval, allow_zero=True)  # 0: back to back (iputils -i 0)
        check_seconds("timeout", self.timeout)
        if self.linger is not None:
            check_seconds("linger", self.linger, allow_zero=True)  # -W 0: no limit (man ping)
        if self.deadline is not None:
            check_seconds("deadline", self.deadline)  # 0 would end the run before it starts
        if self.size is not None:
            check_int("size", self.size, 0, max(PING_MAX_PAYLOAD.values()))
        if self.payload is not None:
            if not isinstance(self.payload, bytes):
                raise UsageError(f"payload {type(self.payload).__name__}: must be bytes")
            if self.size is not None and self.size != len(self.payload):
                raise UsageError(
                    f"size {self.size}: the payload given is {len(self.payload)} bytes "
                    "(give one or the other)"
                )
        if self.pattern is not None:
            if not isinstance(self.pattern, bytes):
                raise UsageError(f"pattern {type(self.pattern).__name__}: must be bytes")
            if not 1 <= len(self.pattern) <= PING_MAX_PATTERN:
                raise UsageError(
                    f"pattern of {len(self.pattern)} bytes: must be 1-{PING_MAX_PATTERN} bytes"
                )
            if self.payload is not None:
                raise UsageError("pattern: fills the default payload (give it or a payload)")
        if self.ttl is not None:
            check_int("ttl", self.ttl, 1, 255)  # RFC 791 §3.2: a datagram with TTL 0 is dropped
        check_family(self.family)
        if self.ident is not None:
            check_int("ident", self.ident, 0, 0xFFFF)  # RFC 792: a 16-bit identifier
        check_int("seq_start", self.seq_start, 0, 0xFFFF)  # and a 16-bit sequence number
        if self.socket_kind not in SOCKET_KINDS:
            raise UsageError(f"socket kind {self.socket_kind!r}: must be auto, raw or dgram")
        if self.tos is not None:
            check_int("tos", self.tos, 0, 255)  # RFC 791 §3.1 / RFC 8200 §7: one octet
        if self.source is not None:
            _check_ping_source(self.source)
            version = _ip_version(self.source)
            if self.family is not None and version != self.family:
                raise UsageError(f"source {self.source}: not an IPv{self.family} address")
        if self.interface is not None:
            _check_interface(self.interface)
        if not isinstance(self.user_latency, bool):
            raise UsageError(f"user_latency {self.user_latency!r}: must be True or False")
        if self.family is not None:
            self.check_fits(self.family)

    @property
    def payload_size(self) -> int:
        """Octets of echo data each probe carries."""
        if self.payload is not None:
            return len(self.payload)
        return PING_DEFAULT_SIZE if self.size is None else self.size

    @property
    def timestamped(self) -> bool:
        """Each probe carries its send time in its first 16 octets (the default payload)."""
        return self.payload is None and self.payload_size >= PING_TIMESTAMP_SIZE

    def check_fits(self, family: Family) -> None:
        """Refuse what the resolved ``family`` cannot carry: a payload too large for one IPv4 /
        IPv6 datagram, a source address of the other family (engines call this once the host
        has resolved to ``family``)."""
        limit = PING_MAX_PAYLOAD[family]
        if self.payload_size > limit:
            raise UsageError(
                f"size {self.payload_size}: does not fit an IPv{family} packet "
                f"(at most {limit} bytes)"
            )
        if self.source is not None and _ip_version(self.source) != family:
            raise UsageError(f"source {self.source}: not an IPv{family} address")


# -- traceroute -------------------------------------------------------------------------------

# RFC 791 §3.1: an 8-bit field; traceroute(8): "max hops cannot be more than 255"
TRACE_MAX_TTL = 255
TRACE_MAX_PROBES_PER_HOP = 10  # traceroute(8): "no more than 10 probes per hop"
# More in flight than a trace can hold is the same as all of them at once.
TRACE_MAX_SIM_QUERIES = TRACE_MAX_TTL * TRACE_MAX_PROBES_PER_HOP
TRACE_MAX_PAYLOAD = 65000  # fits one IPv4 or IPv6 datagram with any probe's headers
TRACE_DEFAULT_PORTS = {Method.UDP: 33434, Method.TCP: 80}  # traceroute(8)'s defaults
TRACE_FIXED_UDP_PORT = 53  # traceroute(8) -U ("udp" method): "Default port is 53 (dns)"
TRACE_DEFAULT_WAIT = (5.0, 3.0, 10.0)  # traceroute(8)'s -w MAX,HERE,NEAR
# traceroute(8)'s DEF_DATA_LEN 40 less the 8-byte UDP / ICMP header: 60-byte IPv4 probes
TRACE_DEFAULT_DATA_LEN = 32


def _trace_interface(name: object) -> None:
    # linux/if.h IFNAMSIZ 16 and dev_valid_name(): 1-15 octets, not "." or "..", no "/", ":"
    # or whitespace
    if not isinstance(name, str) or not name:
        raise UsageError("interface: must not be empty")
    bad = any(c in "/:" or c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    if bad or name in (".", "..") or len(name.encode("utf-8", "surrogatepass")) > 15:
        raise UsageError(
            f"interface {name!r}: not a device name (1-15 octets, no '/', ':' or spaces)"
        )


class TraceRequest(Record):
    """One traceroute job: probes to ``host`` with TTL ``first_ttl``..``max_hops``.

    ``method``: ICMP echo, UDP or TCP SYN probes.  ``port``: UDP base destination port (probe
    k goes to port + k) or TCP destination port; None: the method's default (``dst_port``).
    ``probes_per_hop`` probes per TTL, at most ``sim_queries`` in flight.  ``wait``:
    traceroute(8)'s -w MAX,HERE,NEAR: a probe waits at most MAX seconds, or HERE / NEAR times
    the RTT of a reply from its own / a later hop (a factor of 0 turns that rule off).
    ``family`` None: the first address ``host`` resolves to.  ``resolve``: reverse DNS of the
    hops.  ``ident``: ICMP identifier, UDP source port, TCP base source port; None: the
    engine's choice.  ``payload`` None: the engines' default (32 pattern bytes, none for TCP).

    traceroute(8)'s other knobs: ``packet_len`` the whole IP datagram's length (its
    ``packet_len`` argument; None: 60 bytes for IPv4, 80 for IPv6; a length below the headers
    means no payload; TCP probes ignore it, as traceroute(8)'s do) sets the payload size
    (``data_len``) and excludes ``payload``.  ``dont_fragment`` (-F): DF set and no local
    fragmentation (IP_PMTUDISC_PROBE); off, traceroute(8) clears DF (IP_PMTUDISC_DONT).
    ``tos`` (-t): IPv4 TOS byte / IPv6 traffic class.  ``source`` (-s): the address to send
    from (a name or literal of the destination's family).  ``interface`` (-i): the device
    every socket is bound to (SO_BINDTODEVICE).  ``send_wait`` (-z): at least this many
    seconds between two probes (the CLI reads traceroute(8)'s ">= 10 means ms").
    ``fixed_port`` (UDP only; traceroute(8)'s -U): every probe to ``port`` (default 53)
    instead of port + k, each from its own source port (``ident`` + k, or one the kernel
    picks per probe).

    Paths that branch and shrink (issue 12): ``paris`` keeps the flow identifier (what an
    ECMP router hashes) constant for the whole trace: UDP ports fixed, probes told apart by
    the UDP checksum (set through the first 2 payload bytes to probe number + 1); TCP ports
    fixed, the sequence number varies; ICMP identifier and checksum fixed (the first 2
    payload bytes compensate for the sequence).  ``multipath``: the MDA (Veitch et al. 2009)
    per TTL, probes with distinct flows until the stopping rule rules out one more next hop
    at ``confidence``.  ``mtu`` (traceroute(8) --mtu): DF set, start at ``packet_len`` (default
    65000) and shrink on a local EMSGSIZE, frag-needed or Packet Too Big; one probe in flight.
    """

    host: str
    method: Method = Method.ICMP
    port: int | None = None
    probes_per_hop: int = 3
    first_ttl: int = 1
    max_hops: int = 30
    sim_queries: int = 16
    wait: tuple[float, float, float] = TRACE_DEFAULT_WAIT
    family: Family | None = None
    resolve: bool = True
    ident: int | None = None
    payload: bytes | None = None
    packet_len: int | None = None
    dont_fragment: bool = False
    tos: int = 0
    source: str | None = None
    interface: str | None = None
    send_wait: float = 0.0
    fixed_port: bool = False
    paris: bool = False
    multipath: bool = False
    confidence: float = 0.95
    mtu: bool = False

    def __post_init__(self) -> None:
        check_host("host", self.host)
        try:
            object.__setattr__(self, "method", Method(self.method))
        except ValueError:
            raise UsageError(f"method {self.method!r}: must be icmp, udp or tcp") from None
        if self.port is not None:
            # RFC 768 / RFC 793: port 0 is reserved.  traceroute(8) reads -p 0 as "unset" and
            # probes the default port instead; here "unset" is None, so 0 is refused.
            check_int("port", self.port, 1, 0xFFFF)
        check_int("probes_per_hop", self.probes_per_hop, 1, TRACE_MAX_PROBES_PER_HOP)
        check_int("max_hops", self.max_hops, 1, TRACE_MAX_TTL)
        check_int("first_ttl", self.first_ttl, 1, TRACE_MAX_TTL)  # TTL 0 is dropped at once
        if self.first_ttl > self.max_hops:  # traceroute(8): "first hop out of range"
            raise UsageError(
                f"first_ttl {self.first_ttl}: must not exceed max_hops {self.max_hops}"
            )
        check_int("sim_queries", self.sim_queries, 1, TRACE_MAX_SIM_QUERIES)
        self._check_wait()
        check_family(self.family)
        if not isinstance(self.resolve, bool):
            raise UsageError(f"resolve {self.resolve!r}: must be True or False")
        if self.ident is not None:
            check_int("ident", self.ident, 0, 0xFFFF)  # a 16-bit identifier or port
        if self.payload is not None:
            if not isinstance(self.payload, bytes):
                raise UsageError(f"payload {type(self.payload).__name__}: must be bytes")
            if len(self.payload) > TRACE_MAX_PAYLOAD:
                raise UsageError(
                    f"payload of {len(self.payload)} bytes: at most {TRACE_MAX_PAYLOAD}"
                )
        self._check_traceroute8_knobs()

    def _check_traceroute8_knobs(self) -> None:
        if self.packet_len is not None:
            # traceroute(8): "too big packetlen N specified" above MAX_PACKET_LEN (65000)
            check_int("packet_len", self.packet_len, 0, TRACE_MAX_PAYLOAD)
            if self.payload is not None:
                raise UsageError("packet_len and payload: give one or the other")
        if not isinstance(self.dont_fragment, bool):
            raise UsageError(f"dont_fragment {self.dont_fragment!r}: must be True or False")
        check_int("tos", self.tos, 0, 0xFF)  # RFC 791 §3.1 / RFC 8200 §7: one byte
        if self.source is not None:
            check_host("source", self.source)
        if self.interface is not None:
            _trace_interface(self.interface)
        check_seconds("send_wait", self.send_wait, allow_zero=True)
        object.__setattr__(self, "send_wait", float(self.send_wait))
        if not isinstance(self.fixed_port, bool):
            raise UsageError(f"fixed_port {self.fixed_port!r}: must be True or False")
        if self.fixed_port and self.method is not Method.UDP:
            raise UsageError(f"fixed_port: for UDP probes only, not {self.method.value}")
        self._check_paths()

    def _check_paths(self) -> None:
        for name in ("paris", "multipath", "mtu"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} {getattr(self, name)!r}: must be True or False")
        conf = self.confidence
        if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0.5 <= conf < 1:
            raise UsageError(f"confidence {conf!r}: must be at least 0.5 and below 1")
        object.__setattr__(self, "confidence", float(conf))
        chosen = [n for n in ("paris", "multipath", "mtu", "fixed_port") if getattr(self, n)]
        if len(chosen) > 1 and chosen != ["paris", "fixed_port"]:  # -U --paris: port 53 held
            raise UsageError(f"{' and '.join(chosen)}: choose one")
        if self.mtu and self.method is Method.TCP:
            raise UsageError("mtu: for UDP and ICMP probes (traceroute(8) -T ignores --mtu)")
        if self.mtu and self.payload is not None:
            raise UsageError("mtu and payload: the probe's size is what --mtu changes")
        # the payload's first word carries the checksum compensation (RFC 1071 §2(4))
        needs_word = (self.paris or self.multipath) and self.method is not Method.TCP
        if needs_word and self.data_len(4) < 2:
            raise UsageError("paris/multipath: UDP and ICMP probes need 2 payload bytes or more")

    def data_len(self, family: Family) -> int:
        """Bytes after the probe's transport header (traceroute(8)'s ``data_len``)."""
        if self.payload is not None:
            return len(self.payload)
        if self.method is Method.TCP:
            return 0  # traceroute(8) -T sends a bare SYN whatever packet_len says
        if self.packet_len is None and self.mtu:
            return TRACE_MAX_PAYLOAD - (40 if family == 6 else 20) - 8  # traceroute(8) --mtu
        if self.packet_len is None:
            return TRACE_DEFAULT_DATA_LEN
        headers = (40 if family == 6 else 20) + 8  # IP header + the UDP / ICMP header
        return max(self.packet_len - headers, 0)

    def _check_wait(self) -> None:
        wait = self.wait
        if not isinstance(wait, tuple | list) or len(wait) != 3:
            raise UsageError(f"wait {wait!r}: must be MAX, HERE, NEAR")
        # MAX > 0: traceroute(8) takes -w 0, but then no probe waits at all and every hop past
        # the first microseconds reads as silent.
        check_seconds("wait MAX", wait[0])
        for name, factor in (("wait HERE", wait[1]), ("wait NEAR", wait[2])):
            bad = isinstance(factor, bool) or not isinstance(factor, int | float)
            if bad or not 0 <= factor <= MAX_SECONDS:  # also refuses NaN
                raise UsageError(f"{name} {factor!r}: must be a factor from 0 to {MAX_SECONDS:g}")
        object.__setattr__(self, "wait", tuple(float(w) for w in wait))

    @property
    def dst_port(self) -> int | None:
        """The UDP base / TCP destination port probes use; None for ICMP."""
        if self.method is Method.ICMP:
            return None
        if self.port is not None:
            return self.port
        return TRACE_FIXED_UDP_PORT if self.fixed_port else TRACE_DEFAULT_PORTS[self.method]


# -- SMTP: handrolled/requests_smtp.py, loaded on first use (start-up: see results.py) -----------
_SMTP_NAMES = frozenset(
    {"SMTP_DEFAULT_HELO", "SMTP_MAX_SESSION_MESSAGES", "MailRequest", "MailSessionRequest"}
)

if TYPE_CHECKING:
    from handrolled.requests_smtp import (  # noqa: F401 (re-exported for type checkers)
        SMTP_DEFAULT_HELO,
        SMTP_MAX_SESSION_MESSAGES,
        MailRequest,
        MailSessionRequest,
    )


__getattr__, __dir__ = lazy_names(globals(), "handrolled.requests_smtp", _SMTP_NAMES)
