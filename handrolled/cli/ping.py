"""``ping`` on the command line: iputils-shaped options, output lines and exit codes.

``main(argv=None, runner=None) -> int`` parses argv into a ``PingRequest``, resolves the host
once (the ``PING`` header names the address that is pinged), hands the request to ``runner``
(``handrolled.ping.run_ping`` by default; ``wiretwin ping --impl reference`` passes
``reference.ping.run_ping``) and prints each probe as it settles, then iputils' statistics.

Flags and output follow iputils ping 20221126 (ping/ping.c, ping/ping_common.c):
without ``-c`` it pings until Ctrl-C or the ``-w`` deadline; ``-p`` pattern, ``-D``
timestamps, ``-O`` outstanding replies, ``-Q`` TOS, ``-I`` device or source address, ``-a``
bell, ``-U`` user-space timing, ``-f`` flood (``.`` per request, a backspace per reply; root
only below 2 ms, as iputils).  The statistics are iputils' own arithmetic on the probes
(integer microseconds; duplicates in the RTT figures; a bad checksum counted as "corrupted",
a wrong payload still as received).  Exit codes as iputils' finish(): 1 if nothing came back,
or with ``-w`` fewer replies than ``-c`` asked for; else 0; 2 on bad input or an error.

``-W`` is iputils' linger time (``rts->lingertime``, default MAXWAIT 10 s, 0 for no limit), not
a wait per probe: a reply counts whenever it comes before ping ends, and a ``-c`` run without
``-w`` ends once every probe is answered or, after its last probe is sent, when twice the
longest RTT so far (at least the interval) has passed if any reply came, else ``-W``
(__schedule_exit()).  With ``-w``, or without ``-c``, ``-W`` changes nothing.  It travels in the
request (``PingRequest.linger``), so both engines (``--impl handrolled`` and ``reference``)
keep the same rule.

A bad checksum is reported as gather_statistics() words it ("(BAD CHECKSUM!)", "+N corrupted"),
which iputils 20221126 never reaches for IPv4 (it passes 0 for csfailed; fixed upstream in
bacf1b7, iputils 20240905).  Where this differs from iputils on purpose: a reply from
another address than the target is not counted (iputils prints it with "(DIFFERENT
ADDRESS!)"); ``-Q`` below 0 and a ``-I`` address of the other family are refused; ``-w``
takes fractions of a second.

Run it as ``python -m handrolled.ping HOST`` (or ``python -m handrolled.cli.ping``).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import time
from collections.abc import Callable

from handrolled import names
from handrolled.cli.common import EXIT_ERROR, Parser, jsonable, printable, run_module
from handrolled.cli.ping_statistics import (
    IputilsStats,
    bad_checksum,
    iputils_stats,
    statistics_lines,
    whole_us,
)
from handrolled.errors import UsageError, WiretwinError
from handrolled.icmp import Icmp6Type, IcmpType, TimeExceededCode
from handrolled.ping import LOCAL_EMSGSIZE, run_ping
from handrolled.ping_stats import summarize
from handrolled.record import replace
from handrolled.requests import PING_MAX_PATTERN, PING_TIMESTAMP_SIZE, PingRequest
from handrolled.results import Outcome, PingResult, Probe

__all__ = [
    "IputilsStats",
    "describe_error",
    "iputils_stats",
    "main",
    "parse_pattern",
    "parse_tos",
    "request_from_args",
]

Runner = Callable[..., PingResult]
MIN_USER_INTERVAL = 0.002  # iputils' MINUSERINTERVAL (2 ms): the fastest a non-root user may go
MAXWAIT = 10.0  # iputils' default linger time (-W), seconds
TOS_MAX = 255

# iputils' wording for ICMP destination unreachable codes (RFC 792, RFC 1812 §5.2.7.1).
_UNREACH4 = {
    0: "Destination Net Unreachable",
    1: "Destination Host Unreachable",
    2: "Destination Protocol Unreachable",
    3: "Destination Port Unreachable",
    4: "Frag needed and DF set",
    5: "Source Route Failed",
    6: "Destination Net Unknown",
    7: "Destination Host Unknown",
    8: "Source Host Isolated",
    9: "Destination Net Prohibited",
    10: "Destination Host Prohibited",
    11: "Destination Net Unreachable for Type of Service",
    12: "Destination Host Unreachable for Type of Service",
    13: "Packet filtered",
    14: "Precedence Violation",
    15: "Precedence Cutoff",
}
# ... and for ICMPv6 destination unreachable codes (RFC 4443 §3.1).
_UNREACH6 = {
    0: "Destination unreachable: No route",
    1: "Destination unreachable: Administratively prohibited",
    2: "Destination unreachable: Beyond scope of source address",
    3: "Destination unreachable: Address unreachable",
    4: "Destination unreachable: Port unreachable",
    5: "Destination unreachable: Source address failed ingress/egress policy",
    6: "Destination unreachable: Reject route to destination",
}


def describe_error(probe: Probe, v6: bool) -> str:
    """iputils' wording for an ICMP error outcome."""
    t, c = probe.icmp_type, probe.icmp_code or 0
    if probe.outcome is Outcome.TIME_EXCEEDED:
        ttl = c == TimeExceededCode.TTL
        if v6:
            return "Time exceeded: Hop limit" if ttl else "Time exceeded: Defragmentation failure"
        return "Time to live exceeded" if ttl else "Frag reassembly time exceeded"
    if v6:
        if t == Icmp6Type.PACKET_TOO_BIG:  # RFC 4443 §3.2: the MTU of the next-hop link
            return f"Packet too big: mtu={probe.mtu or 0}" + (f", code={c}" if c else "")
        if t == Icmp6Type.PARAMETER_PROBLEM:
            return "Parameter problem"
        return _UNREACH6.get(c, f"Destination unreachable: Unknown code {c}")
    if t == IcmpType.PARAMETER_PROBLEM:
        return "Parameter problem"
    if c == 4:  # RFC 1191 §4: frag-needed carries the next-hop MTU
        return f"{_UNREACH4[c]} (mtu = {probe.mtu or 0})"
    return _UNREACH4.get(c, f"Dest Unreachable, Bad Code: {c}")


