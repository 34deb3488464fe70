"""Unloading, pinning and run statistics of programs already in the kernel."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time

from bpfwatch import libbpf as L
from bpfwatch.errors import BpfError, BpfwatchError, UsageError
from bpfwatch.programs import bpffs, inventory
from bpfwatch.programs.loader import manifest_path

XDP_FLAGS = {"native": 4, "generic": 2, "offload": 8}


def _gone(prog_ids: list[int], timeout: float = 2.0) -> list[int]:
    """Ids among `prog_ids` still loaded after the kernel's RCU grace period."""
    deadline = time.monotonic() + timeout
    left = list(prog_ids)
    while left and time.monotonic() < deadline:
        live = set(inventory.ids("prog"))
        left = [p for p in left if p in live]
        if left:
            time.sleep(0.05)
    return left


def _still_held(prog_ids: list[int]) -> str:
    holders = inventory.Holders.scan()
    parts = []
    for pid_ in prog_ids:
        who = [f"pid {p} ({c})" for p, c in holders.pids.get(("prog", pid_), [])]
        who += holders.pins.get(("prog", pid_), [])
        parts.append(f"program {pid_} is still held by {', '.join(who) or 'the kernel (an attachment)'}")
    return "; ".join(parts)


def unload_dir(directory: str) -> list[str]:
    """Removes everything `prog load --pin DIR` left: tc filters, links,
    programs and maps; returns what was done."""
    record = manifest_path(directory)
    with open(record) as f:
        meta = json.load(f)
    done = []
    for a in meta.get("attachments", []):
        tc = a.get("tc")
        if tc:
            hook = L.TcHook(sz=L.ctypes.sizeof(L.TcHook), ifindex=tc["ifindex"], attach_point=tc["attach_point"])
            opts = L.TcOpts(sz=L.ctypes.sizeof(L.TcOpts), handle=tc["handle"], priority=tc["priority"])
            L.tc_clsact_detach(hook, opts)
            done.append(f"detached {a['description']}")
        elif a.get("link") and os.path.exists(a["link"]):
            _detach_pinned_link(a["link"])
            done.append(f"detached {a['description']}")
    ids = list(meta.get("programs", {}).values())
    shutil.rmtree(directory)
    os.unlink(record)
    done.append(f"removed pins under {directory}")
    left = _gone(ids)
    if left:
        raise BpfwatchError(f"pins removed, but {_still_held(left)}")
    done.append(f"unloaded {len(ids)} program(s): {', '.join(meta.get('programs', {}))}")
    return done


def _detach_pinned_link(path: str) -> None:
    fd = L.obj_get(path)
    try:
        with contextlib.suppress(BpfError):  # links without BPF_LINK_DETACH go when unpinned
            L.link_detach(fd)
    finally:
        os.close(fd)


def unload(ref: str, force: bool = False) -> list[str]:
    """Detaches a program from every hook, removes its pins, and checks that
    the kernel freed it. Programs bpfwatch does not own need force."""
    if os.path.isdir(ref) and os.path.exists(manifest_path(ref)):
        return unload_dir(ref)
    prog_id = inventory.resolve_id("prog", ref)
    holders = inventory.Holders.scan()
    rec = inventory.prog_record(prog_id, holders, inventory.links(holders), inventory.netlink_xdp())
    if not rec.owned and not force:
        raise UsageError(f"program {prog_id} ({rec.name}) was not loaded by bpfwatch: "
                         "pass --force to unload it anyway")
    done = []
    for link_id in rec.link_ids:
        try:
            lfd = inventory.fd_of("link", link_id)
        except UsageError:
            continue
        try:
            L.link_detach(lfd)
            done.append(f"detached link {link_id}")
        except BpfError as e:
            done.append(f"link {link_id} cannot be detached ({L.strerror(e.errno)}); it goes with its pins")
        finally:
            os.close(lfd)
    for idx, name in socket.if_nameindex():
        try:
            q = L.xdp_query(idx)
        except BpfError:
            continue
        for mode, flag in XDP_FLAGS.items():
            if q[mode] == prog_id:
                L.xdp_detach(idx, flag)
                done.append(f"detached from xdp {name} ({mode})")
    for path in rec.pins:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            done.append(f"unpinned {path}")
    left = _gone([prog_id])
    if left:
        raise BpfwatchError(f"detached and unpinned, but {_still_held(left)}")
    done.append(f"program {prog_id} ({rec.name}) is unloaded")
    return done


def pin(ref: str, path: str) -> str:
    fd = inventory.resolve("prog", ref)
    try:
        bpffs.ensure_mounted()
        parent = os.path.dirname(os.path.abspath(path))
        if not bpffs.on_bpffs(parent):
            raise UsageError(f"{path} is not on a BPF filesystem: pin under {bpffs.DEFAULT_ROOT}")
        os.makedirs(parent, mode=0o700, exist_ok=True)
        if os.path.exists(path):
            raise UsageError(f"{path} already exists")
        L.obj_pin(fd, path)
        return path
    finally:
        os.close(fd)


def unpin(path: str) -> list[str]:
    """Removes a pin, or every pin under a directory of pins."""
    if not os.path.exists(path):
        raise UsageError(f"no such pin: {path}")
    if not bpffs.on_bpffs(path):
        raise UsageError(f"{path} is not on a BPF filesystem")
    if os.path.isdir(path):
        removed = [os.path.join(d, f) for d, _s, fs in os.walk(path) for f in fs]
        shutil.rmtree(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(manifest_path(path))
        return removed
    if bpffs.pinned_object(path) is None:
        raise UsageError(f"{path} is not a pinned BPF object")
    os.unlink(path)
    return [path]


def run_stats(prog_id: int) -> tuple[int, int]:
    fd = inventory.fd_of("prog", prog_id)
    try:
        info = L.prog_info_full(fd, False)[0]
    finally:
        os.close(fd)
    return info.run_cnt, info.run_time_ns
