"""``ping`` on the command line: iputils-shaped options, output lines and exit codes.

``main(argv=None, runner=None) -> int`` parses argv into a ``PingRequest``, resolves the host
once (the ``PING`` header names the address that is pinged), hands the request to ``runner``
(``handrolled.ping.run_ping`` by default; ``wiretwin ping --impl reference`` passes
``reference.ping.run_ping``) and prints each probe as it settles, then iputils' statistics.
Exit codes as iputils: 0 if any reply came back, 1 if none, 2 on bad input or an error.

Run it as ``python -m handrolled.ping HOST`` (or ``python -m handrolled.cli.ping``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable

from handrolled import net
from handrolled.cli.common import EXIT_ERROR, Parser, jsonable, run_module
from handrolled.errors import WiretwinError
from handrolled.icmp import Icmp6Type, IcmpType, TimeExceededCode
from handrolled.ping import run_ping, summarize
from handrolled.requests import PingRequest
from handrolled.results import Outcome, PingResult, PingSummary, Probe

__all__ = ["describe_error", "main", "request_from_args"]

Runner = Callable[..., PingResult]

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
        if t == Icmp6Type.PACKET_TOO_BIG:
            return "Packet too big"
        if t == Icmp6Type.PARAMETER_PROBLEM:
            return "Parameter problem"
        return _UNREACH6.get(c, f"Destination unreachable: Unknown code {c}")
    if t == IcmpType.PARAMETER_PROBLEM:
        return "Parameter problem"
    return _UNREACH4.get(c, f"Dest Unreachable, Bad Code: {c}")


def _format_ms(rtt_ms: float) -> str:
    # iputils' precision rule: 3 decimals under 1 ms, 2 under 10, 1 under 100, then none.
    us = round(rtt_ms * 1000)
    if us >= 100000 - 50:
        return f"{(us + 500) // 1000}"
    if us >= 10000 - 5:
        return f"{rtt_ms:.1f}"
    if us >= 1000:
        return f"{rtt_ms:.2f}"
    return f"{rtt_ms:.3f}"


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="ping", description="Hand-rolled ICMP ping (iputils-style options).")
    p.add_argument("host")
    p.add_argument("-c", dest="count", type=int, default=None, help="probes to send (default 4)")
    p.add_argument("-i", dest="interval", type=float, default=1.0, help="seconds between probes")
    p.add_argument("-W", dest="timeout", type=float, default=1.0, help="seconds to wait per reply")
    p.add_argument("-w", dest="deadline", type=float, default=None, help="stop after N seconds")
    p.add_argument("-s", dest="size", type=int, default=None, help="payload bytes (default 56)")
    p.add_argument("-t", dest="ttl", type=int, default=None, help="IP TTL / hop limit")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=4, help="IPv4 only")
    fam.add_argument("-6", dest="family", action="store_const", const=6, help="IPv6 only")
    p.add_argument("-q", dest="quiet", action="store_true", help="only the summary")
    p.add_argument("-n", dest="numeric", action="store_true", help="no reverse name lookups")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--socket", dest="socket_kind", choices=("auto", "raw", "dgram"), default="auto")
    p.add_argument("--ident", type=int, default=None, help="echo identifier (default: pid)")
    return p


def request_from_args(args: argparse.Namespace) -> PingRequest:
    """The request the options describe (validated: a bad value raises UsageError)."""
    request = PingRequest(
        args.host,
        count=4 if args.count is None else args.count,
        interval=args.interval,
        timeout=args.timeout,
        deadline=args.deadline,
        size=args.size,
        ttl=args.ttl,
        family=args.family,
        ident=args.ident,
        socket_kind=args.socket_kind,
    )
    if args.count is None and request.deadline is not None:
        # iputils pings forever without -c; we stay bounded: -w's worth of probes (the
        # request has checked deadline and interval, so this is a finite number).
        count = int(request.deadline / max(request.interval, 0.001)) + 1
        request = dataclasses.replace(request, count=count)
    return request


def _icmp_length(received: bytes | None) -> int:
    """Length of the ICMP message in a reply's bytes as read (0 when there are none).

    A raw IPv4 socket reads the IP header too, its length given by the IHL (RFC 791 §3.1); a
    datagram socket, or ICMPv6, reads the ICMP message alone, whose type octet (an echo reply:
    0 or 129) never has 4 in its high nibble as an IPv4 header's first octet does.
    """
    if not received:
        return 0
    if received[0] >> 4 == 4:
        return max(len(received) - (received[0] & 0x0F) * 4, 0)
    return len(received)


def _statistics_lines(host: str, summary: PingSummary, elapsed_ms: float) -> list[str]:
    parts = [f"{summary.transmitted} packets transmitted", f"{summary.received} received"]
    if summary.duplicates:
        parts.append(f"+{summary.duplicates} duplicates")
    if summary.errors:
        parts.append(f"+{summary.errors} errors")
    parts.append(f"{summary.loss_percent:g}% packet loss")
    parts.append(f"time {elapsed_ms:.0f}ms")
    lines = ["", f"--- {host} ping statistics ---", ", ".join(parts)]
    if summary.received:
        lines.append(
            f"rtt min/avg/max/mdev = {summary.min_ms:.3f}/{summary.avg_ms:.3f}/"
            f"{summary.max_ms:.3f}/{summary.mdev_ms:.3f} ms"
        )
    return lines


class _Printer:
    """Prints each settled probe as iputils does (``64 bytes from ...``, ``From ... icmp_seq``)."""

    def __init__(self, args: argparse.Namespace, request: PingRequest) -> None:
        self.args = args
        self.request = request
        self.v6 = request.family == 6
        self.collected: list[Probe] = []
        self.names: dict[str, str] = {}

    def who(self, addr: str) -> str:
        if self.args.numeric:
            return addr
        if addr not in self.names:
            name = net.reverse_name(addr)
            self.names[addr] = f"{name} ({addr})" if name else addr
        return self.names[addr]

    def __call__(self, probe: Probe) -> None:
        self.collected.append(probe)
        if self.args.quiet or self.args.json:
            return
        out = sys.stdout
        if probe.outcome in (Outcome.REPLY, Outcome.DUPLICATE, Outcome.CORRUPT):
            size = _icmp_length(probe.received) or 8 + self.request.payload_size
            line = (
                f"{size} bytes from {self.who(probe.reply_from or self.request.host)}: "
                f"icmp_seq={probe.seq} ttl={probe.reply_ttl} "
                f"time={_format_ms(probe.rtt_ms or 0.0)} ms"
            )
            if probe.outcome is Outcome.DUPLICATE:
                line += " (DUP!)"
            elif probe.outcome is Outcome.CORRUPT:
                line += f" ({probe.note.upper() if 'checksum' in probe.note else probe.note})"
            print(line, file=out)
        elif probe.outcome in (Outcome.TIME_EXCEEDED, Outcome.UNREACHABLE):
            print(
                f"From {self.who(probe.reply_from or '?')} icmp_seq={probe.seq} "
                f"{describe_error(probe, self.v6)}",
                file=out,
            )
        out.flush()


def main(argv: list[str] | None = None, runner: Runner | None = None) -> int:
    """``ping`` CLI: 0 if any reply came back, 1 if none, 2 on error."""
    runner = runner or run_ping
    out = sys.stdout
    try:
        args = _parser().parse_args(argv)
        request = request_from_args(args)
        address, family = net.resolve(request.host, request.family)
        request.check_fits(family)
        # Resolved once, here: the engine pings the address the header names.
        request = dataclasses.replace(request, host=address, family=family)
        size = request.payload_size
        if not args.quiet and not args.json:
            if family == 6:
                print(f"PING {args.host} ({address}) {size} data bytes", file=out)
            else:
                print(f"PING {args.host} ({address}) {size}({size + 28}) bytes of data.", file=out)
            out.flush()
        printer = _Printer(args, request)
        result: PingResult | None
        try:
            result = runner(request, on_probe=printer)
            summary, elapsed = result.summary, result.elapsed_ms
        except KeyboardInterrupt as exc:
            result = getattr(exc, "partial_result", None)
            if result is not None:
                summary, elapsed = result.summary, result.elapsed_ms
            else:
                summary, elapsed = summarize(printer.collected), 0.0
    except BrokenPipeError:
        raise  # the reader left (``| head``): common.run_module ends quietly
    except (WiretwinError, OSError) as exc:
        print(f"ping: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        doc = jsonable(result) if result is not None else {}
        if isinstance(doc, dict):
            doc["target"] = args.host
        print(json.dumps(doc, indent=2), file=out)
    else:
        print("\n".join(_statistics_lines(args.host, summary, elapsed)), file=out)
    return 0 if summary.received else 1


if __name__ == "__main__":
    sys.exit(run_module(main))
