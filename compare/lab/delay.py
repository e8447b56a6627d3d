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

A queue may also carry fault rules (compare/lab/faults.py; ``--faults NS:QUEUE:RULES``): its
packets are then copied to us whole, and one a rule selects is dropped (verdict NF_DROP),
rewritten (NF_ACCEPT with NFQA_PAYLOAD), held until another has gone, accepted and sent once
more, or answered by forgeries; the copies and forgeries leave through a raw socket in that
namespace whose packets carry INJECT_MARK, which the NFQUEUE rules skip.

Run as ``python -m compare.lab.delay --queue NS:QUEUE:DELAY_MS [--queue ...] [--faults ...]``;
it prints ``ready`` on stdout once every queue is bound, and exits on SIGTERM or SIGINT.
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
from dataclasses import dataclass, field

from compare.lab import faults
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
NFQA_PAYLOAD = 10
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQNL_COPY_PACKET = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
NF_DROP = 0
NF_ACCEPT = 1
INJECT_MARK = 0x7774  # SO_MARK of our raw sockets: the NFQUEUE rules let these packets pass
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


def _verdict(
    queue: int,
    packet_id: int,
    msg_type: int = NFQNL_MSG_VERDICT,
    verdict: int = NF_ACCEPT,
    payload: bytes | None = None,
) -> bytes:
    attrs = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
    if payload is not None:  # the packet goes on with these bytes instead
        attrs += _attr(NFQA_PAYLOAD, payload)
    return _message(msg_type, queue, attrs)


def _walk(data: bytes):
    """Yield (type, payload after nlmsghdr) for each netlink message in a datagram."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        yield msg_type, data[offset + _NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3


def _packet_info(payload: bytes) -> tuple[int | None, int | None, bytes]:
    """(packet id, kernel arrival time in ns or None, the packet when copied) from an
    NFQNL_MSG_PACKET payload."""
    packet_id = stamp = None
    packet = b""
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
        elif kind == NFQA_PAYLOAD:
            packet = payload[offset + _NLATTR.size : offset + length]
        offset += (length + 3) & ~3
    return packet_id, stamp, packet


@dataclass
class Queue:
    ns: str
    number: int
    delay_ns: int
    rules: tuple[faults.Rule, ...] = ()
    sock: socket.socket | None = None
    raw: dict[int, socket.socket] = field(default_factory=dict)  # family -> injecting socket

    def inject(self, packet: bytes) -> None:
        """Send a whole IP datagram from this queue's namespace (not queued again: marked)."""
        family = packet[0] >> 4
        sock = self.raw.get(family)
        if sock is None:
            af = socket.AF_INET6 if family == 6 else socket.AF_INET
            # IPPROTO_RAW: we write the IP header (IP_HDRINCL; on IPv6 implied, raw(7))
            sock = netns_socket(self.ns, af, socket.SOCK_RAW, socket.IPPROTO_RAW)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, INJECT_MARK)
            self.raw[family] = sock
        _, dst = faults.addresses(packet)
        with contextlib.suppress(OSError):
            sock.sendto(packet, (dst, 0, 0, 0) if family == 6 else (dst, 0))


@dataclass
class Pending:
    """A packet of a fault queue waiting for its verdict."""

    queue: Queue
    packet_id: int
    echo: faults.Echo | None = None
    payload: bytes | None = None  # the bytes to accept instead (corrupt)
    copy: bytes | None = None  # sent once more after the accept (duplicate)
    held_for: faults.Rule | None = None  # hold: released after the reply to rule.after


def bind(queue: Queue) -> None:
    """Open the netlink socket inside the queue's namespace and bind it to the queue."""
    sock = netns_socket(queue.ns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
    cmd = struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_UNSPEC)
    # A queue with rules needs to see (and may rewrite) the packet; the others only its id.
    mode = (0xFFFF, NFQNL_COPY_PACKET) if queue.rules else (0, NFQNL_COPY_META)
    params = struct.pack("!IB", *mode)
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


def _take(queue: Queue, packet_id: int, packet: bytes) -> Pending | None:
    """Apply the first fault rule that selects a packet of a fault queue: a drop is given its
    verdict here and now (None); anything else waits as the returned Pending."""
    entry = Pending(queue, packet_id, faults.decode_echo(packet))
    hit = faults.first_match(queue.rules, packet)
    if hit is None:
        return entry
    rule, entry.echo = hit
    log.info("%s:%d: %s on %s", queue.ns, queue.number, rule.text(), entry.echo)
    if rule.action is faults.Action.DROP:
        with contextlib.suppress(OSError):
            queue.sock.send(_verdict(queue.number, packet_id, verdict=NF_DROP))  # type: ignore[union-attr]
        return None
    if rule.action is faults.Action.FORGE:  # the forgeries go first, the real reply after
        for forged in faults.forgeries(packet, entry.echo):
            queue.inject(forged)
    elif rule.action is faults.Action.DUPLICATE:
        entry.copy = packet
    elif rule.action in (faults.Action.CORRUPT, faults.Action.CORRUPT_BAD_CHECKSUM):
        fix = rule.action is faults.Action.CORRUPT
        entry.payload = faults.corrupted(packet, entry.echo, rule.byte, fix_checksum=fix)
    elif rule.action is faults.Action.HOLD:
        entry.held_for = rule
    return entry


