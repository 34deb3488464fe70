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

from bpfwatch import limits
from bpfwatch.errors import BpfwatchError
from bpfwatch.fleet import store
from bpfwatch.fleet.connect import NatsAuth, Subjects, connect
from bpfwatch.pipeline.gc_tuning import tune_for_streaming

log = logging.getLogger("bpfwatch.fleet")


@dataclass
class CollectStats:
    messages: int = 0
    events: int = 0
    rejected: int = 0          # messages that are not event batches (terminated, never redelivered)
    by_host: dict[str, int] = field(default_factory=dict)
    # seconds from a batch's oldest event to the batch on disk (the pipeline's end-to-end latency)
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
        import pyarrow
        import pyarrow.compute
        import pyarrow.json
        import pyarrow.parquet

        # one core per collector: add processes to scale (Arrow's thread pools cost 10% more CPU per event here)
        pyarrow.set_cpu_count(1)
        pyarrow.set_io_thread_count(1)
        self.s = settings
        self.stats = CollectStats()
        self._stop = asyncio.Event()
        self._dctx = zstandard.ZstdDecompressor()
        self._last_error = ""
        self._nc: Any = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> CollectStats:
        from nats.errors import Error as NatsError
        from nats.js.api import AckPolicy, ConsumerConfig
        from nats.js.errors import APIError, NotFoundError

        nc = self._nc = await connect(self.s.auth, error_cb=self._nats_error)
        tune_for_streaming()  # batches make many objects and no cycles
        try:
            js = nc.jetstream(timeout=10)
            last = time.monotonic()
            waiting = False
            while True:  # a collector may start before any agent made the stream
                try:
                    sub = await js.pull_subscribe(
                        Subjects(self.s.subject_prefix).all_events(), durable=self.s.durable, stream=self.s.stream,
                        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.s.ack_wait,
                                              max_ack_pending=max(self.s.batch * 4, 256)))
                    break
                except NotFoundError:
                    if not waiting:
                        log.warning("stream %s does not exist yet (no agent has sent anything): waiting for it",
                                    self.s.stream)
                        waiting = True
                    if self._stop.is_set() or (self.s.idle_exit is not None
                                               and time.monotonic() - last >= self.s.idle_exit):
                        return self.stats
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), 1.0)
                except APIError as e:
                    raise BpfwatchError(f"stream {self.s.stream}: {e.description or e}") from None
            lost_since: float | None = None
            while not self._stop.is_set():
                try:
                    msgs = await sub.fetch(self.s.batch, timeout=1.0)
                    await self._handle(msgs)
                except TimeoutError:  # nothing came (nats' TimeoutError is one too)
                    if not nc.is_connected:
                        last = time.monotonic()  # an outage is not idleness
                    elif self.s.idle_exit is not None and time.monotonic() - last >= self.s.idle_exit:
                        break
                    continue
                except NatsError as e:
                    # the server went away or is electing a leader: nats-py reconnects, we retry;
                    # a batch whose ack was lost comes again after ack_wait and rewrites its file
                    if lost_since is None:
                        lost_since = time.monotonic()
                        log.warning("lost the stream (%s); retrying", str(e) or type(e).__name__)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), 0.5)
                    continue
                if lost_since is not None:
                    log.warning("stream back after %.1f s", time.monotonic() - lost_since)
                    lost_since = None
                last = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                await nc.close()  # every message handled was acknowledged synchronously
        return self.stats

    async def _nats_error(self, e: Exception) -> None:
        text = str(e) or type(e).__name__
        if text != self._last_error:  # an outage is one line, not one per reconnect attempt
            log.warning("nats: %s", text)
            self._last_error = text

    async def _handle(self, msgs: list[Any]) -> None:
        """One fetch: the batches of each host written together (one file per
        host and day: a few large files cost far less than many small ones),
        then every message acknowledged. A batch delivered again (its
        collector died before acknowledging) leaves out what is already
        stored. Parquet writing releases the GIL: hosts are written in
        parallel."""
        loop = asyncio.get_running_loop()
        groups: dict[tuple[str, bool], list[tuple[Any, int, bytes]]] = {}
        for msg in msgs:
            headers = msg.headers or {}
            host = headers.get("Bpfwatch-Host") or msg.subject.split(".")[-2]
            try:
                data = msg.data
                if headers.get("Bpfwatch-Encoding") == "zstd":
                    data = self._dctx.decompress(data, max_output_size=256 << 20)
            except zstandard.ZstdError as e:
                await self._reject(msg, host, e)
                continue
            again = msg.metadata.num_delivered > 1
            groups.setdefault((host, again), []).append((msg, msg.metadata.sequence.stream, data))

        async def write(host: str, again: bool, items: list[tuple[Any, int, bytes]]) -> None:
            try:
                n = await loop.run_in_executor(None, store.write_batches, self.s.store, host,
                                               [(seq, data) for _, seq, data in items], again)
            except ValueError:
                if len(items) == 1:
                    await self._reject(items[0][0], host, "lines that are not events")
                    return
                for item in items:  # find the bad one: each alone
                    await write(host, again, [item])
                return
            for m, _, _ in items:
                await m.ack()  # only now: the events are on disk (a lost ack is a redelivery: deduplicated)
            self._account(host, n, [m for m, _, _ in items])

        await asyncio.gather(*(write(host, again, items) for (host, again), items in groups.items()))
        await self._nc.flush()  # the acknowledgements leave together

    async def _reject(self, msg: Any, host: str, why: Any) -> None:
        self.stats.rejected += 1
        log.warning("message %s from %s is not an event batch (%s): dropped", msg.metadata.sequence.stream, host, why)
        await msg.term()

    def _account(self, host: str, n: int, msgs: list[Any]) -> None:
        now = time.time_ns()
        for m in msgs:
            first = (m.headers or {}).get("Bpfwatch-First-Ts", "")  # the batch's oldest event: its worst latency
            if limits.decimal(first):
                self.stats.latencies.append(max(now - int(first), 0) / 1e9)
        self.stats.messages += len(msgs)
        self.stats.events += n
        self.stats.by_host[host] = self.stats.by_host.get(host, 0) + n
