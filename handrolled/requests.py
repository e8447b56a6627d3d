"""The input contract shared by handrolled/, reference/ and compare/: one request per job.

A request is a frozen dataclass validated once, in ``__post_init__``: every rule raises
``UsageError`` with one line that names the field and the rule.  The command lines build a
request, the harness builds one and hands the *same object* to both implementations, so a bad
input gets the same verdict whichever side runs it.  Checks that need the resolved address
family (does the payload fit an IPv4 packet?) are methods here too, called by both engines.

Data and validation only: no sockets, no clocks, no name resolution (pure; see
tests/test_boundaries.py).
"""

from __future__ import annotations

import math

from handrolled.errors import UsageError
from handrolled.results import Family

# The longest wait any request may ask for.  select()/settimeout() overflow near 2**31 ms on
# some platforms; a day is far beyond any useful probe wait and far below that.
MAX_SECONDS = 86_400.0


def check_seconds(name: str, value: float, *, allow_zero: bool = False) -> None:
    """``value`` is a finite number of seconds, positive (or >= 0), at most ``MAX_SECONDS``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise UsageError(f"{name} {value!r}: must be a number of seconds")
    low_ok = value >= 0 if allow_zero else value > 0
    if not low_ok or value > MAX_SECONDS:
        low = "0" if allow_zero else "more than 0"
        raise UsageError(f"{name} {value}: must be {low} and at most {MAX_SECONDS:g} seconds")


def check_int(name: str, value: int, low: int, high: int) -> None:
    """``value`` is an int (not a bool) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} {value!r}: must be a whole number")
    if not low <= value <= high:
        raise UsageError(f"{name} {value}: must be {low}-{high}")


def check_family(value: object) -> Family | None:
    """The one address-family convention: None (either), 4 or 6."""
    if value not in (None, 4, 6) or isinstance(value, bool):
        raise UsageError(f"family {value!r}: must be 4 or 6")
    return value  # type: ignore[return-value]


def check_host(name: str, value: str) -> None:
    """A host name or address literal: non-empty text without controls or spaces."""
    if not isinstance(value, str) or not value:
        raise UsageError(f"{name}: must not be empty")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UsageError(f"{name} {value!r}: must not contain spaces or control characters")


# -- ping -------------------------------------------------------------------------------------
# PingRequest: the ping helper's section.


# -- traceroute -------------------------------------------------------------------------------
# TraceRequest: the traceroute helper's section.


# -- SMTP -------------------------------------------------------------------------------------
# MailRequest: the SMTP helper's section.
