"""RFC 1071 checksum and the seed's checksum() alias."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st
from scapy.utils import checksum as scapy_checksum

from handrolled.checksum import (
    checksum,
    checksum_verifies,
    internet_checksum,
    ones_complement_sum,
    pseudo_header,
    pseudo_header_checksum,
)


def test_rfc1071_worked_example():
    # RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 (with end-around carry).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_complement_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_odd_length_pads_on_the_right():
    assert internet_checksum(b"\xab") == internet_checksum(b"\xab\x00") == 0x54FF


def test_empty_and_all_ones():
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0x0000


def test_golden_icmp_echo_from_scapy():
    # scapy: raw(ICMP(type=8, id=0xbeef, seq=0xffff)/b"abc"), checksum 0x74ad
    packet = bytes.fromhex("080074adbeefffff616263")
    assert internet_checksum(packet[:2] + b"\0\0" + packet[4:]) == 0x74AD
    assert internet_checksum(packet) == 0  # a correct checksum verifies to zero


@given(st.binary(max_size=2048))
def test_seed_alias_agrees_with_rfc1071(data):
    assert checksum(data) == internet_checksum(data)


@given(st.binary(max_size=512))
def test_seed_usage_puts_the_same_bytes_on_the_wire(data):
    # The seed does struct.pack("bbHHh", ..., htons(checksum(x)), ...) in native order.
    seed_bytes = struct.pack("=H", socket.htons(checksum(data)))
    assert seed_bytes == struct.pack("!H", internet_checksum(data))


@given(st.binary(min_size=0, max_size=1024).map(lambda b: b"\0\0" + b))
def test_inserting_the_checksum_verifies(data):
    csum = internet_checksum(data)
    assert internet_checksum(struct.pack("!H", csum) + data[2:]) == 0


@given(st.sampled_from([("192.0.2.1", "198.51.100.7"), ("2001:db8::1", "fe80::2")]), st.binary())
def test_pseudo_header_checksum_is_rfc1071_over_header_then_data(ends, data):
    # the pseudo-header is a whole number of words, so chaining equals concatenating
    src, dst = ends
    header = pseudo_header(src, dst, 17, len(data))
    assert len(header) == (12 if "." in src else 40)
    assert pseudo_header_checksum(src, dst, 17, data) == internet_checksum(header + data)


def test_sum_keeps_negative_zero_apart_from_zero():
    # RFC 1071 §1-2: end-around carry never folds a non-zero sum to 0x0000, only to 0xFFFF
    assert ones_complement_sum(b"\0\0\0\0") == 0x0000
    assert ones_complement_sum(b"\xff\xff\xff\xff") == 0xFFFF  # 0x1fffe folds to 0xffff
    assert ones_complement_sum(b"\x00\x01\xff\xfe") == 0xFFFF
    assert ones_complement_sum(b"\x80\x00\x80\x00") == 0x0001  # 0x10000 folds to 1
    assert ones_complement_sum(b"\x12", initial=0x0034) == 0x1234  # odd byte padded, chained


@given(st.binary(max_size=1500))
def test_agrees_with_scapy(data):
    # scapy.utils.checksum: an independent RFC 1071 implementation (array of words, fold)
    assert internet_checksum(data) == scapy_checksum(data)


@given(st.binary(min_size=2, max_size=600), st.data())
def test_verifies_scapys_checksum_and_catches_any_flipped_bit(body, draw):
    data = b"\0\0" + body
    sealed = struct.pack("!H", scapy_checksum(data)) + body
    assert checksum_verifies(sealed)
    # one flipped bit moves the sum by 2**k, never a multiple of 0xFFFF: always detected
    bit = draw.draw(st.integers(0, len(sealed) * 8 - 1))
    flipped = bytearray(sealed)
    flipped[bit // 8] ^= 0x80 >> (bit % 8)
    assert not checksum_verifies(bytes(flipped))


@given(st.sampled_from([("192.0.2.1", "198.51.100.7"), ("2001:db8::1", "fe80::2")]), st.binary())
def test_verifies_with_a_chained_pseudo_header(ends, data):
    src, dst = ends
    header = pseudo_header(src, dst, 6, len(data) + 2)
    sealed = struct.pack("!H", scapy_checksum(header + b"\0\0" + data)) + data
    assert checksum_verifies(sealed, ones_complement_sum(header))
    assert checksum_verifies(header + sealed)
