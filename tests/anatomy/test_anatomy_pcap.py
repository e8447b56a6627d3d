"""The pcap source: a capture written by compare.capture.write_pcap, read back packet by packet,
each field checked against what tshark reads from the same file; the SMTP dialogue view on a
real aiosmtpd conversation captured on loopback; the worksheet from a capture.
"""

from __future__ import annotations

import json
import shutil
import smtplib
import ssl
import subprocess
import sys
import time
from email.message import EmailMessage

import pytest
from smtpd_fixtures import RecordingHandler, serve_recording, skip_or_fail

from compare.anatomy.build import Params, build
from compare.capture import Capture, Frame, write_pcap

CLIENT_MAC, ROUTER_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
ARP = bytes.fromhex("0001080006040001") + CLIENT_MAC + bytes(4) + bytes(6) + bytes(4)


def _eth(ip: bytes, ethertype: int | None = None) -> bytes:
    if ethertype is None:
        ethertype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    frame = ROUTER_MAC + CLIENT_MAC + ethertype.to_bytes(2, "big") + ip
    return frame + bytes(max(0, 60 - len(frame)))  # IEEE 802.3: frames pad to 60 bytes


PACKETS = [
    ("arp", None),
    ("echo-request", Params(ttl=1, seq=1)),
    ("time-exceeded", Params(kind="time-exceeded", seq=1)),
    ("udp-probe", Params(kind="udp-probe", seq=2, ttl=2)),
    ("tcp-syn v6", Params(kind="tcp-syn", v6=True, seq=3)),
    ("echo-reply v6", Params(kind="echo-reply", v6=True, ident=7, seq=9)),
    ("dest-unreachable", Params(kind="dest-unreachable", probe="udp", seq=2, ttl=2)),
]


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    path = tmp_path_factory.mktemp("pcap") / "probes.pcap"
    frames = []
    for i, (_, params) in enumerate(PACKETS):
        data = _eth(ARP, 0x0806) if params is None else _eth(build(params))
        frames.append(Frame(1_700_000_000_000_000_000 + i * 1_000_000, i % 2 == 1, data))
    write_pcap(path, frames)
    return path