def _format_us(us: int) -> str:
    # gather_statistics(): 3 decimals under 1 ms, 2 under 10, 1 under 100, then none.
    if us >= 100000 - 50:
        return f"{(us + 500) // 1000}"
    if us >= 10000 - 5:
        return f"{(us + 50) // 1000}.{((us + 50) % 1000) // 100:01d}"
    if us >= 1000:
        return f"{(us + 5) // 1000}.{((us + 5) % 1000) // 10:02d}"
    return f"{us // 1000}.{us % 1000:03d}"


def parse_pattern(text: str) -> bytes:
    """-p as iputils' fill(): hex digits only, read two at a time (a last odd digit is a byte
    of its own), at most 16 bytes used."""
    for i, c in enumerate(text):
        if c not in "0123456789abcdefABCDEF":
            raise UsageError(f"patterns must be specified as hex digits: {text[i:]}")
    pairs = [text[i : i + 2] for i in range(0, len(text), 2)][:PING_MAX_PATTERN]
    return bytes(int(p, 16) for p in pairs)


_DECIMAL = re.compile(r"\s*[+-]?[0-9]*")
_HEX = re.compile(r"\s*[+-]?[0-9a-fA-F]*")


def parse_tos(text: str) -> int:
    """-Q as iputils' parsetos(): 0x-prefixed hex or decimal (strtol: empty digits are 0)."""
    hexa = text[:2] in ("0x", "0X")
    digits = text[2:] if hexa else text
    if (_HEX if hexa else _DECIMAL).fullmatch(digits) is None:
        raise UsageError(f"bad TOS value: {text}")
    body = digits.strip()
    value = int(body, 16 if hexa else 10) if body.lstrip("+-") else 0
    if not 0 <= value <= TOS_MAX:
        # iputils lets a negative value through to setsockopt; we hold it to its own message
        raise UsageError(f"the decimal value of TOS bits must be in range 0-255: {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="ping", description="Hand-rolled ICMP ping (iputils-style options).")
    p.add_argument("host")
    p.add_argument("-c", dest="count", type=int, default=None, help="stop after N replies")
    p.add_argument("-i", dest="interval", type=float, default=None, help="seconds between probes")
    p.add_argument(
        "-W", dest="linger", type=float, default=MAXWAIT,
        help="seconds to wait for a response when none came (default 10; 0: no limit)",
    )  # fmt: skip
    p.add_argument("-w", dest="deadline", type=float, default=None, help="stop after N seconds")
    p.add_argument("-s", dest="size", type=int, default=None, help="payload bytes (default 56)")
    p.add_argument("-t", dest="ttl", type=int, default=None, help="IP TTL / hop limit")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=4, help="IPv4 only")
    fam.add_argument("-6", dest="family", action="store_const", const=6, help="IPv6 only")
    p.add_argument("-q", dest="quiet", action="store_true", help="only the summary")
    p.add_argument("-n", dest="numeric", action="store_true", help="no reverse name lookups")
    p.add_argument("-p", dest="pattern", default=None, help="fill the payload with these hex bytes")
    p.add_argument("-D", dest="timestamps", action="store_true", help="print [epoch] per line")
    p.add_argument("-O", dest="outstanding", action="store_true", help="report missing replies")
    p.add_argument("-Q", dest="tos", default=None, help="IP TOS / traffic class (dec or 0xhex)")
    p.add_argument("-I", dest="iface", default=None, help="interface name or source address")
    p.add_argument("-a", dest="audible", action="store_true", help="bell on each reply")
    p.add_argument("-U", dest="latency", action="store_true", help="time in user space")
    p.add_argument("-f", dest="flood", action="store_true", help="flood ping (root only)")
    p.add_argument("-M", dest="pmtudisc", default=None, help="path MTU discovery: do, want, dont")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--socket", dest="socket_kind", choices=("auto", "raw", "dgram"), default="auto")
    p.add_argument("--ident", type=int, default=None, help="echo identifier (default: pid)")
    return p


