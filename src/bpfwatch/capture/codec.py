"""Segment compression: zstd (the `zstandard` package) or gzip, by suffix."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import subprocess
import sys
from typing import BinaryIO

import zstandard

SUFFIX = {"zstd": ".zst", "gzip": ".gz", "none": ""}
_CHUNK = 1 << 20


def compression_of(name: str) -> str:
    if name.endswith(".zst"):
        return "zstd"
    if name.endswith(".gz"):
        return "gzip"
    return "none"


def open_read(path: str) -> BinaryIO:
    """A segment's uncompressed bytes as a stream."""
    raw = open(path, "rb")  # noqa: SIM115 - handed to the caller
    kind = compression_of(path)
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)  # type: ignore[return-value]
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def compress_file(src: str, dst: str, kind: str, level: int, mode: int) -> tuple[int, str]:
    """Writes `src` compressed to `dst` (fsynced); returns (size, sha256 of dst)."""
    digest = hashlib.sha256()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as raw, open(src, "rb") as inp:
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
    with open(path, "rb") as f:
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
