"""Starting CMD held before its exec, so the kernel tracks it from its very
first syscall, and passing its fate back like a shell would."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat

from bpfwatch.errors import BpfwatchError

# signals bpfwatch passes on to CMD while it runs
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT, signal.SIGALRM)


class LaunchError(BpfwatchError):
    """CMD could not be started; exit status 127 (not found) or 126 (not runnable), as in a shell."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve(cmd: str) -> str:
    """The file CMD names, found on PATH like a shell does; clear errors otherwise."""
    if not cmd:
        raise LaunchError("empty command", 127)
    path = cmd if "/" in cmd else shutil.which(cmd)
    if path is None:
        raise LaunchError(f"{cmd}: command not found", 127)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LaunchError(f"{cmd}: No such file or directory", 127) from None
    except OSError as e:
        raise LaunchError(f"{cmd}: {e.strerror}", 126) from None
    if stat.S_ISDIR(st.st_mode):
        raise LaunchError(f"{cmd}: Is a directory", 126)
    if not os.access(path, os.X_OK):
        raise LaunchError(f"{cmd}: Permission denied", 126)
    return path


class HeldChild:
    """A forked child that waits on a pipe before exec'ing CMD.

    The parent marks the child's task in the kernel, then releases it: the
    exec and everything after are seen. An exec failure comes back through a
    close-on-exec pipe as an errno.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.path = resolve(argv[0])
        self.status: int | None = None
        self.released = False
        go_r, go_w = os.pipe()
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        env_b = os.environ if env is None else env
        self.pid = os.fork()
        if self.pid == 0:  # the child: only async-signal-safe work until exec
            try:
                os.close(go_w)
                os.close(err_r)
                for sig in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED):
                    signal.signal(sig, signal.SIG_DFL)  # Python ignores SIGPIPE; CMD must not inherit that
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                os.read(go_r, 1)
                os.close(go_r)
                os.execve(self.path, self.argv, env_b)
            except OSError as e:
                code = e.errno or errno.EINVAL
            except BaseException:
                code = errno.EINVAL
            try:
                os.write(err_w, code.to_bytes(4, "little"))
            finally:
                os._exit(127 if code == errno.ENOENT else 126)
        os.close(go_r)
        os.close(err_w)
        self._go = go_w
        self._err = err_r
        self.pidfd = os.pidfd_open(self.pid)

    def release(self) -> None:
        """Lets the child exec; raises LaunchError if the exec failed."""
        os.write(self._go, b"\0")
        self.released = True
        os.close(self._go)
        self._go = -1
        data = os.read(self._err, 4)
        os.close(self._err)
        self._err = -1
        if data:
            code = int.from_bytes(data, "little")
            self.wait()
            raise LaunchError(f"{self.argv[0]}: {os.strerror(code)}", 127 if code == errno.ENOENT else 126)

    def poll(self) -> int | None:
        """The wait status once CMD ended (reaped), else None."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status

    def wait(self) -> int:
        if self.status is None:
            self.status = os.waitpid(self.pid, 0)[1]
        return self.status

    def signal(self, sig: int) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, sig)

    def close(self) -> None:
        """Kills a child that never got to run (an error before release); a
        released CMD is the user's and keeps running."""
        for fd in (self._go, self._err):
            if fd >= 0:
                os.close(fd)
        self._go = self._err = -1
        if not self.released and self.poll() is None:
            self.signal(signal.SIGKILL)
            self.wait()
        os.close(self.pidfd)
