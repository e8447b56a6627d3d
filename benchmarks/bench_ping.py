"""Fidelity of the hand-rolled ping's RTTs against a wire capture of the same probes.

Run as root: ``python benchmarks/bench_ping.py [--count 100] [--interval 0.02]``.  Builds a
lab, captures every frame on the client's interface (compare/capture.py: AF_PACKET, kernel
timestamps), runs ``run_ping`` inside the client namespace to r1 (one delayed hop) and to the
target (seven), and for every probe compares the RTT ping reports with the RTT on the wire
(echo reply frame time minus echo request frame time, matched by identifier and sequence).
Prints the median / p90 / max of |error| in microseconds, split into send-side (wire
request time minus our send stamp: the kernel's software transmit stamp, SO_TIMESTAMPING) and
receive-side (our receive stamp minus wire reply time), and, as the anchor the issue quotes,
the same figures for a receive time read in user space after ``recvmsg`` returns (what a
Python ping timing around ``recvfrom`` would report).
Goal (issue 3): median per-probe RTT error within 50 us.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import time

from compare.capture import Capture
from compare.lab import Lab
from handrolled import net
from handrolled.ip import decode_ipv4
from handrolled.ping import run_ping
from handrolled.requests import PingRequest


def _wire_times(frames, ident: int) -> tuple[dict[int, int], dict[int, int]]:
    requests: dict[int, int] = {}
    replies: dict[int, int] = {}
    for frame in frames:
        ip = frame.ip
        if not ip or ip[0] >> 4 != 4:
            continue
        try:
            header, icmp = decode_ipv4(ip)
        except ValueError:
            continue
        if header.protocol != 1 or len(icmp) < 8:
            continue
        icmp_type, _code, _csum, pid, seq = struct.unpack_from("!BBHHH", icmp)
        if pid != ident:
            continue
        if icmp_type == 8 and frame.outgoing:
            requests.setdefault(seq, frame.time_ns)
        elif icmp_type == 0 and not frame.outgoing:
            replies.setdefault(seq, frame.time_ns)
    return requests, replies


class _UserspaceStamp(net.IcmpSocket):
    """The anchor: the receive time read in user space when recvmsg returns."""

    def _parse(self, data, ancdata, address, error_queue):
        got = super()._parse(data, ancdata, address, error_queue)
        if not isinstance(got, net.Received):
            return got  # a transmit stamp: the send side stays the same
        return net.Received(
            got.data, got.source, time.time_ns(), False, got.ttl, got.has_ip_header, got.error
        )


def _stats(values: list[float]) -> str:
    values = sorted(abs(v) for v in values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"median {statistics.median(values):7.1f}  p90 {p90:7.1f}  max {values[-1]:8.1f}"


def bench(lab: Lab, count: int, interval: float) -> None:
    for role in ("r1", "target"):
        node = lab.nodes[role]
        for label, cls in (
            ("kernel stamp (ours)", net.IcmpSocket),
            ("user-space stamp", _UserspaceStamp),
        ):
            ident = 0x6000 + len(label) + node.ttl
            raw = lab.socket("client", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            sock = cls(raw, 4, "raw")
            sock.set_icmp_filter(net.DEFAULT_FILTER[4])
            with Capture(lab.ns("client"), "down0") as cap, sock:
                request = PingRequest(
                    node.addr4, count=count, interval=interval, timeout=2, ident=ident
                )
                result = run_ping(request, sock=sock)
                time.sleep(0.2)
            requests, replies = _wire_times(cap.frames, ident)
            send_err, recv_err, rtt_err = [], [], []
            for p in result.probes:
                if p.recv_ns is None or p.seq not in requests or p.seq not in replies:
                    continue
                send_err.append((requests[p.seq] - p.send_ns) / 1e3)
                recv_err.append((p.recv_ns - replies[p.seq]) / 1e3)
                rtt_err.append(p.rtt_ms * 1e3 - (replies[p.seq] - requests[p.seq]) / 1e3)
            print(f"{role} (promised {node.rtt_ms} ms), {label}, {len(rtt_err)} probes, |error| us")
            print(f"  RTT      {_stats(rtt_err)}")
            print(f"  send     {_stats(send_err)}   (wire request - our send stamp)")
            print(f"  receive  {_stats(recv_err)}   (our receive stamp - wire reply)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    with Lab.create() as lab:
        bench(lab, args.count, args.interval)


if __name__ == "__main__":
    main()
