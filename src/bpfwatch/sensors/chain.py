"""One program per hot tracepoint for all the sensors of a Monitor.

Every program attached to `sys_enter` or `sys_exit` costs each syscall of the
host about 80 ns here (with two or more, the tracepoint calls them one by one,
indirectly), and a tail call next to nothing. So the programs that several
sensors hang on the same hook run as a chain (bpf/bw_chain.bpf.h): the first
is attached, each one ends with a tail call to the next, and the others are
loaded but not attached. `plan` runs before the objects load (the successor
slots are constants of each object), `link` after (the program array holds
loaded programs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bpfwatch import libbpf as L
from bpfwatch.errors import BpfwatchError

# must match bw_chain.bpf.h
HOOKS = ("sys_enter", "sys_exit", "sock_send_length", "sock_recv_length")
CHAIN_MAX = 8
MAPS = tuple(f"bw_chain_{h}" for h in HOOKS)


@dataclass
class Chains:
    """The programs on each chained hook, in the order they run."""

    order: dict[str, list[L.Program]] = field(default_factory=dict)

    @property
    def heads(self) -> dict[str, str]:
        """Hook -> the head of its chain, the one program the kernel calls."""
        return {hook: progs[0].name for hook, progs in self.order.items() if progs}

    def link(self, owner: L.BpfObject) -> None:
        """Fills the chains' program arrays (the maps of `owner`, which every
        other object reuses). Call once all the objects are loaded, before the
        heads are attached: a head that runs before its chain is filled ends
        the chain early."""
        for hook, progs in self.order.items():
            chain = owner.map(f"bw_chain_{hook}")
            for slot, prog in enumerate(progs[1:], start=1):
                chain.update(slot.to_bytes(4, "little"), prog.fd.to_bytes(4, "little"))


def plan(objects: list[L.BpfObject]) -> Chains:
    """Orders the programs each object will load on a chained hook (objects
    in the order given, so the sensor listed first runs first), tells each
    object its successor's slot, and leaves only the heads to attach_all().
    Objects without the chain's globals (not built with bw_chain.bpf.h) are
    left alone: their programs attach on their own."""
    chains = Chains()
    for hook in HOOKS:
        progs: list[L.Program] = []
        for obj in objects:
            mine = [p for p in obj.programs() if p.autoload and p.section == f"tp_btf/{hook}"]
            if not mine or not obj.has_global(f"bw_next_{hook}"):
                continue
            if len(mine) > 1:
                # one successor slot per object and hook
                raise BpfwatchError(f"{obj.path}: {len(mine)} programs on {hook} "
                                    f"({', '.join(p.name for p in mine)}); a chained object may load one")
            progs.append(mine[0])
        if len(progs) > CHAIN_MAX:
            raise BpfwatchError(f"{len(progs)} programs on {hook}: the chain holds {CHAIN_MAX}")
        for i, prog in enumerate(progs):
            # the last one's successor slot is empty: its tail call does nothing
            prog.obj.set_rodata(**{f"bw_next_{hook}": i + 1})
            prog.autoattach = i == 0
        chains.order[hook] = progs
    return chains
