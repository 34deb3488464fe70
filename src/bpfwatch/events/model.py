"""The shape every event shares (docs/events.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bpfwatch.procfs import ProcSnapshot


def common_fields(type_: str, ts: int, pid: int, tid: int, ppid: int, uid: int, comm: str,
                  exe: str | None, cgroup_id: int, exec_id: str | None, source: str = "ebpf") -> dict[str, Any]:
    """The fields every event starts with, in schema order; `time` and `user`
    are filled in by enrichment."""
    return {"ts": ts, "time": None, "type": type_, "source": source, "pid": pid, "tid": tid, "ppid": ppid,
            "uid": uid, "user": None, "comm": comm, "exe": exe, "cgroup_id": cgroup_id, "exec_id": exec_id}


def shape(type_: str, *fields: str, source: str = "ebpf", **preset: Any) -> dict[str, Any]:
    """Every key of an event of `type_` in schema order, the common fields
    first: values as common_fields leaves what enrichment fills in, None for
    `fields` unless `preset` gives one (a flag that only some events carry
    gets a shape of its own). The hot decoders copy it and store each
    event's values. Copying and storing into keys that exist costs half of
    adding them one by one, which probes and grows the dict: 21-key
    file.open events, 1.52-1.56 -> 1.02-1.10 us a record with the rest of
    that change (docs/benchmarks.md). Holds no mutable value, so copies
    share nothing that can change."""
    form = {**common_fields(type_, 0, 0, 0, 0, 0, "", None, 0, None, source=source), **dict.fromkeys(fields)}
    if preset.keys() - form.keys():
        raise ValueError(f"{type_}: preset fields not in its shape: {sorted(preset.keys() - form.keys())}")
    form.update(preset)
    return form


def from_shape(form: dict[str, Any], ts: int, pid: int, tid: int, ppid: int, uid: int, comm: str,
               cgroup_id: int) -> dict[str, Any]:
    """A copy of a shape with the fields every kernel record gives filled in;
    the caller stores the rest (exe and exec_id too, where it has them)."""
    ev = form.copy()
    ev["ts"] = ts
    ev["pid"] = pid
    ev["tid"] = tid
    ev["ppid"] = ppid
    ev["uid"] = uid
    ev["comm"] = comm
    ev["cgroup_id"] = cgroup_id
    return ev


def exec_from_proc(p: ProcSnapshot, eid: str, ts: int, source: str, parent_comm: str | None,
                   parent_exe: str | None, parent_exec_id: str | None) -> dict[str, Any]:
    """A process.exec event for a process read from /proc (the start-up
    snapshot, or the polling fallback)."""
    return {
        **common_fields("process.exec", ts, p.pid, p.pid, p.ppid, p.uid, p.comm, p.exe, p.cgroup_id, eid,
                        source=source),
        "gid": p.gid, "euid": p.euid, "egid": p.egid,
        "loginuid": None if p.loginuid == 0xFFFFFFFF else p.loginuid,
        "argv": p.argv, "argc": len(p.argv), "argv_truncated": False, "argv_omitted_args": 0,
        "argv_omitted_bytes": 0, "filename": None, "interpreter": None,
        "exe_memfd": bool(p.exe and p.exe.startswith("/memfd:")), "cwd": p.cwd,
        "tty": p.tty.removeprefix("/dev/") if p.tty else None,
        "ns_pid": None, "pidns": None, "start_boot_ns": p.start_boot_ns,
        "parent": {"pid": p.ppid, "comm": parent_comm, "exe": parent_exe, "exec_id": parent_exec_id},
    }
