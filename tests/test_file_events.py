"""The file sensor on the real kernel: real file operations in a temp dir."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import bpfwatch
from conftest import collect

pytestmark = pytest.mark.kernel
ME = os.getpid()
MARK = "/bin/true"  # exec'd last: its exit says everything before was seen


def _trace(tmp, fn, **kw):
    """Runs fn(tmp) while tracing file.* under tmp; returns this process's file events."""
    kw.setdefault("types", ["file.*", "process.exit"])
    with bpfwatch.Monitor(follow=ME, paths=[str(tmp)], **kw) as m:
        fn(tmp)
        marker = subprocess.Popen([MARK])
        marker.wait()
        events = collect(m, lambda ev: any(e["type"] == "process.exit" and e["pid"] == marker.pid for e in ev))
    return [e for e in events if e["type"].startswith("file.")]


def _one(events, type_, **match):
    hits = [e for e in events if e["type"] == type_ and all(e.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, (type_, match, [e for e in events if e["type"] == type_])
    return hits[0]


def test_every_file_operation(tmp_path):
    d = os.path.realpath(tmp_path)

    def ops(t):
        fd = os.open(t / "a.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.write(fd, b"x" * 100)
        os.close(fd)
        os.rename(t / "a.txt", t / "b.txt")
        os.mkdir(t / "sub", 0o750)
        os.chmod(t / "b.txt", 0o600)
        os.chown(t / "b.txt", 65534, -1)
        os.truncate(t / "b.txt", 10)
        os.link(t / "b.txt", t / "hard")
        os.symlink("b.txt", t / "soft")
        os.unlink(t / "hard")
        os.unlink(t / "soft")
        os.rmdir(t / "sub")
        with pytest.raises(FileNotFoundError):
            os.open(t / "missing", os.O_RDONLY)

    ev = _trace(tmp_path, ops)
    op = _one(ev, "file.open", path=f"{d}/a.txt", error=None)
    assert op["flags"][:1] == ["O_WRONLY"] and {"O_CREAT", "O_EXCL", "O_CLOEXEC"} <= set(op["flags"])
    assert op["mode"] == 0o640 and op["fd"] >= 0 and op["syscall"] == "openat"
    assert op["pid"] == ME and op["exe"] == os.path.realpath(sys.executable) and op["exec_id"]
    io = _one(ev, "file.io", path=f"{d}/a.txt")
    assert (io["writes"], io["write_bytes"], io["reads"], io["read_bytes"]) == (1, 100, 0, 0)
    assert io["closed"] is True
    assert _one(ev, "file.rename", path=f"{d}/a.txt")["new_path"] == f"{d}/b.txt"
    assert _one(ev, "file.mkdir", path=f"{d}/sub")["mode"] == 0o750
    assert _one(ev, "file.chmod", path=f"{d}/b.txt")["mode"] == 0o600
    ch = _one(ev, "file.chown", path=f"{d}/b.txt")
    assert ch["owner_uid"] == 65534 and ch["owner_gid"] is None
    assert _one(ev, "file.truncate", path=f"{d}/b.txt")["length"] == 10
    assert _one(ev, "file.link", path=f"{d}/b.txt")["new_path"] == f"{d}/hard"
    sl = _one(ev, "file.symlink", path=f"{d}/soft")
    assert sl["target"] == "b.txt"
    _one(ev, "file.unlink", path=f"{d}/hard")
    _one(ev, "file.unlink", path=f"{d}/soft")
    _one(ev, "file.rmdir", path=f"{d}/sub")
    miss = _one(ev, "file.open", path=f"{d}/missing")
    assert miss["error"] == "ENOENT" and miss["fd"] is None and miss["ret"] < 0
    for e in ev:
        assert e["type"] == "file.io" or e is miss or e["error"] is None


@pytest.mark.smoke_vm
def test_file_io_exact_counts_and_exit_flush(tmp_path):
    d = os.path.realpath(tmp_path)
    code = f"""
import os
fd = os.open({d + '/data'!r}, os.O_RDWR | os.O_CREAT, 0o600)
for _ in range(37):
    os.write(fd, b"y" * 1000)
os.lseek(fd, 0, 0)
got = 0
while True:
    b = os.read(fd, 4096)
    if not b:
        break
    got += len(b)
os.pwrite(fd, b"z" * 5, 0)
os._exit(0)   # no close(): the totals come out at exit
"""

    def run(t):
        subprocess.run([sys.executable, "-c", code], check=True)

    ev = _trace(tmp_path, run)
    io = _one(ev, "file.io", path=f"{d}/data")
    assert io["writes"] == 38 and io["write_bytes"] == 37_000 + 5
    assert io["reads"] == 10 and io["read_bytes"] == 37_000  # 9 full reads of 4096 + 1 of 136
    assert io["closed"] is False


def test_relative_paths_resolved(tmp_path):
    d = os.path.realpath(tmp_path)
    (tmp_path / "in").mkdir()

    def run(t):
        dfd = os.open(t / "in", os.O_RDONLY | os.O_DIRECTORY)
        try:
            fd = os.open("rel.txt", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=dfd)
            os.close(fd)
            with pytest.raises(FileNotFoundError):
                os.open("nope/x", os.O_RDONLY, dir_fd=dfd)
            os.unlink("rel.txt", dir_fd=dfd)
        finally:
            os.close(dfd)
        subprocess.run(["/bin/sh", "-c", "cd in && mkdir ./r2 && rmdir ../in/r2"], cwd=t, check=True)

    ev = _trace(tmp_path, run)
    _one(ev, "file.open", path=f"{d}/in/rel.txt", error=None)
    assert _one(ev, "file.open", path=f"{d}/in/nope/x")["error"] == "ENOENT"
    _one(ev, "file.unlink", path=f"{d}/in/rel.txt")
    assert _one(ev, "file.mkdir", path=f"{d}/in/r2")["comm"] == "mkdir"
    _one(ev, "file.rmdir", path=f"{d}/in/r2")


def test_path_prefix_excludes_other_dirs(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()

    def run(t):
        for base in (inside, outside):
            (base / "f").write_bytes(b"abc")
            (base / "f").unlink()

    with bpfwatch.Monitor(follow=ME, paths=[str(os.path.realpath(inside))], types=["file.*", "process.exit"]) as m:
        run(tmp_path)
        marker = subprocess.Popen([MARK])
        marker.wait()
        ev = collect(m, lambda ev: any(e["type"] == "process.exit" and e["pid"] == marker.pid for e in ev))
    paths = {e["path"] for e in ev if e["type"].startswith("file.")}
    assert paths == {os.path.realpath(inside / "f")}


def test_failed_only(tmp_path):
    def run(t):
        (t / "ok").write_text("fine")
        with pytest.raises(FileNotFoundError):
            (t / "missing").read_text()
        with pytest.raises(FileNotFoundError):
            os.unlink(t / "gone")

    ev = _trace(tmp_path, run, failed_only=True)
    assert ev and all(e["error"] == "ENOENT" for e in ev if e["type"] != "file.io")
    assert {e["type"] for e in ev if e["type"] != "file.io"} == {"file.open", "file.unlink"}


def test_dup2_onto_a_file_emits_its_totals(tmp_path):
    d = os.path.realpath(tmp_path)
    code = f"""
import os
fd = os.open({d + '/out'!r}, os.O_WRONLY | os.O_CREAT, 0o600)
os.write(fd, b"q" * 42)
null = os.open("/dev/null", os.O_WRONLY)
os.dup2(null, fd)     # closes the file behind fd
import time; time.sleep(0.3)
os._exit(0)
"""
    ev = _trace(tmp_path, lambda t: subprocess.run([sys.executable, "-c", code], check=True))
    io = _one(ev, "file.io", path=f"{d}/out")
    assert io["write_bytes"] == 42 and io["closed"] is True


def test_file_events_match_schema(tmp_path):
    import jsonschema

    from bpfwatch.schema import event_schema

    validator = jsonschema.Draft202012Validator(event_schema())

    def run(t):
        (t / "s").write_text("x")
        os.symlink("s", t / "l")
        os.chmod(t / "s", 0o644)
        os.unlink(t / "l")

    for e in _trace(tmp_path, run):
        validator.validate(e)


def test_paths_of_exited_processes_are_forgotten(tmp_path):
    """Opens without I/O leave a remembered path; it goes once the process has
    exited, so a host with many short processes keeps a flat memory."""
    (tmp_path / "f").write_text("x")
    code = f"import os\nfor _ in range(50): os.open({str(tmp_path / 'f')!r}, os.O_RDONLY)\n"
    with bpfwatch.Monitor(types=["file.open", "process.exit"], paths=[str(tmp_path)]) as m:
        fs = next(s for s in m.sensors if s.name == "file")
        child = subprocess.Popen([sys.executable, "-c", code])
        child.wait()
        events = collect(m, lambda ev: any(e["type"] == "process.exit" and e["pid"] == child.pid for e in ev))
        assert sum(1 for e in events if e["type"] == "file.open" and e["pid"] == child.pid) == 50
        assert len(fs._paths.get(child.pid, {})) == 50  # kept a moment: late file.io records need them
        collect(m, lambda ev: False, timeout=1.5)
        assert child.pid not in fs._paths


def test_empty_path_names_nothing_unless_at_empty_path(tmp_path):
    """open("") fails with ENOENT and names no file: the event's path is "",
    not the working directory (opensnoop and strace print "" too). With
    AT_EMPTY_PATH the empty path is the directory fd itself."""
    d = os.path.realpath(tmp_path)
    code = ("import ctypes, os\n"
            f"os.chdir({d!r})\n"
            "try:\n    os.open('', os.O_RDONLY)\nexcept FileNotFoundError:\n    pass\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            f"dfd = os.open({d!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
            "assert libc.fchownat(dfd, b'', 0, 0, 0x1000) == 0\n")
    with bpfwatch.Monitor(follow=ME, types=["file.open", "file.chown", "process.exit"]) as m:
        p = subprocess.Popen([sys.executable, "-c", code])
        assert p.wait() == 0
        ev = collect(m, lambda ev: any(e["type"] == "process.exit" and e["pid"] == p.pid for e in ev))
    mine = [e for e in ev if e["pid"] == p.pid]
    empty = [e for e in mine if e["type"] == "file.open" and e["error"] == "ENOENT" and e["path"] == ""]
    assert len(empty) == 1, [e["path"] for e in mine if e["type"] == "file.open" and e["error"]]
    assert not [e for e in mine if e["type"] == "file.open" and e["error"] and e["path"] == d]
    (chown,) = [e for e in mine if e["type"] == "file.chown"]
    assert chown["path"] == d and chown["error"] is None


OPENER = """
import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
sys.stdin.readline()
for i in range(n):
    os.close(os.open(path, os.O_RDONLY))
    if i % 100 == 99:
        time.sleep(0.01)  # ~10k opens/s at most: a steady stream, far below the ring's size
"""


def _count_opens(m, child, target) -> int:
    """Lets the waiting opener go; its opens of target seen until it is done,
    with none lost on the way."""
    child.stdin.write("go\n")
    child.stdin.close()
    opens, t0 = 0, time.monotonic()
    while child.poll() is None or opens < int(child.args[-1]):
        opens += sum(1 for e in m.poll() if e["path"] == str(target))
        assert time.monotonic() - t0 < 120 and m.lost_total == 0, (opens, m.lost_total)
    return opens


def test_steady_stream_is_read_a_few_times_a_window_and_whole(tmp_path):
    """Events wait for the reorder window anyway: a steady stream is read at
    most READS_PER_WINDOW times a window, not on every kernel wake-up, and
    nothing is lost or late for it."""
    from bpfwatch.monitor import READS_PER_WINDOW

    target = tmp_path / "f"
    target.write_text("x")
    n = 6000
    child = subprocess.Popen([sys.executable, "-c", OPENER, str(target), str(n)], stdin=subprocess.PIPE, text=True)
    window = 0.2
    with bpfwatch.Monitor(types=["file.open"], pid=child.pid, max_delay=window) as m:
        ring = m._ring
        reads: list[float] = []
        drain = ring.drain

        def counted(handle, max_bytes=None, *rest):
            reads.append(time.monotonic())
            return drain(handle, max_bytes, *rest)

        ring.drain = counted
        t0 = time.monotonic()
        assert _count_opens(m, child, target) == n
        took = time.monotonic() - t0
        assert m.late_events == 0
    # every kernel wake-up (one per record here: wakeup_bytes 0) would be hundreds a second
    assert len(reads) <= (took / window + 2) * READS_PER_WINDOW, (len(reads), took)


def test_paced_reads_keep_up_with_a_small_ring(tmp_path):
    """A 1 MiB ring holds ~200 ms of this stream and the window is 1 s: the
    reads come as often as the producer's rate needs, not once a quarter
    window (250 ms: the ring would overflow), and nothing is lost. (Before
    paced reads, a record queued while the ring was read brought no wake-up
    and the poll slept its whole timeout: 18,215 of 20,000 lost with 256 KiB.)"""
    target = tmp_path / "f"
    target.write_text("x")
    n = 20000
    code = OPENER.replace("time.sleep(0.01)", "time.sleep(0.004)")  # ~25k opens/s at most
    child = subprocess.Popen([sys.executable, "-c", code, str(target), str(n)], stdin=subprocess.PIPE, text=True)
    with bpfwatch.Monitor(types=["file.open"], pid=child.pid, max_delay=1.0, ring_size=1 << 20) as m:
        assert _count_opens(m, child, target) == n
