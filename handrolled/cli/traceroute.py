"""``traceroute``'s command line: traceroute(8)'s flags, header and hop lines, JSON, exit codes.

``main(argv=None, runner=None) -> int`` parses argv into a ``TraceRequest`` (which checks every
option before anything is sent or printed), runs it with ``runner`` (the hand-rolled engine,
``handrolled.traceroute.run_trace``, by default; ``wiretwin traceroute --impl reference``
passes the scapy one) and prints each hop as it completes.  Exit status: 0 the destination
answered, 1 it did not, 2 bad input or an error (one line on stderr).

Run it as ``python -m handrolled.cli.traceroute`` or ``python -m handrolled.traceroute``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable

from handrolled.cli.common import EXIT_ERROR, Parser, jsonable, run_module
from handrolled.errors import UsageError, WiretwinError
from handrolled.icmp import Icmp6Type, IcmpType
from handrolled.net import resolve as resolve_host
from handrolled.requests import TRACE_DEFAULT_WAIT, TraceRequest
from handrolled.results import Hop, Method, Outcome, Probe, TraceResult
from handrolled.traceroute import DEFAULT_PAYLOAD_SIZE, run_trace

__all__ = [
    "EXIT_NOT_REACHED",
    "EXIT_REACHED",
    "annotation",
    "format_header",
    "format_hop",
    "main",
    "packet_length",
    "parse_wait",
    "request_from_args",
    "result_to_json",
]

EXIT_REACHED = 0
EXIT_NOT_REACHED = 1

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


def parse_wait(text: str) -> tuple[float, float, float]:
    """Read ``MAX[,HERE[,NEAR]]`` (traceroute(8)'s -w, "," or "/" between); missing parts keep
    their defaults.  Only the numbers are read here: their ranges are TraceRequest's rules."""
    values = list(TRACE_DEFAULT_WAIT)
    parts = text.replace("/", ",").split(",")
    if len(parts) > 3:
        raise UsageError(f"wait {text!r}: expected MAX[,HERE[,NEAR]]")
    for i, part in enumerate(parts):
        try:
            values[i] = float(part)
        except ValueError:
            raise UsageError(f"wait {text!r}: {part!r} is not a number") from None
    return values[0], values[1], values[2]


def packet_length(method: Method, family: int, payload_len: int) -> int:
    """The IP datagram length traceroute(8) prints in its header line."""
    ip = 40 if family == 6 else 20
    return ip + (20 if method is Method.TCP else 8) + payload_len


def format_header(target: str, address: str, max_hops: int, length: int) -> str:
    """traceroute(8)'s first line."""
    return f"traceroute to {target} ({address}), {max_hops} hops max, {length} byte packets"


def _is_v6(probe: Probe) -> bool:
    return probe.reply_from is not None and ":" in probe.reply_from


def format_hop(hop: Hop, *, numeric: bool = False) -> str:
    """One line in traceroute(8)'s shape: `` 3  name (addr)  1.234 ms  1.301 ms !X``."""
    parts = [f"{hop.ttl:2d} "]
    previous: str | None = None
    for probe in hop.probes:
        if probe.reply_from is None or probe.rtt_ms is None:
            parts.append(" *")
            continue
        if probe.reply_from != previous:
            if numeric:
                parts.append(f" {probe.reply_from}")
            else:
                parts.append(f" {probe.reply_name or probe.reply_from} ({probe.reply_from})")
            previous = probe.reply_from
        parts.append(f"  {probe.rtt_ms:.3f} ms")
        mark = annotation(probe.icmp_type, probe.icmp_code, _is_v6(probe))
        if probe.outcome is Outcome.UNREACHABLE and mark:
            parts.append(f" {mark}")
    return "".join(parts)


def result_to_json(result: TraceResult) -> dict:
    """The whole TraceResult as JSON-ready data (bytes as hex, enums by value)."""
    data = jsonable(result)
    assert isinstance(data, dict)
    return data


def _parser() -> Parser:
    p = Parser(prog="traceroute", description="Hand-rolled traceroute (wiretwin).")
    p.add_argument("host")
    how = p.add_mutually_exclusive_group()
    how.add_argument("-I", "--icmp", dest="method", action="store_const", const=Method.ICMP)
    how.add_argument("-U", "--udp", dest="method", action="store_const", const=Method.UDP)
    how.add_argument("-T", "--tcp", dest="method", action="store_const", const=Method.TCP)
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=4)
    fam.add_argument("-6", dest="family", action="store_const", const=6)
    p.add_argument("-p", "--port", type=int, help="UDP base port (33434) or TCP port (80)")
    p.add_argument("-q", "--queries", type=int, default=3, help="probes per hop (3)")
    p.add_argument("-f", "--first", type=int, default=1, help="first TTL (1)")
    p.add_argument("-m", "--max-hops", type=int, default=30, help="max TTL (30)")
    p.add_argument("-N", "--sim-queries", type=int, default=16, help="probes in flight (16)")
    p.add_argument("-w", "--wait", default="5,3,10", help="MAX[,HERE,NEAR] (5,3,10)")
    p.add_argument("-n", dest="numeric", action="store_true", help="no reverse DNS")
    p.add_argument("--ident", type=int, help="ICMP identifier / source port")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(method=Method.ICMP)
    return p


def request_from_args(argv: list[str]) -> tuple[TraceRequest, bool, bool]:
    """(request, numeric, json) from the command line; ``UsageError`` for any bad option."""
    args = _parser().parse_args(argv)
    request = TraceRequest(
        args.host,
        method=args.method,
        port=args.port,
        probes_per_hop=args.queries,
        first_ttl=args.first,
        max_hops=args.max_hops,
        sim_queries=args.sim_queries,
        wait=parse_wait(args.wait),
        family=args.family,
        resolve=not args.numeric,
        ident=args.ident,
    )
    return request, args.numeric, args.json


def main(argv: list[str] | None = None, runner: Callable[..., TraceResult] | None = None) -> int:
    """``traceroute [-I|-U|-T] [-4|-6] [-n] [-q N] [-f N] [-m N] [-N N] [-w W] [-p P] HOST``.

    Exit status: 0 the destination answered, 1 it did not, 2 an error (one line on stderr).
    """
    runner = runner or run_trace
    out = sys.stdout
    try:
        request, numeric, as_json = request_from_args(list(sys.argv[1:] if argv is None else argv))
        on_hop = None
        if not as_json:
            address, fam = resolve_host(request.host, request.family)
            payload_len = 0 if request.method is Method.TCP else DEFAULT_PAYLOAD_SIZE
            length = packet_length(request.method, fam, payload_len)
            print(format_header(request.host, address, request.max_hops, length), file=out)
            out.flush()
            request = dataclasses.replace(request, host=address, family=fam)  # as announced

            def on_hop(hop: Hop) -> None:
                print(format_hop(hop, numeric=numeric), file=out, flush=True)

        result = runner(request, on_hop=on_hop)
    except BrokenPipeError:  # the reader left (``| head``): run_module ends quietly
        raise
    except (WiretwinError, OSError) as exc:
        print(f"traceroute: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    if as_json:
        json.dump(result_to_json(result), out, indent=2)
        out.write("\n")
    return EXIT_REACHED if result.reached else EXIT_NOT_REACHED


if __name__ == "__main__":
    sys.exit(run_module(main))
