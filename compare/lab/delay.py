"""A link-delay stage built on NFQUEUE, for kernels without sch_netem.

An nftables rule (via iptables-nft's NFQUEUE target, since this kernel lacks the native nft
``queue`` expression) hands each packet arriving on a lab link to a netlink queue; this process
holds it for the link's delay and then gives the verdict NF_ACCEPT.  One process serves every
queue of a lab: it opens one NETLINK_NETFILTER socket inside each namespace (a socket keeps the
namespace it was created in) and drives them all from one heap of release times.

The netlink messages are written by hand from the kernel's uapi headers
(linux/netfilter/nfnetlink.h and nfnetlink_queue.h):

    nlmsghdr   len:u32 type:u16 flags:u16 seq:u32 pid:u32          (host order)
    nfgenmsg   family:u8 version:u8 res_id:u16                     (res_id big-endian: queue)
    nlattr     len:u16 type:u16, value padded to 4 bytes            (host order)

Run as ``python -m compare.lab.delay --queue NS:QUEUE:DELAY_MS [--queue ...]``; it prints
``ready`` on stdout once every queue is bound, and exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass

from compare.lab.netns import netns_socket

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_TIMESTAMP = 4
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
NF_ACCEPT = 1
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
PR_SET_TIMERSLACK = 29
SO_TIMESTAMPNS = 35
SPIN_NS = 250_000  # see serve()

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("!BBH")
_NLATTR = struct.Struct("=HH")


def _attr(attr_type: int, value: bytes) -> bytes:
    raw = _NLATTR.pack(_NLATTR.size + len(value), attr_type) + value
    return raw + b"\0" * (-len(raw) % 4)


def _message(msg_type: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, queue) + attrs
    full_type = (NFNL_SUBSYS_QUEUE << 8) | msg_type
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), full_type, flags, 0, 0) + body


def _config(queue: int, attrs: bytes) -> bytes:
    return _message(NFQNL_MSG_CONFIG, queue, attrs, NLM_F_REQUEST | NLM_F_ACK)


def _verdict(queue: int, packet_id: int, msg_type: int = NFQNL_MSG_VERDICT) -> bytes:
    return _message(
        msg_type, queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
    )


def _walk(data: bytes):
    """Yield (type, payload after nlmsghdr) for each netlink message in a datagram."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        yield msg_type, data[offset + _NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3


def _packet_info(payload: bytes) -> tuple[int | None, int | None]:
    """(packet id, kernel arrival time in ns or None) from an NFQNL_MSG_PACKET payload."""
    packet_id = stamp = None
    offset = _NFGENMSG.size
    while offset + _NLATTR.size <= len(payload):
        length, attr_type = _NLATTR.unpack_from(payload, offset)
        if length < _NLATTR.size:
            break
        kind = attr_type & 0x7FFF
        if kind == NFQA_PACKET_HDR:
            packet_id = struct.unpack_from("!I", payload, offset + _NLATTR.size)[0]
        elif kind == NFQA_TIMESTAMP:
            sec, usec = struct.unpack_from("!QQ", payload, offset + _NLATTR.size)
            if sec:
                stamp = sec * 1_000_000_000 + usec * 1_000
        offset += (length + 3) & ~3
    return packet_id, stamp


@dataclass
class Queue:
    ns: str
    number: int
    delay_ns: int
    sock: socket.socket | None = None


def bind(queue: Queue) -> None:
    """Open the netlink socket inside the queue's namespace and bind it to the queue."""
    sock = netns_socket(queue.ns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
    cmd = struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_UNSPEC)
    params = struct.pack("!IB", 0, NFQNL_COPY_META)
    for request in (
        _config(queue.number, _attr(NFQA_CFG_CMD, cmd)),
        _config(queue.number, _attr(NFQA_CFG_PARAMS, params)),
    ):
        sock.send(request)
        for msg_type, payload in _walk(sock.recv(65536)):
            if msg_type == NLMSG_ERROR:
                (errno_neg,) = struct.unpack_from("=i", payload)
                if errno_neg:
                    raise OSError(
                        -errno_neg,
                        f"NFQUEUE bind {queue.ns}:{queue.number}: {os.strerror(-errno_neg)}",
                    )
    queue.sock = sock


