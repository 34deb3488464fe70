"""Regression tests for facts bpfwatch once got wrong (issue 13): each drives
a real workload and checks the fact a peer tool (strace, auditd, tcpstates)
reports for it."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import bpfwatch
from bpfwatch.events.text import dumps, loads
from bpfwatch.mounts import cgroup2_root
from conftest import collect

ME = os.getpid()
pids_box: list[set[int]] = [set()]  # pids a workload started, for its `until`


def _events(types, workload, until=None, timeout=10.0, **kw):
    with bpfwatch.Monitor(types=types, follow=ME, **kw) as m:
        result = workload()
        ev = collect(m, until or (lambda ev: False), timeout=timeout if until else 1.0)
        m.stop()
        ev += m.poll(0)
    return result, ev


@pytest.mark.kernel
def test_one_exit_per_process_when_a_thread_calls_exit_group():
    """A non-main thread calls exit_group while its siblings spin: threads
    die together, and several may see the group's live count at zero."""
    code = ("import os, threading, time\n"
            "def spin():\n"
            "    while True: pass\n"
            "for _ in range(3): threading.Thread(target=spin, daemon=True).start()\n"
            "def leave():\n"
            "    while time.process_time() < 0.1: pass\n"  # the group's CPU, not wall time: a busy host
            "    os._exit(7)\n"
            "threading.Thread(target=leave).start()\n"
            "spin()\n")

    def work():
        procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(24)]
        pids_box[0] = {p.pid for p in procs}
        for p in procs:
            p.wait()
        return {p.pid for p in procs}

    pids, ev = _events(["process.exit"], work,
                       until=lambda ev: {e["pid"] for e in ev if e["type"] == "process.exit"} >= pids_box[0])
    exits = [e for e in ev if e["type"] == "process.exit" and e["pid"] in pids]
    by_pid = {}
    for e in exits:
        by_pid.setdefault(e["pid"], []).append(e)
    assert set(by_pid) == pids
    assert all(len(v) == 1 for v in by_pid.values()), {p: len(v) for p, v in by_pid.items() if len(v) > 1}
    for (e,) in by_pid.values():
        assert e["exit_code"] == 7 and not e["thread"]
        # the group used 100 ms of CPU across five threads before it left: the group's
        # totals, not one thread's fifth of them (the kernel's user/system split is
        # sampled at ticks: 72 ms of the 100 were reported on a host with two CPU hogs)
        assert e["user_time_ns"] + e["system_time_ns"] >= 50_000_000


@pytest.mark.kernel
def test_thread_exit_reports_the_threads_own_lifetime():
    code = ("import threading, time\n"
            "t = threading.Thread(target=time.sleep, args=(0.05,)); t.start(); t.join()\n"
            "time.sleep(0.6)\n")

    def work():
        p = subprocess.Popen([sys.executable, "-c", code])
        pids_box[0] = {p.pid}
        p.wait()
        return p.pid

    pid, ev = _events(["process.exit"], work, threads=True,
                      until=lambda ev: any(e["pid"] in pids_box[0] and not e["thread"] for e in ev))
    threads = [e for e in ev if e["pid"] == pid and e["thread"]]
    (proc,) = [e for e in ev if e["pid"] == pid and not e["thread"]]
    assert threads and all(40_000_000 <= t["duration_ns"] < 400_000_000 for t in threads)
    assert proc["duration_ns"] >= 600_000_000


