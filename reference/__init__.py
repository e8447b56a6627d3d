"""The same three jobs built with scapy (and smtplib as a second SMTP witness).

Independence is the point: this package imports nothing from handrolled except the shared
contract (handrolled.results, handrolled.requests and handrolled.errors);
tests/test_boundaries.py enforces it.
"""

import logging

# A library logs, the program decides where it goes: without this, a warning logged while no
# logging is configured reaches stderr through logging's last-resort handler.
logging.getLogger(__name__).addHandler(logging.NullHandler())
