"""Every BPF program, map and link on the host, with what they are attached
to, who holds them (processes, pins) and whether bpfwatch owns them."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from bpfwatch import libbpf as L
from bpfwatch import limits
from bpfwatch.errors import BpfError, PermissionProblem, UsageError
from bpfwatch.mounts import cgroup_path
from bpfwatch.programs import bpffs
from bpfwatch.programs.kinds import ATTACH_TYPES, LINK_TYPES, MAP_TYPES, PROG_TYPES, name_of


@dataclass
class Holders:
    """Who keeps kernel objects alive: processes with fds, and pins."""

    pids: dict[tuple[str, int], list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    pins: dict[tuple[str, int], list[str]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def scan(cls) -> Holders:
        h = cls()
        me = os.getpid()
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            if pid == me:
                continue
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            comm = None
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                kind = {"anon_inode:bpf-prog": "prog", "anon_inode:bpf-map": "map",
                        "anon_inode:bpf_link": "link"}.get(target)
                if kind is None:
                    continue
                obj_id = _fdinfo_id(pid, fd, kind)
                if obj_id is None:
                    continue
                if comm is None:
                    comm = _comm(pid)
                entry = (pid, comm)
                if entry not in h.pids[(kind, obj_id)]:
                    h.pids[(kind, obj_id)].append(entry)
        for path, kind, obj_id in bpffs.walk_pins():
            h.pins[(kind, obj_id)].append(path)
        return h


def _fdinfo_id(pid: int, fd: str, kind: str) -> int | None:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith(f"{kind}_id:"):
                    return int(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _cmdline_has_bpfwatch(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"bpfwatch" in f.read()
    except OSError:
        return False


def boot_to_wall(boot_ns: int) -> float:
    """A CLOCK_BOOTTIME timestamp (a program's load_time) as Unix time."""
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - boot_ns / 1e9)