@pytest.mark.kernel
@pytest.mark.smoke_vm  # the plain loads, checked on the oldest kernel too
def test_each_record_names_the_thread_and_user_that_acted():
    """pid, tid, uid, comm and the cgroup id are read from the task with
    plain loads: a thread with its own name, in a process that moved to its
    own cgroup and dropped to another user, is named as such by file,
    network and process records. The process first took a longer name, so
    stale bytes past the NUL would show."""
    code = ("import ctypes, os, socket, sys, threading, time\n"
            "if sys.argv[3]:\n"
            "    with open(sys.argv[3] + '/cgroup.procs', 'w') as f: f.write(str(os.getpid()))\n"
            "libc = ctypes.CDLL(None)\n"
            "libc.prctl(15, b'bw-a-long-name', 0, 0, 0)\n"
            "libc.prctl(15, b'bwmain', 0, 0, 0)\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "def work():\n"
            "    try:\n"
            "        libc.prctl(15, b'bwthr', 0, 0, 0)\n"
            "        tids.append(threading.get_native_id())\n"
            "        print(tids[0], flush=True)\n"
            "        fd = os.open(sys.argv[1], os.O_WRONLY)\n"
            "        os.write(fd, b'x'); os.fchmod(fd, 0o640); os.close(fd)\n"
            "        s = socket.socket(); s.connect(('127.0.0.1', int(sys.argv[2]))); s.close()\n"
            "    except BaseException as e:\n"
            "        print(repr(e), file=sys.stderr, flush=True); os._exit(3)\n"
            "tids = []\n"
            "t = threading.Thread(target=work); t.start(); t.join()\n"
            # join() returns before the thread has left the kernel: the main thread
            # must be the last to go for the exit to carry its name
            "while os.path.exists(f'/proc/self/task/{tids[0]}'): time.sleep(0.001)\n")
    private = tempfile.mkdtemp(dir="/dev/shm")
    os.chmod(private, 0o711)  # the other user reaches its file, and nothing else there
    path = os.path.join(private, "owned")
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chown(path, 65534, 65534)
    srv = socket.create_server(("127.0.0.1", 0))
    wanted = {"file.open", "file.chmod", "file.io", "network.connect", "process.exit"}
    root = cgroup2_root()  # the 6.1 VM may have none: then the cgroup id is not checked
    cgroup = os.path.join(root, f"bwfid-{os.getpid()}") if root else ""
    if cgroup:
        os.mkdir(cgroup)

    def work():
        p = subprocess.run([sys.executable, "-c", code, path, str(srv.getsockname()[1]), cgroup],
                           check=True, capture_output=True, text=True)
        pids_box[0] = {int(p.stdout)}
        return int(p.stdout)

    def mine(ev):
        return [e for e in ev if (e["tid"] in pids_box[0] and e.get("path", path) == path)
                or (e["type"] == "process.exit" and e["comm"] == "bwmain")]

    try:
        tid, ev = _events(sorted(wanted), work, until=lambda ev: {e["type"] for e in mine(ev)} >= wanted)
        cgroup_id = os.stat(cgroup).st_ino if cgroup else None
    finally:
        srv.close()
        os.unlink(path)
        os.rmdir(private)
        if cgroup:
            os.rmdir(cgroup)
    got = mine(ev)
    assert {e["type"] for e in got} >= wanted, sorted(e["type"] for e in got)
    (exit_ev,) = [e for e in got if e["type"] == "process.exit"]
    for e in got:
        assert e["pid"] == exit_ev["pid"] != tid and e["uid"] == 65534 and e["user"] == "nobody", e
        if e["type"] != "process.exit":
            assert e["tid"] == tid and e["comm"] == "bwthr", e
        # file.io's comes from the process cache (its record has none): the cgroup of the exec
        if cgroup and e["type"] != "file.io":
            assert e["cgroup_id"] == cgroup_id, e
    assert exit_ev["comm"] == "bwmain"  # the last thread to leave was the main one


@pytest.mark.kernel
def test_memfd_exec_names_the_memfd():
    code = ("import os\n"
            "fd = os.memfd_create('bwfid')\n"
            "os.write(fd, open('/bin/true', 'rb').read())\n"
            "os.execv(f'/proc/self/fd/{fd}', ['bwfid'])\n")

    def work():
        p = subprocess.run([sys.executable, "-c", code], check=True)
        return p

    _, ev = _events(["process.exec"], work, until=lambda ev: any(e["argv"] == ["bwfid"] for e in ev))
    (e,) = [e for e in ev if e["argv"] == ["bwfid"]]
    assert e["exe"] == "/memfd:bwfid (deleted)" and e["exe_memfd"] is True
    assert e["filename"].startswith("/proc/self/fd/") and e["interpreter"] is None


