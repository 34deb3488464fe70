"""Prometheus metrics and a health document over HTTP.

Values are read from the agent's counters when scraped (a custom collector),
so the event path never touches a metrics library. The server runs in a
daemon thread and serves /metrics, /healthz (JSON) and nothing else."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bpfwatch import __version__
from bpfwatch.errors import BpfwatchError


class AgentCollector:
    """Turns `snapshot()` (a dict the agent builds on demand) into metrics."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        info = GaugeMetricFamily("bpfwatch_build_info", "bpfwatch version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        up = GaugeMetricFamily("bpfwatch_uptime_seconds", "Seconds since the agent started")
        up.add_metric([], s["uptime"])
        yield up

        yield _counter("bpfwatch_events", "Events emitted, by type and sensor", ["type", "sensor"],
                       {k: n for k, n in s["events"].items()})
        yield _counter("bpfwatch_events_lost", "Events the kernel could not queue (ring full), by sensor",
                       ["sensor"], {(k,): n for k, n in s["lost"].items()})
        mode = GaugeMetricFamily("bpfwatch_sensor_mode", "1 for the mode each sensor runs in",
                                 labels=["sensor", "mode"])
        for sensor, m in sorted(s["modes"].items()):
            for candidate in ("ebpf", "poll"):
                mode.add_metric([sensor, candidate], int(m == candidate))
        yield mode

        fill = GaugeMetricFamily("bpfwatch_ring_buffer_fill_ratio", "Bytes waiting in the ring / its size",
                                 labels=["ring"])
        size = GaugeMetricFamily("bpfwatch_ring_buffer_size_bytes", "Ring buffer size", labels=["ring"])
        for ring, (pending, total) in sorted(s["rings"].items()):
            fill.add_metric([ring], pending / total if total else 0.0)
            size.add_metric([ring], total)
        yield fill
        yield size

        runs = CounterMetricFamily("bpfwatch_bpf_program_runs", "Times each BPF program ran (kernel bpf_stats)",
                                   labels=["program", "sensor"])
        run_time = CounterMetricFamily("bpfwatch_bpf_program_run_seconds",
                                       "Time spent in each BPF program (kernel bpf_stats)",
                                       labels=["program", "sensor"])
        for p in s["programs"]:
            runs.add_metric([p["name"], p["sensor"]], p["run_cnt"])
            run_time.add_metric([p["name"], p["sensor"]], p["run_time_ns"] / 1e9)
        yield runs
        yield run_time
        stats_on = GaugeMetricFamily("bpfwatch_bpf_stats_enabled",
                                     "1 while the kernel counts program runs (metrics.bpf_stats)")
        stats_on.add_metric([], int(s["bpf_stats"]))
        yield stats_on

        cache = GaugeMetricFamily("bpfwatch_process_cache_entries", "Processes in the process cache")
        cache.add_metric([], s["process_cache"])
        yield cache

        cap = s.get("capture")
        if cap is not None:
            yield from _families("bpfwatch_capture_", cap, CAPTURE_METRICS)
        nats = s.get("nats")
        if nats is not None:
            yield from _families("bpfwatch_nats_", nats, NATS_METRICS)
            yield _counter("bpfwatch_nats_diagnose_requests", "Fleet diagnose requests, by answer", ["status"],
                           {(k,): n for k, n in nats["diagnose_requests"].items()})
        yield _counter("bpfwatch_config_reloads", "Config reloads (SIGHUP), by result", ["result"],
                       {(k,): n for k, n in s["reloads"].items()})
        yield _counter("bpfwatch_redacted_events", "Events whose argv had secrets redacted", [],
                       {(): s["redacted"]})


# (stat, kind, help) of the capture writer's and the NATS publisher's figures
CAPTURE_METRICS = (
    ("events_written", "counter", "Events written to capture segments"),
    ("bytes_written", "counter", "Uncompressed bytes written to capture segments"),
    ("rotations", "counter", "Capture segments closed"),
    ("write_errors", "counter", "Failed capture writes (disk full, permissions)"),
    ("compress_errors", "counter", "Capture segments that could not be compressed"),
    ("dropped", "counter", "Events dropped because the hold buffer overflowed while writes failed"),
    ("segments", "gauge", "Closed capture segments on disk"),
    ("disk_bytes", "gauge", "Bytes of closed capture segments on disk"),
    ("held", "gauge", "Events held in memory, waiting for the disk"),
    ("failing", "gauge", "1 while capture writes fail"),
)
NATS_METRICS = (
    ("published_events", "counter", "Events acknowledged by NATS JetStream"),
    ("published_messages", "counter", "Batches (messages) acknowledged by NATS JetStream"),
    ("publish_errors", "counter", "Failed publishes (each retried from the capture)"),
    ("skipped_segments", "counter", "Capture segments deleted by retention before they were sent"),
    ("lag_events", "gauge", "Captured events not yet acknowledged by NATS"),
    ("lag_seconds", "gauge", "Age of the oldest event not yet acknowledged by NATS"),
    ("connected", "gauge", "1 while connected to NATS"),
)


def _families(prefix: str, stats: dict[str, Any], specs: tuple[tuple[str, str, str], ...]) -> Iterator[Metric]:
    for name, kind, doc in specs:
        family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(prefix + name, doc)
        family.add_metric([], float(stats[name]))
        yield family


def _counter(name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], float]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric(list(key), n)
    return family


CLIENT_TIMEOUT = 5.0  # seconds a client may take to send its request or read the answer
MAX_CLIENTS = 16      # connections served at once; more are closed at once


class _QuietHandler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT  # an idle or slow client times out instead of holding a thread

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """Each client in its own thread, at most MAX_CLIENTS at once: one idle
    connection can no longer stall the others, /healthz, a reload or the
    agent's shutdown."""

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: refuse, never queue behind them
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """/metrics (Prometheus text) and /healthz (JSON) on `host:port`."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], dict[str, Any]],
                 health: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(snapshot))  # type: ignore[arg-type]
        self.registry.register(ProcessCollector(namespace="bpfwatch_agent", registry=None))
        metrics_app = make_wsgi_app(self.registry)
        self.health = health

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            path = environ.get("PATH_INFO", "/")
            if path == "/metrics":
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            if path == "/healthz":
                doc = self.health()
                status = "200 OK" if doc.get("status") == "ok" else "503 Service Unavailable"
                start_response(status, [("Content-Type", "application/json")])
                return [orjson.dumps(doc)]
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"bpfwatch agent: /metrics or /healthz\n"]

        try:
            self.server = make_server(host, port, app, server_class=_Server6 if ":" in host else _Server,
                                      handler_class=_QuietHandler)
        except OSError as e:
            raise BpfwatchError(f"metrics.address {host}:{port}: cannot listen: {e.strerror}") from None
        self.address = self.server.server_address
        self._thread = threading.Thread(target=self.server.serve_forever, name="bw-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=2)
