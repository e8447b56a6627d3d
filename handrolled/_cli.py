"""What the ping and traceroute CLIs share: a one-line argparse error and JSON conversion.

``Parser``: an ``argparse.ArgumentParser`` whose ``error`` raises ``UsageError`` (the CLI prints
it as one line and exits 2, like iputils) instead of printing usage and exiting.
``jsonable(value)``: results as JSON-ready data: dataclasses as dicts, bytes as hex, enums by
value, tuples as lists.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum

from handrolled.errors import UsageError

__all__ = ["Parser", "jsonable"]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    return value
