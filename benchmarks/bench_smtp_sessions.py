"""SMTP sessions over one connection, with the server in a process of its own, in one run.

Run: ``python benchmarks/bench_smtp_sessions.py [--rounds 10] [--per-chunk 100] [--quick]
[--json FILE]``.  No root, no lab: aiosmtpd (compare.smtpserver.SmtpdServer with
bench_smtp's counting handler, PIPELINING offered) runs in a child process on 127.0.0.1, as a
real MTA runs beside its clients; bench_smtp.py serves from a thread of the benchmark's own
process, where server and client take turns at one interpreter lock, so the client's CPU
time adds to the server's and the two figures differ.

Clients, over one connection each, sending bench_smtp's message: smtplib (``sendmail`` again
and again), aiosmtplib (the same on one event loop), wiretwin ``send_session`` (transactions
back to back, pipelined across them, RFC 2920 §3.1), and the floor client
(``_smtp_floors``: canned bytes pipelined the same way, waiting only for 354; the most a
client that obeys RFC 2920 §3.1 and reads each reply as it comes gets from a server; a
variant the kernel woke once per group, SO_RCVLOWAT, was no faster against aiosmtpd on a
quiet machine here).  Chunks of ``--per-chunk`` messages,
interleaved round by round; rate = 1 / the 10th-percentile chunk's per-message time, the
median beside it; each server's count of accepted messages is checked against those sent.
The server's CPU time over each chunk, as a share of the chunk's wall time, shows how near a
client drives the server to what it can do at all (100%: no client can go faster); and for
the session, the median time from a group written to its 354 read (the server's part, a
ceiling for any client that must wait for 354) beside the client's turnaround and the rate
of that same session (a median-based ceiling is set against the run it came from, not
against the 10th-percentile rates of the chunks).

Server settings, each in a process of its own, their chunks interleaved round by round:

- aiosmtpd on asyncio's default event loop: the goal's anchor, and the one goal line;
- the same aiosmtpd, same handler, on uvloop (when installed: it is in the benchmark
  extra).  aiosmtpd's own work per message (about 450 us of CPU here: the address parsing
  of MAIL and RCPT, a line at a time through DATA, a write per reply) caps every client, and
  a client that waits for 354 cannot hide it; a faster loop lowers that cap for all clients
  alike, so its rows are printed beside, never instead of, the default loop's;
- the canned-reply server (``_smtp_floors``), not an MTA: what each client costs itself.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import _common  # noqa: E402
import _smtp_floors  # noqa: E402
import bench_smtp  # noqa: E402  (the same message, handler and clients as bench_smtp)

SERVER = """
import asyncio, socket, sys, time
sys.path[:0] = [{root!r}, {here!r}]
if {loop!r} == "uvloop":  # SmtpdServer's asyncio.new_event_loop() then makes a uvloop.Loop
    import uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
from bench_smtp import _Counter
from compare.smtpserver import SmtpdServer
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
listener.bind(("127.0.0.1", 0))
handler = _Counter()
with listener, SmtpdServer(listener, handler, hostname="bench.wiretwin.test") as server:
    print(server.port, flush=True)
    while sys.stdin.readline().strip() == "cpu":  # this process's CPU seconds so far
        print(time.process_time(), flush=True)
    print(handler.accepted, flush=True)  # any other line: the count, and stop
