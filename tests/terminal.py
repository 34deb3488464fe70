"""A real terminal for tests: a tmux session of a given size running one
command, driven with send-keys and read with capture-pane."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path


class Terminal:
    def __init__(self, command: list[str], width: int = 80, height: int = 24, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None) -> None:
        self.name = f"bwtest-{uuid.uuid4().hex[:8]}"
        # the command's status and the terminal's mode after it, for the test to read
        script = (f"{shlex.join(command)}; echo \"EXITED $?\"; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; "
                  "sleep 600")
        # a private server socket: tests do not share (or kill) anyone's tmux
        self.socket = f"/tmp/{self.name}.sock"
        full_env = {**os.environ, **(env or {}), "TERM": "xterm-256color"}
        full_env.pop("TMUX", None)
        args = ["tmux", "-S", self.socket, "-f", "/dev/null", "new-session", "-d", "-s", self.name,
                "-x", str(width), "-y", str(height)]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        subprocess.run([*args, "bash", "--norc", "--noprofile", "-c", script], check=True, env=full_env,
                       cwd=cwd)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], check=True, capture_output=True,
                              text=True).stdout

    def screen(self, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", self.name)

    def lines(self) -> list[str]:
        return self.screen().splitlines()

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", self.name, "-l", text)

    def wait(self, test: Callable[[str], bool], timeout: float = 20.0, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if test(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"the terminal never showed {what or 'what was expected'}; last screen:\n{screen}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)
        Path(self.socket).unlink(missing_ok=True)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
