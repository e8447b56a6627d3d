"""RFC 1071 internet checksum.  Pure: no I/O.

API
---
``internet_checksum(data: bytes) -> int``
    The 16-bit one's complement of the one's complement sum of ``data`` read as big-endian
    16-bit words (an odd final byte is padded with a zero byte, RFC 1071 §4.1).  The result is
    the value to store big-endian (``struct.pack("!H", ...)``) in a header's checksum field that
    was zero while summing.  Over bytes that already carry a correct checksum it returns 0.
``checksum_verifies(data, initial=0) -> bool``
    ``internet_checksum(data) == 0`` (``initial`` adds a pseudo-header's
    ``ones_complement_sum``), the receiver's check.
``ones_complement_sum(data, initial=0) -> int``
    The 16-bit one's complement sum itself (0 only for all-zero data, else 1..0xFFFF).

``pseudo_header(src, dst, protocol, length) -> bytes``
    The pseudo-header a UDP, TCP or ICMPv6 checksum covers: IPv4 (RFC 768, RFC 9293 §3.1) or
    IPv6 (RFC 8200 §8.1), the family following the addresses (text); ``UsageError`` for a bad or
    mixed pair.
``pseudo_header_checksum(src, dst, protocol, data) -> int``
    ``internet_checksum`` over that pseudo-header followed by ``data`` (its checksum field zero
    to compute one; over data that carries a correct checksum, 0).

``checksum(string: bytes) -> int``
    The seed assignment's function, kept with its name and semantics: it sums little-endian
    words into a 32-bit accumulator and swaps the bytes of the result, which on a little-endian
    host gives the same value as ``internet_checksum`` for any input under 128 KiB.
"""

from __future__ import annotations

import functools
import ipaddress
import struct

from handrolled.errors import UsageError

__all__ = [
    "checksum",
    "checksum_verifies",
    "internet_checksum",
    "ones_complement_sum",
    "pseudo_header",
    "pseudo_header_checksum",
]

# Precompiled: struct.Struct parses its format once, not on every call.
_PSEUDO4_TAIL = struct.Struct("!BBH")  # zero, protocol, length (RFC 768)
_PSEUDO6_TAIL = struct.Struct("!I3xB")  # length, three zeros, next header (RFC 8200 §8.1)


# Speed (issue 17): the sum is computed by reading ``data`` as one big-endian integer N.
# N = sum(w_i * 2**(16 * (k - 1 - i))) over the k words, and 2**16 = 1 (mod 0xFFFF), so
# N = sum(w_i) (mod 0xFFFF): one ``int.from_bytes`` and one ``%`` in C replace a Python-level
# loop over the words.  Folding the carries back in (RFC 1071 §2 (B)) is reduction modulo
# 0xFFFF, except that a non-zero sum folds to 0xFFFF, never to 0 (one's complement's
# "negative zero"); the ``or`` keeps that case.
_FOLD = 0xFFFF


def ones_complement_sum(data: bytes, initial: int = 0) -> int:
    """Fold ``data`` (big-endian words, odd byte zero-padded) into a 16-bit one's complement sum.

    ``initial`` lets a caller chain a pseudo-header (RFC 8200 §8.1) without concatenating.
    """
    total = int.from_bytes(data, "big")
    if len(data) & 1:
        total <<= 8  # RFC 1071 §4.1: pad the odd byte on the right (N * 256, no copy)
    total += initial
    return total % _FOLD or (_FOLD if total else 0)


def internet_checksum(data: bytes) -> int:
    """RFC 1071 checksum of ``data`` as a host integer, to be packed big-endian."""
    return ~ones_complement_sum(data) & 0xFFFF


def checksum_verifies(data: bytes, initial: int = 0) -> bool:
    """True when ``data``, which carries its checksum, sums to 0xFFFF (RFC 1071 §1 (3)).

    The same as ``internet_checksum(data) == 0`` (``initial``: a pseudo-header's sum), without
    the complement: a receiver's check in one expression.
    """
    total = int.from_bytes(data, "big")
    if len(data) & 1:
        total <<= 8
    total += initial
    return total % _FOLD == 0 and total != 0


def _packed(addr: str) -> bytes:
    try:
        return ipaddress.ip_address(addr).packed
    except ValueError as exc:
        raise UsageError(f"not an IP address: {addr!r}") from exc


# Speed: parsing address text with ipaddress costs a few microseconds; a probe run sends to
# the same pair again and again, so the packed pair is cached (a failed parse raises, and
# lru_cache never caches a raise, so bad input still gets its UsageError every time).
@functools.lru_cache(maxsize=512)
def _address_pair(src: str, dst: str) -> bytes:
    src_b, dst_b = _packed(src), _packed(dst)
    if len(src_b) != len(dst_b):
        raise UsageError(f"address families differ: {src} and {dst}")
    return src_b + dst_b


def pseudo_header(src: str, dst: str, protocol: int, length: int) -> bytes:
    """The pseudo-header a UDP/TCP/ICMPv6 checksum covers (RFC 768; RFC 8200 §8.1 for IPv6)."""
    try:
        addresses = _address_pair(src, dst)
    except TypeError as exc:  # unhashable, so not an address either
        raise UsageError(f"not an IP address pair: {src!r}, {dst!r}") from exc
    if len(addresses) == 8:
        # RFC 9293 §3.1: source, destination, zero, PTCL, TCP length (16 bits)
        return addresses + _PSEUDO4_TAIL.pack(0, protocol, length)
    # RFC 8200 §8.1: source, destination, upper-layer length (32 bits), 3 zero bytes, next header
    return addresses + _PSEUDO6_TAIL.pack(length, protocol)


def pseudo_header_checksum(src: str, dst: str, protocol: int, data: bytes) -> int:
    """RFC 1071 checksum over the pseudo-header and ``data`` (0 if ``data``'s checksum is right)."""
    initial = ones_complement_sum(pseudo_header(src, dst, protocol, len(data)))
    return ~ones_complement_sum(data, initial) & 0xFFFF


def checksum(string: bytes) -> int:
    """The seed's ``checksum``: same algorithm, same 32-bit accumulator, same byte swap.

    The seed then passes the result through ``htons`` and packs it in native order, which on a
    little-endian host puts the bytes of ``internet_checksum(string)`` on the wire.
    """
    csum = 0
    count_to = (len(string) // 2) * 2
    count = 0
    while count < count_to:
        csum += string[count + 1] * 256 + string[count]
        csum &= 0xFFFFFFFF
        count += 2
    if count_to < len(string):
        csum += string[len(string) - 1]
        csum &= 0xFFFFFFFF
    csum = (csum >> 16) + (csum & 0xFFFF)
    csum = csum + (csum >> 16)
    answer = ~csum & 0xFFFF
    return answer >> 8 | (answer << 8 & 0xFF00)
