"""A noisy neighbour: another pinger in the same namespace, for the harness's ping scenario.

A raw ICMP socket sees every ICMP message of its host, so a pinger must ignore replies that are
not its own.  This neighbour makes that matter: it sends echo requests to the same target with
another identifier, cycling through the same small sequence numbers at a high rate, so that
while any probe of ours is in flight a reply with our sequence number but the neighbour's
identifier arrives.  Bounded: at most ``--count`` requests, at most ``--seconds``.

Written here with struct alone, so the neighbour shares no code with either implementation.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

IDENT = 0x4E42  # "NB"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)  # RFC 792 echo
    csum = _checksum(header + payload)
    return struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compare.lab.neighbour")
    parser.add_argument("host")
    parser.add_argument("--ident", type=lambda s: int(s, 0), default=IDENT)
    parser.add_argument("--payload-hex", default="")
    parser.add_argument("--seqs", type=int, default=8, help="cycle through 1..SEQS")
    parser.add_argument("--interval", type=float, default=0.003)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    payload = bytes.fromhex(args.payload_hex)
    address = socket.gethostbyname(args.host)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        end = time.monotonic() + args.seconds
        for n in range(args.count):
            if time.monotonic() > end:
                break
            sock.sendto(echo_request(args.ident, n % args.seqs + 1, payload), (address, 0))
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
