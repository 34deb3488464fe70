"""The capture writer and reader on real files: rotation by size, time and
count with compression, retention, the manifest after kill -9, a full disk
(a small tmpfs), and `bpfwatch capture read|verify`."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import zstandard
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bpfwatch.agent.config import CaptureConfig, parse
from bpfwatch.capture import codec, reader
from bpfwatch.capture.manifest import Manifest
from bpfwatch.capture.writer import CaptureWriter
from conftest import BPFWATCH, ROOT


def capture_config(directory: Path, **keys: object) -> CaptureConfig:
    lines = [f'directory = "{directory}"'] + [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return parse("[outputs.capture]\n" + "\n".join(lines) + "\n").outputs.capture


def events(n: int, start: int = 0, pad: int = 40, t0: int = 1_700_000_000_000_000_000) -> list[dict]:
    return [{"ts": t0 + (start + i) * 1000, "type": "process.exec", "pid": 1000 + (start + i) % 7,
             "comm": "x", "seq": start + i, "argv": ["a" * pad]} for i in range(n)]


def read_seqs(directory: Path, **kw: object) -> list[int]:
    return [e["seq"] for e in reader.read(str(directory), **kw)]  # type: ignore[arg-type]


def test_rotation_by_count_with_zstd(tmp_path: Path) -> None:
    w = CaptureWriter(capture_config(tmp_path, max_segment_events=1000, compression="zstd")).open()
    for b in range(25):
        w.write(events(200, b * 200))
    w.close()
    m = Manifest.load(str(tmp_path))
    assert m is not None and [s.records for s in m.segments] == [1000] * 5
    assert all(s.name.endswith(".jsonl.zst") and s.compression == "zstd" for s in m.segments)
    assert sorted(os.listdir(tmp_path)) == sorted([s.name for s in m.segments] + ["index.json"])
    for s in m.segments:  # real zstd, with exactly the records the manifest says
        data = zstandard.ZstdDecompressor().decompressobj().decompress((tmp_path / s.name).read_bytes())
        lines = data.splitlines()
        assert len(lines) == s.records and data.endswith(b"\n")
        stamps = [orjson.loads(x)["ts"] for x in lines]
        assert (min(stamps), max(stamps)) == (s.first_ts, s.last_ts)
        assert oct(os.stat(tmp_path / s.name).st_mode & 0o777) == "0o600"
    assert read_seqs(tmp_path) == list(range(5000))
    assert reader.verify(str(tmp_path)) == (5, [])
    assert oct(os.stat(tmp_path / "index.json").st_mode & 0o777) == "0o600"
    # one compressor process for the five segments, gone with the writer
    assert w._compressor.started == 1 and w._compressor.pid is None


def test_each_segment_is_hashed_once_as_it_is_stored(tmp_path: Path) -> None:
    """Compressed segments carry the compressed file's hash, not one of the
    lines as written (that work is skipped); a segment whose compression
    fails is hashed as it stays, and so is one a crash left for a writer that
    no longer compresses."""
    w = CaptureWriter(capture_config(tmp_path, max_segment_events=100, compression="zstd")).open()
    real, calls = w._compressor.compress, []

    def compress_or_fail(*a: object) -> tuple[int, str]:
        calls.append(a)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(*a)

    w._compressor.compress = compress_or_fail  # type: ignore[method-assign]
    w.write(events(50))
    assert w._digest is None  # no hash of the lines while they are written
    w.write(events(50, 50))
    w.write(events(100, 100))
    w.write(events(100, 200))
    w.close()
    m = Manifest.load(str(tmp_path))
    assert m is not None and [s.compression for s in m.segments] == ["zstd", "none", "zstd"]
    for s in m.segments:
        assert s.sha256 == codec.sha256_file(str(tmp_path / s.name))
    assert w.compress_errors == 1 and reader.verify(str(tmp_path)) == (3, [])

    # a segment closed but not compressed when the agent stopped, then opened with compression off
    m.segments[1].sha256 = ""
    m.save(str(tmp_path), 0o600)
    assert reader.verify(str(tmp_path)) == (3, [])  # waiting for its hash is not damage
    (tmp_path / m.segments[1].name).write_bytes(b'{"ts":1}\n' * 100)
    w = CaptureWriter(capture_config(tmp_path, compression="none")).open()
    w.close()
    m = Manifest.load(str(tmp_path))
    assert m is not None and m.segments[1].sha256 == codec.sha256_file(str(tmp_path / m.segments[1].name))
    w = CaptureWriter(capture_config(tmp_path, compression="none")).open()
    w.write(events(5, 300))
    w.close()
    m = Manifest.load(str(tmp_path))
    assert m is not None and m.segments[-1].sha256 == codec.sha256_file(str(tmp_path / m.segments[-1].name))
    assert reader.verify(str(tmp_path)) == (4, [])


def test_rotation_by_size_with_gzip(tmp_path: Path) -> None:
    w = CaptureWriter(capture_config(tmp_path, max_segment_size="64KB", compression="gzip")).open()
    for b in range(40):
        w.write(events(100, b * 100, pad=100))
    w.close()
    m = Manifest.load(str(tmp_path))
    assert m is not None and len(m.segments) > 5
    for s in m.segments:
        assert s.raw_bytes <= 64 * 1024
        data = gzip.decompress((tmp_path / s.name).read_bytes())
        assert len(data) == s.raw_bytes and data.endswith(b"\n") and data.count(b"\n") == s.records
    assert sum(s.records for s in m.segments) == 4000
    assert read_seqs(tmp_path) == list(range(4000))


def test_rotation_by_time_uncompressed(tmp_path: Path) -> None:
    w = CaptureWriter(capture_config(tmp_path, max_segment_age="200ms", compression="none")).open()
    for b in range(3):
        w.write(events(10, b * 10))
        time.sleep(0.25)
        w.tick()
    w.tick()
    w.close()
    m = Manifest.load(str(tmp_path))
    assert m is not None and [s.records for s in m.segments] == [10, 10, 10]
    assert all(s.name.endswith(".jsonl") for s in m.segments)
    assert reader.verify(str(tmp_path)) == (3, [])


def test_retention_by_count_and_size(tmp_path: Path) -> None:
    w = CaptureWriter(capture_config(tmp_path, max_segment_events=100, retain_segments=3, compression="none")).open()
    for b in range(10):
        w.write(events(100, b * 100))
    w.close()
    m = Manifest.load(str(tmp_path))
    assert m is not None and len(m.segments) == 3
    assert read_seqs(tmp_path) == list(range(700, 1000))
    d2 = tmp_path / "size"
    w = CaptureWriter(capture_config(d2, max_segment_events=100, retain_size="30KB", retain_segments=0,
                                     compression="none")).open()
    for b in range(10):
        w.write(events(100, b * 100))
    w.close()
    m = Manifest.load(str(d2))
    assert m is not None and sum(s.bytes for s in m.segments) <= 30 * 1024 < sum(s.bytes for s in m.segments) + \
        m.segments[0].bytes
    assert read_seqs(d2)[-1] == 999


def test_reader_time_window_type_and_filters(tmp_path: Path) -> None:
    w = CaptureWriter(capture_config(tmp_path, max_segment_events=100)).open()
    w.write(events(1000))
    w.close()
    t0 = 1_700_000_000_000_000_000
    assert read_seqs(tmp_path, since=t0 + 250 * 1000, until=t0 + 349 * 1000) == list(range(250, 350))
    from bpfwatch.filters import Filter
    got = read_seqs(tmp_path, event_filter=Filter({"pid": [1003]}))
    assert got == [s for s in range(1000) if s % 7 == 3]
    assert read_seqs(tmp_path, types={"process.exit"}) == []


def test_partial_line_never_reaches_a_closed_segment_after_kill9(tmp_path: Path) -> None:
    """A writer process killed with SIGKILL mid-stream: the manifest stays
    valid JSON, the next open closes the interrupted segment at its last whole
    line, and every record read back is whole and in order."""
    script = f"""
