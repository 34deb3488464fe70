"""Real NATS servers for the fleet tests (Debian's nats-server, JetStream on,
loopback only): one server, or a 3-node cluster with routes on loopback."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)


class NatsServer:
    """One nats-server process; stop() and start() again keep its port and store."""

    def __init__(self, workdir: Path, name: str = "n1", port: int | None = None,
                 cluster_port: int | None = None, routes: list[int] | None = None,
                 extra: list[str] | None = None, config: str = "") -> None:
        self.workdir = workdir
        self.name = name
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.extra = extra or []  # e.g. --user/--pass or --auth TOKEN
        self.config = config      # a config file's text (TLS, users and permissions); {port} and {store} filled in
        self.scheme = "tls" if "tls {" in config else "nats"
        self.store = workdir / "nats" / f"js-{name}"  # the fleet tests keep agents out of workdir/nats
        self.log_path = workdir / "nats" / f"{name}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        binary = nats_server_binary()
        assert binary, "nats-server is not installed (scripts/setup-system.sh --test installs it)"
        args = [binary, "-js", "-sd", str(self.store), "-a", "127.0.0.1", "-p", str(self.port), "-n", self.name,
                *self.extra]
        if self.config:
            conf = self.workdir / "nats" / f"{self.name}.conf"
            conf.write_text(self.config.replace("{port}", str(self.port)).replace("{store}", str(self.store)))
            args = [binary, "-c", str(conf), "-n", self.name]
        if self.cluster_port:
            args += ["--cluster_name", "bwtest", "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                     "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes if p != self.cluster_port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"))  # noqa: SIM115
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nats-server did not start:\n{self.log_path.read_text()}") from None
                time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None


class NatsCluster:
    def __init__(self, workdir: Path, size: int = 3) -> None:
        cports = [free_port() for _ in range(size)]
        self.nodes = [NatsServer(workdir, f"n{i + 1}", cluster_port=cports[i], routes=cports) for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self) -> NatsCluster:
        for n in self.nodes:
            n.start()
        wait_jetstream(self.urls)
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def wait_jetstream(urls: list[str], timeout: float = 30.0) -> None:
    """Until JetStream answers (a cluster first elects its meta leader)."""
    import nats

    async def ready() -> bool:
        try:
            nc = await nats.connect(servers=urls, connect_timeout=1, max_reconnect_attempts=1,
                                    error_cb=_quiet)
        except Exception:
            return False
        try:
            await nc.jetstream(timeout=1).account_info()
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    deadline = time.monotonic() + timeout
    while not asyncio.run(ready()):
        if time.monotonic() > deadline:
            raise AssertionError("JetStream never became ready")
        time.sleep(0.2)


async def _quiet(e: Exception) -> None:
    pass
