"""Hand-written ping, traceroute and SMTP clients on plain sockets (standard library only)."""
