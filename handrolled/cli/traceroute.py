"""``traceroute``'s command line: traceroute(8)'s flags, header and hop lines, JSON, exit codes.

``main(argv=None, runner=None) -> int`` parses argv into a ``TraceRequest`` (which checks every
option before anything is sent or printed), runs it with ``runner`` (the hand-rolled engine,
``handrolled.traceroute.run_trace``, by default; ``wiretwin traceroute --impl reference``
passes the scapy one) and prints each hop as it completes.  Exit status as traceroute 2.1's:
0 once the trace is done, whether or not it reached the destination (its main() returns 0
after do_it(), past !H, !N or a silent path alike); 2 bad input, an unknown host included
(ex_error() and CLIF_parse()); 1 when the OS refuses a socket, a device, a source address or a
send (error() after the system call); an error is one line on stderr.

Run it as ``python -m handrolled.cli.traceroute`` or ``python -m handrolled.traceroute``.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable

from handrolled.cli.common import EXIT_ERROR, Parser, jsonable, run_module
from handrolled.errors import ResolveError, UsageError, WiretwinError
from handrolled.icmp import Icmp6Type, IcmpType
from handrolled.record import Record, replace
from handrolled.requests import TRACE_DEFAULT_WAIT, TraceRequest
from handrolled.results import Hop, Method, Outcome, Probe, TraceResult

__all__ = [
    "EXIT_OS_ERROR",
    "EXIT_TRACED",
    "annotation",
    "backward_hops",
    "format_branches",
    "format_header",
    "format_hop",
    "format_multipath_end",
    "main",
    "packet_length",
    "parse_sendwait",
    "parse_wait",
    "request_from_args",
    "resolve_like_traceroute8",
    "result_to_json",
]

EXIT_TRACED = 0  # traceroute(8): any trace that ran to its end, reached or not
EXIT_OS_ERROR = 1  # traceroute(8)'s error(): a system call refused (perror, exit 1)

# ICMP destination-unreachable codes -> traceroute(8)'s annotations (RFC 792, RFC 1812 §5.2.7.1)
_UNREACH4 = {
    0: "!N",
    1: "!H",
    2: "!P",
    3: "",  # port unreachable: the destination itself answered
    4: "!F",
    5: "!S",
    6: "!N",
    7: "!H",
    9: "!X",
    10: "!X",
    11: "!N",
    12: "!H",
    13: "!X",
    14: "!V",
    15: "!C",
}
# ICMPv6 destination-unreachable codes (RFC 4443 §3.1)
_UNREACH6 = {0: "!N", 1: "!X", 2: "!H", 3: "!H", 4: ""}


def annotation(icmp_type: int | None, code: int | None, v6: bool) -> str:
    """traceroute(8)'s mark for an ICMP error: ``!H !N !P !X ...`` or ``!<code>``; "" if none."""
    if icmp_type is None or code is None:
        return ""
    if icmp_type != (Icmp6Type.DEST_UNREACHABLE if v6 else IcmpType.DEST_UNREACHABLE):
        return ""
    marks = _UNREACH6 if v6 else _UNREACH4
    return marks.get(code, f"!<{code}>")


# What C's strtod() reads at the start of a string: decimal or hex floats, inf, nan
_STRTOD = (
    r"[ \t\n\v\f\r]*[+-]?(?:0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?"
    r"|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)"
)


@functools.cache
def _strtod_pattern() -> re.Pattern[str]:
    return re.compile(_STRTOD, re.IGNORECASE)  # compiled when -w or -z is given, not at start-up


def _strtod(text: str, pos: int) -> tuple[float, int]:
    """(value, end) like ``strtod(text + pos, &end)``; ValueError when no number is there."""
    match = _strtod_pattern().match(text, pos)
    if match is None:
        raise ValueError(text[pos:])
    number = match.group().strip()
    sign, digits = (number[0], number[1:]) if number[:1] in "+-" else ("", number)
    if digits[:2].lower() == "0x":
        value = float.fromhex(number if "p" in digits.lower() else number + "p0")
    else:
        value = float(sign + digits)
    return value, match.end()


def parse_wait(text: str) -> tuple[float, float, float]:
    """traceroute(8) 2.1's -w ``MAX[,HERE[,NEAR]]`` (its set_wait_specs()).

    HERE and NEAR start at 0: ``-w 2`` is a fixed 2-second wait, ``-w 2,3`` leaves NEAR off,
    only ``-w 5,3,10`` sets all three.  Any one character separates the numbers ("," and "/"
    are the documented ones).  Only the numbers are read here: their ranges are
    TraceRequest's rules.
    """
    values = [0.0, 0.0, 0.0]
    pos = 0
    try:
        for i in range(3):
            values[i], pos = _strtod(text, pos)
            if pos == len(text):
                return values[0], values[1], values[2]
            pos += 1  # the separator
    except ValueError:
        pass
    raise UsageError(f"wait {text!r}: expected MAX[,HERE,NEAR]")


