"""An agent started for real (`bpfwatch agent --config`) for the tests that
drive one: its log, its capture, and a clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bpfwatch.capture import reader
from conftest import BPFWATCH, ROOT, WAIT_SCALE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProc:
    def __init__(self, workdir: Path, toml: str, prefix: list[str] | None = None) -> None:
        self.workdir = workdir
        self.config = workdir / "bpfwatch.toml"
        self.config.write_text(toml)
        self.config.chmod(0o644)
        self.log_path = workdir / "agent.log"
        self.capture = workdir / "capture"
        self.log_file = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen([*(prefix or []), *BPFWATCH, "agent", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=self.log_file, env=env, cwd="/")

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 20.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout * WAIT_SCALE
        while text not in self.log[after:]:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}) before '{text}':\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no '{text}' in the agent log:\n{self.log}")
            time.sleep(0.05)

    def events(self, **kw: Any) -> list[dict[str, Any]]:
        return list(reader.read(str(self.capture), **kw))

    def wait_events(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout * WAIT_SCALE
        while True:
            evs = self.events()
            if pred(evs):
                return evs
            if time.monotonic() > deadline:
                raise AssertionError(f"capture never matched; {len(evs)} events; log:\n{self.log}")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=30)
        finally:
            self.log_file.close()
        return rc


@contextlib.contextmanager
def agent(workdir: Path, toml: str, prefix: list[str] | None = None) -> Iterator[AgentProc]:
    a = AgentProc(workdir, toml, prefix)
    try:
        yield a
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
        a.log_file.close()


