"""`wiretwin`: the command line.

    wiretwin ping|traceroute|smtp [--impl handrolled|reference|smtplib] ARGS...
    wiretwin lab up|down|status|exec|selftest ...
    wiretwin compare ping|traceroute|smtp|paths|all ...

The client subcommands hand their arguments to the hand-rolled module's own `main()` (the same
flags and output as `python -m handrolled.ping`), passing the reference runner when asked, so
both implementations are driven through one front end.  Exit codes: 0 success, 1 "no" (no reply,
mail refused, mismatch), 2 error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Callable

from handrolled.errors import WiretwinError

EXIT_ERROR = 2

# subcommand -> (hand-rolled module, {impl: (module, runner function)})
CLIENTS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "ping": ("handrolled.cli.ping", {"reference": ("reference.ping", "run_ping")}),
    "traceroute": (
        "handrolled.cli.traceroute",
        {"reference": ("reference.traceroute", "run_trace")},
    ),
    "smtp": (
        "handrolled.cli.smtp",
        {
            "reference": ("reference.smtp", "send_mail"),
            "smtplib": ("reference.smtp", "send_mail_smtplib"),
        },
    ),
}


def _terminate_as_interrupt(_signum, _frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so every lab context manager tears its lab down.
    raise KeyboardInterrupt


def _pop_impl(argv: list[str]) -> tuple[str, list[str]]:
    impl, rest, i = "handrolled", [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--impl" and i + 1 < len(argv):
            impl, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--impl="):
            impl = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return impl, rest


def run_client(command: str, argv: list[str]) -> int:
    module_name, alternatives = CLIENTS[command]
    impl, rest = _pop_impl(argv)
    runner: Callable | None = None
    if impl != "handrolled":
        if impl not in alternatives:
            choices = ", ".join(["handrolled", *alternatives])
            print(
                f"wiretwin {command}: unknown --impl {impl!r} (choose from {choices})",
                file=sys.stderr,
            )
            return EXIT_ERROR
        ref_module, ref_name = alternatives[impl]
        runner = getattr(importlib.import_module(ref_module), ref_name)
    module = importlib.import_module(module_name)
    from handrolled.cli.common import run_module  # a reader that leaves early: no traceback

    return run_module(lambda args: module.main(args, runner=runner), rest)


# ---- lab -------------------------------------------------------------------------------------
def _parse_delays(text: str) -> dict[str, float]:
    from compare.lab import DEFAULT_DELAYS_MS

    delays = dict(DEFAULT_DELAYS_MS)
    for item in text.split(","):
        role, sep, value = item.partition("=")
        if not sep or role not in delays:
            raise argparse.ArgumentTypeError(
                f"expected ROLE=MS with ROLE in {', '.join(delays)}, got {item!r}"
            )
        try:
            delays[role] = float(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number of ms: {value!r}") from exc
        if delays[role] < 0:
            raise argparse.ArgumentTypeError(f"a delay cannot be negative: {item!r}")
    return delays


def print_truth(lab, as_json: bool = False) -> None:
    import json  # here too: the client commands never need it

    from tabulate import tabulate  # here, not at start-up: it costs every command ~80 ms

    from compare.lab import BASE_SLACK_MS, STAGE_SLACK_MS

    rows = lab.truth()
    if as_json:
        print(
            json.dumps(
                {
                    "lab_id": lab.lab_id,
                    "delay_stage_alive": lab.delay_alive(),
                    "hops": rows,
                    "promises": lab.promises(),
                },
                indent=2,
            )
        )
        return
    print(
        f"lab {lab.lab_id}: namespaces {lab.prefix}*  (run programs with: wiretwin lab exec -- CMD)"
    )
    print(tabulate(rows, headers="keys", tablefmt="simple"))
    print("\n".join(lab.promise_lines()))
    print(
        "rtt_ms: the RTT the lab promises (sum of per-link delays); a measured minimum RTT must\n"
        f"fall in min_rtt_window_ms (each NFQUEUE delay stage may add up to {STAGE_SLACK_MS} ms"
        f" of its own,\nplus {BASE_SLACK_MS} ms in all; CPU pauses only ever add time)."
    )
    if not lab.delay_alive():
        print(
            "WARNING: the delay stage is not running: delayed links drop every packet",
            file=sys.stderr,
        )


def lab_main(argv: list[str]) -> int:
    from compare import lab as lab_mod

    parser = argparse.ArgumentParser(prog="wiretwin lab", description="The network-namespace lab.")
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="build a lab and leave it up")
    up.add_argument(
        "--delays", type=_parse_delays, default=None, help="ROLE=MS,... per-link round-trip delay"
    )
    up.add_argument("--no-delay", action="store_true", help="no delay stages at all")
    up.add_argument("--json", action="store_true")
    down = sub.add_parser("down", help="tear a lab down")
    down.add_argument("--lab-id")
    down.add_argument(
        "--all", action="store_true", help="reap every lab namespace and helper process"
    )
    status = sub.add_parser("status", help="print the truth the lab promises")
    status.add_argument("--lab-id")
    status.add_argument("--json", action="store_true")
    ex = sub.add_parser("exec", help="run a command inside a lab node")
    ex.add_argument("--lab-id")
    ex.add_argument("--node", default="client", help="client, r1..r6, target, prohibited")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    selftest = sub.add_parser(
        "selftest", help="bring a lab up, check it with ping(8)/traceroute(8), tear down"
    )
    selftest.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    if args.action == "up":
        delays = {} if args.no_delay else args.delays
        lab = lab_mod.Lab.create(delays)
        print_truth(lab, args.json)
        return 0
    if args.action == "down":
        if args.all:
            removed = lab_mod.reap(None)
        else:
            # A named lab is reaped even without its state file (namespaces left by a crash).
            removed = lab_mod.reap(args.lab_id or lab_mod.Lab.load().lab_id)
        print(f"removed {len(removed)} namespaces" + (f": {' '.join(removed)}" if removed else ""))
        return 0
    if args.action == "status":
        print_truth(lab_mod.Lab.load(args.lab_id), args.json)
        return 0
    if args.action == "exec":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            parser.error("exec needs a command: wiretwin lab exec -- CMD ...")
        lab = lab_mod.Lab.load(args.lab_id)
        if args.node not in lab.nodes:
            parser.error(f"unknown node {args.node!r}: choose from {', '.join(lab.nodes)}")
        return lab.popen(args.node, cmd).wait()
    if args.action == "selftest":
        from compare.lab.selftest import run_selftest

        return run_selftest(as_json=args.json)
    return EXIT_ERROR


def compare_main(argv: list[str]) -> int:
    from compare import runner

    return runner.main(argv)


USAGE = """usage: wiretwin COMMAND [ARGS...]