@pytest.mark.kernel
def test_script_exec_keeps_what_the_caller_ran(tmp_path):
    script = tmp_path / "bwscript"
    script.write_text("#!/bin/sh -e\nexit 0\n")
    script.chmod(0o755)

    def work():
        subprocess.run([str(script), "one"], check=True)

    _, ev = _events(["process.exec"], work, until=lambda ev: any(str(script) in e["argv"] for e in ev))
    (e,) = [e for e in ev if str(script) in e["argv"]]
    # argv is the kernel's rewritten one; the caller's path and the interpreter are beside it
    assert e["argv"] == ["/bin/sh", "-e", str(script), "one"]
    assert e["filename"] == str(script) and e["interpreter"] == "/bin/sh"
    assert e["exe"] == os.path.realpath("/bin/sh")


@pytest.mark.kernel
def test_failed_execs_are_reported_with_errno(tmp_path):
    plain = tmp_path / "not-executable"
    plain.write_text("data\n")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x7fELF\x01\x01garbage")
    garbage.chmod(0o755)
    cases = {str(tmp_path / "missing"): "ENOENT", str(plain): "EACCES", str(garbage): "ENOEXEC"}

    def work():
        for path in cases:
            # os.execv in a child: the child's own failed execve, nothing in between
            subprocess.run([sys.executable, "-c", f"import os\ntry: os.execv({path!r}, [{path!r}, 'x y'])\n"
                            "except OSError: pass"], check=True)

    _, ev = _events(["process.exec_failed"], work,
                    until=lambda ev: {e["filename"] for e in ev} >= set(cases))
    got = {e["filename"]: e for e in ev if e["filename"] in cases}
    assert {p: e["error"] for p, e in got.items()} == cases
    for path, e in got.items():
        assert e["argv"] == [path, "x y"] and e["syscall"] == "execve" and e["ret"] < 0
        assert e["cwd"] == os.getcwd() and e["comm"].startswith("python")


def test_failed_execs_are_opt_in():
    from bpfwatch.events.types import expand_types

    assert "process.exec_failed" not in expand_types(None)
    assert "process.exec_failed" not in expand_types(["process.*"])
    assert expand_types(["process.exec_failed"]) == {"process.exec_failed"}


@pytest.mark.kernel
def test_non_utf8_bytes_are_lossless():
    raw, text = b"a\xffb", "a\\xffb"

    def work():
        subprocess.run([b"/bin/echo", raw, text.encode()], check=True, stdout=subprocess.DEVNULL)

    _, ev = _events(["process.exec"], work, until=lambda ev: any(e["exe"] == "/usr/bin/echo" for e in ev))
    (e,) = [e for e in ev if e["exe"] == "/usr/bin/echo"]
    assert [os.fsencode(a) for a in e["argv"][1:]] == [raw, text.encode()]
    assert e["argv"][1] != e["argv"][2]
    back = loads(dumps(e))  # JSON carries it as \udcff, and reads back the same
    assert [os.fsencode(a) for a in back["argv"][1:]] == [raw, text.encode()]


@pytest.mark.kernel
def test_open_of_a_directory_has_no_mode(tmp_path):
    def work():
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        os.close(fd)

    _, ev = _events(["file.open"], work, until=lambda ev: any(e["path"] == str(tmp_path) for e in ev))
    (e,) = [e for e in ev if e["path"] == str(tmp_path)]
    assert "O_DIRECTORY" in e["flags"] and e["mode"] is None


def _tcp_exchange(port: int = 0) -> int:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen()
    port = srv.getsockname()[1]

    def serve():
        c, _ = srv.accept()
        c.sendall(b"s" * 777)
        c.recv(100000, socket.MSG_WAITALL)
        c.close()

    t = threading.Thread(target=serve)
    t.start()
    cl = socket.create_connection(("127.0.0.1", port))
    cl.sendall(b"c" * 12345)
    cl.shutdown(socket.SHUT_WR)
    while cl.recv(65536):
        pass
    cl.close()
    t.join()
    srv.close()
    return port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.kernel