def _source_and_device(value: str | None) -> tuple[str | None, str | None]:
    """-I as iputils reads it: an address with ':' is IPv6 (``addr%dev`` names the device too),
    an IPv4 literal is a source address, anything else a device name."""
    if value is None:
        return None, None
    if ":" in value:
        addr, _, dev = value.partition("%")
        if _address_version(addr) != 6:
            raise UsageError(f"invalid source address: {value}")
        return addr, dev or None
    if _address_version(value) == 4:
        return value, None
    return None, value


def _address_version(text: str) -> int | None:
    import ipaddress

    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return None


def request_from_args(args: argparse.Namespace) -> PingRequest:
    """The request the options describe (validated: a bad value raises UsageError)."""
    interval = args.interval
    if interval is None:
        interval = 0.0 if args.flood else 1.0  # iputils setup(): -f without -i is -i 0
    source, device = _source_and_device(args.iface)
    pattern = parse_pattern(args.pattern) if args.pattern is not None else None
    return PingRequest(
        args.host,
        count=args.count,
        interval=interval,
        linger=args.linger,  # iputils' -W, not a per-probe timeout; 0: no limit
        deadline=args.deadline,
        size=args.size,
        ttl=args.ttl,
        family=args.family,
        ident=args.ident,
        socket_kind=args.socket_kind,
        pattern=pattern or None,
        tos=parse_tos(args.tos) if args.tos is not None else None,
        source=source,
        interface=device,
        user_latency=args.latency,
        pmtu_discovery=args.pmtudisc,
    )


def _icmp_part(data: bytes | None) -> bytes:
    """The ICMP message in a probe's bytes as sent or read (b"" when there are none).

    A raw IPv4 socket reads the IP header too, its length given by the IHL (RFC 791 §3.1); the
    scapy reference keeps the IPv6 header (40 octets, RFC 8200 §3).  An ICMP message alone
    starts with its type, which never has 4 or 6 in its high nibble for an echo (0, 8, 128,
    129) or an error (3, 11, 1, 3).
    """
    if not data:
        return b""
    if data[0] >> 4 == 4:
        return data[(data[0] & 0x0F) * 4 :]
    if data[0] >> 4 == 6:
        return data[40:]
    return data


def _wrong_byte(probe: Probe) -> tuple[int, int, int] | None:
    """iputils' data check: the first payload octet from 16 on that differs from the one sent,
    as (index, sent, got); None when they agree there."""
    sent, got = _icmp_part(probe.sent)[8:], _icmp_part(probe.received)[8:]
    for i in range(PING_TIMESTAMP_SIZE, len(sent)):
        if i >= len(got) or got[i] != sent[i]:
            return (i, sent[i], got[i] if i < len(got) else 0)
    return None