"""


class _Timed:
    """A socket that notes when a reading brings a 354 and when the next write goes: the
    client's turnaround, and the server's time from a group to its 354."""

    def __init__(self, sock: socket.socket, marks: list[tuple[str, float]]) -> None:
        self.sock, self.marks = sock, marks

    def recv(self, size: int) -> bytes:
        data = self.sock.recv(size)
        if b"354 " in data:
            self.marks.append(("354", time.perf_counter()))
        return data

    def send(self, data: bytes) -> int:
        self.marks.append(("send", time.perf_counter()))
        return self.sock.send(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


def _turnaround(port: int, count: int) -> tuple[float, float, float]:
    """Median seconds (354 read -> next group written, group written -> 354 read), and the
    messages per second of the session they were read from."""
    from handrolled.requests import MailRequest, MailSessionRequest
    from handrolled.smtp_session import send_session

    marks: list[tuple[str, float]] = []
    mail = MailRequest(
        "127.0.0.1",
        port,
        mail_from=bench_smtp.SENDER,
        recipients=(bench_smtp.RECIPIENT,),
        message=bench_smtp.MESSAGE,
        helo_name=bench_smtp.HELO,
    )

    def connect(host: str, port: int, timeout: float) -> socket.socket:
        return _Timed(socket.create_connection((host, port), timeout=timeout), marks)  # type: ignore[return-value]

    started = time.perf_counter()
    result = send_session(MailSessionRequest(mail, count), connect=connect)
    rate = count / (time.perf_counter() - started)
    if result.delivered != count:
        raise SystemExit(f"wiretwin session delivered {result.delivered}/{count}")
    pairs = list(itertools.pairwise(marks))
    ours = [b - a for (x, a), (y, b) in pairs if (x, y) == ("354", "send")]
    theirs = [b - a for (x, a), (y, b) in pairs if (x, y) == ("send", "354")]
    return statistics.median(ours), statistics.median(theirs), rate


# Server settings, in the order their rows are printed.  DEFAULT: the goal's anchor, the
# same aiosmtpd on asyncio's default loop; then that aiosmtpd on uvloop (when installed), and
# the canned-reply floor (not an MTA: the clients' own cost).
DEFAULT, UVLOOP, CANNED = "asyncio", "uvloop", "canned"
LABELS = {
    DEFAULT: "aiosmtpd (asyncio's default loop)",
    UVLOOP: "aiosmtpd on uvloop",
    CANNED: "canned-reply server, not aiosmtpd",
}
FLOOR = "floor client"  # _smtp_floors.floor_client: waits for 354, does nothing else


class _Server:
    """A server setting in a child process, answering for its CPU time and its count."""

    def __init__(self, setting: str) -> None:
        if setting == CANNED:
            code = _smtp_floors.CANNED_SERVER
        else:
            code = SERVER.format(root=str(HERE.parent), here=str(HERE), loop=setting)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.port = int(self.stdout.readline() or 0)
        if not self.port:
            self.proc.wait(10)
            raise SystemExit(f"{LABELS[setting]} did not start")

    def cpu(self) -> float:
        self.stdin.write("cpu\n")
        self.stdin.flush()
        return float(self.stdout.readline())

    def stop(self) -> int:
        """Stop; the count of messages the server accepted."""
        self.stdin.write("done\n")
        self.stdin.flush()
        accepted = int(self.stdout.readline())
        self.stdin.close()
        self.proc.wait(10)
        return accepted


def _label(name: str, setting: str) -> str:
    return name if setting == DEFAULT else f"{name} [{LABELS[setting]}]"


def _clients(port: int, loop: asyncio.AbstractEventLoop) -> dict[str, Callable[[int], None]]:
    _, aio_one = bench_smtp._aiosmtplib_senders(port, loop)
    return {
        "smtplib": bench_smtp._smtplib_one_connection(port),
        "aiosmtplib": aio_one,
        "wiretwin send_session": bench_smtp._wiretwin_session(port),
        FLOOR: _smtp_floors.floor_client(port),
    }


def _floor_line(rate: dict[str, float], prefix: str = "") -> str:
    return (
        f"{prefix}the floor client / smtplib = {rate[FLOOR] / rate['smtplib']:.2f}x: the most a "
        "client that reads each reply as it comes and waits for 354 gets from this server, "
        "against smtplib"
    )


def _setting_lines(setting: str, rate: dict[str, float]) -> list[str]:
    """Ratio lines for a setting other than the default, each naming it."""
    ours, theirs, floor = rate["wiretwin send_session"], rate["smtplib"], rate[FLOOR]
    goal = bench_smtp.SESSION_GOAL
    lines = [
        f"[{LABELS[setting]}] wiretwin session / smtplib, each over one connection = "
        f"{ours / theirs:.2f}x ({ours:.0f} vs {theirs:.0f} msgs/s; {goal}x would be "
        f"{_common.verdict(ours / theirs >= goal)} in this setting); / aiosmtplib = "
        f"{ours / rate['aiosmtplib']:.2f}x; / the floor client = {ours / floor:.2f}x"
    ]
    if setting != CANNED:
        lines.append(_floor_line(rate, f"[{LABELS[setting]}] "))
    return lines


def run(rounds: int, per_chunk: int) -> dict:
    # uvloop comes with the benchmark extra; without it the result says it was not measured
    settings = [DEFAULT] + [UVLOOP] * bool(importlib.util.find_spec("uvloop")) + [CANNED]
    servers: dict[str, _Server] = {}
    loop = asyncio.new_event_loop()
    try:
        for setting in settings:
            servers[setting] = _Server(setting)
        clients = {
            (setting, name): send
            for setting, server in servers.items()
            for name, send in _clients(server.port, loop).items()
        }
        for send in clients.values():
            send(1)  # warm up
        sent = dict.fromkeys(servers, 0)
        for setting, _ in clients:
            sent[setting] += 1
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in clients}
        busy: dict[tuple[str, str], list[float]] = {key: [] for key in clients}  # CPU / wall
        for _ in range(rounds):
            for (setting, name), send in clients.items():
                server = servers[setting]
                cpu = server.cpu()
                started = time.perf_counter()
                send(per_chunk)
                wall = time.perf_counter() - started
                samples[setting, name].append(wall / per_chunk)
                busy[setting, name].append((server.cpu() - cpu) / wall)
                sent[setting] += per_chunk
        marked = {}
        for setting in (DEFAULT, UVLOOP):
            if setting in servers:
                marked[setting] = _turnaround(servers[setting].port, rounds * per_chunk)
                sent[setting] += rounds * per_chunk
        accepted = {setting: server.stop() for setting, server in servers.items()}
        servers.clear()
    finally:
        loop.close()
        for server in servers.values():
            server.proc.kill()
    for setting, count in accepted.items():
        if count != sent[setting]:
            raise SystemExit(f"{LABELS[setting]} accepted {count} messages, {sent[setting]} sent")
    rates = {key: 1.0 / _common.p10(times) for key, times in samples.items()}
    rows = [
        {
            "client": _label(name, setting),
            "connections": "one for all",
            "server": LABELS[setting],
            "messages_per_s": rates[setting, name],
            "median_messages_per_s": 1.0 / statistics.median(times),
            "server_busy": statistics.median(busy[setting, name]),
        }
        for (setting, name), times in samples.items()
    ]
    ratios: list[str] = []
    goals: list[str] = []
    for setting in settings:
        rate = {name: r for (at, name), r in rates.items() if at == setting}
        if setting == DEFAULT:  # the goal's anchor: the same aiosmtpd, as it runs by default
            ratios, goals = bench_smtp.session_lines(rate)
            ratios.append(_floor_line(rate))
            ratios.append(
                "wiretwin session / the floor client = "
                f"{rate['wiretwin send_session'] / rate[FLOOR]:.2f}x (1.00x: all this server "
                "leaves to a client that waits for 354)"
            )
        else:
            ratios += _setting_lines(setting, rate)
    if UVLOOP not in settings:
        ratios.append(f"{LABELS[UVLOOP]}: not measured (uvloop is not installed; bench extra)")
    ratios += [
        f"server CPU busy with {r['client']}: {r['server_busy']:.0%} of the wall time (median)"
        for r in rows
    ]
    for setting, (turnaround, server_time, marked_rate) in marked.items():
        ratios.append(
            f"wiretwin session, {LABELS[setting]}, median per message: "
            f"{turnaround * 1e6:.0f} us from reading a 354 to writing the next group; "
            f"{server_time * 1e6:.0f} us from writing a group to reading its 354 (the server's "
            f"part: about {1 / server_time:.0f}/s at most for a client that waits for 354); "
            f"that session, timed whole: {marked_rate:.0f}/s"
        )
    return {
        "benchmark": "smtp_sessions",
        "rounds": rounds,
        "per_chunk": per_chunk,
        "messages_sent": sum(sent.values()),
        "message_octets": len(bench_smtp.MESSAGE),
        "server": "servers in processes of their own on 127.0.0.1: "
        + "; ".join(LABELS[s] for s in settings),
        "rows": rows,
        "ratios": ratios,
        "goals": goals,
    }


def main(argv: list[str] | None = None) -> int:
    return _common.main(
        argv,
        __doc__,
        [
            ("--rounds", int, 10, "chunks per client"),
            ("--per-chunk", int, 100, "messages in one chunk"),
        ],
        ((2, 3), "2 rounds of 3 (smoke test)"),
        run,
        bench_smtp.report,
    )


if __name__ == "__main__":
    sys.exit(main())
