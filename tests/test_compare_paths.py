"""compare paths (issue 12) catches what it exists for: faults patched into a copy of handrolled/
(tests/fault_injection.py) turn its verdict to FAIL, naming the field; the unpatched
copy agrees.  Keys for probes that share their ports are checked without a lab."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from fault_injection import Fault, clean_copy, cli_failures, compare_cli, patched_copy

from compare import paths

FAULTS = [
    Fault(
        "a Paris mode whose flow still varies (UDP destination port + k)",
        "tracepaths.py",
        "src_port, dst_port = t.ident, (t.port + flow) & 0xFFFF",
        "src_port, dst_port = t.ident, (t.port + flow + k) & 0xFFFF",
        "paths",
        "traceroute -4 -U --paris",
        "ports (flow)",
    ),
    Fault(
        "a wrong MTU read from the ICMP error (frag-needed's next-hop MTU - 8)",
        "tracepaths.py",
        "return (msg.info & 0xFFFF) or None",
        "return ((msg.info & 0xFFFF) - 8) or None",
        "paths",
        "traceroute -4 --mtu",
        "F= (mtu)",
    ),
]


def test_every_anchor_still_patches(tmp_path: Path) -> None:
    for fault in FAULTS:
        patched_copy(tmp_path / fault.file / str(FAULTS.index(fault)), fault)


def test_paris_keys_tell_apart_probes_that_share_their_ports() -> None:
    def udp(checksum: int) -> bytes:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 5, 17, 0, bytes(4), bytes(4))
        return ip + struct.pack("!HHHH", 0x7774, 33434, 8, checksum)

    assert paths.sent_key(udp(1)) != paths.sent_key(udp(2))
    # an ICMP time exceeded quoting probe 2 answers probe 2 (RFC 792: the first 64 bits)
    error = struct.pack("!BBHI", 11, 0, 0, 0) + udp(2)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(error), 1, 0, 64, 1, 0, bytes(4),
                     bytes(4))  # fmt: skip
    assert paths.reply_key(ip + error) == (paths.sent_key(udp(2)), "icmp-error")


@pytest.mark.lab
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_injected_path_fault_turns_the_verdict_to_fail(tmp_path: Path, fault: Fault) -> None:
    failed = cli_failures(tmp_path, fault)
    assert fault.names in failed, f"{fault.name}: not named:\n{failed}"


@pytest.mark.lab
def test_unpatched_copy_agrees_on_paths(tmp_path: Path) -> None:
    proc = compare_cli("paths", clean_copy(tmp_path), "traceroute -4", tmp_path / "report.json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
