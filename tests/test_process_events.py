"""The process sensor on the real kernel: real processes, asserted events."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading

import pytest

import bpfwatch
from bpfwatch import procfs
from conftest import collect

pytestmark = pytest.mark.kernel
ME = os.getpid()


def _of(events, type_, pid):
    return [e for e in events if e["type"] == type_ and e["pid"] == pid]


def _run_and_collect(argv, **popen):
    with bpfwatch.Monitor(follow=ME) as m:
        p = subprocess.Popen(argv, **popen)
        p.wait()
        events = collect(m, lambda ev: bool(_of(ev, "process.exit", p.pid)))
    return p, events


@pytest.mark.smoke_vm
@pytest.mark.parametrize("args", [
    ["a b", "c"],
    ['quote"d', "it's", "back\\slash"],
    ["", "", "x", ""],
    ["ünïcødé", "日本語", "emoji 🚀"],
    ["--flag=value with spaces", "\t tab"],
])
def test_exec_argv_exact(args):
    p, events = _run_and_collect(["/bin/echo", *args], stdout=subprocess.DEVNULL)
    (ex,) = _of(events, "process.exec", p.pid)
    assert ex["argv"] == ["/bin/echo", *args]
    assert ex["argc"] == len(args) + 1
    assert not ex["argv_truncated"]
    assert ex["argv_omitted_args"] == 0 and ex["argv_omitted_bytes"] == 0
    assert ex["exe"] == os.path.realpath("/bin/echo")
    assert ex["comm"] == "echo"
    assert ex["ppid"] == ME
    assert ex["source"] == "ebpf"
    assert ex["cwd"] == os.getcwd()
    assert ex["uid"] == os.getuid() and ex["user"]
    assert ex["parent"]["pid"] == ME and ex["parent"]["exe"] == os.path.realpath(sys.executable)
    assert ex["cgroup_id"] == procfs.cgroup_id(ME)
    assert ex["exec_id"] and len(ex["exec_id"]) == 16


def test_exec_on_a_terminal_reports_its_tty():
    # `script` runs the command on a fresh pseudo-terminal
    _, events = _run_and_collect(["script", "-qec", "/bin/true on-a-tty", "/dev/null"],
                                 stdout=subprocess.DEVNULL)
    (ex,) = [e for e in events if e["type"] == "process.exec" and e["argv"] == ["/bin/true", "on-a-tty"]]
    assert ex["tty"] and ex["tty"].startswith("pts/")


def test_exec_100k_argv_complete():
    args = [f"arg{i:05d}-" + "x" * 95 for i in range(1000)]  # just over 100 KiB
    total = sum(len(a) + 1 for a in args) + len("/bin/true") + 1
    assert total > 100 * 1024
    p, events = _run_and_collect(["/bin/true", *args])
    (ex,) = _of(events, "process.exec", p.pid)
    assert ex["argv"] == ["/bin/true", *args]
    assert not ex["argv_truncated"]


def test_exec_argv_over_cap_flags_exact_omissions():
    args = [f"{i:06d}" + "y" * 200 for i in range(1000)]  # ~207 KiB, over the 128 KiB cap
    full = ["/bin/true", *args]
    total = sum(len(a.encode()) + 1 for a in full)
    p, events = _run_and_collect(full)
    (ex,) = _of(events, "process.exec", p.pid)
    assert ex["argv_truncated"]
    captured = total - ex["argv_omitted_bytes"]
    assert captured == 128 * 1024
    complete = [a for a in ex["argv"] if a in full]
    # every argument is either captured whole, cut (the last one), or counted as omitted
    assert ex["argv"][: len(complete)] == full[: len(complete)]
    assert ex["argv_omitted_args"] == len(full) - len(complete)
    assert ex["argc"] == len(full)


@pytest.mark.parametrize("code", [0, 1, 255])
def test_exit_codes(code):
    p, events = _run_and_collect([sys.executable, "-c", f"import sys; sys.exit({code})"])
    (ev,) = _of(events, "process.exit", p.pid)
    assert ev["exit_code"] == code
    assert ev["signal"] is None and not ev["core_dumped"]
    assert ev["duration_ns"] > 0
    assert ev["exe"] == os.path.realpath(sys.executable)


def test_exit_by_sigkill():
    with bpfwatch.Monitor(follow=ME) as m:
        p = subprocess.Popen(["/bin/sleep", "30"])
        collect(m, lambda ev: bool(_of(ev, "process.exec", p.pid)))
        p.kill()
        p.wait()
        events = collect(m, lambda ev: bool(_of(ev, "process.exit", p.pid)))
    (ev,) = _of(events, "process.exit", p.pid)
    assert ev["signal"] == signal.SIGKILL and ev["signal_name"] == "SIGKILL"
    assert ev["exit_code"] is None and not ev["core_dumped"]


def _core_limit():
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def test_exit_by_sigsegv_with_core(tmp_path):
    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    if pattern.startswith("|"):
        pytest.skip(f"core_pattern pipes cores to {pattern}: whether a core is written is not ours to see")
    p, events = _run_and_collect(
        [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"],
        cwd=tmp_path, preexec_fn=_core_limit, stderr=subprocess.DEVNULL)
    (ev,) = _of(events, "process.exit", p.pid)
    assert ev["signal"] == signal.SIGSEGV and ev["signal_name"] == "SIGSEGV"
    assert ev["core_dumped"] is True
    assert p.returncode == -signal.SIGSEGV


def test_exit_by_sigsegv_without_core():
    def no_core():
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    p, events = _run_and_collect([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"],
                                 preexec_fn=no_core, stderr=subprocess.DEVNULL)
    (ev,) = _of(events, "process.exit", p.pid)
    assert ev["signal"] == signal.SIGSEGV and ev["core_dumped"] is False


TREE = """
import os, sys
def spawn(level):
    if level == 0:
        os.execv('/bin/true', ['/bin/true', 'leaf'])
    pid = os.fork()
    if pid == 0:
        spawn(level - 1)
    os.waitpid(pid, 0)
    os._exit(level)
