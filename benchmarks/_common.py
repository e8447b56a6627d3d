"""What the local benchmarks (bench_codec, bench_smtp, bench_smtp_sessions) share: the
command line (two sizes, ``--quick``, ``--json``), the 10th percentile they report, and the
goal lines (a measured figure beside its goal, with a plain met / NOT met; bench_startup
uses that verdict too)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def p10(values: list[float]) -> float:
    """The 10th percentile of ``values`` (the lowest rank, under ten values: their minimum)."""
    return sorted(values)[len(values) // 10]


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def positive(kind: type) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text}: must be more than 0")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def main(
    argv: list[str] | None,
    doc: str,
    sizes: list[tuple[str, type, float, str]],
    quick: tuple[tuple[float, ...], str],
    run: Callable[..., dict],
    report: Callable[[dict], str],
) -> int:
    """Parse ``sizes`` (flag, type, default, help; each must be > 0), ``--quick`` (its values,
    its help) and ``--json``; print ``report(run(*sizes))`` and write the result as JSON."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    dests = [
        parser.add_argument(flag, type=positive(kind), default=default, help=text).dest
        for flag, kind, default, text in sizes
    ]
    parser.add_argument("--quick", action="store_true", help=quick[1])
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    values = quick[0] if args.quick else [getattr(args, dest) for dest in dests]
    result = run(*values)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0
