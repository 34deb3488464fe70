"""Segment compression: zstd (the `zstandard` package) or gzip, by suffix."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
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
