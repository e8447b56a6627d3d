"""The two floors bench_smtp_sessions sets beside its real clients and its real server.

- ``CANNED_SERVER``: a "server" that answers every command with a canned reply and does no
  other work (no address parsing, no handler, one write per batch of commands it read), run
  as a child process.  Against it a client's rate is the client's own cost, nearly all of it:
  not an MTA, and labelled so wherever it appears.
- ``floor_client(port)``: the least a client can do that still waits for 354 before the
  content (RFC 2920 §3.1): canned command bytes, no reply parsed beyond finding the 354, no
  transcript, no outcomes.  Against aiosmtpd its rate is the most any such client could get
  from that server while it reads each reply as it comes (a recv per segment, as every
  client here does); it checks nothing, so the server's count is what shows it delivered.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import bench_smtp

# The child process: serves from a thread; its stdin answers "cpu" (its CPU seconds so far)
# and anything else with the count of messages accepted, then stops.
CANNED_SERVER = r"""
import socket, sys, threading, time
EHLO = (b"250-canned.wiretwin.test\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
        b"250-PIPELINING\r\n250 HELP\r\n")  # what aiosmtpd offers bench_smtp's handler
REPLIES = {b"EHLO": EHLO, b"MAIL": b"250 OK\r\n", b"RCPT": b"250 OK\r\n", b"RSET": b"250 OK\r\n",
           b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n", b"QUIT": b"221 Bye\r\n"}
accepted = 0

def serve(conn):
    global accepted
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"220 canned.wiretwin.test ESMTP\r\n")
        buf, in_data = b"", False
        while chunk := conn.recv(65536):
            buf += chunk
            out = []
            while True:
                if in_data:  # RFC 5321 §4.1.1.4: the content ends with CRLF . CRLF
                    end = buf.find(b"\r\n.\r\n")
                    if end < 0:
                        break
                    buf, in_data = buf[end + 5:], False
                    accepted += 1
                    out.append(b"250 2.0.0 accepted\r\n")
                    continue
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                verb, buf = buf[:4].upper(), buf[end + 2:]
                out.append(REPLIES.get(verb, b"502 not here\r\n"))
                in_data = verb == b"DATA"
            if out:
                conn.sendall(b"".join(out))

def accept(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
listener.bind(("127.0.0.1", 0))
listener.listen(8)
threading.Thread(target=accept, args=(listener,), daemon=True).start()
print(listener.getsockname()[1], flush=True)
while sys.stdin.readline().strip() == "cpu":
    print(time.process_time(), flush=True)
print(accepted, flush=True)
"""


def _read_until(sock: socket.socket, done: Callable[[bytes], bool]) -> None:
    data = b""
    while not done(data):
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("floor client: the server closed the connection")
        data += chunk


def _ends_with_354(data: bytes) -> bool:
    # 354 answers DATA, the last command of a group, so its line ends what was read
    return data.endswith(b"\r\n") and (data.startswith(b"354 ") or b"\r\n354 " in data)


def floor_client(port: int) -> Callable[[int], None]:
    """``send(n)``: n messages over one connection, pipelined like wiretwin's session."""
    message = bench_smtp.MESSAGE
    assert message.endswith(b"\r\n") and b"\n." not in message  # nothing to dot-stuff
    group = (
        f"MAIL FROM:<{bench_smtp.SENDER}> SIZE={len(message)}\r\n"
        f"RCPT TO:<{bench_smtp.RECIPIENT}>\r\nDATA\r\n"
    ).encode()
    content = message + b".\r\n"  # RFC 5321 §4.1.1.4

    def send(n: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            _read_until(sock, lambda d: d.endswith(b"\r\n"))  # the greeting
            sock.sendall(f"EHLO {bench_smtp.HELO}\r\n".encode())
            _read_until(sock, lambda d: d.endswith(b"\r\n") and b"250 " in d)
            sock.sendall(group)
            for i in range(n):
                _read_until(sock, _ends_with_354)
                sock.sendall(content + (group if i < n - 1 else b"QUIT\r\n"))
            _read_until(sock, lambda d: b"221 " in d)

    return send
