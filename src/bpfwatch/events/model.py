"""The shape every event shares (docs/events.md)."""

from __future__ import annotations

from typing import Any


def common_fields(type_: str, ts: int, pid: int, tid: int, ppid: int, uid: int, comm: str,
                  exe: str | None, cgroup_id: int, exec_id: str | None, source: str = "ebpf") -> dict[str, Any]:
    """The fields every event starts with, in schema order; `time` and `user`
    are filled in by enrichment."""
    return {"ts": ts, "time": None, "type": type_, "source": source, "pid": pid, "tid": tid, "ppid": ppid,
            "uid": uid, "user": None, "comm": comm, "exe": exe, "cgroup_id": cgroup_id, "exec_id": exec_id}