commands:
  ping        ICMP echo, iputils-style        (--impl handrolled|reference)
  traceroute  ICMP/UDP/TCP traceroute         (--impl handrolled|reference)
  smtp        send one message, swaks-style   (--impl handrolled|reference|smtplib)
  lab         up | down | status | exec | selftest: the network-namespace lab
  compare     ping | traceroute | smtp | all: hand-rolled vs reference, the CI gate
  anatomy     a packet bit by bit, hand-rolled vs scapy (terminal, --markdown, --json, --html)
"""


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None  # the `wiretwin` command itself, not a test calling main([...])
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="wiretwin: %(message)s")
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else EXIT_ERROR
    command, rest = argv[0], argv[1:]
    try:
        if command in CLIENTS:
            status = run_client(command, rest)
            if as_program:  # start-up's other end: a quick exit (see leave_the_heap_to_the_exit)
                from handrolled.cli.common import leave_the_heap_to_the_exit

                leave_the_heap_to_the_exit()
            return status
        if command == "lab":
            return lab_main(rest)
        if command == "compare":
            return compare_main(rest)
        if command == "anatomy":
            from compare.anatomy.cli import main as anatomy_main

            return anatomy_main(rest)
    except WiretwinError as exc:
        print(f"wiretwin {command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"wiretwin {command}: interrupted", file=sys.stderr)
        return 130
    print(f"wiretwin: unknown command {command!r}\n\n{USAGE}", file=sys.stderr, end="")
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
