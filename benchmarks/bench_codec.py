"""Speed of the hand-rolled packet codec against dpkt and scapy, side by side in one run.

Run: ``python benchmarks/bench_codec.py [--chunks 200] [--chunk-ms 2] [--quick] [--json FILE]``.
No root, no network: every packet is built and parsed in memory.

Each operation is timed for every implementation in chunks (a chunk: as many calls as fill about
``--chunk-ms``), the implementations interleaved chunk by chunk so that load from other
processes falls on all of them alike.  The figure per packet is the 10th percentile of the
chunks' per-call times: the speed the code reaches when the machine lets it, less noisy than a
mean.  Every figure includes the loop and the call of a closure (printed as ``loop + call``).

Before timing, each builder's bytes are checked equal to ours and each parser's fields to the
packet's, so the implementations do the same work.  Anchors, measured in the same run:

- dpkt (a benchmark extra): build, and parse without verifying any checksum (what dpkt's
  constructor does); "dpkt + in_cksum" adds the verification;
- scapy: build with ``raw()``, dissect without verifying; "scapy + checksum" verifies;
- floor: the least a hand-written Python codec can do (one ``struct`` call and a concatenation
  or slice, no checksum, no typed result): how far from the floor we are.

Goals (issue 17): build an echo request in <= 1.5 us; parse an echo reply, checksum verified,
faster than dpkt parses it without verifying.
"""

from __future__ import annotations

import platform
import socket
import struct
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import _common

from handrolled.icmp import (
    EchoMessage,
    decode_icmp,
    default_payload,
    encode_echo_reply,
    encode_echo_request,
)
from handrolled.ip import IpProto, IPv4Flags, IPv4Header, decode_ipv4, encode_ipv4
from handrolled.transport import (
    TcpFlags,
    TcpSegment,
    UdpDatagram,
    encode_tcp,
    encode_udp,
)

IDENT, SEQ = 0x1234, 1
PAYLOAD = default_payload(56)  # ping's default size
SRC, DST = "198.51.100.1", "203.0.113.10"
PROBE_DATA = PAYLOAD[:32]
BUILD_ECHO_GOAL_US = 1.5


@dataclass(frozen=True)
class Row:
    operation: str
    implementation: str
    us_per_packet: float
    note: str = ""


def _import_anchors() -> tuple[object, object]:
    """dpkt and scapy's layers, imported here so ``--help`` stays quick."""
    warnings.filterwarnings("ignore", module="dpkt")
    import dpkt
    from scapy import all as scapy

    return dpkt, scapy


def _chunk_ns(fn: Callable[[], object], calls: int) -> float:
    """Nanoseconds per call of ``fn`` over one chunk of ``calls`` calls."""
    loop = range(calls)
    started = time.perf_counter_ns()
    for _ in loop:
        fn()
    return (time.perf_counter_ns() - started) / calls


def _calls_per_chunk(fn: Callable[[], object], chunk_ms: float) -> int:
    """How many calls of ``fn`` fill about ``chunk_ms`` (after a warm-up call)."""
    fn()
    calls = 1
    while True:
        per_call = _chunk_ns(fn, calls)
        if per_call * calls >= 2e5 or calls >= 1 << 20:  # long enough to time (0.2 ms)
            return max(1, int(chunk_ms * 1e6 / per_call))
        calls *= 4


def measure(
    candidates: dict[str, Callable[[], object]], chunks: int, chunk_ms: float
) -> dict[str, float]:
    """Microseconds per call for each candidate, interleaved chunk by chunk (10th percentile)."""
    sizes = {name: _calls_per_chunk(fn, chunk_ms) for name, fn in candidates.items()}
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(chunks):
        for name, fn in candidates.items():
            samples[name].append(_chunk_ns(fn, sizes[name]))
    return {name: _common.p10(values) / 1e3 for name, values in samples.items()}


