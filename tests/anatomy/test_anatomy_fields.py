"""Every kind: the leaves tile the packet bit for bit, and our decoders agree with scapy's.

Expectations come from the RFC layouts and from scapy, never from the code under test: the
coverage check reads only the JSON document's offsets and lengths, the packets are also built
by scapy and compared byte for byte, and the field values are checked against scapy's own.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6TimeExceeded, IPv6

import compare.anatomy.dissect as dissect_mod
from compare.anatomy import explain
from compare.anatomy.build import KINDS, PROBES, Params, build
from compare.anatomy.render_text import render_terminal
from handrolled.checksum import internet_checksum
from handrolled.errors import MalformedPacket
from handrolled.record import fields

CASES = [
    (kind, v6, probe)
    for kind in KINDS
    for v6 in (False, True)
    for probe in PROBES
    if not (kind == "packet-too-big" and not v6)
    if probe == "icmp" or kind in ("time-exceeded", "dest-unreachable", "packet-too-big")
]


def _cover(doc: dict) -> None:
    """Leaves sorted by offset must run from bit 0 to the last bit without gap or overlap."""
    nbits = len(bytes.fromhex(doc["packet"])) * 8
    pos = 0
    for leaf in sorted(doc["fields"], key=lambda f: f["bit_offset"]):
        assert leaf["bit_length"] > 0, leaf
        assert leaf["bit_offset"] == pos, f"gap or overlap at bit {pos}: {leaf}"
        pos += leaf["bit_length"]
    assert pos == nbits


@pytest.mark.parametrize("kind,v6,probe", CASES)
def test_leaves_cover_every_bit_once_and_both_sides_agree(kind, v6, probe):
    doc = explain(build(Params(kind=kind, v6=v6, probe=probe))).to_json()
    _cover(doc)
    assert set(doc["fields"][0]) == {
        "layer",
        "name",
        "bit_offset",
        "bit_length",
        "value",
        "scapy",
        "agree",
        "rfc",
    }
    disagree = [f for f in doc["fields"] if f["agree"] is False]
    assert disagree == []
    compared = [f for f in doc["fields"] if f["agree"] is True]
    assert len(compared) >= len(doc["fields"]) - 2  # at most the unread remainder of a quote
    assert all(f["rfc"].startswith("RFC ") for f in doc["fields"])


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("quote", [8, 12])
def test_a_quote_cut_to_the_rfc_minimum_is_still_covered(v6, quote):
    for probe in PROBES:
        doc = explain(
            build(Params(kind="time-exceeded", v6=v6, probe=probe, quote=quote))
        ).to_json()
        _cover(doc)
        assert not [f for f in doc["fields"] if f["agree"] is False]
        layers = {f["layer"] for f in doc["fields"]}
        assert any(name.endswith("(quoted)") and "IP" not in name for name in layers)


def test_built_packets_match_scapy_builds():
    ours = build(Params(kind="echo-request"))
    theirs = IP(src="198.51.100.1", dst="203.0.113.10", id=1, flags="DF", ttl=64) / ICMP(
        type=8, id=1, seq=1
    )
    assert ours == bytes(theirs / b"hello")
    ours = build(Params(kind="tcp-syn", v6=True, payload=b""))
    theirs = IPv6(src="2001:db8:0:1::1", dst="2001:db8:0:a::2", hlim=64) / TCP(
        sport=1, dport=80, seq=1, flags="S", window=64240
    )
    assert ours == bytes(theirs)
    ours = build(Params(kind="udp-probe", seq=3))
    theirs = IP(src="198.51.100.1", dst="203.0.113.10", id=1, flags="DF") / UDP(
        sport=1, dport=33436
    )
    assert ours == bytes(theirs / b"hello")
    probe = IPv6(src="2001:db8:0:1::1", dst="2001:db8:0:a::2", hlim=1) / ICMPv6EchoRequest(
        id=1, seq=1, data=b"hello"
    )
    error = IPv6(src="2001:db8:0:2::2", dst="2001:db8:0:1::1", hlim=64) / ICMPv6TimeExceeded()
    assert build(Params(kind="time-exceeded", v6=True)) == bytes(error / bytes(probe))


def test_rfc_offsets_of_well_known_fields():
    a = explain(build(Params(kind="time-exceeded", probe="udp")))
    where = {(f.layer, f.name): (f.bit_offset, f.bit_length) for f in a.fields}
    assert where["IPv4", "version"] == (0, 4)  # RFC 791 §3.1
    assert where["IPv4", "ihl"] == (4, 4)
    assert where["IPv4", "flag_df"] == (49, 1)
    assert where["IPv4", "fragment_offset"] == (51, 13)
    assert where["IPv4", "ttl"] == (64, 8)
    assert where["ICMP", "type"] == (160, 8)  # right after the 20-byte header
    assert where["IPv4 (quoted)", "ttl"] == ((28 + 8) * 8, 8)
    assert where["UDP (quoted)", "dst_port"] == ((48 + 2) * 8, 16)  # RFC 768
    tcp = explain(build(Params(kind="tcp-syn")))
    flags = {f.name: (f.bit_offset, f.value) for f in tcp.fields if f.name.startswith("flag_")}
    assert flags["flag_syn"] == ((20 + 13) * 8 + 6, 1)  # RFC 9293 §3.1: SYN is bit 6 of byte 13
    assert flags["flag_ack"] == ((20 + 13) * 8 + 3, 0)


def test_checksums_worked_out_match_scapy_and_rfc_1071():
    a = explain(build(Params(kind="time-exceeded", v6=True, probe="udp")))
    (work,) = a.checksums
    assert work.verifies and work.receiver_total == 0xFFFF
    icmp6 = IPv6(a.packet)[ICMPv6TimeExceeded]
    assert work.stored == icmp6.cksum == work.computed == work.scapy
    names = [name for name, _ in work.pseudo_header]
    assert names == [
        "source address",
        "destination address",
        "upper-layer length",
        "zero",
        "next header",
    ]  # RFC 8200 §8.1
    assert b"".join(p for _, p in work.pseudo_header)[-1] == 58
    total = 0
    for w in work.words:  # each step folds its carry at once (RFC 1071 §2 (B))
        total += w.word
        carried = total > 0xFFFF
        total = (total & 0xFFFF) + carried
        assert (w.total, w.carried) == (total, carried)
    assert work.total == total and work.computed == ~total & 0xFFFF
    v4 = explain(build(Params(kind="echo-request")))
    ip_work = next(c for c in v4.checksums if c.layer == "IPv4")
    assert ip_work.pseudo_header == []
    assert ip_work.computed == IP(v4.packet).chksum
    assert internet_checksum(v4.packet[:20]) == 0


def test_a_bad_checksum_does_not_verify():
    packet = bytearray(build(Params(kind="udp-probe")))
    packet[26] ^= 0xFF  # the UDP checksum: 20-byte IP header + offset 6 (RFC 768)
    a = explain(bytes(packet))
    work = next(c for c in a.checksums if c.layer == "UDP")
    assert not work.verifies and work.receiver_total != 0xFFFF
    assert work.scapy == UDP(bytes(build(Params(kind="udp-probe")))[20:]).chksum


def test_a_corrupted_decoder_value_is_marked_as_a_disagreement(monkeypatch):
    real = dissect_mod.decode_ipv4

    def corrupted(data, **kw):
        header, payload = real(data, **kw)
        return header.__class__(**{**_fields(header), "ttl": header.ttl + 1}), payload

    monkeypatch.setattr(dissect_mod, "decode_ipv4", corrupted)
    a = explain(build(Params(kind="echo-request")))
    bad = a.disagreements
    assert [(f.layer, f.name, f.value, f.scapy) for f in bad] == [("IPv4", "ttl", 65, 64)]
    text = render_terminal(a)
    assert "DISAGREEMENT on 1 field(s):" in text and "IPv4.ttl: hand-rolled 65, scapy 64" in text
    assert a.to_json()["fields"][a.fields.index(bad[0])]["agree"] is False


def _fields(header) -> dict:
    return {name: getattr(header, name) for name in fields(header)}


def test_terminal_fits_100_columns():
    for kind, v6, probe in CASES:
        text = render_terminal(explain(build(Params(kind=kind, v6=v6, probe=probe))))
        assert max(len(line) for line in text.splitlines()) <= 100, (kind, v6, probe)


def test_seed_skeleton_bytes_on_a_little_endian_machine():
    doc = json.loads(_cli("--seed-skeleton", "--ident", "0x1234", "--seq", "1", "--json"))
    skeleton, network = bytes.fromhex(doc["skeleton"]), bytes.fromhex(doc["network"])
    assert skeleton[4:6] == b"\x34\x12" and network[4:6] == b"\x12\x34"  # identifier
    assert skeleton[6:8] == b"\x01\x00" and network[6:8] == b"\x00\x01"  # sequence
    assert internet_checksum(skeleton) == 0 == internet_checksum(network)  # both verify
    theirs = ICMP(skeleton)
    assert (theirs.id, theirs.seq) == (0x3412, 0x0100)  # what a dissector reads
    assert bytes(ICMP(type=8, id=0x1234, seq=1) / skeleton[8:]) == network
    differs = [f["field"] for f in doc["fields"] if f["note"].startswith("swapped")]
    assert differs == ["identifier", "sequence"]
    assert struct.unpack("<H", skeleton[2:4])[0] == doc["htons_on_little_endian"]


def _cli(*argv: str, ok: bool = True) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "compare.cli", "anatomy", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["bogus-kind"],
        [],
        ["echo-request", "--ident", "x"],
        ["echo-request", "--ident", "70000"],
        ["echo-request", "--probe", "sctp"],
        ["packet-too-big"],
        ["time-exceeded", "--quote", "4"],
        ["echo-request", "--src", "not-an-address"],
        ["echo-request", "--payload-hex", "zz"],
        ["smtp"],
        ["--worksheet"],
        ["echo-request", "--no-such-flag"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv):
    assert _cli(*argv, ok=False).startswith("wiretwin anatomy: ")


def test_cli_outputs_json_markdown_and_html(tmp_path):
    doc = json.loads(
        _cli("echo-request", "--ident", "1", "--seq", "1", "--payload", "hello", "--json")
    )
    assert bytes.fromhex(doc["packet"]) == build(Params())
    md = _cli("echo-reply", "-6", "--markdown")
    assert "| offset" in md and "### ICMPv6: echo reply" in md and "### Checksum of ICMPv6" in md
    page = tmp_path / "p.html"
    assert "wrote" in _cli("tcp-syn", "--html", str(page))
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<script>" in html and "http" not in html


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(
        [(k, v6, p) for k, v6, p in CASES if p != "icmp" or k not in ("udp-probe", "tcp-syn")]
    ),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
    cut=st.integers(1, 400),
    extra=st.binary(max_size=24),
)
def test_any_damaged_packet_dissects_or_is_malformed(base, edits, cut, extra):
    kind, v6, probe = base
    data = bytearray(build(Params(kind=kind, v6=v6, probe=probe)))
    for pos, value in edits:
        data[pos % len(data)] = value
    data = bytes(data[:cut]) + extra
    try:
        doc = explain(data).to_json()
    except MalformedPacket:
        return  # the one exception a bad packet may raise
    _cover(doc)
