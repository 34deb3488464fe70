"""The public API: `with bpfwatch.Monitor(...) as m: for event in m: ...`"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from bpfwatch import caps, kernel_support, limits, procfs
from bpfwatch import libbpf as L
from bpfwatch.errors import BpfError, UsageError
from bpfwatch.events.clock import BootClock
from bpfwatch.events.ids import exec_id
from bpfwatch.events.model import exec_from_proc
from bpfwatch.events.types import expand_types
from bpfwatch.filters import Filter
from bpfwatch.pipeline.enrich import Enricher
from bpfwatch.pipeline.reorder import ReorderWindow
from bpfwatch.process_cache import ProcessCache, ProcInfo
from bpfwatch.ringbuf import Poller, RingBuffer
from bpfwatch.security.rules import RuleSet
from bpfwatch.sensors import chain
from bpfwatch.sensors.base import (
    DEFAULT_RING_SIZE,
    Request,
    RowDecoder,
    Scope,
    Sensor,
    SensorOptions,
    dispatch,
    singles,
)
from bpfwatch.sensors.dns import DnsOptions, DnsSensor
from bpfwatch.sensors.file import FileOptions, FileSensor
from bpfwatch.sensors.network import NetworkOptions, NetworkSensor
from bpfwatch.sensors.process import ALWAYS_TYPES, ARGS_MAX, TYPE_NAMES, ProcessOptions, ProcessSensor
from bpfwatch.sensors.security import SecurityOptions, SecuritySensor
from bpfwatch.sensors.syscount import SyscountSensor
from bpfwatch.wakeup import Wakeup

Event = dict[str, Any]




def _listify(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple | set) else [value]


# The sensors a Monitor composes beside the process sensor, in planning order:
# a new sensor is a module with plan()/adjust()/build(), added here.
COMPOSED: tuple[type[Sensor], ...] = (FileSensor, NetworkSensor, DnsSensor, SecuritySensor, SyscountSensor)


TREE_CHECK_EVERY = 0.25  # seconds between looks at whether a followed tree is gone
TREE_GONE_GRACE = 0.1    # records of the last exit (file.io totals) still reach the ring meanwhile
READS_PER_WINDOW = 4     # reads of the ring per reorder window (max_delay), at most, unless it fills
PACE_SLICE = 0.01        # how often a paced wait looks at the ring's fill and at stop requests

class Monitor:
    """Live process events from the kernel.

    Filters: `types` (names or globs), `pid` (these processes), `follow`
    (these and all their descendants, tracked in the kernel from fork),
    `comm` (exact, glob or `re:` regex), `uid` (ids or names). With
    `snapshot=True` the processes already running are reported first as
    process.exec events with `source: "procfs"`. With `include_self=False` the
    monitoring process itself is left out, in the kernel (the CLI does this).
    """

    mode = "ebpf"

    def __init__(
        self,
        types: list[str] | None = None,
        pid: list[int] | int | None = None,
        follow: list[int] | int | None = None,
        comm: list[str] | str | None = None,
        uid: list[int | str] | int | str | None = None,
        *,
        threads: bool = False,
        snapshot: bool = False,
        ring_size: int = DEFAULT_RING_SIZE,
        wakeup_bytes: int = 0,
        max_delay: float = 0.1,
        args_max: int = ARGS_MAX,
        duration: float | None = None,
        paths: list[str] | None = None,
        failed_only: bool = False,
        dns_port: int = 53,
        dns_names: list[str] | None = None,
        udp_idle: float = 30.0,
        allow: dict[str, Any] | None = None,
        deny: dict[str, Any] | None = None,
        include_self: bool = True,
        batch_bytes: int = 1 << 20,
        rules: RuleSet | None = None,
        syscall_counts: bool = False,
    ) -> None:
        allow = {k: _listify(v) for k, v in (allow or {}).items()}
        for key, value in (("pid", pid), ("follow", follow), ("comm", comm), ("uid", uid), ("path", paths),
                           ("dns_name", dns_names)):
            if _listify(value):
                allow[key] = allow.get(key, []) + _listify(value)
        if failed_only:
            allow["failed_only"] = [True]
        self.filter = Filter(allow, deny)
        a, d = self.filter.allow, self.filter.deny
        for p in a.pids | a.follow:
            if not procfs.exists(p):
                raise UsageError(f"--{'follow' if p in a.follow else 'pid'}: no process with pid {p}")
        self.types = expand_types(types) if types else (set(a.types) or expand_types(None))
        if types and a.types:
            self.types &= set(a.types)
        self.types -= set(d.types)
        if not self.types:
            raise UsageError("the filters leave no event type to trace")
        if duration is not None:
            duration = limits.seconds("duration", duration)
        max_delay = limits.seconds("max_delay", max_delay, high=60.0)
        udp_idle = limits.seconds("udp_idle", udp_idle, high=86400.0)
        dns_port = limits.port("dns_port", dns_port)
        batch_bytes = limits.byte_count("batch_bytes", batch_bytes, 1)
        self._follow_roots = a.follow
        self.scope = Scope(
            pids=(a.pids | a.follow) or None, follow=set(a.follow),
            uid=next(iter(a.uids)) if len(a.uids) == 1 else None,
            comms=set(a.comm.exact) if a.comm and not a.comm.patterns else None,
            # a tracer's own reads and writes are noise to whoever runs it
            deny_pids=set(d.pids) | (set() if include_self else {os.getpid()}),
            deny_comms=set(d.comm.exact) if d.comm else set(),
            cgroups=set(a.cgroups) if a.cgroup_given else None, deny_cgroups=set(d.cgroups))
        self.scope.validate()
        # each sensor plans itself from the request; the process sensor always
        # runs, as its events keep the process cache current for every other
        req = Request(types=self.types, allow=a, deny=d,
                      settings={"udp_idle": udp_idle, "dns_port": dns_port, "rules": rules,
                                "syscall_counts": syscall_counts})
        self.plans: dict[type[Sensor], Any] = {}
        for cls in COMPOSED:
            opts = cls.plan(req)
            if opts is not None:
                self.plans[cls] = opts
        for cls in list(self.plans):
            cls.adjust(req, self.plans)
        others = any(cls is not SyscountSensor for cls in self.plans)
        self.process_options = ProcessOptions(
            types=ALWAYS_TYPES | (self.types & set(TYPE_NAMES.values())) if others else self.types,
            threads=threads, args_max=args_max)
        self.process_options.validate()
        self.options = SensorOptions(ring_size=ring_size, wakeup_bytes=wakeup_bytes)
        self.snapshot = snapshot
        self.max_delay = max_delay
        self._drained_at = 0.0  # monotonic time of the last read of the ring
        self._drain_rate = 0.0  # bytes/s the producer wrote between the last two reads
        self._produced_at_drain = 0
        # records decoded per poll: a consumer that fell behind catches up in
        # bounded batches instead of turning a whole ring into dicts at once
        self.batch_bytes = batch_bytes
        self.duration = duration
        self.cache = ProcessCache()
        self.clock = BootClock.shared()
        self.enrich = Enricher(self.cache, self.clock)
        self.sensors: list[Sensor] = []
        self.chains = chain.Chains()
        self._poller: Poller | None = None
        self._ring: RingBuffer | None = None
        self._decoders: dict[int, Any] = {}
        self._row_decoders: dict[int, RowDecoder] = {}
        self._kind_at = (0, 0)
        self._exited: list[int] = []
        self._record_counts: dict[int, int] = {}
        self._sensor_of: dict[int, Sensor] = {}
        self._wakeup: Wakeup | None = None
        self._stopped = False
        self._deadline: float | None = None
        self._pending: list[Event] = []
        # reorder window: records from different CPUs reach the ring slightly
        # out of time order; events wait up to max_delay and leave sorted
        self._window = ReorderWindow(int(max_delay * 1e9))
        self.events_seen = 0
        self._lost_cache: dict[str, int] = {}
        self._lost_read_at = 0.0
        # with follow, tracing ends once the followed trees have no process left
        self._follow = bool(a.follow)
        self._tree_check_at = 0.0
        self._tree_gone_at: float | None = None

    # what each sensor was planned with (None: not running); the agent compares
    # them across a reload to know whether programs must load again
    @property
    def file_options(self) -> FileOptions | None:
        return self.plans.get(FileSensor)

    @property
    def network_options(self) -> NetworkOptions | None:
        return self.plans.get(NetworkSensor)

    @property
    def dns_options(self) -> DnsOptions | None:
        return self.plans.get(DnsSensor)

    @property
    def security_options(self) -> SecurityOptions | None:
        return self.plans.get(SecuritySensor)

    @property
    def count_syscalls(self) -> bool:
        return SyscountSensor in self.plans

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Monitor:
        caps.require_tracing()
        kernel_support.check_cheap()
        try:
            proc = ProcessSensor(self.process_options, self.options, self.scope)
            self.sensors.append(proc)
            others: list[Sensor] = [cls.build(opts, self.options, self.scope) for cls, opts in self.plans.items()]
            self.sensors.extend(others)  # closed with the rest if any of them fails
            # sensors sharing a syscall tracepoint run as one program there
            self.chains = chain.plan([s.prepare() for s in self.sensors])
            proc.load(attach=False)
            shared = replace(self.scope, shared=proc.shared_maps())
            for s in others:
                s.scope = shared
            # the rest load in parallel: most of a load is the kernel's verifier,
            # which runs on the loading thread's CPU, and libbpf lets go of the GIL
            if len(others) > 1:
                from concurrent.futures import ThreadPoolExecutor  # 5 ms of imports a lone sensor skips

                with ThreadPoolExecutor(max_workers=len(others), thread_name_prefix="bw-load") as pool:
                    for f in [pool.submit(s.load, attach=False) for s in others]:
                        f.result()
            elif others:
                others[0].load(attach=False)
            assert proc.obj is not None
            self.chains.link(proc.obj)
            # every object is loaded (the slow part, the verifier): attach them
            # all at once, the process sensor last, so a process whose exec is
            # reported has all its other events reported too
            for s in self.sensors[1:] + self.sensors[:1]:
                s.attach()
            L.trim_heap()
            # after the attach, so every later exec is an event; a first event waits out
            # the reorder window anyway, so this read (and psutil's import) costs it nothing
            self._seed(proc)
            # one ring for all sensors (read through the process sensor): one time
            # line, one mapping's worth of memory; decoders by event type
            self._ring = proc.ring
            self._decoders = {t: fn for s in self.sensors for t, fn in s.decoders.items()}
            self._row_decoders = {t: rd for s in self.sensors for t, rd in s.row_decoders.items()}
            self._kind_at = proc.kind_at()
            self._exited = proc.exited
            self._record_counts = dict.fromkeys(self._decoders, 0)
            self._sensor_of = {t: s for s in self.sensors for t in s.decoders}
            self._poller = Poller()
            self._poller.add(proc.ring)  # type: ignore[arg-type]
            self._wakeup = Wakeup()
            self._poller.add_wakeup(self._wakeup.fd)
        except BpfError as err:
            self.close()
            # a kernel older than a feature the sensors need: say which, not the verifier's words
            raise kernel_support.explain() or err from err
        except BaseException:
            self.close()
            raise
        if self.duration is not None:
            self._deadline = time.monotonic() + self.duration
        return self

    def _seed(self, sensor: Sensor) -> None:
        """Process table from /proc; with follow, the existing descendants too."""
        snap: list[Event] = []
        for p in procfs.snapshot():
            eid = exec_id(p.pid, p.start_boot_ns)
            self.cache.put(ProcInfo(pid=p.pid, ppid=p.ppid, comm=p.comm, exe=p.exe, exec_id=eid,
                                    uid=p.uid, start_boot_ns=p.start_boot_ns, cgroup_id=p.cgroup_id))
            if self.snapshot and "process.exec" in self.types:
                snap.append(self._snapshot_event(p, eid))
        if self._follow_roots:
            # twice: a child forked by a not-yet-tracked descendant while we seeded
            for _ in range(2):
                sensor.track({d for root in self._follow_roots for d in procfs.descendants(root)})
        if snap:
            tracked = sensor.tracked() if self.scope.pids is not None else None
            snap = [e for e in snap if tracked is None or e["pid"] in tracked]
            if self.scope.uid is not None:
                snap = [e for e in snap if e["uid"] == self.scope.uid]
            if self.scope.comms is not None:
                snap = [e for e in snap if e["comm"] in self.scope.comms]
            self.enrich(snap)
            self._pending = self._select(snap)

    def _select(self, events: list[Event]) -> list[Event]:
        """The types asked for, through the whole filter (deny wins)."""
        types = self.types
        if not self.filter.active:
            return [e for e in events if e["type"] in types]
        match = self.filter.match
        return [e for e in events if e["type"] in types and match(e)]

    def _snapshot_event(self, p: procfs.ProcSnapshot, eid: str) -> Event:
        parent = self.cache.get(p.ppid)
        return exec_from_proc(p, eid, self.clock.to_epoch_ns(p.start_boot_ns), "procfs",
                              parent.comm if parent else None, parent.exe if parent else None,
                              parent.exec_id if parent else None)

    def stop(self) -> None:
        """Ends iteration soon; safe to call from a signal handler or another thread."""
        self._stopped = True
        self.wake()

    def wake(self) -> None:
        """Makes a waiting poll() return now (e.g. to handle a signal)."""
        if self._wakeup is not None:
            self._wakeup.wake()

    def close(self) -> None:
        self._stopped = True
        self._refresh_lost(force=True)
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        if self._wakeup is not None:
            self._wakeup.close()
            self._wakeup = None
        self._ring = None
        for s in self.sensors:
            s.close()
        self.sensors.clear()

    def __enter__(self) -> Monitor:
        if not self.sensors:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- consuming ---------------------------------------------------------------

    @property
    def finished(self) -> bool:
        now = time.monotonic()
        return (self._stopped or (self._deadline is not None and now >= self._deadline)
                or (self._tree_gone_at is not None and now - self._tree_gone_at >= TREE_GONE_GRACE))

    @property
    def tree_gone(self) -> bool:
        """With follow: every followed process and all their descendants have exited."""
        return self._tree_gone_at is not None

    def _check_tree(self) -> None:
        now = time.monotonic()
        if not self._follow or self._tree_gone_at is not None or now < self._tree_check_at or not self.sensors:
            return
        self._tree_check_at = now + TREE_CHECK_EVERY
        # the kernel drops a process from the tracked set when it exits; one that
        # exited before the programs loaded is still there (a zombie, if its
        # parent has not reaped it yet), hence the /proc check
        if not any(procfs.running(p) for p in self.sensors[0].tracked()):
            self._tree_gone_at = now

    def poll(self, timeout: float | None = None, final: bool = False) -> list[Event]:
        """One batch of events (possibly empty) after waiting at most `timeout`
        (default: max_delay) for the kernel to signal new records. Events
        leave in timestamp order after the reorder window (max_delay); with
        `final` (the last poll before close) every held event leaves."""
        if self._pending:
            out, self._pending = self._pending, []
            self.events_seen += len(out)
            # the last poll must still read the ring, or what it holds is lost
            return out + self.poll(timeout, final=True) if final else out
        if self._poller is None:
            return []
        wait = self.max_delay if timeout is None else timeout
        if self._deadline is not None:
            wait = max(0.0, min(wait, self._deadline - time.monotonic()))
        oldest = self._window.oldest_ts()
        first_due: float | None = None  # monotonic time the first events may leave
        if oldest is not None:
            # wake when the oldest held event is due, plus a slice of the window, so
            # a steady stream leaves in a few batches a window, not in one poll per
            # wake-up (fewer polls: less CPU; events wait up to 1.25x max_delay).
            # The first events leave on time: someone is waiting for them.
            window = self._window.window_ns
            due = (oldest + window - time.clock_gettime_ns(time.CLOCK_BOOTTIME)) / 1e9
            if self._window.released_any:
                wait = 0.0 if due <= 0 else min(wait, due + window / 4e9)
            else:
                wait = max(0.0, min(wait, due))
                first_due = time.monotonic() + due
        ring = self._ring
        if ring is not None and ring.pending_bytes():
            # records already queued may never bring a wake-up: the kernel wakes a
            # consumer that had caught up, and one written while the last read ran
            # found it behind (or a backlog over batch_bytes was left): read them,
            # paced below like any other
            wait = 0.0
        ready = self._poller.wait(wait)
        if ring is not None and timeout is None and not final:
            self._pace(ring, first_due)
        raw: list[Event] = []
        if ring is not None and (ready or ring.pending_bytes()):
            self._note_drain(ring)
            decoders, hdr, counts = self._decoders, self.sensors[0].hdr_dtype, self._record_counts
            # once stopped, everything left is read: the caller's last poll
            ring.drain(lambda run: dispatch(run, decoders, hdr, raw, counts),
                       None if self._stopped or final else self.batch_bytes,
                       singles(self._row_decoders, raw, counts), self._kind_at)
        exited = self._exited  # the pids whose exit this read decoded
        for s in self.sensors:
            s.tick(raw, exited, force=self._stopped or final)
        exited.clear()
        self._check_tree()
        if self._wakeup is not None:
            self._wakeup.clear()
        self._refresh_lost()
        raw = self._in_order(raw, flush=final or self.finished)
        if not raw:
            return raw
        self.enrich(raw)
        for s in self.sensors:
            raw = s.after_enrich(raw)
        out = self._select(raw)
        self.events_seen += len(out)
        return out

    def _pace(self, ring: RingBuffer, until: float | None = None) -> None:
        """Reads the ring at most every max_delay / READS_PER_WINDOW while it
        is not filling up. Events wait for the reorder window anyway, so
        reading them sooner adds polls and no promptness, and every poll
        costs the consumer its warm caches: at 20k events/s the agent took
        10.4 us per event at 180 polls/s and 8.0 us at 60 (docs/benchmarks.md).

        The wait ends early once an eighth of the ring is queued, and it is
        shorter, in finer steps, when the last read's rate would queue that
        much sooner (a small ring, or a fast producer). It ends by `until`
        (monotonic), when the first events are due."""
        pressure = ring.size // 8
        interval = self.max_delay / READS_PER_WINDOW
        if self._drain_rate > 0:
            interval = min(interval, pressure / self._drain_rate / 2)
        step = min(PACE_SLICE, interval / 4)
        wakeup = self._wakeup
        end = self._drained_at + interval if until is None else min(until, self._drained_at + interval)
        while not self._stopped and not (wakeup is not None and wakeup.woken):
            left = end - time.monotonic()
            if left <= 0 or ring.pending_bytes() >= pressure:
                return
            # a sleep, not a wait on the ring: once wakeup_bytes are queued, the
            # kernel wakes the ring's waiters on every record
            time.sleep(min(left, step))

    def _note_drain(self, ring: RingBuffer) -> None:
        """The producer's rate since the last read of the ring, in bytes/s."""
        now, produced = time.monotonic(), ring.producer_pos
        if self._drained_at:
            self._drain_rate = (produced - self._produced_at_drain) / max(now - self._drained_at, 1e-3)
        self._drained_at, self._produced_at_drain = now, produced

    def _in_order(self, raw: list[Event], flush: bool) -> list[Event]:
        """The held events whose window has passed (all of them with flush),
        in timestamp order; raw joins the held ones."""
        self._window.add(raw)
        return self._window.release(None if flush else time.clock_gettime_ns(time.CLOCK_BOOTTIME))

    @property
    def late_events(self) -> int:
        """Events that arrived after a later event had left the window."""
        return self._window.late

    def __iter__(self) -> Iterator[Event]:
        if not self.sensors:
            self.start()
        while not self.finished:
            yield from self.poll()
        yield from self.poll(0)  # what arrived before the stop

    def syscall_counts(self) -> list[dict[str, Any]]:
        """Per (process, syscall) counts so far (with syscall_counts=True)."""
        return next((s.counts() for s in self.sensors if isinstance(s, SyscountSensor)), [])

    def syscall_counts_dropped(self) -> int:
        """Syscalls not counted because the counter's table was full."""
        return next((s.dropped() for s in self.sensors if isinstance(s, SyscountSensor)), 0)

    # -- accounting ---------------------------------------------------------------

    def _refresh_lost(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._lost_read_at < 0.5:
            return
        self._lost_read_at = now
        for s in self.sensors:
            self._lost_cache[s.name] = s.lost()

    @property
    def lost_cached(self) -> dict[str, int]:
        """Lost events per sensor as of the last poll (no map reads: safe from any thread)."""
        return dict(self._lost_cache)

    def lost(self) -> dict[str, int]:
        """Events lost per sensor (the ring buffer was full)."""
        self._refresh_lost(force=True)
        return dict(self._lost_cache)

    @property
    def lost_total(self) -> int:
        return sum(self._lost_cache.values())

    def kernel_records(self) -> dict[str, int]:
        """Records decoded so far, per sensor."""
        out = {s.name: 0 for s in self.sensors}
        for t, n in self._record_counts.items():
            out[self._sensor_of[t].name] += n
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "events": self.events_seen,
            "lost": self.lost(),
            "late": self.late_events,
            "kernel_records": self.kernel_records(),
            "process_cache": len(self.cache),
            "process_cache_evicted": self.cache.evicted,
        }