def serve(queues: list[Queue]) -> None:
    """Hold every queued packet for its queue's delay, then accept it; runs until signalled."""
    by_fd = {q.sock.fileno(): q for q in queues if q.sock is not None}
    heap: list[tuple[int, int, int, int]] = []  # (release, wall-clock ns; order; fd; packet id)
    order = 0
    running = True

    def _stop(_signum, _frame):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while running:
        if heap and 0 < heap[0][0] - time.time_ns() <= SPIN_NS:
            # The last stretch is spun, not slept: a timer wake-up lands 50-200 us late here.
            while time.time_ns() < heap[0][0]:
                pass
        now = time.time_ns()
        due: dict[int, int] = {}  # fd -> highest packet id now due
        while heap and heap[0][0] <= now:
            _release, _order, fd, packet_id = heapq.heappop(heap)
            due[fd] = max(packet_id, due.get(fd, 0))
        for fd, packet_id in due.items():
            # One batch verdict per queue accepts every id up to this one: a queue holds its
            # packets for one fixed delay, so ids fall due in order (first in, first out).
            queue = by_fd[fd]
            with contextlib.suppress(OSError):  # namespace going away under us
                queue.sock.send(_verdict(queue.number, packet_id, NFQNL_MSG_VERDICT_BATCH))
        wait = 0.5 if not heap else max(0.0, (heap[0][0] - SPIN_NS - time.time_ns()) / 1e9)
        try:
            ready, _, _ = select.select(list(by_fd), [], [], wait)
        except InterruptedError:
            continue
        read_at = time.time_ns()
        for fd in ready:
            queue = by_fd[fd]
            # Drain everything queued so far: packets that arrived together (a traceroute's
            # burst of probes) are all stamped now, not one per trip round this loop.
            while True:
                try:
                    data = queue.sock.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError as exc:
                    log.warning("queue %s:%d: %s", queue.ns, queue.number, exc)
                    break
                for msg_type, payload in _walk(data):
                    if msg_type & 0xFF != NFQNL_MSG_PACKET or msg_type >> 8 != NFNL_SUBSYS_QUEUE:
                        continue
                    packet_id, stamp = _packet_info(payload)
                    if packet_id is None:
                        continue
                    # Hold from the kernel's arrival stamp when there is one, so time this
                    # process spent busy elsewhere is not added to the link's delay.
                    arrived = read_at if stamp is None or stamp > read_at else stamp
                    order += 1
                    heapq.heappush(heap, (arrived + queue.delay_ns, order, fd, packet_id))


def parse_queue(text: str) -> Queue:
    try:
        ns, number, delay_ms = text.rsplit(":", 2)
        return Queue(ns=ns, number=int(number), delay_ns=round(float(delay_ms) * 1e6))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected NS:QUEUE:DELAY_MS, got {text!r}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compare.lab.delay", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--queue", type=parse_queue, action="append", required=True)
    args = parser.parse_args(argv)
    try:
        for queue in args.queue:
            bind(queue)
    except OSError as exc:
        print(f"delay: {exc}", file=sys.stderr)
        return 2
    # Timers wake us up to timer_slack_ns late (50 us by default); we want them on time.
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    # Real-time priority: the test programs whose packets we hold must never delay our
    # wake-ups (a CPU-bound tracer on a 2-core machine otherwise can, by milliseconds).  The
    # spin in serve() is bounded by SPIN_NS per release, and the kernel's RT throttling stays.
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    # Arrival stamps: the kernel stamps received packets only while some socket asks for
    # timestamps (a global switch), so keep one such socket open for our whole life.
    stamper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stamper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    print("ready", flush=True)
    serve(args.queue)
    stamper.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
