"""Enrichment: wall-clock time, user names, exec ids, and process context
from the process cache (exe and ids for fork/exit, the parent for exec)."""

from __future__ import annotations

from typing import Any

from bpfwatch.events.clock import BootClock, second_text
from bpfwatch.events.users import user_name
from bpfwatch.process_cache import ProcessCache, ProcInfo

_LIFECYCLE = frozenset(("process.exec", "process.fork", "process.exit"))


class Enricher:
    def __init__(self, cache: ProcessCache, clock: BootClock) -> None:
        self.cache = cache
        self.clock = clock

    def __call__(self, events: list[dict[str, Any]]) -> None:
        self.clock.maybe_resync()
        offset = self.clock.to_epoch_ns(0)
        cache = self.cache
        get = cache.get
        # events come in time order and in bursts from one process: the
        # second's text, the last user and the last process looked up are reused
        last_sec, time_fmt = -1, ""
        last_uid, user = -1, None
        last_pid, info = -1, None
        for ev in events:
            ts = ev["ts"]
            if ev["source"] == "ebpf":
                ts += offset
                ev["ts"] = ts
            sec, ns = divmod(ts, 1_000_000_000)
            if sec != last_sec:
                last_sec, time_fmt = sec, second_text(sec) + ".%09dZ"
            ev["time"] = time_fmt % ns
            uid = ev["uid"]
            if uid != last_uid:
                last_uid, user = uid, user_name(uid)
            ev["user"] = user
            kind = ev["type"]
            if kind in _LIFECYCLE:
                if kind == "process.exec":
                    self._exec(ev, cache)
                elif kind == "process.fork":
                    self._fork(ev, cache)
                else:
                    self._exit(ev, cache)
                last_pid = -1  # the cache changed
                continue
            pid = ev["pid"]
            if pid != last_pid:
                last_pid, info = pid, get(pid)
            if info is not None:
                ev["exe"] = ev["exe"] or info.exe
                ev["exec_id"] = info.exec_id
                ev["ppid"] = ev["ppid"] or info.ppid
                ev["cgroup_id"] = ev["cgroup_id"] or info.cgroup_id
        cache.expire()

    @staticmethod
    def _exec(ev: dict[str, Any], cache: ProcessCache) -> None:
        pid = ev["pid"]
        parent = cache.get(ev["ppid"])
        if parent is not None:
            ev["parent"]["exec_id"] = parent.exec_id
            ev["parent"]["exe"] = ev["parent"]["exe"] or parent.exe
        cache.put(ProcInfo(pid=pid, ppid=ev["ppid"], comm=ev["comm"], exe=ev["exe"],
                           exec_id=ev["exec_id"], uid=ev["uid"], start_boot_ns=ev["start_boot_ns"],
                           cgroup_id=ev["cgroup_id"]))

    @staticmethod
    def _fork(ev: dict[str, Any], cache: ProcessCache) -> None:
        info = cache.get(ev["pid"])
        if info is not None:
            ev["exe"] = info.exe
            ev["exec_id"] = info.exec_id
        if ev["thread"]:
            ev["child_exec_id"] = ev["exec_id"]
            return
        child = ev["child_pid"]
        cache.put(ProcInfo(pid=child, ppid=ev["pid"], comm=ev["comm"], exe=ev["exe"],
                           exec_id=ev["child_exec_id"], uid=ev["uid"],
                           start_boot_ns=ev["child_start_boot_ns"], cgroup_id=ev["cgroup_id"]))

    @staticmethod
    def _exit(ev: dict[str, Any], cache: ProcessCache) -> None:
        pid = ev["pid"]
        info = cache.get(pid)
        if info is not None:
            ev["exe"] = info.exe
            ev["exec_id"] = info.exec_id
        if not ev["thread"]:
            cache.exited(pid)
