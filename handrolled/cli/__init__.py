"""The command-line fronts of the hand-rolled clients: argparse, output shaped like the tools
people know (iputils ping, traceroute(8), swaks) and exit codes.

Each ``handrolled.cli.<client>.main(argv, runner=None) -> int`` parses argv into the job's
request (``handrolled.requests``), runs it with ``runner`` (the hand-rolled engine by default;
``wiretwin X --impl reference`` passes the scapy one) and prints the result.  ``common`` holds
what they share: the one-line-error parser, the JSON encoder and the module entry point.
"""
