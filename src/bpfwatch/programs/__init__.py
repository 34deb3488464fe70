"""Bring-your-own BPF programs: validate, load, attach, pin, inspect.

    from bpfwatch import programs
    with programs.load("counter.bpf.o") as obj:
        obj.attach("xdp", iface="veth0")
"""

from __future__ import annotations

from bpfwatch.programs.loader import Attachment, LoadedObject, ValidationError, VerifierError, load, validate

__all__ = ["Attachment", "LoadedObject", "ValidationError", "VerifierError", "load", "validate"]