def _operations(dpkt, scapy) -> list[tuple[str, dict[str, Callable[[], object]], dict[str, str]]]:
    """(operation, {implementation: closure}, {implementation: note}), each checked first."""
    request = encode_echo_request(IDENT, SEQ, PAYLOAD)
    reply = encode_echo_reply(IDENT, SEQ, PAYLOAD)
    header = struct.Struct("!BBHHH")
    ip_reply = encode_ipv4(IPv4Header(src=DST, dst=SRC, identification=9, ttl=60), reply)
    src_b, dst_b = socket.inet_aton(SRC), socket.inet_aton(DST)
    ip_args = {"ttl": 5, "identification": 7, "flags": IPv4Flags.DF}

    def ours_build() -> bytes:
        return encode_echo_request(IDENT, SEQ, PAYLOAD)

    def dpkt_build() -> bytes:
        echo = dpkt.icmp.ICMP.Echo(id=IDENT, seq=SEQ, data=PAYLOAD)
        return bytes(dpkt.icmp.ICMP(type=8, data=echo))

    def scapy_build() -> bytes:
        return scapy.raw(scapy.ICMP(type=8, id=IDENT, seq=SEQ) / PAYLOAD)

    def floor_build() -> bytes:
        return header.pack(8, 0, 0xEEB7, IDENT, SEQ) + PAYLOAD  # constant checksum

    def ours_parse() -> EchoMessage:
        return decode_icmp(reply)  # always verifies

    def dpkt_parse():
        return dpkt.icmp.ICMP(reply)

    def dpkt_parse_verify():
        msg = dpkt.icmp.ICMP(reply)
        return msg, dpkt.in_cksum(reply) == 0

    def scapy_parse():
        return scapy.ICMP(reply)

    def scapy_parse_verify():
        msg = scapy.ICMP(reply)
        return msg, scapy.checksum(reply) == 0

    def floor_parse():
        return header.unpack_from(reply), reply[8:]

    def ours_ip_parse():
        ip, body = decode_ipv4(ip_reply)
        return ip, decode_icmp(body)

    def dpkt_ip_parse():
        return dpkt.ip.IP(ip_reply)

    def scapy_ip_parse():
        return scapy.IP(ip_reply)

    def ours_udp() -> bytes:
        udp = encode_udp(UdpDatagram(40000, 33434, PROBE_DATA), src=SRC, dst=DST)
        return encode_ipv4(IPv4Header(src=SRC, dst=DST, protocol=IpProto.UDP, **ip_args), udp)

    def dpkt_udp() -> bytes:
        udp = dpkt.udp.UDP(sport=40000, dport=33434, ulen=8 + len(PROBE_DATA), data=PROBE_DATA)
        return bytes(dpkt.ip.IP(src=src_b, dst=dst_b, p=17, ttl=5, id=7, df=1, data=udp))

    def scapy_udp() -> bytes:
        ip = scapy.IP(src=SRC, dst=DST, ttl=5, id=7, flags="DF")
        return scapy.raw(ip / scapy.UDP(sport=40000, dport=33434) / PROBE_DATA)

    def ours_tcp() -> bytes:
        syn = TcpSegment(40001, 80, seq=1, flags=TcpFlags.SYN, window=64240)
        tcp = encode_tcp(syn, src=SRC, dst=DST)
        return encode_ipv4(IPv4Header(src=SRC, dst=DST, protocol=IpProto.TCP, **ip_args), tcp)

    def dpkt_tcp() -> bytes:
        syn = dpkt.tcp.TCP(sport=40001, dport=80, seq=1, flags=dpkt.tcp.TH_SYN, win=64240)
        return bytes(dpkt.ip.IP(src=src_b, dst=dst_b, p=6, ttl=5, id=7, df=1, data=syn))

    def scapy_tcp() -> bytes:
        ip = scapy.IP(src=SRC, dst=DST, ttl=5, id=7, flags="DF")
        syn = scapy.TCP(sport=40001, dport=80, seq=1, flags="S", window=64240, options=[])
        return scapy.raw(ip / syn)

    # Same work: every builder's bytes equal ours, every parser reads the same fields.
    for fn in (dpkt_build, scapy_build, floor_build):
        assert fn() == request, fn.__name__
    for fn in (dpkt_udp, scapy_udp):
        assert fn() == ours_udp(), fn.__name__
    for fn in (dpkt_tcp, scapy_tcp):
        assert fn() == ours_tcp(), fn.__name__
    ours = ours_parse()
    assert ours.checksum_ok and (ours.ident, ours.seq, ours.payload) == (IDENT, SEQ, PAYLOAD)
    assert (dpkt_parse().data.id, scapy_parse().seq) == (IDENT, SEQ)
    assert dpkt_parse_verify()[1] and scapy_parse_verify()[1]
    assert ours_ip_parse()[1].payload == dpkt_ip_parse().data.data.data == PAYLOAD
    assert scapy_ip_parse()[scapy.ICMP].id == IDENT

    no_verify = "no checksum verified"
    return [
        (
            "build ICMP echo request (56-byte payload)",
            {"ours": ours_build, "dpkt": dpkt_build, "scapy": scapy_build, "floor": floor_build},
            {"floor": "struct pack + concatenation, constant checksum"},
        ),
        (
            "parse ICMP echo reply",
            {
                "ours": ours_parse,
                "dpkt": dpkt_parse,
                "dpkt + in_cksum": dpkt_parse_verify,
                "scapy": scapy_parse,
                "scapy + checksum": scapy_parse_verify,
                "floor": floor_parse,
            },
            {
                "ours": "checksum verified, typed frozen value",
                "dpkt": no_verify,
                "scapy": no_verify,
                "floor": "struct unpack + slice, " + no_verify,
            },
        ),
        (
            "parse IPv4 + ICMP echo reply",
            {"ours": ours_ip_parse, "dpkt": dpkt_ip_parse, "scapy": scapy_ip_parse},
            {"ours": "both checksums verified", "dpkt": no_verify, "scapy": no_verify},
        ),
        (
            "build IPv4 + UDP probe (32-byte payload)",
            {"ours": ours_udp, "dpkt": dpkt_udp, "scapy": scapy_udp},
            {"ours": "addresses as text", "dpkt": "addresses packed beforehand"},
        ),
        (
            "build IPv4 + TCP SYN probe",
            {"ours": ours_tcp, "dpkt": dpkt_tcp, "scapy": scapy_tcp},
            {"ours": "addresses as text", "dpkt": "addresses packed beforehand"},
        ),
    ]


