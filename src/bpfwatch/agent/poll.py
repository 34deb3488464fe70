"""The /proc polling fallback: process exec/exit (and forks without exec) and
TCP/UDP connections, found by comparing one scan with the last, emitted in
the same schema as the sensors with `source: "poll"`.

Polling sees states, not events: a process or connection that lives less than
one interval is never seen, exit codes and byte counts are unknown (null), and
times are when the scan noticed. docs/agent.md says so to users."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import time
from dataclasses import dataclass
from typing import Any

import psutil

from bpfwatch import procfs, sockdiag
from bpfwatch.events.clock import BootClock
from bpfwatch.events.ids import exec_id
from bpfwatch.events.model import common_fields, exec_from_proc
from bpfwatch.filters import Filter
from bpfwatch.pipeline.enrich import Enricher
from bpfwatch.process_cache import ProcessCache, ProcInfo
from bpfwatch.wakeup import Wakeup

Event = dict[str, Any]
NS = 1_000_000_000
log = logging.getLogger("bpfwatch.agent")


@dataclass(slots=True)
class _Proc:
    start_ticks: int
    ppid: int
    comm: str
    utime: int
    stime: int
    info: ProcInfo | None = None


@dataclass(slots=True)
class _Conn:
    pid: int
    first_ns: int
    role: str | None
    family: str
    state: str
    closed: bool = False


_LOCAL_CLOSE = {"FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSING"}
_REMOTE_CLOSE = {"CLOSE_WAIT", "LAST_ACK"}
_CLOSING = _LOCAL_CLOSE | _REMOTE_CLOSE
# what a scan asks the kernel for: not TIME_WAIT (a busy host holds tens of
# thousands), nor the handshake states and CLOSE that a scan skips anyway
_SCANNED_TCP = sockdiag.state_mask("ESTABLISHED", "LISTEN", "FIN_WAIT1", "FIN_WAIT2", "CLOSE_WAIT", "LAST_ACK",
                                   "CLOSING")
_FAMILY = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


class PollSource:
    """`poll()` returns the events of one scan every `interval` seconds."""

    mode = "poll"

    def __init__(self, types: set[str], event_filter: Filter, interval: float = 1.0, connections: bool = True,
                 snapshot: bool = False, include_self: bool = False) -> None:
        self.types = types
        self.filter = event_filter
        self.interval = interval
        self.connections = connections and any(t.startswith("network.") for t in types)
        self.snapshot = snapshot
        self.self_pid = None if include_self else os.getpid()
        self.cache = ProcessCache()
        self.clock = BootClock.shared()
        self.enrich = Enricher(self.cache, self.clock)
        self.events_seen = 0
        self.scans = 0
        self.scan_seconds = 0.0
        self._procs: dict[int, _Proc] = {}
        self._conns: dict[tuple[str, str, int, str, int], _Conn] = {}
        self._next = 0.0
        self._pending: list[Event] = []
        self._stopped = False
        # made in start(): a reload builds sources it may never start, and
        # each must not cost two fds (EMFILE after enough SIGHUPs)
        self._wakeup: Wakeup | None = None
        self._diag: sockdiag.Sockets | None = None
        self.sensors = {"process": "poll", **({"network": "poll"} if self.connections else {})}

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> PollSource:
        self._wakeup = Wakeup()
        out: list[Event] = []
        self._scan_procs(out, first=True)
        if self.connections:
            self._diag = sockdiag.Sockets().open()
            if not self._diag.available:
                log.info("polling: no socket diagnostics (NETLINK_SOCK_DIAG) here; connections come from "
                         "/proc/net through psutil")
            self._scan_conns([], first=True)
        self._pending = self._select(out) if self.snapshot else []
        self._next = time.monotonic() + self.interval
        return self

    def stop(self) -> None:
        self._stopped = True
        self.wake()

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.wake()

    def close(self) -> None:
        if self._wakeup is not None:
            self._wakeup.close()
            self._wakeup = None
        if self._diag is not None:
            self._diag.close()
            self._diag = None

    @property
    def finished(self) -> bool:
        return self._stopped

    def lost(self) -> dict[str, int]:
        return {}

    lost_cached = property(lost)

    # -- scanning -------------------------------------------------------------------

    def poll(self, timeout: float | None = None, final: bool = False) -> list[Event]:
        if self._pending:
            out, self._pending = self._pending, []
            self.events_seen += len(out)
            return out
        wait = max(0.0, self._next - time.monotonic())
        if timeout is not None:
            wait = min(wait, timeout)
        wakeup = self._wakeup
        assert wakeup is not None, "poll() before start()"
        if wait > 0 and not self._stopped:
            with contextlib.suppress(InterruptedError):
                select.select([wakeup.fd], [], [], wait)
        wakeup.clear()
        if time.monotonic() < self._next:
            return []
        self._next = max(self._next + self.interval, time.monotonic())
        t0 = time.perf_counter()
        raw: list[Event] = []
        self._scan_procs(raw)
        if self.connections:
            self._scan_conns(raw)
        self.scans += 1
        self.scan_seconds += time.perf_counter() - t0
        out = self._select(raw)
        self.events_seen += len(out)
        return out

    def _select(self, events: list[Event]) -> list[Event]:
        if not events:
            return events
        self.enrich(events)
        match = self.filter.match
        return [e for e in events if e["type"] in self.types and e["pid"] != self.self_pid and match(e)]

    def _scan_procs(self, out: list[Event], first: bool = False) -> None:
        seen: dict[int, _Proc] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            close = raw.rindex(b")")
            fields = raw[close + 2:].split()
            seen[pid] = _Proc(start_ticks=int(fields[19]), ppid=int(fields[1]),
                              comm=raw[raw.index(b"(") + 1:close].decode(errors="replace"),
                              utime=int(fields[11]), stime=int(fields[12]))
        now_ns = time.time_ns()
        old = self._procs
        for pid, prev in old.items():
            cur = seen.get(pid)
            if cur is None or cur.start_ticks != prev.start_ticks:
                out.append(self._exit_event(pid, prev, now_ns))
        born = sorted((p for p, cur in seen.items() if p not in old or old[p].start_ticks != cur.start_ticks),
                      key=lambda p: seen[p].start_ticks)
        for pid in born:
            cur = seen[pid]
            snap = procfs.snapshot_pid(pid)
            if snap is None or snap.start_boot_ns != cur.start_ticks * NS // procfs.CLK_TCK:
                seen.pop(pid, None)
                continue
            eid = exec_id(pid, snap.start_boot_ns)
            cur.info = ProcInfo(pid=pid, ppid=snap.ppid, comm=snap.comm, exe=snap.exe, exec_id=eid, uid=snap.uid,
                                start_boot_ns=snap.start_boot_ns, cgroup_id=snap.cgroup_id)
            parent = self.cache.get(snap.ppid)
            self.cache.put(cur.info)
            if first:
                out.append(exec_from_proc(snap, eid, self.clock.to_epoch_ns(snap.start_boot_ns), "procfs",
                                          parent.comm if parent else None, parent.exe if parent else None,
                                          parent.exec_id if parent else None))
            elif parent is not None and parent.exe == snap.exe and self._same_argv(snap.ppid, snap.argv):
                out.append(self._fork_event(parent, snap, eid))
            else:
                out.append(exec_from_proc(snap, eid, now_ns, "poll", parent.comm if parent else None,
                                          parent.exe if parent else None, parent.exec_id if parent else None))
        for pid, cur in seen.items():
            if cur.info is None and pid in old:
                cur.info = old[pid].info
        self._procs = seen

    @staticmethod
    def _same_argv(ppid: int, argv: list[str]) -> bool:
        return procfs.comm_argv(ppid)[1] == argv

    def _fork_event(self, parent: ProcInfo, snap: procfs.ProcSnapshot, eid: str) -> Event:
        return {**common_fields("process.fork", time.time_ns(), parent.pid, parent.pid, parent.ppid, parent.uid,
                                parent.comm, parent.exe, parent.cgroup_id, parent.exec_id, source="poll"),
                "child_pid": snap.pid, "child_tid": snap.pid, "thread": False, "clone_flags": [],
                "child_start_boot_ns": snap.start_boot_ns, "child_exec_id": eid}

    def _exit_event(self, pid: int, prev: _Proc, now_ns: int) -> Event:
        info = prev.info
        start = prev.start_ticks * NS // procfs.CLK_TCK
        ev = common_fields("process.exit", now_ns, pid, pid, prev.ppid, info.uid if info else 0, prev.comm[:15],
                           info.exe if info else None, info.cgroup_id if info else 0,
                           info.exec_id if info else exec_id(pid, start), source="poll")
        ev.update({"exit_code": None, "signal": None, "signal_name": None, "core_dumped": False, "status": None,
                   "thread": False, "duration_ns": max(0, time.clock_gettime_ns(time.CLOCK_BOOTTIME) - start),
                   "start_boot_ns": start,
                   "user_time_ns": prev.utime * NS // procfs.CLK_TCK,
                   "system_time_ns": prev.stime * NS // procfs.CLK_TCK})
        return ev

    def _connections(self) -> list[Any]:
        """The host's sockets, owners named (pid) for the ones not seen before."""
        diag = self._diag
        if diag is not None and diag.available:
            try:
                conns = diag.dump(_SCANNED_TCP)
            except OSError as e:
                log.warning("polling: socket diagnostics failed (%s); connections come from /proc/net through "
                            "psutil from now on", e.strerror or e)
                diag.available = False
            else:
                known = self._conns
                fresh = {c.inode for c in conns if c.raddr and c.laddr
                         and not getattr(known.get(_key(c)), "pid", 0)}
                owners = sockdiag.socket_owners(fresh)
                return [c._replace(pid=owners.get(c.inode)) if c.inode in owners else c for c in conns]
        return psutil.net_connections(kind="inet")

    def _scan_conns(self, out: list[Event], first: bool = False) -> None:
        try:
            conns = self._connections()
        except (psutil.Error, OSError):
            return
        listening = {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr}
        now_ns = time.time_ns()
        seen: dict[tuple[str, str, int, str, int], _Conn] = {}
        for c in conns:
            if not c.raddr or not c.laddr:
                continue
            proto = "tcp" if c.type == socket.SOCK_STREAM else "udp"
            if proto == "tcp" and c.status in (psutil.CONN_SYN_SENT, psutil.CONN_SYN_RECV, psutil.CONN_CLOSE):
                continue
            key = _key(c)
            prev = self._conns.get(key)
            if prev is not None:
                prev.state = c.status
                if c.pid and not prev.pid:
                    prev.pid = c.pid
                seen[key] = prev
                if proto == "tcp" and not prev.closed and c.status in _CLOSING:
                    out.append(self._close_event(key, prev, now_ns))  # reported once, at the first FIN seen
                continue
            if proto == "tcp" and c.status in _CLOSING:
                continue  # opened and closed between two scans: polling cannot see it
            role = ("server" if c.laddr.port in listening else "client") if proto == "tcp" else None
            family = "ipv6" if c.family == socket.AF_INET6 else "ipv4"
            conn = seen[key] = _Conn(pid=c.pid or 0, first_ns=now_ns, role=role, family=family, state=c.status)
            if first:
                continue
            if proto == "udp":
                out.append(self._conn_event("network.udp", key, conn, now_ns, phase="start", bytes_sent=None,
                                            bytes_received=None, packets_sent=None, packets_received=None,
                                            duration_ns=0))
            elif role == "server":
                out.append(self._conn_event("network.accept", key, conn, now_ns))
            else:
                out.append(self._conn_event("network.connect", key, conn, now_ns, result="established",
                                            error=None, latency_ns=None))
        gone = [key for key, conn in self._conns.items() if key not in seen]
        if self._diag is not None and self._diag.available:
            self._closing_states(self._diag, gone)
        for key in gone:
            conn = self._conns[key]
            dur = now_ns - conn.first_ns
            if key[0] == "udp":
                out.append(self._conn_event("network.udp", key, conn, now_ns, phase="end", bytes_sent=None,
                                            bytes_received=None, packets_sent=None, packets_received=None,
                                            duration_ns=dur))
                continue
            if not conn.closed:
                out.append(self._close_event(key, conn, now_ns))
        self._conns = seen

    def _closing_states(self, diag: sockdiag.Sockets, gone: list[tuple[str, str, int, str, int]]) -> None:
        """The state now of open TCP connections the scan no longer lists: the
        scan leaves out TIME_WAIT, which tells who closed first."""
        asked = [key for key in gone if key[0] == "tcp" and not self._conns[key].closed]
        if not asked:
            return
        family = {key: _FAMILY[self._conns[key].family] for key in asked}
        try:
            states = diag.tcp_states([(family[k], k[1], k[2], k[3], k[4]) for k in asked])
        except OSError:
            return  # closed_by then comes from the last state seen
        for key in asked:
            state = states.get((family[key], key[1], key[2], key[3], key[4]))
            if state in _CLOSING:
                self._conns[key].state = state

    def _close_event(self, key: tuple[str, str, int, str, int], conn: _Conn, now_ns: int) -> Event:
        conn.closed = True
        closed_by = "local" if conn.state in _LOCAL_CLOSE else "remote" if conn.state in _REMOTE_CLOSE else None
        return self._conn_event("network.close", key, conn, now_ns, bytes_sent=None, bytes_received=None,
                                bytes_exact=False, duration_ns=now_ns - conn.first_ns, closed_by=closed_by,
                                retransmits=None, segs_in=None, segs_out=None, role=conn.role)

    def _conn_event(self, kind: str, key: tuple[str, str, int, str, int], conn: _Conn, ts: int,
                    **fields: Any) -> Event:
        proc = self._procs.get(conn.pid)
        info = proc.info if proc else None
        ev = common_fields(kind, ts, conn.pid, conn.pid, proc.ppid if proc else 0, info.uid if info else 0,
                           (proc.comm if proc else "?")[:15], info.exe if info else None,
                           info.cgroup_id if info else 0, info.exec_id if info else None, source="poll")
        ev.update({"protocol": key[0], "family": conn.family, "local_addr": key[1], "local_port": key[2],
                   "remote_addr": key[3], "remote_port": key[4]}, **fields)
        return ev

    def stats(self) -> dict[str, Any]:
        return {"events": self.events_seen, "lost": {}, "process_cache": len(self.cache),
                "processes": len(self._procs), "connections": len(self._conns), "scans": self.scans,
                "scan_seconds": self.scan_seconds}


def _key(c: Any) -> tuple[str, str, int, str, int]:
    proto = "tcp" if c.type == socket.SOCK_STREAM else "udp"
    return (proto, c.laddr.ip, c.laddr.port, c.raddr.ip, c.raddr.port)
