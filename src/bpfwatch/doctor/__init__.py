"""`bpfwatch doctor`: what this host can trace, each finding with a remedy."""

from bpfwatch.doctor.report import Check, run_checks

__all__ = ["Check", "run_checks"]
