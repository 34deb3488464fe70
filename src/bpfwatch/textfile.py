"""Reading a small text file a user points bpfwatch at (a config, a rules
file): only a regular file, bounded in size, never blocking on a FIFO or
reading forever from a device."""

from __future__ import annotations

import os
import stat

from bpfwatch.errors import UsageError

MAX_BYTES = 4 << 20


def read_small(path: str, what: str, limit: int = MAX_BYTES, follow: bool = True) -> bytes:
    """The bytes of `path`; UsageError (naming `what`) for a missing file, a
    directory, a FIFO or device, or a file larger than `limit`; with
    follow=False, also for a symbolic link."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise UsageError(f"{what} {path} is {kind}")
        if st.st_size > limit:
            raise UsageError(f"{what} {path} is larger than {limit >> 20} MiB")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise UsageError(f"{what} {path} is larger than {limit >> 20} MiB")
        return b"".join(chunks)
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}") from None
    finally:
        os.close(fd)