def parse_sendwait(text: str) -> float:
    """traceroute(8)'s -z: seconds, or milliseconds when 10 or more; a negative one is bad."""
    try:
        value, end = _strtod(text, 0)
    except ValueError:
        value, end = 0.0, -1
    if end != len(text):
        raise UsageError(f"sendwait {text!r}: not a number")
    if value < 0:
        raise UsageError(f"bad sendtime {text!r} specified")  # traceroute(8)'s words
    return value / 1000.0 if value >= 10 else value


def backward_hops(reply_ttl: int) -> int:
    """traceroute(8)'s ttl2hops(): hops back, guessing an initial TTL of 64, 128 or 255."""
    return (65 if reply_ttl <= 64 else 129 if reply_ttl <= 128 else 256) - reply_ttl


def packet_length(method: Method, family: int, payload_len: int) -> int:
    """The IP datagram length traceroute(8) prints in its header line."""
    ip = 40 if family == 6 else 20
    return ip + (20 if method is Method.TCP else 8) + payload_len


def format_header(target: str, address: str, max_hops: int, length: int) -> str:
    """traceroute(8)'s first line."""
    return f"traceroute to {target} ({address}), {max_hops} hops max, {length} byte packets"


def _is_v6(probe: Probe) -> bool:
    return probe.reply_from is not None and ":" in probe.reply_from


def format_hop(hop: Hop, *, numeric: bool = False, back: bool = False) -> str:
    """One line in traceroute(8)'s shape: `` 3  name (addr)  1.234 ms  1.301 ms !X``.

    ``back`` (--back): after an address, `` '-N'`` when the reply's TTL says it came back over
    N hops and N is not the probe's TTL; the address is then repeated whenever the reply TTL
    changes (traceroute(8)'s print_probe()).
    """
    parts = [f"{hop.ttl:2d} "]
    previous: Probe | None = None
    for probe in hop.probes:
        if probe.reply_from is None or probe.rtt_ms is None:
            parts.append(" *")
            continue
        changed = previous is None or probe.reply_from != previous.reply_from
        if back and previous is not None and probe.reply_ttl != previous.reply_ttl:
            changed = True
        if changed:
            if numeric:
                parts.append(f" {probe.reply_from}")
            else:
                parts.append(f" {probe.reply_name or probe.reply_from} ({probe.reply_from})")
            if back and probe.reply_ttl:
                hops_back = backward_hops(probe.reply_ttl)
                if hops_back != hop.ttl:
                    parts.append(f" '-{hops_back}'")
        previous = probe
        parts.append(f"  {probe.rtt_ms:.3f} ms")
        if probe.mtu:  # --mtu: this probe was sized to a newly learnt path MTU
            parts.append(f" F={probe.mtu}")
        mark = annotation(probe.icmp_type, probe.icmp_code, _is_v6(probe))
        if probe.outcome is Outcome.UNREACHABLE and mark:
            parts.append(f" {mark}")
    return "".join(parts)


def result_to_json(result: TraceResult, confidence: float | None = None) -> dict:
    """The whole TraceResult as JSON-ready data (bytes as hex, enums by value); with
    ``confidence`` (--multipath) also, per TTL, its addresses and the probes spent there."""
    data = jsonable(result)
    assert isinstance(data, dict)
    if confidence is not None:
        data["multipath"] = {
            "confidence": confidence,
            "probes": sum(len(hop.probes) for hop in result.hops),
            "hops": [
                {
                    "ttl": hop.ttl,
                    "addresses": sorted({p.reply_from for p in hop.probes if p.reply_from}),
                    "probes": len(hop.probes),
                }
                for hop in result.hops
            ],
        }
    return data


