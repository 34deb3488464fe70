"""The agent's side of the fleet: its capture, sent to NATS JetStream.

A thread with its own asyncio loop follows the capture directory from an
acknowledged cursor (fleet/tail.py) and publishes ranges of lines as batches:
one message per event family of a range, zstd-compressed JSON lines, with a
`Nats-Msg-Id` made of the capture's identity and the range, so a range sent
again after a crash or an outage is dropped by the server's duplicate window.
The range is written to the cursor file before it is sent ("pending") and the
cursor moves past it once every message of it is acknowledged: nothing is lost
while NATS is away (the capture keeps growing, bounded by its retention), and
nothing arrives twice.

The same thread keeps the host's heartbeat in a KV bucket and answers fleet
diagnose requests on the host's own subject (only when the config allows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard

from bpfwatch.capture.manifest import Manifest
from bpfwatch.errors import BpfwatchError
from bpfwatch.fleet.connect import HOSTS_BUCKET, SCHEMA_VERSION, NatsAuth, Subjects, connect, family_of, ts_of
from bpfwatch.fleet.tail import CaptureTail, Cursor, Range

log = logging.getLogger("bpfwatch.agent")

RETRY_MIN, RETRY_MAX = 0.5, 30.0
MAX_RAW_BYTES = 768 << 10  # JSON lines per message, before compression
ERROR_RELOG = 300.0  # seconds before the same problem is logged again
CURSOR_SYNC_EVERY = 1.0  # seconds between fsyncs of the cursor (a crash of the process loses nothing)


JS_INSUFFICIENT_RESOURCES = 10047  # JetStream's error code when a stream's limits exceed its storage


@dataclass
class PublishSettings:
    auth: NatsAuth
    host: str
    subject_prefix: str = "bpfwatch"
    stream: str = "BPFWATCH_EVENTS"
    create_stream: bool = True
    stream_max_age: float = 7 * 86400.0
    stream_max_bytes: int = 10 << 30
    replicas: int = 1
    duplicate_window: float = 3600.0
    batch_events: int = 5000
    batch_age: float = 1.0
    compression: str = "zstd"
    heartbeat_interval: float = 10.0
    accept_diagnose: bool = False
    diagnose_commands: bool = False
    diagnose_max_duration: int = 300
    mode: Callable[[], dict[str, Any]] = field(default=lambda: {})  # what the heartbeat reports


@dataclass
class PublishStats:
    connected: bool = False
    published_events: int = 0
    published_messages: int = 0
    publish_errors: int = 0
    skipped_segments: int = 0
    lag_events: int = 0
    lag_seconds: float = 0.0
    last_error: str = ""
    diagnose_requests: dict[str, int] = field(default_factory=dict)


class NatsPublisher:
    def __init__(self, settings: PublishSettings, capture_dir: str,
                 backlog: Callable[[int, int], int] | None = None) -> None:
        self.s = settings
        self.dir = capture_dir
        self.subjects = Subjects(settings.subject_prefix)
        self.stats = PublishStats()
        self._backlog = backlog
        self._stop = threading.Event()
        self._draining = threading.Event()  # send what is there, then stop
        self._logged: dict[str, float] = {}  # problem -> when it was last logged
        self._synced_at = 0.0  # when the cursor was last fsynced
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        manifest = Manifest.load(capture_dir)
        # the capture's identity: a new capture directory starts its segments at 1 again
        self._capture_id = f"{manifest.created if manifest else 0:x}"
        self._cctx = zstandard.ZstdCompressor(level=3) if settings.compression == "zstd" else None
        self._last_ts: int | None = None

    def start(self) -> NatsPublisher:
        self._cursor = Cursor.load(self.dir)  # a damaged cursor file is an error now, not in the thread
        self._thread = threading.Thread(target=self._run, name="bw-nats", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0, drain: float = 0.0) -> None:
        """Stops after the range in flight (its cursor saved). With `drain`,
        while connected, first sends what the capture holds (up to that many
        seconds): the agent's last events leave before it exits."""
        if drain and self.stats.connected and self._thread is not None:
            self._draining.set()
            self._wakeup()
            self._thread.join(drain)
        self._stop.set()
        self._wakeup()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _wakeup(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as e:  # the agent keeps capturing whatever happens here
            log.error("nats output stopped: %s", e)
            self.stats.last_error = str(e)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        tail = CaptureTail(self.dir, self._cursor)
        backoff = RETRY_MIN
        try:
            while not self._stop.is_set():
                try:
                    nc = await connect(self.s.auth, initial_timeout=3.0, error_cb=self._nats_error,
                                       disconnected_cb=self._down, reconnected_cb=self._up)
                except BpfwatchError as e:
                    self._note_error(str(e))
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                    continue
                backoff = RETRY_MIN
                self.stats.connected = True
                log.info("nats output connected to %s (stream %s, subjects %s)", nc.connected_url.netloc
                         if nc.connected_url else self.s.auth.servers[0], self.s.stream,
                         self.subjects.events(self.s.host, "*"))
                try:
                    await self._session(nc, tail)
                finally:
                    self.stats.connected = False
                    with contextlib.suppress(Exception):
                        await nc.drain()
        finally:
            tail.close()
            self._save_cursor(sync=True)

    async def _session(self, nc: Any, tail: CaptureTail) -> None:
        js = nc.jetstream(timeout=5)
        if self.s.create_stream:
            await self._ensure_stream(js)
        kv = await self._hosts_bucket(js)
        sub = await nc.subscribe(self.subjects.diagnose(self.s.host), cb=self._diagnose)
        beat = asyncio.create_task(self._heartbeats(kv))
        try:
            await self._publish_loop(js, tail)
        finally:
            beat.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _ensure_stream(self, js: Any) -> None:
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import APIError, BadRequestError

        cfg = StreamConfig(name=self.s.stream, subjects=[self.subjects.all_events()], storage=StorageType.FILE,
                           max_age=self.s.stream_max_age, max_bytes=self.s.stream_max_bytes,
                           num_replicas=self.s.replicas, duplicate_window=self.s.duplicate_window)
        try:
            await js.add_stream(cfg)
        except BadRequestError as e:
            # it exists with other settings: keep it (another agent or an operator made it)
            log.info("nats stream %s exists with other settings (%s); using it as it is", self.s.stream, e)
        except APIError as e:
            if getattr(e, "err_code", None) == JS_INSUFFICIENT_RESOURCES:
                raise BpfwatchError(
                    f"the NATS server cannot reserve {self.s.stream_max_bytes} bytes for stream {self.s.stream} "
                    f"(JetStream: insufficient storage resources): lower outputs.nats.stream_max_bytes, or give "
                    f"the server's JetStream more storage (max_file_store)") from None
            raise

    async def _hosts_bucket(self, js: Any) -> Any:
        from nats.js.errors import BucketNotFoundError

        try:
            return await js.key_value(HOSTS_BUCKET)
        except BucketNotFoundError:
            return await js.create_key_value(bucket=HOSTS_BUCKET, history=1,
                                             replicas=min(self.s.replicas, 3))

    # -- publishing ---------------------------------------------------------------------

    async def _publish_loop(self, js: Any, tail: CaptureTail) -> None:
        cur = self._cursor
        if cur.pending is not None:
            # sent before a crash or an outage, never acknowledged: the same range again
            seq, start, end = cur.pending
            tail.seq, tail.line = seq, start
            tail.close()
            rng = tail.read(end - start)
            if rng is not None and rng.seq == seq and rng.start == start:
                await self._send(js, rng)
        while not self._stop.is_set():
            rng = tail.read(self.s.batch_events)
            self.stats.skipped_segments = tail.skipped_segments
            if rng is None:  # caught up: what comes next gathers for batch_age
                self._refresh_lag()
                if self._draining.is_set():
                    self._stop.set()
                    return
                await self._sleep(self.s.batch_age)
                continue
            await self._fill(tail, rng)
            await self._send(js, rng)
            self._refresh_lag()

    async def _fill(self, tail: CaptureTail, rng: Range) -> None:
        """A short range of recent events waits for more lines of its segment,
        until it holds batch_events or its first event is batch_age old: big
        batches cost the server and the collectors far less than many small ones."""
        first = ts_of(rng.lines[0])
        while len(rng.lines) < self.s.batch_events and not self._stop.is_set() and not self._draining.is_set():
            age = time.time() - first / 1e9 if first is not None else self.s.batch_age
            if age >= self.s.batch_age:
                return
            more = tail.read(self.s.batch_events - len(rng.lines), stay=True)
            if more is None:
                await self._sleep(min(self.s.batch_age - age, 0.05))
                continue
            rng.lines += more.lines

    async def _send(self, js: Any, rng: Range) -> None:
        """Publishes one range (a message per family) until every message is
        acknowledged; then moves the cursor past it."""
        cur = self._cursor
        cur.pending = (rng.seq, rng.start, rng.end)
        self._save_cursor()
        by_family: dict[str, list[bytes]] = {}
        for line in rng.lines:
            by_family.setdefault(family_of(line), []).append(line)
        messages = [(fam, k, part) for fam, lines in by_family.items()
                    for k, part in enumerate(_chunks(lines, MAX_RAW_BYTES))]
        backoff = RETRY_MIN
        while True:
            try:
                await asyncio.gather(*(self._publish(js, rng, f"{fam}:{k}" if k else fam, fam, part)
                                       for fam, k, part in messages))
                break
            except Exception as e:
                self.stats.publish_errors += 1
                self._note_error(f"publish failed ({type(e).__name__}: {e}); retrying")
                if self._stop.is_set():
                    return  # the range stays pending: sent again on the next start
                await self._sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)
        cur.seq, cur.line, cur.pending = rng.seq, rng.end, None
        self._save_cursor()
        self.stats.published_events += len(rng.lines)
        self._last_ts = ts_of(rng.lines[-1]) or self._last_ts

    async def _publish(self, js: Any, rng: Range, part: str, family: str, lines: list[bytes]) -> None:
        body = b"\n".join(lines) + b"\n"
        stamps = [t for t in (ts_of(lines[0]), ts_of(lines[-1])) if t is not None]
        headers = {
            "Nats-Msg-Id": f"{self.s.host}:{self._capture_id}:{rng.seq}:{rng.start}:{rng.end}:{part}",
            "Bpfwatch-Host": self.s.host, "Bpfwatch-Boot-Id": _boot_id(), "Bpfwatch-Schema": SCHEMA_VERSION,
            "Bpfwatch-Count": str(len(lines)), "Bpfwatch-Encoding": "zstd" if self._cctx else "none",
            "Bpfwatch-First-Ts": str(min(stamps)) if stamps else "", "Bpfwatch-Last-Ts": str(max(stamps)) if stamps
            else "",
        }
        payload = self._cctx.compress(body) if self._cctx else body
        await js.publish(self.subjects.events(self.s.host, family), payload, headers=headers,
                         stream=self.s.stream)
        self.stats.published_messages += 1

    def _refresh_lag(self) -> None:
        cur = self._cursor
        if self._backlog is not None:
            self.stats.lag_events = self._backlog(cur.seq, cur.line)
        if self.stats.lag_events and self._last_ts is not None:
            self.stats.lag_seconds = max(time.time() - self._last_ts / 1e9, 0.0)
        else:
            self.stats.lag_seconds = 0.0

    def _save_cursor(self, sync: bool = False) -> None:
        try:
            now = time.monotonic()
            durable = sync or now - self._synced_at >= CURSOR_SYNC_EVERY
            self._cursor.save(self.dir, durable=durable)
            if durable:
                self._synced_at = now
        except OSError as e:
            self._note_error(f"cannot save the cursor in {self.dir}: {e.strerror}")

    # -- heartbeat and diagnose --------------------------------------------------------------

    async def _heartbeats(self, kv: Any) -> None:
        from bpfwatch import __version__

        while True:
            doc = {"host": self.s.host, "version": __version__, "boot_id": _boot_id(), "time": time.time(),
                   "lag_events": self.stats.lag_events, "lag_seconds": round(self.stats.lag_seconds, 3),
                   "published_events": self.stats.published_events, "accept_diagnose": self.s.accept_diagnose,
                   **self.s.mode()}
            try:
                await kv.put(self.s.host, orjson.dumps(doc))
            except Exception as e:
                self._note_error(f"heartbeat not stored: {e}")
            await asyncio.sleep(self.s.heartbeat_interval)

    async def _diagnose(self, msg: Any) -> None:
        """One fleet diagnose request: refused unless the config accepts them;
        this agent's own command policy applies whatever the request says."""
        counts = self.stats.diagnose_requests
        if not self.s.accept_diagnose:
            counts["refused"] = counts.get("refused", 0) + 1
            await msg.respond(orjson.dumps({"status": "refused", "host": self.s.host,
                                            "reason": "this agent does not accept fleet diagnose requests "
                                                      "(outputs.nats.accept_diagnose = false)"}))
            return
        doc = await asyncio.get_running_loop().run_in_executor(None, self._run_diagnose, msg.data)
        counts[doc["status"]] = counts.get(doc["status"], 0) + 1
        await msg.respond(orjson.dumps(doc))

    def _run_diagnose(self, data: bytes) -> dict[str, Any]:
        from bpfwatch.diagnose.request import RequestError, parse_text
        from bpfwatch.diagnose.session import Settings, run

        try:
            req = parse_text(data, self.s.diagnose_max_duration)
            if req.commands and not self.s.diagnose_commands:
                raise RequestError("commands", "this agent does not run commands for fleet requests "
                                               "(outputs.nats.diagnose_commands = false)")
            result = run(req, Settings(allow_commands=self.s.diagnose_commands))
        except RequestError as e:
            return {"status": "refused", "host": self.s.host, "error": e.as_json()}
        except BpfwatchError as e:
            return {"status": "failed", "host": self.s.host, "error": str(e)}
        return {"status": "answered", "host": self.s.host, "result": result}

    # -- helpers -----------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _note_error(self, text: str) -> None:
        """Logs a problem once, and again only if it persists ERROR_RELOG seconds
        later: an outage or a refused login is one line, not one a retry."""
        now = time.monotonic()
        if now - self._logged.get(text, -ERROR_RELOG) >= ERROR_RELOG:
            log.warning("nats output: %s", text)
            self._logged[text] = now
        self.stats.last_error = text

    async def _nats_error(self, e: Exception) -> None:
        if self.stats.connected:  # while connecting, connect() says what went wrong
            self._note_error(f"{type(e).__name__}: {e}")

    async def _down(self) -> None:
        self.stats.connected = False
        log.warning("nats output disconnected; events wait in the capture")

    async def _up(self) -> None:
        self.stats.connected = True
        log.info("nats output reconnected; sending from the cursor")


def _chunks(lines: list[bytes], limit: int) -> list[list[bytes]]:
    """Lines in consecutive groups of at most `limit` bytes (one line may be
    alone over it): a message stays well under the server's max_payload
    (1 MB by default) whatever the events hold."""
    out: list[list[bytes]] = [[]]
    size = 0
    for line in lines:
        if size + len(line) + 1 > limit and out[-1]:
            out.append([])
            size = 0
        out[-1].append(line)
        size += len(line) + 1
    return out


def _boot_id() -> str:
    from bpfwatch.events.ids import boot_id

    return boot_id()