@cache
def _ifname(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return f"ifindex {ifindex}"


def describe_link(info: L.LinkInfo, name: str) -> str:
    """Where a link attaches its program, in words."""
    t, u = info.type, info.u
    lo = [w & 0xFFFFFFFF for w in u]
    hi = [w >> 32 for w in u]
    if t == 1:  # raw_tracepoint (also tp_btf)
        return f"raw_tp {name}"
    if t == 2:  # tracing: attach_type, target_obj_id, target_btf_id
        return f"{name_of(ATTACH_TYPES, lo[0])} btf_id {lo[1]}"
    if t == 3:  # cgroup: cgroup_id, attach_type
        return f"cgroup {name_of(ATTACH_TYPES, lo[1])} {(cgroup_path(u[0]) or f'cgroup id {u[0]}')}"
    if t == 4:
        return "iterator"
    if t == 5:
        return f"netns {name_of(ATTACH_TYPES, hi[0])} ino {lo[0]}"
    if t == 6:
        return f"xdp {_ifname(lo[0])}"
    if t == 7:
        kinds = {1: "uprobe", 2: "uretprobe", 3: "kprobe", 4: "kretprobe", 5: "tracepoint", 6: "perf_event"}
        kind = kinds.get(lo[0], "perf_event")
        offset = f"+{hi[2]:#x}" if kind in ("uprobe", "uretprobe", "kprobe", "kretprobe") and name else ""
        return f"{kind} {name}{offset}".strip()
    if t == 11:
        return f"tcx {_ifname(lo[0])} {'egress' if hi[0] == 47 else 'ingress'}"
    if t == 10:
        return f"netfilter pf {lo[0]} hook {hi[0]}"
    return name_of(LINK_TYPES, t)


def _denied(e: BpfError) -> PermissionProblem:
    return PermissionProblem("missing CAP_SYS_ADMIN to reach BPF objects by id (what bpftool needs too): "
                             "run as root (sudo bpfwatch ...)") if e.errno == errno.EPERM else e


def ids(kind: str) -> list[int]:
    """Ids of every loaded program, map or link."""
    try:
        return list(L.next_ids(kind))
    except BpfError as e:
        raise _denied(e) from None


def fd_of(kind: str, obj_id: int) -> int:
    """A new fd for an object by id (caller closes); UsageError if there is none."""
    try:
        return L.fd_by_id(kind, obj_id)
    except BpfError as e:
        if e.errno == errno.EPERM:
            raise _denied(e) from None
        raise UsageError(f"no BPF {kind} with id {obj_id}") from None


def each(kind: str) -> Iterator[tuple[int, int]]:
    """(id, fd) of every loaded program, map or link; each fd is closed when
    the loop moves on. Objects that vanish meanwhile are skipped."""
    for obj_id in ids(kind):
        try:
            fd = fd_of(kind, obj_id)
        except UsageError:
            continue
        try:
            yield obj_id, fd
        finally:
            os.close(fd)


def _object_id(kind: str, fd: int) -> int:
    return L.prog_info_full(fd, False)[0].id if kind == "prog" else L.map_info(fd).id


def resolve_id(kind: str, ref: str) -> int:
    """The id of the program or map `ref` names (see resolve)."""
    fd = resolve(kind, ref)
    try:
        return _object_id(kind, fd)
    finally:
        os.close(fd)


@dataclass
class Held:
    """Who holds a kernel object, and whether bpfwatch owns it."""

    pids: list[tuple[int, str]] = field(default_factory=list, kw_only=True)
    pins: list[str] = field(default_factory=list, kw_only=True)
    owned: bool = field(default=False, kw_only=True)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["pids"] = [{"pid": p, "comm": c} for p, c in self.pids]
        return d


@dataclass
class LinkRecord(Held):
    id: int
    type: str
    prog_id: int
    target: str


def links(holders: Holders | None = None) -> list[LinkRecord]:
    out = []
    for link_id, fd in each("link"):
        info, name = L.link_info(fd)
        rec = LinkRecord(link_id, name_of(LINK_TYPES, info.type), info.prog_id, describe_link(info, name))
        if holders:
            rec.pids = holders.pids.get(("link", link_id), [])
            rec.pins = holders.pins.get(("link", link_id), [])
        out.append(rec)
    return out


def netlink_xdp() -> dict[int, list[str]]:
    """prog id -> XDP attachments made through netlink (not links)."""
    out: dict[int, list[str]] = defaultdict(list)
    for idx, name in socket.if_nameindex():
        try:
            q = L.xdp_query(idx)
        except BpfError:
            continue
        for mode in ("native", "generic", "offload"):
            if q[mode]:
                out[int(q[mode])].append(f"xdp {name} ({mode})")
    return out


@dataclass
class ProgRecord(Held):
    id: int
    type: str
    name: str
    tag: str
    loaded_at: float
    uid: int
    memlock: int
    run_cnt: int | None
    run_time_ns: int | None
    xlated_bytes: int
    jited_bytes: int
    verified_insns: int
    btf_id: int
    gpl: bool
    map_ids: list[int]
    attached: list[str] = field(default_factory=list)
    link_ids: list[int] = field(default_factory=list)


def _owned(name: str, pids: list[tuple[int, str]], pins: list[str]) -> bool:
    return (name.startswith("bw_") or any(p.startswith(bpffs.BPFWATCH_DIR + "/") for p in pins)
            or any(_cmdline_has_bpfwatch(pid) for pid, _ in pids))


def prog_record(prog_id: int, holders: Holders | None = None, link_list: list[LinkRecord] | None = None,
                xdp: dict[int, list[str]] | None = None) -> ProgRecord:
    fd = fd_of("prog", prog_id)
    try:
        info, map_ids = L.prog_info_full(fd)
        memlock = int(L.fdinfo(fd).get("memlock", 0))
    finally:
        os.close(fd)
    stats = L.stats_enabled()
    name = info.name.decode(errors="replace")
    rec = ProgRecord(
        id=info.id, type=name_of(PROG_TYPES, info.type), name=name, tag=bytes(info.tag).hex(),
        loaded_at=boot_to_wall(info.load_time), uid=info.created_by_uid, memlock=memlock,
        run_cnt=info.run_cnt if stats or info.run_cnt else None,
        run_time_ns=info.run_time_ns if stats or info.run_cnt else None,
        xlated_bytes=info.xlated_prog_len, jited_bytes=info.jited_prog_len,
        verified_insns=info.verified_insns, btf_id=info.btf_id, gpl=bool(info.gpl_compatible & 1),
        map_ids=map_ids)
    for link in link_list or []:
        if link.prog_id == prog_id:
            rec.attached.append(link.target)
            rec.link_ids.append(link.id)
            rec.pins.extend(link.pins)
    rec.attached.extend((xdp or {}).get(prog_id, []))
    if holders:
        rec.pids = holders.pids.get(("prog", prog_id), [])
        rec.pins = holders.pins.get(("prog", prog_id), []) + rec.pins
    rec.owned = _owned(name, rec.pids, rec.pins)
    return rec


def programs() -> list[ProgRecord]:
    holders = Holders.scan()
    lk = links(holders)
    xdp = netlink_xdp()
    out = []
    for prog_id in ids("prog"):
        try:
            out.append(prog_record(prog_id, holders, lk, xdp))
        except UsageError:
            continue  # unloaded meanwhile
    return out


@dataclass
class MapRecord(Held):
    id: int
    type: str
    name: str
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    memlock: int
    btf_id: int
    btf_key_type_id: int
    btf_value_type_id: int
    prog_ids: list[int] = field(default_factory=list)


def map_record(fd: int, holders: Holders | None = None) -> MapRecord:
    info = L.map_info(fd)
    memlock = int(L.fdinfo(fd).get("memlock", 0))
    name = info.name.decode(errors="replace")
    rec = MapRecord(info.id, name_of(MAP_TYPES, info.type), name, info.key_size, info.value_size,
                    info.max_entries, info.map_flags, memlock, info.btf_id, info.btf_key_type_id,
                    info.btf_value_type_id)
    if holders:
        rec.pids = holders.pids.get(("map", info.id), [])
        rec.pins = holders.pins.get(("map", info.id), [])
    rec.owned = _owned(name, rec.pids, rec.pins)
    return rec


def map_users() -> dict[int, list[int]]:
    """map id -> ids of the programs that use it."""
    users: dict[int, list[int]] = defaultdict(list)
    for prog_id, fd in each("prog"):
        for mid in L.prog_info_full(fd)[1]:
            users[mid].append(prog_id)
    return users


def maps() -> list[MapRecord]:
    holders = Holders.scan()
    users = map_users()
    out = []
    for map_id, fd in each("map"):
        rec = map_record(fd, holders)
        rec.prog_ids = users.get(map_id, [])
        rec.owned = rec.owned or any(p in _bpfwatch_progs() for p in rec.prog_ids)
        out.append(rec)
    return out


def _bpfwatch_progs() -> set[int]:
    return {prog_id for prog_id, fd in each("prog")
            if L.prog_info_full(fd, with_map_ids=False)[0].name.startswith(b"bw_")}


def resolve(kind: str, ref: str) -> int:
    """A new fd for a program or map named by id, `id:N`, a pin path or
    `name:NAME` (caller closes)."""
    ref = ref.strip()
    if ref.startswith("/"):
        found = bpffs.pinned_object(ref)
        if found is None:
            raise UsageError(f"{ref} is not a pinned BPF object")
        if found[0] != kind:
            raise UsageError(f"{ref} is a pinned {found[0]}, not a {kind}")
        return L.obj_get(ref)
    if ref.startswith("name:"):
        want = ref[5:]
        hits = []
        for _obj_id, fd in each(kind):
            info = L.prog_info_full(fd, False)[0] if kind == "prog" else L.map_info(fd)
            if info.name.decode(errors="replace") == want:
                hits.append(os.dup(fd))
        if len(hits) != 1:
            for fd in hits:
                os.close(fd)
            raise UsageError(f"{len(hits) or 'no'} {kind}s are named {want}" + (": use the id" if hits else ""))
        return hits[0]
    obj_id = ref.removeprefix("id:").removeprefix("id ")
    if not limits.decimal(obj_id):
        raise UsageError(f"'{ref}' is not a {kind} id, id:N, name:NAME or a pin path")
    return fd_of(kind, int(obj_id))
