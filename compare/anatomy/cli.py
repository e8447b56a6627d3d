"""`wiretwin anatomy`: the command line.

    wiretwin anatomy KIND [-6] [--ident N --seq N --payload TEXT ...]   built from parameters
    wiretwin anatomy --pcap FILE [--index N]                            packet N (1-based)
    wiretwin anatomy KIND --lab [-6] [--probe icmp|udp|tcp] [--hop N]   captured in the lab
    wiretwin anatomy --seed-skeleton [--ident N --seq N]
    wiretwin anatomy smtp --pcap FILE
    wiretwin anatomy --worksheet (--pcap FILE | --lab) [--save-pcap FILE]
    outputs: the terminal (default), --markdown, --json, --html FILE

Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

from compare.anatomy.build import KINDS, PROBES, Params, build
from handrolled.errors import UsageError, WiretwinError

EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(message)


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wiretwin anatomy", description="A packet's anatomy, bit by bit.")
    p.add_argument("kind", nargs="?", help=f"{', '.join(KINDS)}, or smtp (with --pcap)")
    p.add_argument("-6", dest="v6", action="store_true", help="IPv6 / ICMPv6")
    p.add_argument("--ident", type=_int, default=1, help="ICMP identifier / source port")
    p.add_argument("--seq", type=_int, default=1, help="sequence number (probe number)")
    p.add_argument("--payload", default="hello", help="payload text (UTF-8)")
    p.add_argument("--payload-hex", help="payload as hex (overrides --payload)")
    p.add_argument("--ttl", type=_int, default=64, help="TTL / hop limit of the probe")
    p.add_argument("--ip-id", type=_int, default=1, help="IPv4 identification")
    p.add_argument("--sport", type=_int, help="UDP/TCP source port (default: --ident)")
    p.add_argument("--dport", type=_int, help="UDP/TCP destination port")
    p.add_argument("--probe", default="icmp", help=f"what an error quotes: {', '.join(PROBES)}")
    p.add_argument("--code", type=_int, help="ICMP code of an error")
    p.add_argument("--src", help="the probe's source address")
    p.add_argument("--dst", help="the probe's destination address")
    p.add_argument("--router", help="the address that sends time exceeded / too big")
    p.add_argument("--quote", type=_int, help="bytes an error quotes past the IP header")
    p.add_argument("--mtu", type=_int, default=1280, help="packet-too-big's MTU")
    p.add_argument("--pcap", help="read the packet from this capture")
    p.add_argument("--index", type=_int, default=1, help="which packet of --pcap (1-based)")
    p.add_argument("--lab", action="store_true", help="capture the packet live in a lab")
    p.add_argument("--hop", type=_int, default=2, help="--lab time-exceeded: the probe's TTL")
    p.add_argument("--seed-skeleton", action="store_true", help="the seed's byte order")
    p.add_argument("--worksheet", action="store_true", help="an exercise sheet from a capture")
    p.add_argument("--save-pcap", help="with --lab: keep the capture as this pcap")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true", help="Markdown for course notes")
    out.add_argument("--json", action="store_true", help="the packet and its leaf fields")
    out.add_argument("--html", metavar="FILE", help="write a self-contained page")
    return p


def _payload(args: argparse.Namespace) -> bytes:
    if args.payload_hex is None:
        return args.payload.encode()
    try:
        return bytes.fromhex(args.payload_hex)
    except ValueError as exc:
        raise UsageError(f"--payload-hex: not hex: {args.payload_hex!r}") from exc


def _params(args: argparse.Namespace) -> Params:
    if args.probe not in PROBES:
        raise UsageError(f"unknown --probe {args.probe!r} (choose from {', '.join(PROBES)})")
    return Params(
        kind=args.kind,
        v6=args.v6,
        ident=args.ident,
        seq=args.seq,
        payload=_payload(args),
        ttl=args.ttl,
        ip_id=args.ip_id,
        sport=args.sport,
        dport=args.dport,
        probe=args.probe,
        code=args.code,
        src=args.src,
        dst=args.dst,
        router=args.router,
        quote=args.quote,
        mtu=args.mtu,
    )


def _live(args: argparse.Namespace) -> tuple[bytes, str]:
    from compare.anatomy import explain, live
    from compare.anatomy.worksheet import kind_of

    probes, outgoing = live.plan(args.kind, args.probe, args.hop)
    seen, _frames = live.capture(probes, v6=args.v6)
    for s in seen:
        if s.outgoing == outgoing and kind_of(explain(s.ip)) == args.kind:
            return s.ip, f"captured in the lab: packet {s.index} on the client's link"
    raise WiretwinError(f"the lab capture holds no {args.kind} packet ({len(seen)} IP packets)")


def _render(anatomy, args: argparse.Namespace) -> str:
    from compare.anatomy.render_text import render_markdown, render_terminal

    if args.json:
        return json.dumps(anatomy.to_json(), indent=2) + "\n"
    if args.markdown:
        return render_markdown(anatomy)
    if args.html:
        from compare.anatomy.render_html import render_html

        path = Path(args.html)
        try:
            path.write_text(render_html(anatomy), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return f"wrote {path} ({len(anatomy.fields)} fields, {len(anatomy.packet)} bytes)\n"
    return render_terminal(anatomy)


def _worksheet(args: argparse.Namespace) -> str:
    from compare.anatomy import live
    from compare.anatomy.sources import read_pcap
    from compare.anatomy.worksheet import build_items, render_worksheet

    if args.pcap:
        packets = [(p.index, p.ip) for p in read_pcap(args.pcap) if p.ip is not None]
        source = args.pcap
    elif args.lab:
        seen, frames = live.capture(live.trace_probes(), v6=args.v6)
        packets = [(s.index, s.ip) for s in seen]
        source = "a trace from the lab's client to its target, one ICMP probe per TTL 1..7"
        if args.save_pcap:
            from compare.capture import write_pcap

            write_pcap(args.save_pcap, frames)
            source += f" (saved as {args.save_pcap})"
    else:
        raise UsageError("--worksheet needs a capture: --pcap FILE or --lab")
    items = build_items(packets)
    if not items:
        raise UsageError(f"{source}: no packet to ask about")
    return render_worksheet(items, source)


def run(argv: list[str]) -> str:
    """The text the command prints; ``WiretwinError`` (``UsageError``) for bad input."""
    from compare.anatomy import explain

    args = parser().parse_args(argv)
    if args.kind == "smtp":
        from compare.anatomy.smtp_view import dialogue, render_smtp

        if not args.pcap:
            raise UsageError("anatomy smtp needs --pcap FILE")
        fmt = "json" if args.json else "markdown" if args.markdown else "terminal"
        return render_smtp(dialogue(args.pcap), fmt)
    if args.worksheet:
        return _worksheet(args)
    if args.seed_skeleton:
        from compare.anatomy.seed import render_seed, seed_view

        data = _payload(args) if args.payload_hex else struct.pack("<d", 1_700_000_000.0)
        view = seed_view(args.ident & 0xFFFF, args.seq & 0xFFFF, data)
        if args.json:
            return json.dumps(view.to_json(), indent=2) + "\n"
        return render_seed(view, markdown=args.markdown)
    if args.kind is not None and args.kind not in KINDS:
        raise UsageError(f"unknown packet kind {args.kind!r} (choose from {', '.join(KINDS)})")
    if args.pcap:
        from compare.anatomy.sources import packet_at

        found = packet_at(args.pcap, args.index)
        packet, title = found.ip, f"{Path(args.pcap).name}: packet {args.index} ({found.link})"
    elif args.lab:
        if args.kind is None:
            raise UsageError("--lab needs a packet kind to capture")
        packet, title = _live(args)
    else:
        if args.kind is None:
            raise UsageError(f"name a packet kind ({', '.join(KINDS)}), --pcap or --seed-skeleton")
        packet, title = build(_params(args)), args.kind + (" (IPv6)" if args.v6 else " (IPv4)")
    anatomy = explain(packet, title)
    if title:
        anatomy.title = f"{title}: {anatomy.layers[0].summary}"
    return _render(anatomy, args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        text = run(argv)
    except WiretwinError as exc:
        print(f"wiretwin anatomy: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