def _cli(*argv: str, code: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "compare.cli", "anatomy", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == code, proc.stderr
    return proc


def _tshark(path, number: int, *fields: str, decode_as: str | None = None) -> list[str]:
    tshark = shutil.which("tshark")
    if tshark is None:
        skip_or_fail("needs tshark to read our pcaps independently (bash .ci/browser-setup)")
    argv = [tshark, "-n", "-r", str(path), "-Y", f"frame.number == {number}", "-T", "fields"]
    argv += ["-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        argv += ["-e", f]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout.rstrip("\n").split("\t")


def _values(doc: dict, name: str) -> list:
    return [f["value"] for f in doc["fields"] if f["name"] == name]


def test_each_packet_reads_back_and_tshark_agrees(pcap):
    for number, (label, params) in enumerate(PACKETS, start=1):
        if params is None:
            continue
        doc = json.loads(_cli("--pcap", pcap, "--index", number, "--json").stdout)
        packet = bytes.fromhex(doc["packet"])
        assert packet.startswith(build(params)), label  # then the Ethernet padding, if any
        pos = 0
        for f in sorted(doc["fields"], key=lambda f: f["bit_offset"]):
            assert f["bit_offset"] == pos
            pos += f["bit_length"]
        assert pos == len(packet) * 8
        assert not [f for f in doc["fields"] if f["agree"] is False], label
        if params.v6:
            hlim, plen = _tshark(pcap, number, "ipv6.hlim", "ipv6.plen")
            assert _values(doc, "hop_limit") == [int(x) for x in hlim.split(",")]
            assert _values(doc, "payload_length")[0] == int(plen.split(",")[0])
        else:
            ttl, ident, csum = _tshark(pcap, number, "ip.ttl", "ip.id", "ip.checksum")
            assert _values(doc, "ttl") == [int(x) for x in ttl.split(",")], label
            assert _values(doc, "identification") == [int(x, 0) for x in ident.split(",")]
            assert _values(doc, "header_checksum") == [int(x, 0) for x in csum.split(",")]
    (seq,) = _tshark(pcap, 2, "icmp.seq")
    doc = json.loads(_cli("--pcap", pcap, "--index", 2, "--json").stdout)
    assert _values(doc, "sequence") == [int(seq)]
    assert _values(doc, "trailer") == [bytes(60 - 14 - 33).hex()]  # Ethernet padding, marked
    icmp_type, ports = _tshark(pcap, 3, "icmp.type", "udp.dstport")
    doc = json.loads(_cli("--pcap", pcap, "--index", 3, "--json").stdout)
    assert _values(doc, "type") == [int(x) for x in icmp_type.split(",")] == [11, 8]
    assert ports == ""  # it quotes an echo request, no UDP
    dport, csum = _tshark(pcap, 4, "udp.dstport", "udp.checksum")
    doc = json.loads(_cli("--pcap", pcap, "--index", 4, "--json").stdout)
    assert _values(doc, "dst_port") == [int(dport)] == [33435]
    assert [f["value"] for f in doc["fields"] if f["layer"] == "UDP"][3] == int(csum, 0)
    flags, window = _tshark(pcap, 5, "tcp.flags", "tcp.window_size_value")
    doc = json.loads(_cli("--pcap", pcap, "--index", 5, "--json").stdout)
    assert _values(doc, "flag_syn") == [1] and int(flags, 0) == 0x002
    assert _values(doc, "window") == [int(window)]
    ident, seq = _tshark(pcap, 6, "icmpv6.echo.identifier", "icmpv6.echo.sequence_number")
    doc = json.loads(_cli("--pcap", pcap, "--index", 6, "--json").stdout)
    assert (_values(doc, "identifier"), _values(doc, "sequence")) == ([int(ident, 0)], [int(seq)])


@pytest.mark.parametrize("index", [0, 8, -1])
def test_index_out_of_range(pcap, index):
    err = _cli("--pcap", pcap, f"--index={index}", code=2).stderr
    assert err.count("\n") == 1 and "out of range (1..7)" in err


def test_a_non_ip_packet_and_an_unreadable_file(pcap, tmp_path):
    err = _cli("--pcap", pcap, "--index", 1, code=2).stderr
    assert err.count("\n") == 1 and "not IP (ethertype 0x0806" in err
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture at all")
    err = _cli("--pcap", junk, code=2).stderr
    assert err.count("\n") == 1 and "not a readable pcap" in err
    err = _cli("--pcap", tmp_path / "missing.pcap", code=2).stderr
    assert err.count("\n") == 1 and "no such file" in err


def test_worksheet_from_a_capture(pcap):
    text = _cli("--worksheet", "--pcap", pcap).stdout
    questions, answers = text.split("## Answer key")
    assert "Which bytes hold its identifier" in questions
    assert "bytes 24-25 (00 01): identifier 1" in answers  # RFC 791 20-byte header + 4
    assert "Why does hop 1 (198.51.100.6) answer with type 11 in packet 3?" in questions
    assert "quotes probe 2 (identifier 1, sequence 1), sent with TTL 1" in answers
    assert "IHL" in answers and "20 bytes" in answers
    assert "pseudo-header" in answers  # the UDP probe's checksum question
    assert "Probe 4 (TTL 2) gets packet 7, a dest-unreachable" in questions
    assert questions.count("\n1. ") == 1 and answers.count("\n1. ") == 1


def _runs(codes: list[str]) -> list[str]:
    return [c for i, c in enumerate(codes) if i == 0 or codes[i - 1] != c]


@pytest.mark.root
def test_smtp_dialogue_from_a_loopback_capture(tmp_path):
    handler = RecordingHandler(refuse={"carol@example.org"})  # RCPT gets 550 (a 5yz)
    with serve_recording(handler) as server, Capture(None, "lo") as cap:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "alice@example.org", "bob@example.org", "hi"
        msg["Cc"] = "carol@example.org"
        msg.set_content("hello\nworld\n")
        with smtplib.SMTP(server.host, server.port, timeout=10) as client:
            client.send_message(msg)
        time.sleep(0.2)
    port = server.port
    mine = [f for f in cap.frames if port.to_bytes(2, "big") in f.data[34:38]]
    both = tmp_path / "smtp-both.pcap"  # loopback: each segment captured twice
    write_pcap(both, mine)
    once = tmp_path / "smtp.pcap"
    write_pcap(once, [f for f in mine if f.outgoing])
    doc = json.loads(_cli("smtp", "--pcap", both, "--json").stdout)
    assert doc == json.loads(_cli("smtp", "--pcap", once, "--json").stdout)
    turns = doc["dialogue"]
    content = [t for t in turns if t["who"] == "C" and t["rfc"].endswith("§4.1.1.4")]
    commands = [t["text"].split(" ")[0].upper() for t in turns if t["who"] == "C"]
    commands = [c for c in commands if c not in ("(MESSAGE:", ".")]
    codes = [t["code"] for t in turns if t["who"] == "S"]
    tshark = shutil.which("tshark")
    if tshark is None:
        skip_or_fail("needs tshark to read the SMTP capture independently")
    proc = subprocess.run(
        [
            *(tshark, "-n", "-r", str(once), "-d", f"tcp.port=={port},smtp", "-Y", "smtp"),
            *("-T", "fields", "-e", "smtp.req.command", "-e", "smtp.response.code"),
            *("-E", "occurrence=f"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    theirs_commands = [r[0] for r in rows if r[0]]
    theirs_codes = [r[1] for r in rows if len(r) > 1 and r[1]]
    assert commands == [c.upper() for c in theirs_commands]
    assert commands == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]  # send_message
    assert [t["text"] for t in content][-1] == "."  # RFC 5321 §4.1.1.4: the lone dot
    # tshark names one code per segment, and a multi-line reply may span segments: compare
    # the runs of codes (the dialogue's replies in order).
    assert _runs(codes) == _runs(theirs_codes) == ["220", "250", "550", "354", "250", "221"]
    assert codes[0] == "220" and "354" in codes and codes[-1] == "221"
    by_code = {t["code"]: t for t in turns if t["who"] == "S"}
    assert by_code["354"]["meaning"].startswith("3yz positive intermediate")
    assert by_code["250"]["meaning"].startswith("2yz positive completion")
    assert (
        by_code["550"]["meaning"]
        == "5yz permanent negative completion: no, do not repeat as is; x5z mail system"
    )
    assert all(t["rfc"].startswith("RFC ") for t in turns)
    assert any(t["text"].startswith("(message:") for t in turns)
    text = _cli("smtp", "--pcap", once).stdout
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "RFC 5321 §4.2.1" in text


def test_reply_codes_by_their_digits():
    from compare.anatomy.smtp_view import reply_meaning

    # RFC 5321 §4.2.1: the first digit is the class, the second the category
    assert reply_meaning("421").startswith("4yz transient negative completion")
    assert reply_meaning("421").endswith("x2z connections")
    assert reply_meaning("334").startswith("3yz positive intermediate")
    assert reply_meaning("500").endswith("x0z syntax")
    assert reply_meaning("214").endswith("x1z information")


@pytest.mark.root
def test_smtp_dialogue_stops_where_starttls_begins(smtp_tls_server, tmp_path):
    server = smtp_tls_server
    with Capture(None, "lo") as cap:
        context = ssl.create_default_context(cafile=server.cafile)
        with smtplib.SMTP(server.host, server.port, timeout=10) as client:
            client.starttls(context=context)
            client.sendmail("alice@example.org", ["bob@example.org"], "Subject: x\r\n\r\nhi\r\n")
        time.sleep(0.2)
    path = tmp_path / "tls.pcap"
    port = server.port.to_bytes(2, "big")
    write_pcap(path, [f for f in cap.frames if f.outgoing and port in f.data[34:38]])
    turns = json.loads(_cli("smtp", "--pcap", path, "--json").stdout)["dialogue"]
    said = [(t["who"], t["text"].split(" ")[0].upper(), t["code"]) for t in turns]
    assert said[-3:] == [("C", "STARTTLS", ""), ("S", "220", "220"), ("", "TLS", "")]
    assert turns[-1]["rfc"] == "RFC 3207 §4"  # nothing after the handshake is shown as SMTP
    assert not any("alice@example.org" in t["text"] for t in turns)
