"""The lab: real multi-hop targets on one machine, built from network namespaces.

- plan.py      the plan and the truth it promises (nodes, addresses, delays, RTT windows); pure
- build.py     Lab: builds, uses (exec, call, sockets) and tears down a plan; reap, TOOLS
- calls.py     call_python: a function run in a fresh child (in a namespace or not), by pickle
- delay.py     the per-link delay stage (NFQUEUE), run as ``python -m compare.lab.delay``
- faults.py    the fault rules the delay stage applies and their packet matcher; pure
- netns.py     entering a namespace from a thread; sockets created inside one
- neighbour.py a noisy second pinger (``python -m compare.lab.neighbour``)
- selftest.py  `wiretwin lab selftest`: the promises checked with ping(8) and traceroute(8)

The names other modules use are re-exported here.
"""

from compare.lab.build import (
    NETNS_ETC,
    STATE_DIR,
    TOOL_PACKAGES,
    TOOLS,
    Lab,
    is_delay_process,
    list_namespaces,
    missing_tools,
    pid_alive,
    reap,
    running_labs,
)
from compare.lab.calls import HANDROLLED_PATH_ENV, call_python
from compare.lab.plan import (
    BASE_SLACK_MS,
    BLACKHOLE4,
    BLACKHOLE6,
    DEFAULT_DELAYS_MS,
    EARLY_SLACK_MS,
    NS_PREFIX,
    RTT_ATTEMPTS,
    STAGE_SLACK_MS,
    LabError,
    Node,
    Plan,
    RttVerdict,
)

__all__ = [
    "BASE_SLACK_MS",
    "BLACKHOLE4",
    "BLACKHOLE6",
    "DEFAULT_DELAYS_MS",
    "EARLY_SLACK_MS",
    "HANDROLLED_PATH_ENV",
    "NETNS_ETC",
    "NS_PREFIX",
    "RTT_ATTEMPTS",
    "STAGE_SLACK_MS",
    "STATE_DIR",
    "TOOLS",
    "TOOL_PACKAGES",
    "Lab",
    "LabError",
    "Node",
    "Plan",
    "RttVerdict",
    "call_python",
    "is_delay_process",
    "list_namespaces",
    "missing_tools",
    "pid_alive",
    "reap",
    "running_labs",
]
