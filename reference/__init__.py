"""The same three jobs built with scapy (and smtplib as a second SMTP witness).

Independence is the point: this package imports nothing from handrolled except the shared
contract (handrolled.results and handrolled.errors); tests/test_boundaries.py enforces it.
"""
