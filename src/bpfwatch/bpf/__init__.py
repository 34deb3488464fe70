"""Compiled BPF objects shipped with the package (built by `make bpf`)."""

from __future__ import annotations

from pathlib import Path

from bpfwatch.errors import BpfwatchError

BPF_DIR = Path(__file__).resolve().parent


def object_path(name: str) -> Path:
    """Path of `<name>.bpf.o`; a clear error if it was never built."""
    path = BPF_DIR / f"{name}.bpf.o"
    if not path.is_file():
        raise BpfwatchError(f"BPF object {path} is missing: build it with 'make bpf'")
    return path
