"""`bpfwatch agent`: the long-running host agent.

One loop: take a batch from the event source (the eBPF sensors, or /proc
polling when eBPF cannot be used), redact it, count it, hand it to the outputs
(rotating capture, stdout). SIGHUP reloads the config between batches; SIGTERM
and SIGINT flush, close the segment, save the manifest and release every BPF
object."""

from __future__ import annotations

import contextlib
import dataclasses
import operator
import os
import signal
import socket
import sys
import time
from collections import Counter
from typing import Any

from bpfwatch import caps
from bpfwatch import libbpf as L
from bpfwatch.agent import config as config_mod
from bpfwatch.agent import log as agent_log
from bpfwatch.agent.config import AgentConfig, ConfigError
from bpfwatch.agent.metrics import MetricsServer
from bpfwatch.agent.poll import PollSource
from bpfwatch.agent.redact import Redactor
from bpfwatch.capture.writer import CaptureWriter
from bpfwatch.errors import BpfwatchError, UsageError
from bpfwatch.events.clock import BootClock
from bpfwatch.events.types import expand_types
from bpfwatch.filters import Filter
from bpfwatch.monitor import Monitor
from bpfwatch.pipeline.gc_tuning import tune_for_streaming
from bpfwatch.pipeline.sink import JsonLinesSink, TableSink
from bpfwatch.security.rules import load_rules

Source = Monitor | PollSource
_SECTIONS = {"tp_btf": "BTF tracepoints (tp_btf)", "raw_tp": "raw tracepoints", "raw_tracepoint": "raw tracepoints",
             "tp": "tracepoints", "tracepoint": "tracepoints", "uprobe": "uprobes", "iter": "iterators"}
STATS_EVERY = 1.0
_type_of = operator.itemgetter("type")


def wanted_types(cfg: AgentConfig) -> set[str]:
    """Event types the config asks for, with the sensor switches applied."""
    types = expand_types(cfg.filters.types or None)
    if cfg.sensors.network.state_changes and not cfg.filters.types:
        types.add("network.state")
    ebpf = cfg.monitor.ebpf
    if not (ebpf.file_tracing and cfg.sensors.file.enabled):
        types = {t for t in types if not t.startswith("file.")}
    if not (ebpf.network_tracing and cfg.sensors.network.enabled):
        types = {t for t in types if not t.startswith("network.")}
    if not (ebpf.network_tracing and cfg.sensors.dns.enabled):
        types = {t for t in types if not t.startswith("dns.")}
    if cfg.sensors.security.enabled and not cfg.filters.types:
        types |= expand_types(["security.*"])
    elif not cfg.sensors.security.enabled:
        types = {t for t in types if not t.startswith("security.")}
    if not types:
        raise UsageError(f"{cfg.path}: filters.types and the sensor switches leave no event type to collect")
    return types


def build_monitor(cfg: AgentConfig, snapshot: bool) -> Monitor:
    e, s = cfg.monitor.ebpf, cfg.sensors
    return Monitor(types=sorted(wanted_types(cfg)), threads=s.process.threads, snapshot=snapshot,
                   ring_size=e.ring_buffer_size, wakeup_bytes=e.wakeup_bytes, max_delay=e.max_delay,
                   args_max=s.process.args_max, paths=s.file.paths or None, failed_only=s.file.failed_only,
                   dns_port=s.dns.port, udp_idle=s.network.udp_idle, allow=cfg.filters.allow,
                   deny=cfg.filters.deny, include_self=False,
                   rules=load_rules(s.security.rules) if s.security.enabled and s.security.rules else None)


def build_poller(cfg: AgentConfig, snapshot: bool) -> PollSource:
    types = {t for t in wanted_types(cfg) if t.startswith(("process.exec", "process.exit", "process.fork",
                                                           "network."))}
    p = cfg.monitor.polling
    return PollSource(types, Filter(cfg.filters.allow, cfg.filters.deny), interval=p.interval,
                      connections=p.connections, snapshot=snapshot)