import sys, time
sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_capture import capture_config, events
from bpfwatch.capture.writer import CaptureWriter
w = CaptureWriter(capture_config(__import__('pathlib').Path({str(tmp_path)!r}), max_segment_events=5000,
                                 compression="zstd")).open()
i = 0
while True:
    w.write(events(333, i))
    i += 333
    if i == 333 * 60:
        print("ready", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    doc = json.loads((tmp_path / "index.json").read_text())  # valid at any instant
    assert doc["format"] == "bpfwatch-capture"
    opened = [n for n in os.listdir(tmp_path) if n.endswith(".open")]
    assert len(opened) <= 1  # none only if the kill fell between a rotation and the next write
    # an open segment killed before its first write is empty: recovery just removes it
    partial = bool(opened) and b"\n" in (tmp_path / opened[0]).read_bytes()
    # reading a live/interrupted capture works too (the partial tail is skipped)
    live = read_seqs(tmp_path)
    assert live == list(range(len(live))) and len(live) >= 333 * 60
    # reopening recovers: the open segment is closed at its last whole line
    w = CaptureWriter(capture_config(tmp_path, max_segment_events=5000, compression="none")).open()
    w.close()
    m = Manifest.load(str(tmp_path))
    assert m is not None and not [n for n in os.listdir(tmp_path) if n.endswith((".open", ".tmp"))]
    assert any(s.recovered for s in m.segments) == partial
    seqs = read_seqs(tmp_path)
    assert seqs == list(range(len(seqs))) and len(seqs) >= len(live)
    total, bad = reader.verify(str(tmp_path))
    assert bad == [] and total == len(m.segments)
    assert sum(s.records for s in m.segments) == len(seqs)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_holds_events_and_writes_them_when_space_returns(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "1m") as fs:
        filler = fs / "filler"
        filler.write_bytes(b"\0" * (900 * 1024))
        w = CaptureWriter(capture_config(fs / "cap", compression="none", retry_interval="50ms",
                                         buffer_events=50000)).open()
        for b in range(40):  # 4000 x ~130 bytes: more than the ~100 KiB left
            w.write(events(100, b * 100))
        assert w.write_errors > 0 and w.failing is not None and "ENOSPC" in w.failing
        assert w.held > 0
        held = w.held
        # nothing partial on disk: every line of the open segment is whole
        data = b"".join(p.read_bytes() for p in (fs / "cap").iterdir() if p.name.endswith(".open"))
        assert data.endswith(b"\n") and all(orjson.loads(x) for x in data.splitlines())
        filler.unlink()
        time.sleep(0.1)
        w.tick()
        assert w.held == 0 and w.failing is None
        w.close()
        assert read_seqs(fs / "cap") == list(range(4000))
        assert w.events_written == 4000 and held > 0


def test_disk_full_overflow_is_counted(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "256k") as fs:
        (fs / "filler").write_bytes(b"\0" * (250 * 1024))
        w = CaptureWriter(capture_config(fs / "cap", compression="none", buffer_events=500)).open()
        for b in range(20):
            w.write(events(100, b * 100))
        assert w.held == 500
        assert w.dropped + w.held + w.events_written == 2000
        (fs / "filler").unlink()
        w.close()
        m = Manifest.load(str(fs / "cap"))
        assert m is not None and m.dropped_events == w.dropped > 0
        seqs = read_seqs(fs / "cap")
        assert seqs[-500:] == list(range(1500, 2000))  # the newest are kept


def test_unwritable_directory_is_one_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    r = subprocess.run([*BPFWATCH, "capture", "read", str(f)], capture_output=True, text=True)
    assert r.returncode == 2 and "is not a capture directory" in r.stderr and "Traceback" not in r.stderr
    from bpfwatch.errors import BpfwatchError
    with pytest.raises(BpfwatchError, match="cannot create it"):
        CaptureWriter(capture_config(f / "sub")).open()


def test_capture_cli_read_verify_info(tmp_path: Path) -> None:
    w = CaptureWriter(capture_config(tmp_path, max_segment_events=300)).open()
    w.write(events(1000))
    w.close()
    r = subprocess.run([*BPFWATCH, "capture", "read", str(tmp_path), "--pid", "1001", "--type", "process.*"],
                       capture_output=True, text=True, check=True)
    got = [json.loads(x)["seq"] for x in r.stdout.splitlines()]
    assert got == [s for s in range(1000) if s % 7 == 1]
    since = "1700000000.0005"  # epoch seconds: seq 500 on
    r = subprocess.run([*BPFWATCH, "capture", "read", str(tmp_path), "--since", since], capture_output=True,
                       text=True, check=True)
    assert len(r.stdout.splitlines()) == 500
    r = subprocess.run([*BPFWATCH, "capture", "verify", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0 and "4 of 4 segments intact" in r.stdout
    m = Manifest.load(str(tmp_path))
    assert m is not None
    seg = tmp_path / m.segments[1].name
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0xFF
    seg.write_bytes(bytes(data))
    r = subprocess.run([*BPFWATCH, "capture", "verify", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1 and "sha256 does not match" in r.stderr and "3 of 4" in r.stdout
    r = subprocess.run([*BPFWATCH, "capture", "info", str(tmp_path)], capture_output=True, text=True, check=True)
    assert "events      1000" in r.stdout
    r = subprocess.run([*BPFWATCH, "capture", "read", str(tmp_path), "--since", "yesterday-ish"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "is not a time" in r.stderr


def test_disk_full_recovers_with_less_space_than_the_backlog(tmp_path: Path) -> None:
    """Freeing less space than the backlog still writes what fits (in small
    chunks), and a failing disk is retried every retry_interval, not on every
    batch."""
    with small_tmpfs(tmp_path / "small", "2m") as fs:
        filler = fs / "filler"
        filler.write_bytes(b"\0" * (1950 * 1024))
        w = CaptureWriter(capture_config(fs / "cap", compression="none", retry_interval="300ms",
                                         buffer_events=100_000, max_segment_size="64MB",
                                         max_segment_events=1_000_000)).open()
        for b in range(100):  # 10,000 x ~130 bytes: ~1.3 MB, far more than the ~100 KiB left
            w.write(events(100, b * 100))
        assert w.failing is not None
        errors = w.write_errors
        for b in range(100, 200):  # 100 more batches within the retry interval
            w.write(events(10, 10_000 + b * 10))
        assert w.write_errors - errors <= 1, "retried on every batch"
        held = w.held
        with open(filler, "r+b") as f:
            f.truncate(1400 * 1024)  # ~550 KiB back: less than the backlog
        time.sleep(0.35)
        w.tick()
        assert 0 < w.held < held - 1000, (held, w.held)
        filler.unlink()
        time.sleep(0.35)
        w.tick()
        assert w.held == 0 and w.failing is None
        w.close()
        assert sorted(read_seqs(fs / "cap")) == list(range(10_000)) + list(range(11_000, 12_000))


def _segment(path: Path, mb: int) -> Path:
    line = b'{"ts":1,"type":"file.open","path":"/usr/lib/x86_64-linux-gnu/libc.so.6","n":%d}\n'
    path.write_bytes(b"".join(line % i for i in range(mb * 14000)))
    return path


def test_compressor_child_is_kept_replaced_and_killed(tmp_path: Path) -> None:
    """The segment compressor: one child for many segments; a failed job
    (a missing file) leaves it running; a child that is gone is replaced
    at the next segment; one over its time is killed, that segment fails
    and the next gets a new child."""
    src = _segment(tmp_path / "seg.jsonl", 8)
    c = codec.Compressor()
    try:
        for i in range(3):
            out = tmp_path / f"{i}.zst"
            size, digest = c.compress(str(src), str(out), "zstd", 3, 0o600)
            assert size == out.stat().st_size and digest == codec.sha256_file(str(out))
            assert zstandard.ZstdDecompressor().decompressobj().decompress(out.read_bytes()) == src.read_bytes()
        first = c.pid
        assert c.started == 1 and first is not None
        with pytest.raises(OSError) as err:
            c.compress(str(tmp_path / "missing"), str(tmp_path / "m.zst"), "zstd", 3, 0o600)
        assert err.value.errno == errno.ENOENT and c.pid == first
        with pytest.raises(OSError) as err:  # a job longer than a pipe takes at once
            c.compress("/" + "a" * 70000, str(tmp_path / "m.zst"), "zstd", 3, 0o600)
        assert err.value.errno == errno.ENAMETOOLONG and c.pid == first
        os.kill(first, signal.SIGKILL)
        while os.path.exists(f"/proc/{first}/exe"):  # dead (a zombie until the next job reaps it)
            time.sleep(0.01)
        c.compress(str(src), str(tmp_path / "again.gz"), "gzip", 6, 0o600)
        assert c.started == 2 and c.pid not in (None, first)
        assert gzip.decompress((tmp_path / "again.gz").read_bytes()) == src.read_bytes()
        c.timeout = 0.001  # no 8 MB segment compresses in a millisecond
        slow = c.pid
        with pytest.raises(OSError) as err:
            c.compress(str(src), str(tmp_path / "slow.zst"), "zstd", 19, 0o600)
        assert err.value.errno == errno.ETIMEDOUT and c.pid is None
        assert slow is not None and not os.path.exists(f"/proc/{slow}")  # killed and reaped
        c.timeout = 600
        c.compress(str(src), str(tmp_path / "after.zst"), "zstd", 1, 0o600)
        assert c.started == 3
    finally:
        c.close()
    assert c.pid is None


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
@example(b'{"size":"12","sha256":1}\n')
@example(b'{"size":1e999,"sha256":"x"}\n')
@example(b'{"error":{"x":1},"errno":"EIO"}\n')
@example(b'[1,2]\n')
@example(b'{"size":-1,"sha256":"x"}\n')
@example(b'{"size":7,"sha256":"abc"}')  # no newline: the child exits first
def test_compressor_survives_any_answer(answer):
    """Whatever a compressor child writes back (or nothing: it exits), a
    segment's compression ends in a result or an OSError, never another
    exception or a wait past the timeout, and the child is not left running."""
    child = [sys.executable, "-c", f"import sys; sys.stdin.readline(); sys.stdout.buffer.write({answer!r})"]
    c = codec.Compressor(timeout=5, command=child)
    t = time.monotonic()
    try:
        size, digest = c.compress("/nonexistent/src", "/nonexistent/dst", "zstd", 3, 0o600)
        assert isinstance(size, int) and isinstance(digest, str)
    except OSError:
        pass
    finally:
        c.close()
    assert time.monotonic() - t < 10 and c.pid is None
