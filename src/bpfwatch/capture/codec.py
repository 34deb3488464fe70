"""Segment compression: zstd (the `zstandard` package) or gzip, by suffix."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import subprocess
import sys
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


def compress_in_child(src: str, dst: str, kind: str, level: int, mode: int, timeout: float = 600) -> tuple[int, str]:
    """compress_file in a child process: the agent's event loop keeps its CPU
    and its heap (compressing in-process made the agent's RSS creep up)."""
    r = subprocess.run([sys.executable, "-m", "bpfwatch.capture.codec", src, dst, kind, str(level), oct(mode)],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        detail = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        raise OSError(errno.EIO, f"compressor failed: {detail}")
    size, digest = r.stdout.split()
    return int(size), digest


def _main(argv: list[str]) -> int:
    src, dst, kind, level, mode = argv
    try:
        size, digest = compress_file(src, dst, kind, int(level), int(mode, 8))
    except OSError as e:
        sys.stderr.write(f"{e.strerror or e}\n")
        return 74 if e.errno != errno.ENOENT else 66
    sys.stdout.write(f"{size} {digest}\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