def run(chunks: int, chunk_ms: float) -> dict:
    """Measure every operation; return rows, ratio lines and goal lines (also printed)."""
    dpkt, scapy = _import_anchors()
    rows: list[Row] = []
    overhead = measure({"loop + call": lambda: None}, chunks, chunk_ms)["loop + call"]
    results: dict[str, dict[str, float]] = {}
    for operation, candidates, notes in _operations(dpkt, scapy):
        times = measure(candidates, chunks, chunk_ms)
        results[operation] = times
        rows += [Row(operation, name, t, notes.get(name, "")) for name, t in times.items()]
    build = results["build ICMP echo request (56-byte payload)"]
    parse = results["parse ICMP echo reply"]
    ratios = []
    for operation, times in results.items():
        for anchor in ("dpkt", "scapy", "floor"):
            if anchor in times:
                ratios.append(
                    f"ratio {operation}: ours / {anchor} = {times['ours'] / times[anchor]:.3g}"
                )
    ratios.append(
        "ratio parse ICMP echo reply: ours (verified) / dpkt + in_cksum = "
        f"{parse['ours'] / parse['dpkt + in_cksum']:.2f}"
    )
    goals = [
        f"goal build echo request <= {BUILD_ECHO_GOAL_US} us: ours {build['ours']:.2f} us: "
        + _common.verdict(build["ours"] <= BUILD_ECHO_GOAL_US),
        f"goal parse echo reply, verified, faster than dpkt unverified: ours {parse['ours']:.2f}"
        f" us vs dpkt {parse['dpkt']:.2f} us: " + _common.verdict(parse["ours"] < parse["dpkt"]),
    ]
    return {
        "benchmark": "codec",
        "python": platform.python_version(),
        "chunks": chunks,
        "chunk_ms": chunk_ms,
        "loop_call_us": overhead,
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
        "goals": goals,
    }


def report(result: dict) -> str:
    """The result as the text this script prints."""
    lines = [
        f"per packet: 10th percentile of {result['chunks']} chunks of ~{result['chunk_ms']} ms, "
        f"implementations interleaved; loop + call {result['loop_call_us'] * 1e3:.0f} ns "
        "included in every figure",
    ]
    operation = None
    for row in result["rows"]:
        if row["operation"] != operation:
            operation = row["operation"]
            lines.append(f"\n{operation}")
        note = f"  ({row['note']})" if row["note"] else ""
        lines.append(f"  {row['implementation']:<18} {row['us_per_packet']:9.2f} us{note}")
    lines.append("")
    lines += result["ratios"]
    lines += result["goals"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return _common.main(
        argv,
        __doc__,
        [
            ("--chunks", int, 200, "chunks per implementation"),
            ("--chunk-ms", float, 2.0, "length of one chunk"),
        ],
        ((5, 0.2), "a few short chunks (smoke test)"),
        run,
        report,
    )


if __name__ == "__main__":
    sys.exit(main())
