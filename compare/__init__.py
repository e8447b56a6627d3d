"""The comparison harness, the network-namespace lab and the `wiretwin` command line."""

import logging

# A library logs, the program decides where it goes: without this, a warning logged while no
# logging is configured reaches stderr through logging's last-resort handler.
logging.getLogger(__name__).addHandler(logging.NullHandler())