spawn(3)
"""


def test_follow_three_level_tree_only():
    # a process outside the followed tree must not show up
    outsider = subprocess.Popen(["/bin/sleep", "5"])
    try:
        root = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(1)\n" + TREE],
                                stdin=subprocess.PIPE)
        with bpfwatch.Monitor(follow=root.pid) as m:
            noise = subprocess.Popen(["/bin/true", "noise"])
            noise.wait()
            root.stdin.write(b"x")
            root.stdin.close()
            root.wait()
            events = collect(m, lambda ev: bool(_of(ev, "process.exit", root.pid)))
    finally:
        outsider.kill()
        outsider.wait()
    forks = [e for e in events if e["type"] == "process.fork"]
    exits = [e for e in events if e["type"] == "process.exit"]
    assert len(forks) == 3, forks
    # parent/child chain: root -> c1 -> c2 -> c3 (c3 execs /bin/true)
    chain = [root.pid]
    for _ in range(3):
        (f,) = [f for f in forks if f["pid"] == chain[-1]]
        assert not f["thread"]
        chain.append(f["child_pid"])
    (leaf_exec,) = [e for e in events if e["type"] == "process.exec"]
    assert leaf_exec["pid"] == chain[-1] and leaf_exec["argv"] == ["/bin/true", "leaf"]
    assert sorted(e["exit_code"] for e in exits) == [0, 1, 2, 3]
    assert {e["pid"] for e in events} <= set(chain)
    # a child that never exec'd keeps the id given at fork
    by_pid = {e["pid"]: e for e in exits}
    for f in forks[:2]:
        assert by_pid[f["child_pid"]]["exec_id"] == f["child_exec_id"]


def test_pid_filter_excludes_children():
    root = subprocess.Popen([sys.executable, "-c", "import sys, subprocess; print('r', flush=True); "
                             "sys.stdin.read(1); subprocess.run(['/bin/true'])"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert root.stdout is not None and root.stdout.readline() == b"r\n"  # its start-up opens are over
    with bpfwatch.Monitor(pid=root.pid) as m:
        root.stdin.write(b"x")
        root.stdin.close()
        root.wait()
        events = collect(m, lambda ev: bool(_of(ev, "process.exit", root.pid)))
    assert {e["pid"] for e in events} == {root.pid}
    assert [e["type"] for e in events] == ["process.fork", "process.exit"]


def test_burst_of_1000_execs_zero_lost():
    script = "for i in $(seq 1000); do /bin/true burst$i; done"
    with bpfwatch.Monitor(follow=ME) as m:
        p = subprocess.Popen(["/bin/sh", "-c", script])
        p.wait()
        events = collect(m, lambda ev: bool(_of(ev, "process.exit", p.pid)), timeout=30)
        lost = m.lost()
    execs = [e for e in events if e["type"] == "process.exec" and e["comm"] == "true"]
    assert sorted(int(e["argv"][1][5:]) for e in execs) == list(range(1, 1001))
    assert len([e for e in events if e["type"] == "process.exit" and e["comm"] == "true"]) == 1000
    assert lost["process"] == 0 and set(lost.values()) == {0}


def test_pid_namespace():
    p, events = _run_and_collect(["unshare", "-fp", "--mount-proc", "/bin/sh", "-c",
                                  "/bin/true inside; echo $$ >/dev/null"])
    (inner,) = [e for e in events if e["type"] == "process.exec" and e["argv"] == ["/bin/true", "inside"]]
    assert inner["ns_pid"] not in (inner["pid"], 0)  # namespaced pid differs from the global one
    assert inner["ns_pid"] <= 3
    outer = next(e for e in events if e["pid"] == p.pid and e["type"] == "process.exec")
    assert inner["pidns"] != outer["pidns"]
    shell = [e for e in events if e["type"] == "process.exec" and e["comm"] == "sh"]
    assert shell and shell[0]["ns_pid"] == 1


def test_uid_filter_in_kernel():
    def as_nobody():
        os.setgid(65534)
        os.setuid(65534)

    with bpfwatch.Monitor(follow=ME, uid=65534) as m:
        a = subprocess.Popen(["/bin/true", "as-root"])
        b = subprocess.Popen(["/bin/true", "as-nobody"], preexec_fn=as_nobody)
        a.wait()
        b.wait()
        events = collect(m, lambda ev: bool(_of(ev, "process.exit", b.pid)))
    assert {e["pid"] for e in events} == {b.pid}
    assert all(e["uid"] == 65534 and e["user"] == "nobody" for e in events)


@pytest.mark.parametrize("comm", ["true", "tr*", "re:^t.ue$"])
def test_comm_filter(comm):
    with bpfwatch.Monitor(follow=ME, comm=comm, types=["process.exec"]) as m:
        subprocess.run(["/bin/echo", "no"], stdout=subprocess.DEVNULL, check=True)
        t = subprocess.run(["/bin/true", "yes"], check=True)
        events = collect(m, lambda ev: any(e["argv"] == ["/bin/true", "yes"] for e in ev))
    assert events and all(e["comm"] == "true" for e in events)
    assert all(e["type"] == "process.exec" for e in events)
    del t


def test_threads_opt_in():
    code = "import threading; t = threading.Thread(target=lambda: None); t.start(); t.join()"
    with bpfwatch.Monitor(follow=ME, threads=True) as m:
        p = subprocess.Popen([sys.executable, "-c", code])
        p.wait()
        events = collect(m, lambda ev: bool(_of(ev, "process.exit", p.pid) and
                                            [e for e in _of(ev, "process.exit", p.pid) if not e["thread"]]))
    thread_forks = [e for e in _of(events, "process.fork", p.pid) if e["thread"]]
    assert thread_forks and "CLONE_THREAD" in thread_forks[0]["clone_flags"]
    assert thread_forks[0]["child_pid"] == p.pid and thread_forks[0]["child_tid"] != p.pid
    assert any(e["thread"] for e in _of(events, "process.exit", p.pid))


def test_threads_off_by_default():
    with bpfwatch.Monitor(follow=ME) as m:
        threading.Thread(target=lambda: None).start()
        p = subprocess.run(["/bin/true"], check=True)
        events = collect(m, lambda ev: any(e["type"] == "process.exit" and e["comm"] == "true" for e in ev))
    assert not [e for e in events if e.get("thread")]
    del p


def test_snapshot_marks_procfs():
    sleeper = subprocess.Popen(["/bin/sleep", "5"])
    cgroup = procfs.cgroup_id(sleeper.pid)
    try:
        with bpfwatch.Monitor(pid=sleeper.pid, snapshot=True) as m:
            events = m.poll(0)
    finally:
        sleeper.kill()
        sleeper.wait()
    (snap,) = events
    assert snap["source"] == "procfs" and snap["type"] == "process.exec"
    assert snap["pid"] == sleeper.pid and snap["argv"] == ["/bin/sleep", "5"]
    assert snap["exe"] == os.path.realpath("/bin/sleep")
    assert snap["cgroup_id"] == cgroup


def test_a_process_alive_when_start_returns_is_in_the_table():
    """start() reads /proc after attaching and before it returns: a process
    that was already running and exits right after still has its exe and exec
    id on its exit event (the kernel's exit record has neither)."""
    from bpfwatch.events.ids import exec_id

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        before = procfs.snapshot_pid(child.pid)
        assert before is not None
        with bpfwatch.Monitor(pid=child.pid, types=["process.exit"]) as m:
            child.stdin.close()  # type: ignore[union-attr]
            child.wait()
            events = collect(m, lambda ev: bool(_of(ev, "process.exit", child.pid)))
    finally:
        child.kill()
        child.wait()
    (ev,) = _of(events, "process.exit", child.pid)
    assert ev["exe"] == os.path.realpath(sys.executable)
    assert ev["exec_id"] == exec_id(child.pid, before.start_boot_ns)


def test_the_first_event_leaves_when_its_window_ends(tmp_path):
    """A steady stream is read a few times a window (paced from the first
    read), so an event may wait past its window until the next read; the
    first one does not: someone is waiting for it. Here the first read comes
    0.3 s after the first exec, as when events arrive while start() runs: paced
    from that read, the first event left 0.3 s late."""
    import shutil
    import time

    window = 2.0
    exe = tmp_path / "bw-first-evt"
    shutil.copy("/bin/true", exe)
    stream = subprocess.Popen(["/bin/sh", "-c", f"while :; do {exe}; sleep 0.05; done"])
    try:
        with bpfwatch.Monitor(types=["process.exec"], comm="bw-first-evt", max_delay=window) as m:
            time.sleep(0.3)
            deadline = time.monotonic() + 10
            events: list = []
            while not events and time.monotonic() < deadline:
                events = m.poll()
            left = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    finally:
        stream.kill()
        stream.wait()
    first = min(e["ts"] for e in events)
    # ts is wall time after enrichment; the kernel's clock is boot time
    waited = (left - (first - m.clock.to_epoch_ns(0))) / 1e9
    assert window <= waited < window + 0.15, waited


def test_exec_id_stable_between_monitors():
    """Two monitors (e.g. an agent and its restart) give one fork the same id."""
    with bpfwatch.Monitor(follow=ME) as m1:
        # the child outlives the first monitor and the start of the second, however slow they are
        p = subprocess.Popen([sys.executable, "-c", "import os, time; os.fork() or time.sleep(120)"])
        p.wait()
        ev1 = collect(m1, lambda ev: len(_of(ev, "process.exit", p.pid)) == 1)
    (fork,) = _of(ev1, "process.fork", p.pid)
    child = fork["child_pid"]
    try:
        with bpfwatch.Monitor(pid=child, snapshot=True) as m2:
            snap = m2.poll(0)
        (seen,) = [e for e in snap if e["pid"] == child]
        assert seen["exec_id"] == fork["child_exec_id"]
    finally:
        os.kill(child, signal.SIGKILL)


def test_every_event_matches_the_schema():
    import jsonschema

    from bpfwatch.schema import event_schema

    validator = jsonschema.Draft202012Validator(event_schema())
    code = ("import os, threading, subprocess, signal\n"
            "threading.Thread(target=lambda: None).start()\n"
            "subprocess.run(['/bin/echo', 'x'], stdout=subprocess.DEVNULL)\n"
            "p = subprocess.Popen(['/bin/sleep', '9']); p.send_signal(signal.SIGTERM); p.wait()\n"
            "os._exit(9)\n")
    with bpfwatch.Monitor(follow=ME, threads=True, snapshot=True) as m:
        snap = m.poll(0)
        p = subprocess.Popen([sys.executable, "-c", code])
        p.wait()
        events = snap + collect(m, lambda ev: any(e["type"] == "process.exit" and e["pid"] == p.pid
                                                  and not e["thread"] for e in ev))
    assert {e["source"] for e in events} == {"procfs", "ebpf"}
    assert {"process.exec", "process.fork", "process.exit", "file.open"} <= {e["type"] for e in events}
    for ev in events:
        validator.validate(ev)


def test_deep_cwd_is_flagged_truncated(tmp_path):
    deep = tmp_path.joinpath(*["d"] * 140)  # deeper than the kernel-side walk (128 components)
    deep.mkdir(parents=True)
    p, events = _run_and_collect(["/bin/true", "deep"], cwd=deep)
    (ex,) = _of(events, "process.exec", p.pid)
    assert ex["paths_truncated"] is True
    assert ex["cwd"].endswith("/d/d/d") and len(ex["cwd"]) < len(str(deep))
    (shallow,) = [e for e in _run_and_collect(["/bin/true"])[1] if e["type"] == "process.exec"]
    assert "paths_truncated" not in shallow


@pytest.mark.kernel
def test_a_lone_process_sensor_keeps_only_the_last_reads_exits():
    """`exited` (the pids whose exit a read decoded, for the other sensors'
    tick) is per read: a ProcessSensor read without a Monitor must not keep
    every exit it ever saw."""
    import time

    from bpfwatch.sensors import ProcessSensor

    s = ProcessSensor()
    s.open()
    earlier: list[int] = []
    try:
        for _ in range(3):
            p = subprocess.Popen(["/bin/true"])
            p.wait()
            pid = p.pid
            out: list = []
            deadline = time.monotonic() + 5
            while not any(e["type"] == "process.exit" and e["pid"] == pid for e in out):
                assert time.monotonic() < deadline, "no exit read"
                s.drain(out)
                time.sleep(0.01)
            assert pid in s.exited and not set(earlier) & set(s.exited), (earlier, s.exited)
            earlier.append(pid)
    finally:
        s.close()