class _Printer:
    """Prints each probe as iputils does: reply and ``From`` lines, -D, -O, -a, -f's dots."""

    def __init__(self, args: argparse.Namespace, request: PingRequest, family: int) -> None:
        self.args = args
        self.request = request
        self.v6 = family == 6
        self.timing = request.payload_size >= PING_TIMESTAMP_SIZE
        self.collected: list[Probe] = []
        self.names: dict[str, str] = {}
        self.last_sent: int | None = None
        self.answered: set[int] = set()
        self.out = sys.stdout

    def who(self, addr: str) -> str:
        if self.args.numeric or self.args.flood:  # iputils: -f implies -n
            return addr
        if addr not in self.names:
            name = names.reverse_name(addr)
            self.names[addr] = f"{name} ({addr})" if name else addr
        return self.names[addr]

    def _stamp(self) -> str:
        if not self.args.timestamps:
            return ""
        sec, ns = divmod(time.time_ns(), 1_000_000_000)
        return f"[{sec}.{ns // 1000:06d}] "

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    @property
    def silent(self) -> bool:
        return self.args.quiet or self.args.json

    def sent(self, seq: int) -> None:
        """Called as each probe is about to go (pinger())."""
        waiting = self.last_sent is not None and self.last_sent not in self.answered
        if self.args.outstanding and waiting and not self.args.json:  # -q does not hide it
            self._write(f"{self._stamp()}no answer yet for icmp_seq={self.last_sent}\n")
        self.last_sent = seq
        if self.args.flood and not self.silent:
            self._write(".")

    def __call__(self, probe: Probe) -> None:
        self.collected.append(probe)
        bad_sum = bad_checksum(probe)
        if probe.outcome in (Outcome.REPLY, Outcome.CORRUPT) and not bad_sum:
            self.answered.add(probe.seq)
        if self.silent:
            return
        if self.args.flood:
            self._flood(probe, bad_sum)
        elif probe.outcome in (Outcome.REPLY, Outcome.DUPLICATE, Outcome.CORRUPT):
            self._reply(probe, bad_sum)
        elif _local_error(probe):  # receive_error_msg(): SO_EE_ORIGIN_LOCAL, on stderr
            sep = ": " if self.v6 else "="  # ping6_common.c says "mtu: N", ping.c "mtu=N"
            sys.stderr.write(f"ping: {probe.note}, mtu{sep}{probe.mtu or 0}\n")
            sys.stderr.flush()
        elif probe.outcome in (Outcome.TIME_EXCEEDED, Outcome.UNREACHABLE):
            self._write(
                f"{self._stamp()}From {self.who(probe.reply_from or '?')} "
                f"icmp_seq={probe.seq} {describe_error(probe, self.v6)}\n"
            )

    def _flood(self, probe: Probe, bad_sum: bool) -> None:
        bell = "\a" if self.args.audible else ""
        if _local_error(probe):
            self._write("E")  # receive_error_msg() writes no backspace for a local error
        elif probe.outcome in (Outcome.TIME_EXCEEDED, Outcome.UNREACHABLE):
            self._write("\bE")
        elif bad_sum:
            self._write("\bC" + bell)
        elif probe.outcome in (Outcome.REPLY, Outcome.DUPLICATE, Outcome.CORRUPT):
            self._write("\b \b" + bell)

    def _reply(self, probe: Probe, bad_sum: bool) -> None:
        icmp = _icmp_part(probe.received)
        size = len(icmp) or 8 + self.request.payload_size
        line = (
            f"{self._stamp()}{size} bytes from {self.who(probe.reply_from or self.request.host)}:"
            f" icmp_seq={probe.seq}"
        )
        if probe.reply_ttl is not None:
            line += f" ttl={probe.reply_ttl}"
        if size < self.request.payload_size + 8:
            self._write(line + " (truncated)\n")
            return
        if self.timing:
            line += f" time={_format_us(whole_us(probe.rtt_ms))} ms"
        if probe.outcome is Outcome.DUPLICATE:
            line += " (DUP!)"
        if bad_sum:
            line += " (BAD CHECKSUM!)"
        elif probe.outcome is Outcome.CORRUPT and (wrong := _wrong_byte(probe)) is not None:
            at, want, got = wrong
            line += f"\nwrong data byte #{at} should be 0x{want:x} but was 0x{got:x}"
            data = icmp[8:]
            for i in range(PING_TIMESTAMP_SIZE, self.request.payload_size):
                if i % 32 == PING_TIMESTAMP_SIZE:
                    line += f"\n#{i}\t"
                line += f"{data[i] if i < len(data) else 0:x} "
        if self.args.audible:
            line += "\a"
        self._write(line + "\n")


def _local_error(probe: Probe) -> bool:
    """A send the kernel refused past the path MTU (EMSGSIZE), not an ICMP error."""
    return probe.outcome is Outcome.UNREACHABLE and probe.note == LOCAL_EMSGSIZE


