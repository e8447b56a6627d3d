"""Packet anatomy for teaching (`wiretwin anatomy`): every bit of a packet accounted for.

A packet (built from parameters, read from a pcap or captured in the lab) is dissected twice:
by our own decoders (``dissect``) and by scapy (``scapy_side``); its checksums are worked out
(``checksums``); the views render one ``Anatomy``: the terminal, Markdown, JSON and a
self-contained HTML page.  Beside them: the seed skeleton's byte order (``seed``), an SMTP
dialogue read from a pcap (``smtp_view``) and an exercise sheet (``worksheet``).
"""

from __future__ import annotations

from compare.anatomy.model import Anatomy, ChecksumWork, Field, Layer, uncovered

__all__ = ["Anatomy", "ChecksumWork", "Field", "Layer", "explain", "uncovered"]


def explain(packet: bytes, title: str = "") -> Anatomy:
    """Dissect ``packet`` (an IP datagram) with both decoders and work out its checksums."""
    from compare.anatomy.checksums import add_checksums
    from compare.anatomy.dissect import dissect
    from compare.anatomy.scapy_side import annotate

    return add_checksums(annotate(dissect(packet, title)))
