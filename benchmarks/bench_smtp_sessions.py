"""SMTP sessions over one connection, with aiosmtpd in a process of its own, in one run.

Run: ``python benchmarks/bench_smtp_sessions.py [--rounds 10] [--per-chunk 100] [--quick]
[--json FILE]``.  No root, no lab: aiosmtpd (compare.smtpserver.SmtpdServer with
bench_smtp's counting handler, PIPELINING offered) runs in a child process on 127.0.0.1, as a
real MTA runs beside its clients; bench_smtp.py serves from a thread of the benchmark's own
process, where server and client take turns at one interpreter lock, so the client's CPU
time adds to the server's and the two figures differ.

Clients, over one connection each, sending bench_smtp's message: smtplib (``sendmail`` again
and again), aiosmtplib (the same on one event loop), wiretwin ``send_session`` (transactions
back to back, pipelined across them, RFC 2920 §3.1).  Chunks of ``--per-chunk`` messages,
interleaved round by round; rate = 1 / the 10th-percentile chunk's per-message time, the
median beside it; the server's count of accepted messages is checked against those sent.
The server's CPU time over each chunk, as a share of the chunk's wall time, shows how near a
client drives the server to what it can do at all (100%: no client can go faster); and for
the session, the median time from a group written to its 354 read (the server's part, a
ceiling for any client that must wait for 354) beside the client's turnaround and the rate
of that same session (a median-based ceiling is set against the run it came from, not
against the 10th-percentile rates of the chunks).
"""

from __future__ import annotations

import asyncio
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
import bench_smtp  # noqa: E402  (the same message, handler and clients as bench_smtp)

SERVER = """
import socket, sys, time
sys.path[:0] = [{root!r}, {here!r}]
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


def run(rounds: int, per_chunk: int) -> dict:
    code = SERVER.format(root=str(HERE.parent), here=str(HERE))
    server = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert server.stdin is not None and server.stdout is not None
    loop = asyncio.new_event_loop()
    try:
        port = int(server.stdout.readline())
        _, aio_one = bench_smtp._aiosmtplib_senders(port, loop)
        clients: dict[str, Callable[[int], None]] = {
            "smtplib": bench_smtp._smtplib_one_connection(port),
            "aiosmtplib": aio_one,
            "wiretwin send_session": bench_smtp._wiretwin_session(port),
        }
        for send in clients.values():
            send(1)  # warm up
        sent = len(clients)
        samples: dict[str, list[float]] = {name: [] for name in clients}
        busy: dict[str, list[float]] = {name: [] for name in clients}  # server CPU / wall

        def server_cpu() -> float:
            server.stdin.write("cpu\n")
            server.stdin.flush()
            return float(server.stdout.readline())

        for _ in range(rounds):
            for name, send in clients.items():
                cpu = server_cpu()
                started = time.perf_counter()
                send(per_chunk)
                wall = time.perf_counter() - started
                samples[name].append(wall / per_chunk)
                busy[name].append((server_cpu() - cpu) / wall)
                sent += per_chunk
        turnaround, server_time, marked_rate = _turnaround(port, rounds * per_chunk)
        sent += rounds * per_chunk
        server.stdin.write("done\n")
        server.stdin.flush()
        accepted = int(server.stdout.readline())
    finally:
        loop.close()
        server.stdin.close()
        server.wait(10)
    if accepted != sent:
        raise SystemExit(f"the server accepted {accepted} messages, {sent} were sent")
    rows = [
        {
            "client": name,
            "connections": "one for all",
            "messages_per_s": 1.0 / _common.p10(times),
            "median_messages_per_s": 1.0 / statistics.median(times),
            "server_busy": statistics.median(busy[name]),
        }
        for name, times in samples.items()
    ]
    rate = {r["client"]: r["messages_per_s"] for r in rows}
    ratios, goals = bench_smtp.session_lines(rate)
    ratios += [
        f"server CPU busy with {r['client']}: {r['server_busy']:.0%} of the wall time (median)"
        for r in rows
    ]
    ratios += [
        f"wiretwin session, median per message: {turnaround * 1e6:.0f} us from reading a 354 "
        f"to writing the next group; {server_time * 1e6:.0f} us from writing a group to "
        f"reading its 354 (the server's part: about {1 / server_time:.0f}/s at most for a "
        f"client that waits for 354); that session, timed whole: {marked_rate:.0f}/s"
    ]
    return {
        "benchmark": "smtp_sessions",
        "rounds": rounds,
        "per_chunk": per_chunk,
        "messages_sent": sent,
        "message_octets": len(bench_smtp.MESSAGE),
        "server": "aiosmtpd in a process of its own, on 127.0.0.1",
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
