"""The comparison harness, the network-namespace lab and the `wiretwin` command line."""
