"""Filters on the real kernel: what runs in the kernel is checked by counting
the records the kernel queued, not only the events that came out."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

import bpfwatch
from bpfwatch.mounts import cgroup2_root
from conftest import collect

pytestmark = pytest.mark.kernel
ME = os.getpid()


def _marker_exit(m, marker):
    return collect(m, lambda ev: any(e["type"] == "process.exit" and e["pid"] == marker.pid for e in ev))


def test_deny_comm_runs_in_the_kernel():
    with bpfwatch.Monitor(follow=ME, types=["process.exec", "process.exit"], deny={"comm": ["true"]}) as m:
        subprocess.run(["/bin/sh", "-c", "for i in $(seq 50); do /bin/true; done"], check=True)
        marker = subprocess.Popen(["/bin/echo", "marker"], stdout=subprocess.DEVNULL)
        marker.wait()
        ev = _marker_exit(m, marker)
        records = m.stats()["kernel_records"]["process"]
    assert not [e for e in ev if e["comm"] == "true"]
    assert any(e["comm"] == "echo" for e in ev)
    assert records < 20  # 100 exec/exit records of `true` never left the kernel


def test_deny_pid_and_exe_glob():
    with bpfwatch.Monitor(follow=ME, types=["process.exec"], allow={"exe": ["/usr/bin/e*"]}) as m:
        subprocess.run(["/bin/true"], check=True)
        subprocess.run(["/bin/echo"], check=True, stdout=subprocess.DEVNULL)
        ev = collect(m, lambda ev: bool(ev))
    assert {e["exe"] for e in ev} == {os.path.realpath("/bin/echo")}


def test_pid_and_follow_together():
    code = "import subprocess, sys; sys.stdin.read(1); subprocess.run(['/bin/true', sys.argv[1]])"
    plain = subprocess.Popen([sys.executable, "-c", code, "plain"], stdin=subprocess.PIPE)
    followed = subprocess.Popen([sys.executable, "-c", code, "followed"], stdin=subprocess.PIPE)
    with bpfwatch.Monitor(pid=plain.pid, follow=followed.pid, types=["process.exec", "process.exit"]) as m:
        for p in (plain, followed):
            p.stdin.write(b"x")
            p.stdin.close()
            p.wait()
        ev = collect(m, lambda ev: {plain.pid, followed.pid} <= {e["pid"] for e in ev if e["type"] == "process.exit"})
    execs = [e["argv"] for e in ev if e["type"] == "process.exec"]
    assert ["/bin/true", "followed"] in execs  # a followed process's child is in
    assert ["/bin/true", "plain"] not in execs  # a --pid process's child is not


@pytest.fixture
def cgroup():
    root = cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy")
    path = os.path.join(root, f"bwtest-{os.getpid()}")
    os.mkdir(path)
    yield path
    os.rmdir(path)


def test_cgroup_allow_in_the_kernel(cgroup):
    join = f"echo $$ > {cgroup}/cgroup.procs && exec /bin/echo inside"
    with bpfwatch.Monitor(types=["process.exec"], allow={"cgroup": [cgroup]}) as m:
        subprocess.run(["/bin/echo", "outside"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["/bin/sh", "-c", join], check=True, stdout=subprocess.DEVNULL)
        ev = collect(m, lambda ev: bool(ev))
        records = m.stats()["kernel_records"]["process"]
    assert [e["argv"] for e in ev] == [["/bin/echo", "inside"]]
    assert ev[0]["cgroup_id"] == os.stat(cgroup).st_ino
    assert records == 1  # everything else on the host was dropped in the kernel


def _connect_and_close(port):
    with socket.create_connection(("127.0.0.1", port)):
        pass


def test_port_filter_in_the_kernel():
    servers = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        servers.append(s)
    wanted, other = (s.getsockname()[1] for s in servers)

    def accept_all(s):
        for _ in range(3):
            c, _ = s.accept()
            c.close()

    threads = [threading.Thread(target=accept_all, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    with bpfwatch.Monitor(follow=ME, types=["network.connect"], allow={"port": [str(wanted)]}) as m:
        for _ in range(3):
            _connect_and_close(other)
            _connect_and_close(wanted)
        ev = collect(m, lambda ev: len(ev) >= 3)
        records = m.stats()["kernel_records"]["network"]
    with bpfwatch.Monitor(follow=ME, types=["network.connect"], deny={"port": [str(wanted)]}) as m:
        for _ in range(3):
            _connect_and_close(other)
            _connect_and_close(wanted)
        denied = collect(m, lambda ev: len(ev) >= 3)
    for t in threads:
        t.join()
    for s in servers:
        s.close()
    assert {e["remote_port"] for e in ev} == {wanted} and len(ev) == 3
    assert records == 3
    assert {e["remote_port"] for e in denied} == {other}