@pytest.mark.parametrize("filtered", [False, True])
def test_close_traced_alone_is_complete(filtered):
    port = _free_port()
    allow = {"port": [port]} if filtered else None

    def mine(ev):
        return [e for e in ev if e["type"] == "network.close" and port in (e["local_port"], e["remote_port"])]

    _, ev = _events(["network.close"], lambda: _tcp_exchange(port), allow=allow, until=lambda ev: len(mine(ev)) >= 2)
    closes = {e["role"]: e for e in mine(ev)}
    assert set(closes) == {"client", "server"}
    c, s = closes["client"], closes["server"]
    assert c["remote_port"] == port and c["local_port"] == s["remote_port"] != 0 and s["local_port"] == port
    assert (c["bytes_sent"], c["bytes_received"]) == (12345, 777) == (s["bytes_received"], s["bytes_sent"])


@pytest.mark.kernel
def test_every_tcp_state_change_of_both_ends():
    port = _free_port()

    def mine(ev):
        return [(e["local_port"] == port, e["old_state"], e["new_state"]) for e in ev
                if e["type"] == "network.state" and port in (e["local_port"], e["remote_port"])]

    want = {(True, "CLOSE", "LISTEN"), (True, "LISTEN", "SYN_RECV"), (True, "SYN_RECV", "ESTABLISHED"),
            (True, "ESTABLISHED", "CLOSE_WAIT"), (True, "CLOSE_WAIT", "LAST_ACK"), (True, "LAST_ACK", "CLOSE"),
            (True, "LISTEN", "CLOSE"),
            (False, "CLOSE", "SYN_SENT"), (False, "SYN_SENT", "ESTABLISHED"), (False, "ESTABLISHED", "FIN_WAIT1"),
            (False, "FIN_WAIT1", "FIN_WAIT2"), (False, "FIN_WAIT2", "CLOSE")}
    _, ev = _events(["network.state"], lambda: _tcp_exchange(port), until=lambda ev: set(mine(ev)) >= want)
    assert set(mine(ev)) == want
    roles = {e["role"] for e in ev if e["type"] == "network.state" and e["local_port"] == port}
    assert roles == {"listener", "server"}
    assert all(e["pid"] == ME for e in ev if e["type"] == "network.state")


@pytest.mark.kernel
def test_events_leave_in_timestamp_order():
    """Execs and exits from both CPUs: the stream is sorted by ts."""
    def work():
        procs = [subprocess.Popen(["/bin/true"]) for _ in range(200)]
        for p in procs:
            p.wait()
        time.sleep(0.3)

    with bpfwatch.Monitor(types=["process.*"], follow=ME) as m:
        work()
        ev = collect(m, lambda ev: False, timeout=1.0)
        m.stop()
        ev += m.poll(0)
        late = m.late_events
    ts = [e["ts"] for e in ev]
    assert len(ts) >= 600
    backwards = sum(1 for a, b in itertools.pairwise(ts) if b < a)
    assert backwards <= late, (backwards, late)
    assert late == 0


@pytest.mark.kernel
def test_once_started_no_sensor_misses_a_process(tmp_path):
    """The first process after start(): its exec and its opens both."""
    target = tmp_path / "first"
    target.write_text("x")
    with bpfwatch.Monitor(types=["process.exec", "file.open"], follow=ME) as m:
        p = subprocess.run(["/bin/cat", str(target)], check=True, stdout=subprocess.DEVNULL)
        del p
        ev = collect(m, lambda ev: any(e["type"] == "file.open" and e["path"] == str(target) for e in ev))
    assert any(e["type"] == "process.exec" and e["exe"] == "/usr/bin/cat" for e in ev)
    assert any(e["type"] == "file.open" and e["path"] == str(target) and e["comm"] == "cat" for e in ev)