def kernel_plan(m: Monitor) -> tuple[Any, ...]:
    """What is decided at load time: equal plans mean a reload only swaps the
    Python-side filter; different ones mean loading new programs."""
    return (m.scope, m.process_options, m.file_options, m.network_options, m.dns_options, m.security_options,
            m.options, m.max_delay)


RELOAD_MIN_INTERVAL = 1.0   # seconds between two reloads, however many SIGHUPs come
EBPF_RETRY_MIN, EBPF_RETRY_MAX = 5.0, 300.0


def ebpf_unavailable_reason(e: BaseException) -> str:
    lacking = caps.missing_for_tracing()
    if lacking:
        return f"missing {', '.join(lacking)}"
    return str(e)


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.log = agent_log.setup(cfg.log.level, cfg.log.format)
        self.source: Source | None = None
        self.capture: CaptureWriter | None = None
        self.stdout_sink: JsonLinesSink | TableSink | None = None
        self.nats: Any = None  # fleet.publisher.NatsPublisher when outputs.nats is on
        self.metrics: MetricsServer | None = None
        self.redactor = Redactor(cfg.redaction)
        self.events: Counter[tuple[str, str]] = Counter()
        self.reloads: Counter[str] = Counter()
        self.started = time.monotonic()
        self.fallback_reason: str | None = None
        self._stats_fd = -1
        self._stop = False
        self._reload = False
        self._reload_after = 0.0   # coalesces SIGHUPs: no reload before this (monotonic)
        self._reload_backoff = RELOAD_MIN_INTERVAL
        self._ebpf_retry_at: float | None = None   # polling after a failure: when to try eBPF again
        self._ebpf_backoff = EBPF_RETRY_MIN
        self._cutoff: tuple[int, float] | None = None  # (boot ns, until monotonic) after a source swap
        self._snap: dict[str, Any] = {}
        self._snap_at = 0.0

    # -- start -------------------------------------------------------------------------

    def start_source(self, cfg: AgentConfig, snapshot: bool, fallback: bool = True) -> Source:
        """The event source of `cfg`: eBPF, or polling when eBPF is off, or
        when it fails and `fallback` allows (a failed eBPF start raises
        otherwise)."""
        e = cfg.monitor.ebpf
        if not e.enabled:
            self.fallback_reason = "disabled in the config (monitor.ebpf.enabled = false)"
            self.log.info("eBPF monitoring disabled in the config (monitor.ebpf.enabled = false)")
            return self._start_poller(cfg, snapshot)
        monitor = build_monitor(cfg, snapshot)
        L.log.sink = self._libbpf_message if e.debug else None
        try:
            monitor.start()
        except BpfwatchError as err:
            reason = ebpf_unavailable_reason(err)
            if not fallback:
                raise
            if not e.fallback_to_polling:
                fatal = BpfwatchError(f"eBPF not available ({reason}) and monitor.ebpf.fallback_to_polling is "
                                      f"false: {err}")
                fatal.exit_code = err.exit_code  # 2 for a missing privilege, as everywhere
                raise fatal from None
            self.fallback_reason = reason
            self._ebpf_retry_at = time.monotonic() + self._ebpf_backoff
            self.log.warning("eBPF not available (%s), falling back to polling; eBPF is tried again in %gs",
                             reason, self._ebpf_backoff)
            if caps.missing_for_tracing():
                self.log.info("to use eBPF: %s", caps.REMEDY)
            return self._start_poller(cfg, snapshot)
        self.fallback_reason = None
        self._ebpf_retry_at = None
        self._ebpf_backoff = EBPF_RETRY_MIN
        self.log.info("eBPF process monitoring available")
        for sensor in monitor.sensors:
            methods: dict[str, list[str]] = {}
            for prog in sensor.obj.programs() if sensor.obj else []:
                if prog.fd < 0:
                    continue
                kind, _, point = prog.section.partition("/")
                methods.setdefault(_SECTIONS.get(kind, kind), []).append(point or prog.name)
            how = "; ".join(f"{k}: {', '.join(v)}" for k, v in methods.items())
            self.log.info("%s sensor using %s", sensor.name, how)
        return monitor

    def _start_poller(self, cfg: AgentConfig, snapshot: bool) -> PollSource:
        poller = build_poller(cfg, snapshot).start()
        self.log.info("Process monitoring using %dms polling interval", round(cfg.monitor.polling.interval * 1000))
        lost = sorted({t.split(".")[0] for t in wanted_types(cfg)} - {"process", "network"}
                      | ({"network"} if not poller.connections and any(t.startswith("network.")
                                                                       for t in wanted_types(cfg)) else set()))
        if lost:
            self.log.warning("%s events are not available in polling mode", " and ".join(lost))
        return poller

    def _libbpf_message(self, text: str) -> None:
        self.log.debug("libbpf: %s", text.rstrip())

    def open_outputs(self, cfg: AgentConfig) -> None:
        if cfg.outputs.capture.enabled:
            self.capture = CaptureWriter(cfg.outputs.capture).open()
            self.log.info("capturing to %s (segments of %s events / %d bytes / %gs, %s)", cfg.outputs.capture.directory,
                          cfg.outputs.capture.max_segment_events, cfg.outputs.capture.max_segment_size,
                          cfg.outputs.capture.max_segment_age, cfg.outputs.capture.compression)
        if cfg.outputs.stdout.enabled:
            self.stdout_sink = (JsonLinesSink(sys.stdout.buffer) if cfg.outputs.stdout.format == "json"
                                else TableSink.for_stream(sys.stdout))
        if cfg.outputs.nats.enabled and self.capture is not None:
            self.nats = self._nats_publisher(cfg).start()

    def _nats_publisher(self, cfg: AgentConfig) -> Any:
        from bpfwatch.fleet.publisher import NatsPublisher, PublishSettings

        n = cfg.outputs.nats
        settings = PublishSettings(
            auth=config_mod.nats_auth(cfg), host=n.host or socket.gethostname(), subject_prefix=n.subject_prefix,
            stream=n.stream, create_stream=n.create_stream, stream_max_age=n.stream_max_age,
            stream_max_bytes=n.stream_max_bytes, replicas=n.replicas, duplicate_window=n.duplicate_window,
            batch_events=n.batch_events, batch_age=n.batch_age, compression=n.compression,
            heartbeat_interval=n.heartbeat_interval, accept_diagnose=n.accept_diagnose,
            diagnose_commands=n.diagnose_commands, mode=self._fleet_status)
        assert self.capture is not None
        self.log.info("sending events to NATS %s (stream %s) from the capture's cursor", ", ".join(n.servers),
                      n.stream)
        return NatsPublisher(settings, cfg.outputs.capture.directory, self.capture.backlog_after)

    def _fleet_status(self) -> dict[str, Any]:
        """What this host's heartbeat says besides the publisher's own figures."""
        snap = self.snapshot()
        return {"mode": "poll" if isinstance(self.source, PollSource) else "ebpf", "sensors": snap["modes"],
                "lost_events": sum(snap["lost"].values()), "events": sum(snap["events"].values()),
                "health": self.health()["status"]}

    def close_outputs(self) -> None:
        if self.capture is not None:
            self.capture.close()
            self.capture = None
        if self.nats is not None:
            # after the capture's last write: what it holds is sent now (a few seconds at most),
            # or from the cursor at the next start
            self.nats.close(drain=5.0)
            self.nats = None
        if self.stdout_sink is not None:
            with contextlib.suppress(OSError):
                self.stdout_sink.close()
            self.stdout_sink = None

    def start_metrics(self, cfg: AgentConfig) -> None:
        if cfg.metrics.bpf_stats and self._stats_fd < 0:
            try:
                self._stats_fd = L.enable_stats()
                self.log.info("kernel BPF statistics on (metrics.bpf_stats)")
            except BpfwatchError as err:
                self.log.warning("metrics.bpf_stats: cannot turn on BPF statistics (%s; it needs CAP_SYS_ADMIN, "
                                 "or set the sysctl kernel.bpf_stats_enabled=1)", err)
        elif not cfg.metrics.bpf_stats and self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1
        if cfg.metrics.enabled:
            for w in config_mod.warnings(cfg):
                self.log.warning("%s", w)
            host, port = config_mod.parse_address(cfg.metrics.address)
            self.metrics = MetricsServer(host, port, self.snapshot, self.health).start()
            self.log.info("metrics on http://%s:%d/metrics", *self.metrics.address[:2])

    def stop_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    # -- run -----------------------------------------------------------------------------

    def run(self) -> int:
        cfg = self.cfg
        self.log.info("bpfwatch agent starting (pid %d, config %s)", os.getpid(), cfg.path)
        self.open_outputs(cfg)  # first: a bad capture directory fails before anything loads
        try:
            self._install_signals()  # a SIGTERM while programs load still stops cleanly
            self.source = self.start_source(cfg, cfg.sensors.process.snapshot)
            self.start_metrics(cfg)
            tune_for_streaming()
            self.log.info("agent running (%s mode)", self.source.mode)
            self._loop()
        finally:
            self.shutdown()
        return 0

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: Any) -> None:
            self._stop = True
            if self.source is not None:
                self.source.wake()

        def on_hup(_signum: int, _frame: Any) -> None:
            self._reload = True
            if self.source is not None:
                self.source.wake()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def _loop(self) -> None:
        while not self._stop:
            assert self.source is not None
            self._emit(self.source.poll())
            if self.capture is not None:
                self.capture.tick()
            now = time.monotonic()
            if self._reload and now >= self._reload_after:
                # SIGHUPs that arrive while one reload runs (or just after) make one more, not one each
                self._reload = False
                self._reload_after = time.monotonic() + RELOAD_MIN_INTERVAL
                self.reload()
            elif self._ebpf_retry_at is not None and now >= self._ebpf_retry_at:
                self._retry_ebpf()
            now = time.monotonic()
            if now - self._snap_at >= STATS_EVERY:
                self._refresh_snapshot(now)
        if self.source is not None:
            self._emit(self.source.poll(0, final=True))

    def _emit(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        if self._cutoff is not None:
            cut_boot, until = self._cutoff
            if time.monotonic() > until:
                self._cutoff = None
            else:
                # converted with the offset these events were just given
                cut = BootClock.shared().to_epoch_ns(cut_boot)
                events = [e for e in events if e["ts"] >= cut]
        self.redactor(events)
        counts = self.events
        for t, n in Counter(map(_type_of, events)).items():
            counts[(t, t.split(".", 1)[0])] += n
        if self.capture is not None:
            self.capture.write(events)
        if self.stdout_sink is not None:
            try:
                self.stdout_sink.write(events)
            except OSError as err:
                self.log.error("stdout output failed (%s); turning it off", err)
                self.stdout_sink = None

    def shutdown(self) -> None:
        self.log.info("bpfwatch agent stopping")
        source, self.source = self.source, None
        if source is not None:
            with contextlib.suppress(Exception):
                self._emit(source.poll(0, final=True))
            lost = source.lost_cached
            source.close()
            if sum(lost.values()):
                self.log.warning("events lost in the kernel (ring buffer full): %s", lost)
        self.close_outputs()
        self.stop_metrics()
        if self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1
        L.log.sink = None
        self.log.info("bpfwatch agent stopped: %d events", sum(self.events.values()))

    # -- reload --------------------------------------------------------------------------------

    def reload(self) -> None:
        try:
            new = config_mod.load(self.cfg.path if self.cfg.path not in (None, "<defaults>") else None)
            swap, fresh = self._plan_source(new)
        except (ConfigError, UsageError) as err:
            self.reloads["rejected"] += 1
            for line in str(err).split("\nbpfwatch: "):
                self.log.error("config reload rejected, the running config stays in force: %s", line)
            return
        old = self.cfg
        agent_log.setup(new.log.level, new.log.format)
        self.redactor = Redactor(new.redaction)
        try:
            self._apply_source(swap, fresh, new)
        except BpfwatchError as err:
            # the config is fine but its programs did not load (often for a
            # moment: memory, a busy kernel): the running ones stay, and the
            # reload is tried again later
            self.reloads["failed"] += 1
            self._reload_backoff = min(self._reload_backoff * 2, EBPF_RETRY_MAX)
            self._reload = True
            self._reload_after = time.monotonic() + self._reload_backoff
            self.log.error("config reload failed, the running config stays in force (tried again in %gs): %s",
                           self._reload_backoff, err)
            return
        self._reload_backoff = RELOAD_MIN_INTERVAL
        if dataclasses.asdict(new.outputs) != dataclasses.asdict(old.outputs):
            self.close_outputs()  # flushes and closes the segment: nothing is lost
            try:
                self.open_outputs(new)
            except BpfwatchError as err:
                self.log.error("new outputs failed (%s); keeping the previous outputs", err)
                self.close_outputs()
                self.open_outputs(old)
                new = dataclasses.replace(new, outputs=old.outputs)
        if dataclasses.asdict(new.metrics) != dataclasses.asdict(old.metrics):
            self.stop_metrics()
            try:
                self.start_metrics(new)
            except BpfwatchError as err:
                self.log.error("metrics not served after the reload: %s", err)
        self.cfg = new
        self.reloads["ok"] += 1
        self.log.info("config reloaded from %s", new.path)

    def _retry_ebpf(self) -> None:
        """Polling because eBPF failed: try it again, backing off to 5 minutes."""
        if not isinstance(self.source, PollSource) or not self.cfg.monitor.ebpf.enabled:
            self._ebpf_retry_at = None
            return
        try:
            started = self.start_source(self.cfg, snapshot=False, fallback=False)
        except BpfwatchError as err:
            self._ebpf_backoff = min(self._ebpf_backoff * 2, EBPF_RETRY_MAX)
            self._ebpf_retry_at = time.monotonic() + self._ebpf_backoff
            self.fallback_reason = ebpf_unavailable_reason(err)
            self.log.warning("eBPF still not available (%s); polling on, next try in %gs", self.fallback_reason,
                             self._ebpf_backoff)
            return
        self._swap_to(started)
        self.log.info("eBPF works again: polling stopped")

    def _plan_source(self, new: AgentConfig) -> tuple[bool, Source]:
        """(whether the new config needs a new event source, an unstarted
        source built from it). A new source is needed when programs load with
        other settings or the mode changes; otherwise swapping the Python-side
        filter is enough. Raises on a config the source rejects."""
        cur = self.source
        if isinstance(cur, Monitor):
            if not new.monitor.ebpf.enabled:
                return True, build_poller(new, snapshot=False)
            fresh = build_monitor(new, snapshot=False)
            return kernel_plan(fresh) != kernel_plan(cur), fresh
        assert isinstance(cur, PollSource)
        if new.monitor.ebpf.enabled and not self.cfg.monitor.ebpf.enabled:
            # eBPF was off by choice, not by failure: try it now
            return True, build_monitor(new, snapshot=False)
        poller = build_poller(new, snapshot=False)
        return (poller.interval, poller.connections) != (cur.interval, cur.connections), poller

    def _apply_source(self, swap: bool, fresh: Source, new: AgentConfig) -> None:
        cur = self.source
        assert cur is not None
        if not swap:
            cur.filter, cur.types = fresh.filter, fresh.types
            return
        # the new source runs before the old one stops: events up to the
        # switch come from the old source, later ones from the new. An eBPF
        # source that fails to start leaves the running one in place (the
        # reload fails) instead of falling back to polling
        started = self.start_source(new, snapshot=False, fallback=not isinstance(cur, Monitor))
        self._swap_to(started)
        self.log.info("event source restarted for the new config (%s)", started.mode)

    def _swap_to(self, started: Source) -> None:
        """Makes `started` the source. The cut is kept in boot-clock ns, the
        clock the kernel stamps with, and compared after conversion with the
        one shared offset, so an event lands on exactly one side of it."""
        cur = self.source
        assert cur is not None
        cut_boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        time.sleep(0.05)
        old = cur.poll(0, final=True)
        cut = BootClock.shared().to_epoch_ns(cut_boot)
        self._emit([e for e in old if e["ts"] < cut])
        cur.close()
        self.source = started
        self._cutoff = (cut_boot, time.monotonic() + 5.0)

    # -- metrics ----------------------------------------------------------------------------------

    def _refresh_snapshot(self, now: float) -> None:
        """Reads kernel-side figures in the loop's thread; the metrics thread
        only ever reads this dict."""
        self._snap_at = now
        src = self.source
        programs: list[dict[str, Any]] = []
        rings: dict[str, tuple[int, int]] = {}
        modes: dict[str, str] = {}
        if isinstance(src, Monitor):
            for s in src.sensors:
                modes[s.name] = "ebpf"
                for prog in s.obj.programs() if s.obj else []:
                    if prog.fd >= 0:
                        with contextlib.suppress(BpfwatchError):
                            info = L.prog_info(prog.fd)
                            programs.append({"name": prog.name, "sensor": s.name, "run_cnt": info["run_cnt"],
                                             "run_time_ns": info["run_time_ns"]})
            if src._ring is not None:
                rings["events"] = (src._ring.pending_bytes(), src._ring.size)
        elif isinstance(src, PollSource):
            modes.update(src.sensors)
        self._snap = {
            "uptime": now - self.started, "events": dict(self.events),
            "lost": src.lost_cached if src is not None else {}, "modes": modes, "rings": rings,
            "programs": programs, "bpf_stats": self._stats_fd >= 0 or L.stats_enabled(),
            "process_cache": len(src.cache) if src is not None else 0,
            "capture": self.capture.stats() if self.capture is not None else None,
            "reloads": dict(self.reloads), "redacted": self.redactor.redacted,
            "nats": dataclasses.asdict(self.nats.stats) if self.nats is not None else None,
        }

    def snapshot(self) -> dict[str, Any]:
        snap = dict(self._snap) if self._snap else {}
        if not snap:
            snap = {"uptime": 0.0, "events": {}, "lost": {}, "modes": {}, "rings": {}, "programs": [],
                    "bpf_stats": False, "process_cache": 0, "capture": None, "reloads": {}, "redacted": 0,
                    "nats": None}
        snap["events"] = dict(self.events)
        snap["uptime"] = time.monotonic() - self.started
        return snap

    def health(self) -> dict[str, Any]:
        snap = self.snapshot()
        capture = self.capture
        cap = capture.stats() if capture is not None else None  # live: health must not lag
        problems = []
        if cap and cap["failing"]:
            problems.append(f"capture writes failing ({self.capture.failing if self.capture else ''}), "
                            f"{cap['held']} events held")
        if self.source is None:
            problems.append("no event source")
        elif isinstance(self.source, PollSource) and self.fallback_reason and self.cfg.monitor.ebpf.enabled:
            problems.append(f"polling /proc because eBPF failed ({self.fallback_reason}): events are missed")
        return {"status": "ok" if not problems else "degraded", "problems": problems,
                "mode": "poll" if isinstance(self.source, PollSource) else "ebpf",
                "fallback_reason": self.fallback_reason, "uptime_seconds": round(snap["uptime"], 3),
                "events": sum(snap["events"].values()), "lost": sum(snap["lost"].values()),
                "capture": cap, "config": self.cfg.path}


def run_agent(config_path: str | None) -> int:
    cfg = config_mod.load(config_path)
    return Agent(cfg).run()
