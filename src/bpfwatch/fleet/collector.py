"""`bpfwatch fleet collect`: a durable pull consumer on the events stream that
writes what it receives into the columnar store and acknowledges a message
only once its events are on disk. Collectors sharing the durable name share
the work; a message a killed collector held is delivered again after the ack
wait, and rewrites the same file (fleet/store.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zstandard

from bpfwatch.fleet import store
from bpfwatch.fleet.connect import NatsAuth, Subjects, connect

log = logging.getLogger("bpfwatch.fleet")


@dataclass
class CollectStats:
    messages: int = 0
    events: int = 0
    rejected: int = 0          # messages that are not event batches (terminated, never redelivered)
    by_host: dict[str, int] = field(default_factory=dict)
    # seconds from a batch's newest event to its batch on disk (the pipeline's end-to-end latency)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def latency(self, q: float) -> float | None:
        if not self.latencies:
            return None
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))]


@dataclass
class CollectSettings:
    auth: NatsAuth
    store: str
    stream: str = "BPFWATCH_EVENTS"
    durable: str = "bpfwatch-collector"
    subject_prefix: str = "bpfwatch"
    batch: int = 64
    ack_wait: float = 30.0
    idle_exit: float | None = None   # stop once nothing came for this long (scripts and tests)


class Collector:
    def __init__(self, settings: CollectSettings) -> None:
        self.s = settings
        self.stats = CollectStats()
        self._stop = asyncio.Event()
        self._dctx = zstandard.ZstdDecompressor()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> CollectStats:
        from nats.js.api import AckPolicy, ConsumerConfig

        nc = await connect(self.s.auth, error_cb=self._nats_error)
        try:
            js = nc.jetstream(timeout=10)
            sub = await js.pull_subscribe(
                Subjects(self.s.subject_prefix).all_events(), durable=self.s.durable, stream=self.s.stream,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.s.ack_wait,
                                      max_ack_pending=max(self.s.batch * 4, 256)))
            last = time.monotonic()
            while not self._stop.is_set():
                try:
                    msgs = await sub.fetch(self.s.batch, timeout=1.0)
                except TimeoutError:
                    if self.s.idle_exit is not None and time.monotonic() - last >= self.s.idle_exit:
                        break
                    continue
                for msg in msgs:
                    await self._handle(msg)
                last = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                await nc.close()  # every message handled was acknowledged synchronously
        return self.stats

    async def _nats_error(self, e: Exception) -> None:
        log.warning("nats: %s", e or type(e).__name__)

    async def _handle(self, msg: Any) -> None:
        headers = msg.headers or {}
        host = headers.get("Bpfwatch-Host") or msg.subject.split(".")[-2]
        part = f"{msg.metadata.sequence.stream:012d}"
        try:
            data = msg.data
            if headers.get("Bpfwatch-Encoding") == "zstd":
                data = self._dctx.decompress(data, max_output_size=256 << 20)
            n = await asyncio.get_running_loop().run_in_executor(None, store.write_lines, self.s.store, host, part,
                                                                 data)
        except (zstandard.ZstdError, ValueError) as e:
            self.stats.rejected += 1
            log.warning("message %s from %s is not an event batch (%s): dropped", msg.metadata.sequence.stream,
                        host, e)
            await msg.term()
            return
        await msg.ack_sync()  # only now: the events are on disk
        last = headers.get("Bpfwatch-Last-Ts", "")
        if last.isdigit():
            self.stats.latencies.append(max(time.time_ns() - int(last), 0) / 1e9)
        self.stats.messages += 1
        self.stats.events += n
        self.stats.by_host[host] = self.stats.by_host.get(host, 0) + n
