"""``python -m compare.lab --call``: the child side of compare.lab.calls.call_python."""

import sys

from compare.lab.calls import call_main

if sys.argv[1:] == ["--call"]:
    sys.exit(call_main())
sys.exit("usage: python -m compare.lab --call (internal); see `wiretwin lab --help`")
