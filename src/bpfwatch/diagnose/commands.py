"""The commands of a diagnose request: each under /bin/sh -c in its own
thread and its own cgroup, with its timeout. At the timeout, and at the end of
the session, everything the command started is killed (a `setsid` or a
double fork does not escape a cgroup). What it prints is bounded: the first
OUTPUT_CAP bytes go in the answer, the first DISK_CAP bytes to the session
folder, and the rest is counted and dropped."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bpfwatch.diagnose.cgroup import CommandGroup
from bpfwatch.diagnose.request import Command, Request

OUTPUT_CAP = 16 * 1024      # bytes of each stream in the answer
DISK_CAP = 16 << 20         # bytes of each stream kept in the session folder
DRAIN_GRACE = 1.0           # after a kill: how long the pipes may take to close


class _Stream:
    def __init__(self, path: Path) -> None:
        self.head = bytearray()
        self.total = 0
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.on_disk = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        if len(self.head) < OUTPUT_CAP:
            self.head += data[:OUTPUT_CAP - len(self.head)]
        room = DISK_CAP - self.on_disk
        if room > 0:
            chunk = data[:room]
            with contextlib.suppress(OSError):  # a full disk loses the copy, not the session
                os.write(self.fd, chunk)
                self.on_disk += len(chunk)

    def close(self) -> None:
        os.close(self.fd)

    def text(self) -> tuple[str, bool]:
        return bytes(self.head).decode("utf-8", "replace"), self.total > OUTPUT_CAP


class CommandRunner:
    def __init__(self, request: Request, folder: Path, session: str) -> None:
        self.request = request
        self.folder = folder
        self.session = session
        self.results: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self._groups: list[CommandGroup] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._one, args=(i, c), daemon=True)
                        for i, c in enumerate(request.commands)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> list[dict[str, Any]]:
        for t in self.threads:
            t.join()
        self.kill_all()
        return [self.results[c.id] for c in self.request.commands]

    def kill_all(self) -> None:
        """The session is over: whatever a command left running (a daemon it
        started, a background job) goes with it."""
        with self._lock:
            groups, self._groups = self._groups, []
        for g in groups:
            left = len(g.pids())
            g.remove()
            if left:
                self.notes.append(f"{left} processes a command left running were killed at the end of the session")

    def _group(self, index: int) -> CommandGroup | None:
        try:
            g = CommandGroup(f"bw-diagnose-{self.session}-{index}")
        except OSError as e:
            self.notes.append(f"commands run without a cgroup ({getattr(e, 'strerror', None) or e}): a command "
                              "that detaches (setsid) can outlive its timeout")
            return None
        with self._lock:
            self._groups.append(g)
        return g

    def _one(self, index: int, cmd: Command) -> None:
        started = time.monotonic()
        group = self._group(index)
        enter = group.enter_path if group is not None else None

        def join_group() -> None:  # in the child, before exec: low-level calls only
            if enter is not None:
                fd = os.open(enter, os.O_WRONLY)
                os.write(fd, b"0")
                os.close(fd)

        streams = {name: _Stream(self.folder / f"command-{cmd.id}.{name}") for name in ("stdout", "stderr")}
        timed_out, code = False, None
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", cmd.command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=join_group)
        except (OSError, subprocess.SubprocessError) as e:
            streams["stderr"].add(str(e).encode())
        else:
            timed_out = not self._pump(proc, streams, group, started + cmd.timeout)
            try:
                code = proc.wait(timeout=DRAIN_GRACE + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        for s in streams.values():
            s.close()
        (stdout, out_cut), (stderr, err_cut) = streams["stdout"].text(), streams["stderr"].text()
        self.results[cmd.id] = {
            "id": cmd.id, "command": cmd.command, "description": cmd.description,
            "exit_code": None if timed_out else code, "timed_out": timed_out,
            "duration_s": round(time.monotonic() - started, 3), "stdout": stdout, "stderr": stderr,
            "stdout_bytes": streams["stdout"].total, "stderr_bytes": streams["stderr"].total,
            "stdout_truncated": out_cut, "stderr_truncated": err_cut}

    @staticmethod
    def _pump(proc: subprocess.Popen[bytes], streams: dict[str, _Stream], group: CommandGroup | None,
              deadline: float) -> bool:
        """Reads both pipes until they close; False when the timeout came first
        (then everything in the group is killed)."""
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, streams["stdout"])
        sel.register(proc.stderr, selectors.EVENT_READ, streams["stderr"])
        in_time = True
        try:
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    if not in_time:
                        break  # killed, but something outside the group still holds a pipe
                    in_time = False
                    if group is not None:
                        group.kill()
                    else:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(proc.pid, signal.SIGKILL)
                    deadline = time.monotonic() + DRAIN_GRACE
                    continue
                for key, _ in sel.select(min(left, 0.5)):
                    data = os.read(key.fd, 65536)
                    if data:
                        key.data.add(data)
                    else:
                        sel.unregister(key.fileobj)
        finally:
            sel.close()
            proc.stdout.close()
            proc.stderr.close()
        return in_time
