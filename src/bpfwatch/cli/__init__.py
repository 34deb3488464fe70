"""The `bpfwatch` command line."""
