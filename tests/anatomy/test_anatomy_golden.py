"""Golden outputs: packets built by scapy (so the bytes are independent of our encoders), each
rendered in every format and compared with the files under golden/.

The golden files were written once by this test (``WIRETWIN_UPDATE_GOLDEN=1``) and read
through by hand against the RFC diagrams; a change to any view shows as a diff here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import TCP, ICMPv6DestUnreach, ICMPv6EchoRequest, IPv6

from compare.anatomy import explain
from compare.anatomy.build import Params, build
from compare.anatomy.render_html import render_html
from compare.anatomy.render_text import render_markdown, render_terminal
from compare.anatomy.seed import render_seed, seed_view

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("WIRETWIN_UPDATE_GOLDEN") == "1"


def _probe_udp():
    return (
        IP(src="198.51.100.1", dst="203.0.113.10", id=1, flags="DF", ttl=1)
        / UDP(sport=1, dport=33434)
        / b"hello"
    )


PACKETS = {
    # RFC 792 p.14 echo request, identifier 1, sequence 1, payload "hello"
    "echo-request": IP(src="198.51.100.1", dst="203.0.113.10", id=1, flags="DF", ttl=64)
    / ICMP(type=8, code=0, id=1, seq=1)
    / b"hello",
    # RFC 792 p.6 time exceeded from the second router, quoting a UDP probe whose TTL ran out
    "time-exceeded-udp": IP(src="198.51.100.6", dst="198.51.100.1", id=1, flags="DF", ttl=64)
    / ICMP(type=11, code=0)
    / bytes(_probe_udp()),
    # RFC 9293 §3.1 SYN over IPv6, no options, Linux's window
    "tcp-syn-v6": IPv6(src="2001:db8:0:1::1", dst="2001:db8:0:a::2", hlim=64)
    / TCP(sport=1, dport=80, seq=1, flags="S", window=64240),
    # RFC 4443 §3.1 port unreachable quoting an echo request (code 4)
    "dest-unreachable-v6": IPv6(src="2001:db8:0:a::2", dst="2001:db8:0:1::1", hlim=64)
    / ICMPv6DestUnreach(code=4)
    / bytes(
        IPv6(src="2001:db8:0:1::1", dst="2001:db8:0:a::2", hlim=58)
        / ICMPv6EchoRequest(id=1, seq=1, data=b"hello")
    ),
}
FORMATS = {
    "txt": render_terminal,
    "md": render_markdown,
    "json": lambda a: json.dumps(a.to_json(), indent=2) + "\n",
}


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if not path.exists():
        pytest.fail(f"no golden file {path}: run with WIRETWIN_UPDATE_GOLDEN=1 and review it")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("name", sorted(PACKETS))
def test_golden(name, fmt):
    anatomy = explain(bytes(PACKETS[name]))
    _check(f"{name}.{fmt}", FORMATS[fmt](anatomy))


def test_golden_html_page():
    _check("time-exceeded-udp.html", render_html(explain(bytes(PACKETS["time-exceeded-udp"]))))


def test_golden_seed_skeleton():
    view = seed_view(0x1234, 1, bytes.fromhex("00000040fc54d941"))  # struct.pack("<d", 1.7e9)
    _check("seed-skeleton.txt", render_seed(view))
    _check("seed-skeleton.md", render_seed(view, markdown=True))


def test_our_builder_makes_the_golden_bytes():
    """The parameters of the CLI give the same bytes scapy built for the golden files."""
    assert build(Params(kind="echo-request")) == bytes(PACKETS["echo-request"])
    made = build(Params(kind="time-exceeded", probe="udp"))
    assert made == bytes(PACKETS["time-exceeded-udp"])
    assert build(Params(kind="tcp-syn", v6=True, payload=b"")) == bytes(PACKETS["tcp-syn-v6"])


def test_golden_json_reads_like_the_rfc():
    doc = json.loads((GOLDEN / "echo-request.json").read_text(encoding="utf-8"))
    leaves = {(f["layer"], f["name"]): f for f in doc["fields"]}
    assert doc["packet"] == bytes(PACKETS["echo-request"]).hex()
    assert leaves["IPv4", "ttl"]["bit_offset"] == 64 and leaves["IPv4", "ttl"]["value"] == 64
    assert leaves["ICMP", "identifier"]["bit_offset"] == (20 + 4) * 8
    assert leaves["ICMP", "payload"]["value"] == b"hello".hex()
    assert all(f["agree"] for f in doc["fields"])
