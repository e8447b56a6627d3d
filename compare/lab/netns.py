"""Entering network namespaces from Python, one thread at a time.

``setns(2)`` with CLONE_NEWNET moves only the calling thread; a socket keeps the namespace it was
created in for its whole life.  So the harness can open a socket inside a lab namespace and use
it from anywhere in its own process.  Python 3.11 has no ``os.setns``, hence ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import socket
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the body with the current thread inside network namespace ``ns`` (by name)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_RUN_DIR, ns), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def netns_socket(ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket created inside ``ns``; usable from any thread afterwards."""
    with entered(ns):
        return socket.socket(family, kind, proto)
