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

Two server settings, each the same aiosmtpd with the same handler, in processes of their own,
their chunks interleaved with the others round by round: asyncio's default event loop (the
goal's anchor, and the one goal line), and the same server on uvloop (when installed: it
is in the benchmark extra).  aiosmtpd's own work per message (about 400 us of CPU here: the
address parsing of MAIL and RCPT, a line at a time through DATA, a write per reply) caps
every client, and a client that waits for 354 cannot hide it; a faster loop lowers that cap
for all clients alike, so its rows are printed beside, never instead of, the default loop's.
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


LOOPS = ("asyncio", "uvloop")  # the server's event loop; asyncio's default loop first
DEFAULT_LOOP = LOOPS[0]


class _Server:
    """aiosmtpd on event loop ``loop`` in a child process, answering for its CPU time."""

    def __init__(self, loop: str) -> None:
        code = SERVER.format(root=str(HERE.parent), here=str(HERE), loop=loop)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.port = int(self.stdout.readline() or 0)
        if not self.port:
            self.proc.wait(10)
            raise SystemExit(f"aiosmtpd on {loop} did not start")

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


def _label(name: str, loop: str) -> str:
    return name if loop == DEFAULT_LOOP else f"{name} [aiosmtpd on {loop}]"


def run(rounds: int, per_chunk: int) -> dict:
    # uvloop comes with the benchmark extra; without it only the default loop is measured,
    # and the result says so
    loops = tuple(n for n in LOOPS if n == DEFAULT_LOOP or importlib.util.find_spec(n))
    servers: dict[str, _Server] = {}
    loop = asyncio.new_event_loop()
    try:
        for server_loop in loops:
            servers[server_loop] = _Server(server_loop)
        clients: dict[tuple[str, str], Callable[[int], None]] = {}
        for server_loop, server in servers.items():
            _, aio_one = bench_smtp._aiosmtplib_senders(server.port, loop)
            clients[server_loop, "smtplib"] = bench_smtp._smtplib_one_connection(server.port)
            clients[server_loop, "aiosmtplib"] = aio_one
            clients[server_loop, "wiretwin send_session"] = bench_smtp._wiretwin_session(
                server.port
            )
        for send in clients.values():
            send(1)  # warm up
        sent = dict.fromkeys(servers, 3)
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in clients}
        busy: dict[tuple[str, str], list[float]] = {key: [] for key in clients}  # CPU / wall
        for _ in range(rounds):
            for (server_loop, name), send in clients.items():
                server = servers[server_loop]
                cpu = server.cpu()
                started = time.perf_counter()
                send(per_chunk)
                wall = time.perf_counter() - started
                samples[server_loop, name].append(wall / per_chunk)
                busy[server_loop, name].append((server.cpu() - cpu) / wall)
                sent[server_loop] += per_chunk
        marked = {}
        for server_loop, server in servers.items():
            marked[server_loop] = _turnaround(server.port, rounds * per_chunk)
            sent[server_loop] += rounds * per_chunk
        accepted = {server_loop: server.stop() for server_loop, server in servers.items()}
        servers.clear()
    finally:
        loop.close()
        for server in servers.values():
            server.proc.kill()
    for server_loop in accepted:
        if accepted[server_loop] != sent[server_loop]:
            raise SystemExit(
                f"aiosmtpd on {server_loop} accepted {accepted[server_loop]} messages, "
                f"{sent[server_loop]} were sent"
            )
    rows = [
        {
            "client": _label(name, server_loop),
            "connections": "one for all",
            "server_loop": server_loop,
            "messages_per_s": 1.0 / _common.p10(times),
            "median_messages_per_s": 1.0 / statistics.median(times),
            "server_busy": statistics.median(busy[server_loop, name]),
        }
        for (server_loop, name), times in samples.items()
    ]
    ratios: list[str] = []
    goals: list[str] = []
    for server_loop in loops:
        rate = {
            name: 1.0 / _common.p10(t) for (at, name), t in samples.items() if at == server_loop
        }
        more, goal = bench_smtp.session_lines(rate)
        if server_loop == DEFAULT_LOOP:
            ratios += more
            goals += goal  # the goal's anchor: the same aiosmtpd, as it runs by default
        else:
            ours, theirs = rate["wiretwin send_session"], rate["smtplib"]
            ratios.append(
                f"additional setting, aiosmtpd on {server_loop} (every client alike): wiretwin "
                f"session / smtplib, each over one connection = {ours / theirs:.2f}x "
                f"({ours:.0f} vs {theirs:.0f} msgs/s; the 1.5x goal "
                f"{_common.verdict(ours / theirs >= bench_smtp.SESSION_GOAL)} in this setting); "
                f"/ aiosmtplib = {ours / rate['aiosmtplib']:.2f}x"
            )
    ratios += [
        f"server CPU busy with {r['client']}: {r['server_busy']:.0%} of the wall time (median)"
        for r in rows
    ]
    ratios += [
        f"aiosmtpd on {name}: not measured ({name} is not installed; it is in the bench extra)"
        for name in LOOPS
        if name not in loops
    ]
    for server_loop, (turnaround, server_time, marked_rate) in marked.items():
        ratios.append(
            f"wiretwin session, aiosmtpd on {server_loop}, median per message: "
            f"{turnaround * 1e6:.0f} us from reading a 354 to writing the next group; "
            f"{server_time * 1e6:.0f} us from writing a group to reading its 354 (the server's "
            f"part: about {1 / server_time:.0f}/s at most for a client that waits for 354); "
            f"that session, timed whole: {marked_rate:.0f}/s"
        )
    loops_text = " and ".join(f"on {name}" for name in loops)
    return {
        "benchmark": "smtp_sessions",
        "rounds": rounds,
        "per_chunk": per_chunk,
        "messages_sent": sum(sent.values()),
        "message_octets": len(bench_smtp.MESSAGE),
        "server": f"aiosmtpd in a process of its own ({loops_text}), on 127.0.0.1",
        "server_loops": list(loops),
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
