"""Segment compression: zstd (the `zstandard` package) or gzip, by suffix."""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
import zlib
from typing import Any, BinaryIO

import zstandard

from bpfwatch.capture.manifest import create_new, open_regular

SUFFIX = {"zstd": ".zst", "gzip": ".gz", "none": ""}
_CHUNK = 1 << 20


def compression_of(name: str) -> str:
    if name.endswith(".zst"):
        return "zstd"
    if name.endswith(".gz"):
        return "gzip"
    return "none"


# what reading a damaged, truncated or replaced segment can raise
READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, zstandard.ZstdError)


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes the file's bytes as they are read."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner, self.digest = inner, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.inner.readinto(b)  # type: ignore[attr-defined]
        if n:
            self.digest.update(memoryview(b)[:n])
        return n or 0

    def hexdigest(self) -> str:
        """The sha256 of the whole file (the rest is read if the decoder stopped early)."""
        while chunk := self.inner.read(_CHUNK):
            self.digest.update(chunk)
        return self.digest.hexdigest()

    def close(self) -> None:
        self.inner.close()
        super().close()


class _OwningGzip(gzip.GzipFile):
    """GzipFile that closes the file it reads (GzipFile leaves it open)."""

    def __init__(self, raw: Any) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def open_read(path: str) -> BinaryIO:
    """A segment's uncompressed bytes as a stream; only a regular file, never
    through a link (a FIFO or a link planted in a capture directory is an
    OSError, not a hang or a read of another file)."""
    return _decompressed(path, os.fdopen(open_regular(path), "rb"))


def open_read_hashed(path: str) -> tuple[BinaryIO, HashingReader]:
    """open_read, and the reader that hashes the file's bytes on the way."""
    hashed = HashingReader(os.fdopen(open_regular(path), "rb"))
    return _decompressed(path, io.BufferedReader(hashed, _CHUNK)), hashed


def _decompressed(path: str, raw: Any) -> BinaryIO:
    kind = compression_of(path)
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)  # type: ignore[no-any-return]
    if kind == "gzip":
        return _OwningGzip(raw)  # type: ignore[return-value]
    return raw  # type: ignore[no-any-return]


def compress_file(src: str, dst: str, kind: str, level: int, mode: int) -> tuple[int, str]:
    """Writes `src` compressed to `dst` (fsynced); returns (size, sha256 of dst)."""
    digest = hashlib.sha256()
    fd = create_new(dst, mode)
    try:
        with os.fdopen(fd, "wb", closefd=False) as raw, os.fdopen(open_regular(src), "rb") as inp:
            out = _Hashing(raw, digest)
            if kind == "zstd":
                cctx = zstandard.ZstdCompressor(level=min(level, 19), write_checksum=True)
                with cctx.stream_writer(out, closefd=False) as w:
                    while chunk := inp.read(_CHUNK):
                        w.write(chunk)
            else:
                with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=min(level, 9), mtime=0) as w:  # type: ignore[arg-type]
                    while chunk := inp.read(_CHUNK):
                        w.write(chunk)
            raw.flush()
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    return size, digest.hexdigest()


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes what passes through."""

    def __init__(self, inner: BinaryIO, digest: hashlib._Hash) -> None:
        self.inner, self.digest = inner, digest

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.digest.update(b)
        return self.inner.write(b)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Compressor:
    """compress_file in one long-lived child process: the agent's event loop
    keeps its CPU and its heap (compressing in-process made the agent's RSS
    creep up), and the child's start is paid once, not per segment (37 ms of
    the 95 ms a 64 MB segment cost with a child each). Started at the first
    segment; `close` ends it (the capture closes it once segments stop
    coming). A child that dies, hangs or answers nonsense is killed, the
    segment's compression fails with an OSError, and the next segment gets a
    new child."""

    SERVE = [sys.executable, "-m", "bpfwatch.capture.codec", "--serve"]

    def __init__(self, timeout: float = 600, command: list[str] | None = None) -> None:
        self.timeout = timeout
        self.command = command or self.SERVE
        self.started = 0  # children started so far
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def compress(self, src: str, dst: str, kind: str, level: int, mode: int) -> tuple[int, str]:
        """compress_file(src, dst, kind, level, mode) in the child."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self.close()
            proc = self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                 stderr=subprocess.DEVNULL, bufsize=0, close_fds=True)
            self.started += 1
        assert proc.stdin is not None and proc.stdout is not None
        try:
            job = memoryview(json.dumps([src, dst, kind, level, mode]).encode() + b"\n")
            while job:  # a pipe takes a long line (long paths) in parts
                job = job[proc.stdin.write(job) or 0:]
            reply = json.loads(self._reply(proc))
            if not isinstance(reply, dict) or not ("error" in reply or (
                    type(reply.get("size")) is int and reply["size"] >= 0 and isinstance(reply.get("sha256"), str))):
                raise ValueError("not an answer")
        except (OSError, ValueError) as e:
            self.close(kill=True)
            if isinstance(e, OSError):
                raise
            raise OSError(errno.EIO, "compressor replied nonsense") from None
        if "error" in reply:
            code = reply.get("errno")
            raise OSError(code if isinstance(code, int) and code > 0 else errno.EIO,
                          f"compressor failed: {reply['error']}")
        return reply["size"], reply["sha256"]

    def _reply(self, proc: subprocess.Popen[bytes]) -> bytes:
        """The child's one-line answer, within the timeout."""
        assert proc.stdout is not None
        fd, line = proc.stdout.fileno(), b""
        deadline = time.monotonic() + self.timeout
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise OSError(errno.ETIMEDOUT, f"compressor took longer than {self.timeout:g}s")
            chunk = os.read(fd, 4096)
            if not chunk:
                status = proc.wait()
                raise OSError(errno.EIO, f"compressor exited (status {status})")
            line += chunk
            if len(line) > 4096:
                raise ValueError("reply too long")
        return line

    def close(self, kill: bool = False) -> None:
        """Ends the child: it finishes its segment and exits when its input
        closes (killed after 10 s, or at once with `kill`)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if kill:
                proc.kill()
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def _serve() -> int:
    """The child's loop: one job a line on stdin (a JSON list of
    compress_file's arguments), one answer a line on stdout. It ends when
    its input does: the agent decides, so the signals a terminal or a
    service manager sends the whole group do not cut a segment short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for line in sys.stdin.buffer:
        try:
            src, dst, kind, level, mode = json.loads(line)
            size, digest = compress_file(src, dst, kind, int(level), int(mode))
            reply: dict[str, Any] = {"size": size, "sha256": digest}
        except OSError as e:
            reply = {"error": e.strerror or str(e), "errno": e.errno or errno.EIO}
        except Exception as e:  # a bad job is this job's failure, not the child's
            reply = {"error": f"{type(e).__name__}: {e}", "errno": errno.EIO}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_serve() if sys.argv[1:] == ["--serve"] else 2)