def _exit_status(stats: IputilsStats, request: PingRequest) -> int:
    # finish(): !nreceived || (deadline && nreceived < npackets)
    if not stats.received:
        return 1
    if request.deadline is not None and stats.received < (request.count or 0):
        return 1
    return 0


def _header(args: argparse.Namespace, request: PingRequest, address: str, family: int) -> str:
    size = request.payload_size
    source = ""
    # ping4_run()/ping6_run() connect a probe socket (through the device) to find the source,
    # and bind the source, before the header: no route or a foreign address ends it there.
    if request.source is not None:
        names.check_source_address(request.source, family)
    src = names.source_address_via(address, family, request.interface)
    if request.source is not None or request.interface is not None:
        source = f"from {request.source or src} {request.interface or ''}: "
    if family == 6:  # ping6_run(): the target as typed, then pr_addr() of its address
        shown = address if args.numeric or args.flood else _Printer(args, request, 6).who(address)
        return f"PING {args.host}({shown}) {source}{size} data bytes"
    name = _hostname(args.host, family)
    return f"PING {name} ({address}) {source}{size}({size + 28}) bytes of data."


@functools.lru_cache(maxsize=4)
def _hostname(host: str, family: int) -> str:
    """ping4_run()'s hostname: an address literal as typed, else the ai_canonname of the first
    IPv4 answer of a dual-stack AI_CANONNAME lookup, which glibc sets on the first answer only
    (so a name whose IPv6 answer comes first prints as "PING  (addr)", as iputils does)."""
    import socket

    if family == 6 or _address_version(host) == 4:
        return host
    try:
        infos = socket.getaddrinfo(
            names.idna_encoded(host), None, socket.AF_UNSPEC, socket.SOCK_DGRAM, socket.IPPROTO_UDP,
            socket.AI_CANONNAME,
        )  # fmt: skip
    except (OSError, UnicodeError):
        return host
    for info in infos:
        if info[0] == socket.AF_INET:
            return info[3]
    return host


def main(argv: list[str] | None = None, runner: Runner | None = None) -> int:
    """``ping`` CLI: 0 if replies came back as asked, 1 if not, 2 on error (iputils' rule)."""
    runner = runner or run_ping
    out = sys.stdout
    try:
        args = _parser().parse_args(argv)
        request = request_from_args(args)
        address, family = names.resolve(request.host, request.family)
        request.check_fits(family)
        # Resolved once, here: the engine pings the address the header names.
        request = replace(request, host=address, family=family)
        if args.pattern is not None and not args.quiet and not args.json:
            print(f"PATTERN: 0x{(request.pattern or b'').hex()}", file=out)
        header = _header(args, request, address, family)
        if not args.json:  # -q keeps the header, as iputils
            print(header, file=out)
            out.flush()
        if request.interval < MIN_USER_INTERVAL and os.getuid() != 0:
            # iputils setup(), after the header: only root may go faster than 2 ms (and flood)
            raise UsageError("cannot flood; minimal interval allowed for user is 2ms")
        printer = _Printer(args, request, family)
        result: PingResult | None
        try:
            result = runner(request, on_probe=printer, on_send=printer.sent)
            probes, started = result.probes, result.started_ns
        except KeyboardInterrupt as exc:
            result = getattr(exc, "partial_result", None)
            if result is not None:
                probes, started = result.probes, result.started_ns
            else:
                probes, started = tuple(printer.collected), 0
    except KeyboardInterrupt:  # before anything was sent (resolving, the header): quietly
        sys.stdout.flush()
        return 130
    except BrokenPipeError:
        raise  # the reader left (``| head``): common.run_module ends quietly
    except (WiretwinError, OSError) as exc:
        sys.stdout.flush()
        print(f"ping: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    stats = iputils_stats(probes, started)
    if args.json:
        doc = jsonable(result) if result is not None else {"summary": jsonable(summarize(probes))}
        if isinstance(doc, dict):
            doc["target"] = args.host
        import json  # only here: ~1.5 ms of every start otherwise

        print(json.dumps(doc, indent=2), file=out)
    else:
        fast = request.interval == 0 or args.flood
        name = _hostname(args.host, family)  # finish() names rts->hostname, as the header
        lines = statistics_lines(name, stats, timing=printer.timing, fast=fast)
        print("\n" + "\n".join(lines), file=out)
    return _exit_status(stats, request)


if __name__ == "__main__":
    sys.exit(run_module(main))