def format_branches(hop: Hop, *, numeric: bool = False) -> str:
    """--multipath: every next hop the TTL showed, its fastest RTT and its flows, then the
    probes spent: `` 3  a (a)  1.234 ms [5 flows] | b (b)  1.301 ms [6 flows]  (11 probes)``."""
    seen: dict[str, list[Probe]] = {}
    for probe in hop.probes:
        if probe.reply_from is not None and probe.rtt_ms is not None:
            seen.setdefault(probe.reply_from, []).append(probe)
    parts = []
    for address, probes in seen.items():
        name = address if numeric else f"{probes[0].reply_name or address} ({address})"
        best = min(p.rtt_ms for p in probes if p.rtt_ms is not None)
        flows = len({p.flow for p in probes})
        parts.append(f"{name}  {best:.3f} ms [{flows} flow{'s' if flows != 1 else ''}]")
    lost = sum(1 for p in hop.probes if p.reply_from is None)
    if lost or not parts:
        parts.append("*" * min(max(lost, 1), 3))
    return f"{hop.ttl:2d}  {' | '.join(parts)}  ({len(hop.probes)} probes)"


def format_multipath_end(result: TraceResult, confidence: float) -> str:
    """The closing line of a --multipath trace: probes spent and the stopping rule."""
    from handrolled.paths import stopping_table

    table = ", ".join(str(n) for n in stopping_table(confidence, 5))
    spent = sum(len(hop.probes) for hop in result.hops)
    return (
        f"multipath: {spent} probes; every TTL's next hops found with {confidence:.0%}"
        f" confidence (MDA stopping rule n_1..n_5 = {table})"
    )


def resolve_like_traceroute8(host: str, family: int | None) -> tuple[str, int]:
    """(address, family) of ``host``; without -4/-6 its IPv4 address when it has one, as
    traceroute(8) (man traceroute: "If resolving a host name returns both IPv4 and IPv6
    addresses, traceroute will use IPv4")."""
    from handrolled.errors import ResolveError
    from handrolled.names import resolve

    if family is None:
        try:
            return resolve(host, 4)
        except ResolveError:
            pass
    return resolve(host, family)  # type: ignore[arg-type]


def _parser() -> Parser:
    p = Parser(
        prog="traceroute",
        description="Hand-rolled traceroute (wiretwin).",
    )
    p.add_argument("host")
    p.add_argument(
        "packet_len", nargs="?", type=int, help="whole probe length in bytes (60; 80 for IPv6)"
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument("-I", "--icmp", dest="method", action="store_const", const=Method.ICMP)
    how.add_argument(
        "-U", "--udp", dest="method", action="store_const", const="udp-fixed",
        help="UDP to one port (53), not port + k per probe",
    )  # fmt: skip
    how.add_argument("-T", "--tcp", dest="method", action="store_const", const=Method.TCP)
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=4)
    fam.add_argument("-6", dest="family", action="store_const", const=6)
    p.add_argument("-p", "--port", type=int, help="UDP base port (33434), -U/-T port (53/80)")
    p.add_argument("-q", "--queries", type=int, default=3, help="probes per hop (3)")
    p.add_argument("-f", "--first", type=int, default=1, help="first TTL (1)")
    p.add_argument("-m", "--max-hops", type=int, default=30, help="max TTL (30)")
    p.add_argument("-N", "--sim-queries", type=int, default=16, help="probes in flight (16)")
    p.add_argument("-w", "--wait", help="MAX[,HERE,NEAR] (5,3,10; MAX alone: a fixed wait)")
    p.add_argument("-n", dest="numeric", action="store_true", help="no reverse DNS")
    p.add_argument("-F", "--dont-fragment", action="store_true", help="set DF, never fragment")
    p.add_argument("-s", "--source", help="source address")
    p.add_argument("-i", "--interface", help="send through this interface")
    p.add_argument("-t", "--tos", type=int, default=0, help="IPv4 TOS / IPv6 traffic class")
    p.add_argument("-z", "--sendwait", help="seconds between probes (10 or more: ms)")
    p.add_argument("--back", action="store_true", help="print backward hops when they differ")
    p.add_argument("--paris", action="store_true", help="one flow for the whole trace (ECMP)")
    p.add_argument(
        "--multipath", action="store_true", help="every next hop at each TTL (MDA, Paris flows)"
    )
    p.add_argument("--confidence", type=float, default=0.95, help="--multipath's (0.95)")
    p.add_argument("--mtu", action="store_true", help="discover the path MTU (F=N)")
    p.add_argument("--ident", type=int, help="ICMP identifier / source port")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(method=Method.UDP)  # traceroute(8)'s "default" method
    return p


class Output(Record):
    """How the command line prints (not part of the request)."""

    numeric: bool = False
    json: bool = False
    back: bool = False


# options that take a value; traceroute(8) takes the next word as it whatever it looks like
_VALUED = frozenset("pqfmNwsitz")
_VALUED_LONG = frozenset(
    [
        "--port",
        "--queries",
        "--first",
        "--max-hops",
        "--sim-queries",
        "--wait",
        "--source",
        "--interface",
        "--tos",
        "--sendwait",
        "--ident",
        "--confidence",
    ]
)