def _releases(held: Pending, gone: faults.Echo) -> bool:
    """Whether ``gone`` leaving is what the held packet waits for: the same family, ICMP
    type and identifier, with the rule's ``after`` sequence."""
    echo, rule = held.echo, held.held_for
    return (
        echo is not None
        and rule is not None
        and (gone.family, gone.icmp_type, gone.ident, gone.seq)
        == (echo.family, echo.icmp_type, echo.ident, rule.after)
    )


def _accept(entry: Pending, pending: dict[tuple[int, int], Pending]) -> None:
    """Accept a fault queue's packet (rewritten, then copied, as its rule says), then the
    packets held until it had gone."""
    queue = entry.queue
    with contextlib.suppress(OSError):  # namespace going away under us
        queue.sock.send(_verdict(queue.number, entry.packet_id, payload=entry.payload))  # type: ignore[union-attr]
    if entry.copy is not None:
        queue.inject(entry.copy)
    if entry.echo is None:
        return
    for key, other in list(pending.items()):
        if other.held_for is not None and _releases(other, entry.echo) and key in pending:
            del pending[key]
            _accept(other, pending)


def serve(queues: list[Queue]) -> None:
    """Hold every queued packet for its queue's delay, then accept it (applying a fault queue's
    rules on the way); runs until signalled."""
    by_fd = {q.sock.fileno(): q for q in queues if q.sock is not None}
    heap: list[tuple[int, int, int, int]] = []  # (release, wall-clock ns; order; fd; packet id)
    pending: dict[tuple[int, int], Pending] = {}  # fault queues' packets, by (fd, packet id)
    hold_ns = round(faults.HOLD_LIMIT_S * 1e9)
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
        released: list[Pending] = []
        while heap and heap[0][0] <= now:
            _release, _order, fd, packet_id = heapq.heappop(heap)
            if by_fd[fd].rules:
                entry = pending.pop((fd, packet_id), None)  # None: released early
                if entry is not None:
                    released.append(entry)
            else:
                due[fd] = max(packet_id, due.get(fd, 0))
        for fd, packet_id in due.items():
            # One batch verdict per queue accepts every id up to this one: a queue holds its
            # packets for one fixed delay, so ids fall due in order (first in, first out).
            # (A fault queue may hold one longer, so its packets get one verdict each.)
            queue = by_fd[fd]
            with contextlib.suppress(OSError):  # namespace going away under us
                queue.sock.send(_verdict(queue.number, packet_id, NFQNL_MSG_VERDICT_BATCH))
        for entry in released:
            _accept(entry, pending)
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
                    packet_id, stamp, packet = _packet_info(payload)
                    if packet_id is None:
                        continue
                    # Hold from the kernel's arrival stamp when there is one, so time this
                    # process spent busy elsewhere is not added to the link's delay.
                    arrived = read_at if stamp is None or stamp > read_at else stamp
                    release = arrived + queue.delay_ns
                    if queue.rules:
                        entry = _take(queue, packet_id, packet)
                        if entry is None:
                            continue
                        if entry.held_for is not None:  # goes anyway after the hold limit
                            release = arrived + max(queue.delay_ns, hold_ns)
                        pending[(fd, packet_id)] = entry
                    order += 1
                    heapq.heappush(heap, (release, order, fd, packet_id))


def parse_queue(text: str) -> Queue:
    try:
        ns, number, delay_ms = text.rsplit(":", 2)
        return Queue(ns=ns, number=int(number), delay_ns=round(float(delay_ms) * 1e6))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected NS:QUEUE:DELAY_MS, got {text!r}") from exc


def parse_faults(text: str) -> tuple[str, int, tuple[faults.Rule, ...]]:
    try:
        ns, number, rules = text.split(":", 2)
        return ns, int(number), faults.parse_plan(rules)
    except ValueError as exc:  # FaultRuleError is a ValueError too
        raise argparse.ArgumentTypeError(f"expected NS:QUEUE:RULES, got {text!r}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compare.lab.delay", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--queue", type=parse_queue, action="append", required=True)
    parser.add_argument("--faults", type=parse_faults, action="append", default=[])
    args = parser.parse_args(argv)
    by_name = {(q.ns, q.number): q for q in args.queue}
    for ns, number, rules in args.faults:
        if (ns, number) not in by_name:
            parser.error(f"--faults {ns}:{number}: no such --queue")
        by_name[(ns, number)].rules = rules
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
