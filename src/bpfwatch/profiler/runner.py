"""`bpfwatch run`: profile a command (launched held, so its first syscall is
seen) or a running process, until it ends; then read the kernel's
aggregates and build the summary. Also the Python API for the same."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from bpfwatch import kernel_support, procfs
from bpfwatch.errors import BpfError, BpfwatchError, UsageError
from bpfwatch.pipeline.sink import open_file
from bpfwatch.profiler import summary
from bpfwatch.profiler.launch import FORWARDED, HeldChild
from bpfwatch.profiler.sampler import Sampler
from bpfwatch.profiler.session import Collector
from bpfwatch.ringbuf import Poller
from bpfwatch.sensors.profile import ProfileOptions, ProfileSensor

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DRAIN_GRACE = 0.02  # after CMD ends: let its descendants' last records land
KILL_WAIT = 5.0     # after SIGKILL, how long the end of CMD is waited for


@dataclass(slots=True)
class RunOptions:
    latency: bool = True
    max_procs: int | None = None
    interval: float | None = None          # fixed sampling interval (default: adaptive)
    duration: float | None = None          # stop after this long
    keep_running: bool = False             # at the end of `duration`, leave a launched CMD running
    kill_after: float = 2.0                # after the SIGTERM that ends `duration`, SIGKILL this much later
    timeline_path: str | None = None       # JSON lines of samples and lifecycle records
    process_samples: bool = True           # per-process lines in the timeline
    on_start: Callable[[], None] | None = None  # called once the kernel tracks the target
    on_tick: Callable[[Collector], None] | None = None  # called on every turn of the loop (a status line)


def _boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class Profiler:
    def __init__(self, options: RunOptions | None = None) -> None:
        self.opts = options or RunOptions()
        if self.opts.interval is not None and not 0.01 <= self.opts.interval <= 60:
            raise UsageError("--interval must be between 0.01 and 60 seconds")
        if self.opts.duration is not None and self.opts.duration <= 0:
            raise UsageError("--duration must be positive")
        if not 0 <= self.opts.kill_after <= 3600:
            raise UsageError("--kill-after must be between 0 and 3600 seconds")
        self.sensor = ProfileSensor(ProfileOptions(latency=self.opts.latency, slots=self.opts.max_procs))
        self._timeline: BinaryIO | None = None
        self._stop_reason: str | None = None

    # -- public -------------------------------------------------------------------

    def run_command(self, argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
        """Profiles argv until it exits; the summary's exit_code/signal are its fate."""
        if not argv:
            raise UsageError("no command given: bpfwatch run [OPTIONS] -- CMD [ARGS...]")
        child = HeldChild(argv, env)
        try:
            with self._loaded():
                self.sensor.track_launched(child.pid)
                t0, start = _boot_ns(), time.time()
                child.release()
                comm = os.path.basename(child.path)[:15]
                c = Collector(self.sensor, child.pid, os.getpid(), comm, t0, argv=list(argv))

                def forward(sig: int, _frame: Any) -> None:
                    child.signal(sig)

                # like timeout(1): when the duration ends CMD gets SIGTERM, then
                # SIGKILL, and its exit is part of the profile; --keep-running
                # leaves it running instead
                steps = [] if self.opts.keep_running else [(signal.SIGTERM, self.opts.kill_after),
                                                           (signal.SIGKILL, KILL_WAIT)]
                with _handlers(FORWARDED, forward):
                    return self._profile(c, t0, start, lambda: child.poll() is not None, child.pidfd,
                                         command=list(argv), attach_pid=None, status=lambda: child.status,
                                         end_steps=steps, send=child.signal)
        finally:
            child.close()

    def attach(self, pid: int) -> dict[str, Any]:
        """Profiles a running process (and the children it starts from now on)
        until it exits, the duration passes, or SIGINT/SIGTERM/SIGHUP."""
        if pid == os.getpid():
            raise UsageError("bpfwatch cannot profile itself")
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise BpfwatchError(f"process {pid} does not exist") from None

        def stop(sig: int, _frame: Any) -> None:
            self._stop_reason = signal.Signals(sig).name

        try:
            with _handlers(STOP_SIGNALS, stop), self._loaded():
                start_ns = procfs.start_boot_ns(pid)
                self.sensor.track_running(pid)
                t0, start = _boot_ns(), time.time()
                comm, argv = procfs.comm_argv(pid)
                c = Collector(self.sensor, pid, procfs.ppid(pid), comm, start_ns, argv=argv)
                return self._profile(c, t0, start, lambda: c.root.end_ns is not None, pidfd,
                                     command=None, attach_pid=pid, status=lambda: c.root.status)
        finally:
            os.close(pidfd)

    # -- the loop -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _loaded(self) -> Iterator[None]:
        kernel_support.check_cheap()
        try:
            self.sensor.open()
        except BpfError as err:
            raise kernel_support.explain() or err from err
        try:
            if self.opts.timeline_path:
                self._timeline = open_file(self.opts.timeline_path, "wb")
            yield
        finally:
            if self._timeline is not None:
                self._timeline.close()
                self._timeline = None
            self.sensor.close()

    def _write(self, lines: list[dict[str, Any]]) -> None:
        if self._timeline is not None and lines:
            self._timeline.write(b"".join(orjson.dumps(x) + b"\n" for x in lines))
            self._timeline.flush()

    def _drain(self, c: Collector, t0: int) -> None:
        records: list[dict[str, Any]] = []
        self.sensor.drain(records)
        if not records:
            return
        c.on_records(records)
        if self._timeline is not None:
            self._write([_lifecycle_line(r, t0) for r in records])

    def _profile(self, c: Collector, t0: int, start: float, ended: Callable[[], bool], wake_fd: int, *,
                 command: list[str] | None, attach_pid: int | None, status: Callable[[], int | None],
                 end_steps: list[tuple[int, float]] | None = None,
                 send: Callable[[int], None] | None = None) -> dict[str, Any]:
        """The sampling loop until the target ends, a stop signal, or the
        duration. At the end of the duration each of end_steps (signal,
        seconds to wait for the exit) is sent in turn before giving up."""
        steps = list(end_steps or [])
        signalled: list[str] = []
        sampler = Sampler(c, self.opts.interval)
        poller = Poller()
        assert self.sensor.ring is not None
        poller.add(self.sensor.ring)
        poller.add_wakeup(wake_fd)
        deadline = time.monotonic() + self.opts.duration if self.opts.duration else None
        next_sample = 0.0
        if self.opts.on_start is not None:
            self.opts.on_start()
        try:
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    self._write(sampler.sample(self.opts.process_samples))
                    next_sample = now + sampler.interval()
                poller.wait(max(0.0, min(next_sample - now, 0.1)))
                self._drain(c, t0)
                c.harvest_due()
                if self.opts.on_tick is not None:
                    self.opts.on_tick(c)
                if ended():
                    break
                if self._stop_reason:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    if not steps or send is None:
                        self._stop_reason = "duration"
                        break
                    sig, wait_s = steps.pop(0)
                    send(sig)
                    signalled.append(signal.Signals(sig).name)
                    deadline = time.monotonic() + wait_s
        finally:
            # whatever stopped the loop, what was measured is still read and reported
            poller.close()
            time.sleep(DRAIN_GRACE)
            self._drain(c, t0)
            c.finish()
            t1 = _boot_ns()
            self._write(sampler.sample(self.opts.process_samples))
        if signalled and not self._stop_reason:
            self._stop_reason = "duration"
        doc = summary.build(c, command=command, attach_pid=attach_pid, t0_ns=t0, t1_ns=t1, start_epoch=start,
                            latency=self.opts.latency, samples=sampler.samples, peak_rss=sampler.peak_rss,
                            status=status(), lost=self.sensor.lost(), stopped_by=self._stop_reason,
                            end_signals=signalled)
        self._write([{**{k: v for k, v in doc.items() if k != "timeline"}, "kind": "summary"}])
        return doc


def _lifecycle_line(r: dict[str, Any], t0: int) -> dict[str, Any]:
    line = {"kind": r["kind"], "t": round((r["ts"] - t0) / 1e9, 6), "pid": r["pid"], "comm": r["comm"]}
    if r["kind"] == "fork":
        line["child_pid"] = r["child_pid"]
    elif r["kind"] == "exec":
        line.update(filename=r["filename"], argv=r["argv"])
    elif r["kind"] == "exit":
        line.update(summary.wait_fields(r["status"]), peak_rss_bytes=r["peak_rss"])
    return line


@contextlib.contextmanager
def _handlers(sigs: tuple[int, ...], fn: Callable[[int, Any], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # the Python API from another thread: the caller owns signals
        return
    old = {s: signal.signal(s, fn) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def profile_command(argv: list[str], **options: Any) -> dict[str, Any]:
    """Python API: the summary document of running argv (see docs/profile.md)."""
    return Profiler(RunOptions(**options)).run_command(argv)


def profile_pid(pid: int, **options: Any) -> dict[str, Any]:
    """Python API: the summary document of a running process, until it exits
    or `duration` seconds pass."""
    return Profiler(RunOptions(**options)).attach(pid)
