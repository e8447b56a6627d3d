"""What the command-line fronts share: a one-line argparse error, JSON, the entry point.

``Parser``: an ``argparse.ArgumentParser`` whose ``error`` raises ``UsageError`` (the CLI prints
it as one line and exits 2, like iputils) instead of printing usage and exiting.
``jsonable(value)``: results as JSON-ready data: records as dicts, bytes as hex, enums by value,
tuples as lists.  The one encoder for all three clients.
``run_module(main, argv)``: what ``python -m handrolled.X`` runs: logging to stderr, and a
reader that leaves early (``... | head``) ending the program quietly instead of a traceback.
"""

from __future__ import annotations

import argparse
import enum
import logging
import os
import sys
from collections.abc import Callable, Sequence

from handrolled.errors import UsageError
from handrolled.record import Record, fields

__all__ = ["EXIT_ERROR", "Formatter", "Parser", "jsonable", "run_module"]

EXIT_ERROR = 2  # bad input or a failure that stopped the job, as iputils and traceroute(8)


class Formatter(argparse.HelpFormatter):
    """argparse's help layout, its width found without ``import shutil`` (which brings bz2,
    lzma and zlib along: a few ms of every start-up, as argparse makes a formatter for every
    ``add_argument``); COLUMNS first, as shutil does."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ.get("COLUMNS", "0")) or os.get_terminal_size(1).columns
        except (OSError, ValueError):
            columns = 80
        super().__init__(prog, width=columns - 2)


class Parser(argparse.ArgumentParser):
    """The three clients' parser: ``Formatter`` unless told otherwise, one-line errors."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse quotes what the user typed as is: controls (a form feed, a newline) would
        # break the one-line error, so they are shown escaped
        raise UsageError(printable(message))


def printable(text: str) -> str:
    """One line whatever the user typed: controls and line separators shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def jsonable(value: object) -> object:
    if isinstance(value, Record):
        return {name: jsonable(getattr(value, name)) for name in fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    return value


def leave_the_heap_to_the_exit() -> None:
    """For a program about to exit: at exit CPython's collector walks every object the imports
    made (~10 ms after a traceroute, a third of the interpreter's own start); frozen
    (``gc.freeze``) they are left for the process's end to reclaim, as the C tools leave theirs.
    Call it once the output is flushed and the sockets closed; never in a process that goes on.
    """
    import gc

    gc.freeze()


def run_module(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run a CLI ``main`` as a program: log warnings to stderr, survive a closed stdout.

    ``argv`` None: this is the program itself (``python -m handrolled.X``), which exits next.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = main(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()
        if argv is None:
            leave_the_heap_to_the_exit()
        return status
    except BrokenPipeError:  # `... | head`: the reader left; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