def _join_values(argv: list[str]) -> list[str]:
    """``-z -1`` as ``-z-1``: argparse reads a word like ``-1`` as an option of its own
    (this parser has -4 and -6), where traceroute(8) takes it as the value."""
    out: list[str] = []
    words = iter(argv)
    for word in words:
        valued = len(word) == 2 and word[0] == "-" and word[1] in _VALUED
        if valued or word in _VALUED_LONG:
            value = next(words, None)
            if value is not None and value.startswith("-"):
                word = f"{word}{'' if valued else '='}{value}"
            elif value is not None:
                out.append(word)
                word = value
        out.append(word)
    return out


def request_from_args(argv: list[str]) -> tuple[TraceRequest, Output]:
    """(request, output options) from the command line; ``UsageError`` for any bad option."""
    args = _parser().parse_args(_join_values(argv))
    fixed_port = args.method == "udp-fixed"  # traceroute(8)'s "udp" method, not its "default"
    request = TraceRequest(
        args.host,
        method=Method.UDP if fixed_port else args.method,
        fixed_port=fixed_port,
        port=args.port,
        probes_per_hop=args.queries,
        first_ttl=args.first,
        max_hops=args.max_hops,
        sim_queries=args.sim_queries,
        wait=TRACE_DEFAULT_WAIT if args.wait is None else parse_wait(args.wait),
        family=args.family,
        resolve=not args.numeric,
        ident=args.ident,
        packet_len=args.packet_len,
        dont_fragment=args.dont_fragment,
        tos=args.tos,
        source=args.source,
        interface=args.interface,
        send_wait=0.0 if args.sendwait is None else parse_sendwait(args.sendwait),
        paris=args.paris,
        multipath=args.multipath,
        confidence=args.confidence,
        mtu=args.mtu,
    )
    return request, Output(args.numeric, args.json, args.back)


def _error_status(exc: BaseException) -> int:
    """traceroute 2.1's two error exits: 2 from ex_error() and CLIF_parse() (a bad option or
    value, an unknown host: set_host() fails inside the parse), 1 from error() after a system
    call the OS refused (socket, bind, setsockopt SO_BINDTODEVICE, send)."""
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    if isinstance(cause, OSError) and not isinstance(cause, ResolveError):
        return EXIT_OS_ERROR
    return EXIT_ERROR


def main(argv: list[str] | None = None, runner: Callable[..., TraceResult] | None = None) -> int:
    """``traceroute [-I|-U|-T] [-4|-6] [-nF] [-q N] [-f N] [-m N] [-N N] [-w W] [-p P] [-s SRC]
    [-i IFACE] [-t TOS] [-z WAIT] [--back] HOST [PACKET_LEN]``; UDP probes by default.

    Exit status: 0 when the trace is done (reached or not, as traceroute 2.1), 2 bad input or
    an unknown host, 1 the OS refused a socket, device, source or send (one line on stderr).
    """
    out = sys.stdout
    try:
        request, opts = request_from_args(list(sys.argv[1:] if argv is None else argv))
        if runner is None:  # imported here: --help and bad options never pay for the engine
            from handrolled.traceroute import run_trace as runner
        on_hop = on_start = None
        address, fam = resolve_like_traceroute8(request.host, request.family)
        request = replace(request, family=fam)
        if not opts.json:
            length = packet_length(request.method, fam, request.data_len(fam))
            header = format_header(request.host, address, request.max_hops, length)
            request = replace(request, host=address, family=fam)  # as announced

            def on_start() -> None:  # once the sockets are open, as traceroute(8)
                print(header, file=out, flush=True)

            def on_hop(hop: Hop) -> None:
                if request.multipath:
                    line = format_branches(hop, numeric=opts.numeric)
                else:
                    line = format_hop(hop, numeric=opts.numeric, back=opts.back)
                print(line, file=out, flush=True)

        result = runner(request, on_hop=on_hop, on_start=on_start)
    except BrokenPipeError:  # the reader left (``| head``): run_module ends quietly
        raise
    except (WiretwinError, OSError) as exc:
        print(f"traceroute: {exc}", file=sys.stderr)
        return _error_status(exc)
    except KeyboardInterrupt:
        return 130
    confidence = request.confidence if request.multipath else None
    if opts.json:
        import json

        json.dump(result_to_json(result, confidence), out, indent=2)
        out.write("\n")
    elif confidence is not None:
        print(format_multipath_end(result, confidence), file=out)
    return EXIT_TRACED


if __name__ == "__main__":
    sys.exit(run_module(main))
