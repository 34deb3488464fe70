"""`bpfwatch run`: exact syscall counts against strace, whole trees, time
accounting verdicts, launch errors and signals, attach. Real kernel, real
processes."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

from bpfwatch import libbpf as L
from bpfwatch import syscalls
from bpfwatch.bpf import object_path
from bpfwatch.btf_dtype import enum_values, struct_dtype
from bpfwatch.profiler.runner import profile_command, profile_pid
from bpfwatch.sensors.profile import CATEGORY_IDS
from conftest import BPFWATCH, ROOT

WORKLOADS = str(ROOT / "tests" / "workloads.py")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
# strace -c counts a syscall when it returns; these never do. futex calls
# depend on how threads contend for locks, which tracing under strace changes.
NEVER_RETURN = {"exit", "exit_group"}
# calls whose count depends on how long things take: futex waits, and the clock reads that
# leave the vDSO for a real syscall when the clocksource is not vDSO-capable (a TCG guest's)
TIMING_DEPENDENT = {"futex", "clock_gettime", "gettimeofday", "time"}

pytestmark = pytest.mark.kernel


def counts(doc: dict) -> dict[str, int]:
    return {r["name"]: r["calls"] for r in doc["syscalls"]["table"]}


def strace_counts(argv: list[str]) -> dict[str, int]:
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as f:
        subprocess.run(["strace", "-f", "-c", "-o", f.name, *argv], capture_output=True, check=True, timeout=240)
        out = f.read()
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?([a-z_0-9]+)\s*$", line)
        if m and m.group(2) != "total":
            rows[m.group(2)] = int(m.group(1))
    assert rows, out
    return rows


@pytest.mark.smoke_vm
def test_counts_equal_strace(no_leaks):
    argv = [sys.executable, WORKLOADS, "syscalls", "20000", "10000", "/etc/hostname"]
    doc = profile_command(argv)
    ours = {k: v for k, v in counts(doc).items() if k not in NEVER_RETURN}
    theirs = strace_counts(argv)
    # the workload's own calls, exactly
    assert ours["getppid"] == theirs["getppid"] == 20000
    stats = "newfstatat" if "newfstatat" in theirs else "stat"
    assert ours[stats] == theirs[stats] >= 10000
    # everything else within 1% (interpreter start-up may differ by a call or two)
    for name in set(ours) | set(theirs):
        a, b = ours.get(name, 0), theirs.get(name, 0)
        assert abs(a - b) <= max(2, 0.01 * b), (name, a, b)
    assert abs(sum(ours.values()) - sum(theirs.values())) <= 0.01 * sum(theirs.values())
    assert doc["exit_code"] == 0 and doc["lost_events"] == 0
    getppid = next(r for r in doc["syscalls"]["table"] if r["name"] == "getppid")
    assert getppid["category"] == "process" and getppid["time_s"] > 0
    assert sum(getppid["histogram_log2_ns"].values()) == 20000


def test_pipeline_and_threads_attributed_completely(no_leaks):
    script = ("seq 1 5000 | sort -rn | tail -n 3 >/dev/null; "
              f"{sys.executable} -c 'import os, threading\n"
              "def w():\n    [os.getppid() for _ in range(1000)]\n"
              "ts = [threading.Thread(target=w) for _ in range(4)]\n"
              "[t.start() for t in ts]; [t.join() for t in ts]'")
    argv = ["/bin/sh", "-c", script]
    doc = profile_command(argv)
    ours = {k: v for k, v in counts(doc).items() if k not in NEVER_RETURN | TIMING_DEPENDENT}
    theirs = {k: v for k, v in strace_counts(argv).items() if k not in TIMING_DEPENDENT}
    assert ours["getppid"] == theirs["getppid"] >= 4000  # four threads, each counted (and sh's own)
    procs = doc["processes"]
    comms = {p["comm"] for p in procs}
    assert {"sh", "seq", "sort", "tail", "python"} <= comms | {os.path.basename(sys.executable)}
    # per-process counts add up to the tree's, and every process exited
    assert sum(p["syscalls"] for p in procs) == doc["syscalls"]["total"]
    assert all(p["end_s"] is not None for p in procs)
    py = next(p for p in procs if p["argv"] and p["argv"][0] == sys.executable)
    assert py["threads_created"] == 4
    total = sum(theirs.values())
    assert abs(sum(ours.values()) - total) <= 0.01 * total, (ours, theirs)


@pytest.mark.host_only  # a verdict from CPU and I/O times: emulation distorts them
@pytest.mark.parametrize("workload, verdict", [
    (["cpu"], "cpu_bound"),
    (["fsync", "{tmp}/fsync.dat", "3000"], "io_bound"),
    (["network", "16"], "network_bound"),
    (["memory"], "memory_bound"),
])
def test_behaviour_classification(tmp_path, workload, verdict):
    argv = [sys.executable, WORKLOADS, *(a.format(tmp=tmp_path) for a in workload)]
    doc = profile_command(argv)
    b = doc["behavior"]
    assert b["classification"] == verdict, b
    ev = b["evidence"]
    if verdict == "network_bound":
        assert doc["resources"]["net_tx_bytes"] >= 16 << 20
        assert doc["resources"]["net_rx_bytes"] >= 16 << 20
    if verdict == "io_bound":
        assert ev["io_wait_s"] > 0 and doc["resources"]["write_bytes"] > 0
    if verdict == "memory_bound":
        assert ev["page_faults"] > 100_000 and doc["resources"]["peak_rss_bytes"] >= 256 << 20
    if verdict == "cpu_bound":
        assert doc["time"]["user_s"] > 0.5 * doc["time"]["on_cpu_s"]


def test_count_only_mode_counts_the_same(no_leaks):
    argv = [sys.executable, WORKLOADS, "syscalls", "3000", "2000"]
    doc = profile_command(argv, latency=False)
    assert counts(doc)["getppid"] == 3000
    assert not doc["latency_measured"] and "time_s" not in doc["syscalls"]["table"][0]


def run_cli(*args, timeout=120, **kw):
    return subprocess.run([*BPFWATCH, *args], capture_output=True, text=True, timeout=timeout, env=ENV, **kw)


@pytest.mark.parametrize("cmd, code, needle", [
    (["no-such-command-xyz"], 127, "no-such-command-xyz: command not found"),
    (["/nonexistent/bin/tool"], 127, "No such file or directory"),
    (["/etc/passwd"], 126, "Permission denied"),
    (["/tmp"], 126, "Is a directory"),
])
def test_command_that_cannot_start(cmd, code, needle):
    p = run_cli("run", "--", *cmd)
    assert p.returncode == code
    assert p.stderr.strip().splitlines() == [f"bpfwatch: {p.stderr.strip()[10:]}"]
    assert needle in p.stderr and "Traceback" not in p.stderr


def test_exec_failure_after_release_is_126(tmp_path):
    script = tmp_path / "bad"
    script.write_bytes(b"\x7fELF-not-really")
    script.chmod(0o755)
    p = run_cli("run", "--", str(script))
    assert p.returncode == 126 and "Exec format error" in p.stderr


def test_exit_code_and_signal_pass_through(tmp_path):
    assert run_cli("run", "-q", "--", "/bin/sh", "-c", "exit 7").returncode == 7
    assert run_cli("run", "-q", "--", "/bin/sh", "-c", "kill -KILL $$").returncode == 128 + 9


def test_signals_are_forwarded_to_cmd(tmp_path, no_leaks):
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    p = subprocess.Popen([*BPFWATCH, "run", "--json", str(tmp_path / "s.json"), "--", sys.executable, "-c", code],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 42, err
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["exit_code"] == 42
    assert counts(doc)["rt_sigreturn"] >= 1  # the handler ran in CMD


def test_json_and_timeline_outputs(tmp_path, no_leaks):
    js, tl, txt = tmp_path / "p.json", tmp_path / "t.jsonl", tmp_path / "r.txt"
    # 10 ms samples: each 128 MiB buffer is filled in ~50 ms and freed at once,
    # so a sample sees it 0-100% filled; the peak of 3 fills is well above 96 MiB
    p = run_cli("run", "--json", str(js), "--timeline", str(tl), "-o", str(txt), "--interval", "0.01", "--",
                sys.executable, WORKLOADS, "memory", "3", "128")
    assert p.returncode == 0, p.stderr
    doc = json.loads(js.read_text())
    assert doc["command"][1] == WORKLOADS and doc["syscalls"]["total"] > 0
    assert set(doc["syscalls"]["by_category"]) == set(CATEGORY_IDS)
    assert doc["behavior"]["classification"] in ("memory_bound", "mixed")
    lines = [json.loads(x) for x in tl.read_text().splitlines()]
    kinds = {x["kind"] for x in lines}
    assert {"sample", "exec", "exit", "summary"} <= kinds
    assert lines[-1]["kind"] == "summary" and lines[-1]["syscalls"]["total"] == doc["syscalls"]["total"]
    tree = [x for x in lines if x["kind"] == "sample" and x["scope"] == "tree"]
    assert len(tree) >= 5 and max(x["rss_bytes"] for x in tree) >= 96 << 20
    assert all(b["t"] >= a["t"] for a, b in itertools.pairwise(tree))
    assert any(x["kind"] == "sample" and x["scope"] == "process" for x in lines)
    report = txt.read_text()
    assert re.search(r"% time\s+seconds\s+usecs/call\s+calls\s+errors\s+syscall", report)
    assert "verdict" in report and "peak RSS" in report
    assert p.stderr == ""  # the text report went to the file


def test_attach_counts_a_running_process_and_its_threads(no_leaks):
    code = ("import os, sys, threading\n"
            "go = threading.Event()\n"
            "def w():\n    go.wait(); [os.getppid() for _ in range(3000)]\n"
            "t = threading.Thread(target=w); t.start()\n"
            "print('ready', flush=True); sys.stdin.readline()\n"
            "go.set(); [os.getppid() for _ in range(2000)]; t.join()\n"
            "os.fork() or os._exit(0)\n"
            "os.wait()\n")
    target = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert target.stdout.readline().strip() == "ready"
    result = {}
    tracking = threading.Event()

    def profile():
        result["doc"] = profile_pid(target.pid, duration=30, on_start=tracking.set)

    th = threading.Thread(target=profile)
    th.start()
    assert tracking.wait(30)
    target.stdin.write("\n")
    target.stdin.flush()
    target.wait(timeout=30)
    th.join(timeout=60)
    doc = result["doc"]
    assert counts(doc)["getppid"] == 5000  # main thread and the thread that existed before attach
    assert doc["attach_pid"] == target.pid and doc["stopped_by"] is None
    assert len(doc["processes"]) == 2  # the child forked after attach joined


def test_attach_errors():
    p = run_cli("run", "--attach", "4194304")
    assert p.returncode == 1 and "process 4194304 does not exist" in p.stderr
    p = run_cli("run", "--attach", "1", "--", "true")
    assert p.returncode == 2 and "not both" in p.stderr
    p = run_cli("run")
    assert p.returncode == 2 and "no command given" in p.stderr


def test_more_processes_than_slots_are_still_counted(no_leaks):
    script = "for i in $(seq 1 40); do /bin/true & done; wait"
    doc = profile_command(["/bin/sh", "-c", script], max_procs=8)
    c = counts(doc)
    assert c["execve"] == 42  # sh, the $(seq) subshell's seq, 40 true
    assert len(doc["processes"]) - 1 + doc["overflow_processes"] >= 40  # the overflow pseudo-row aside
    total = sum(p.get("syscalls", 0) for p in doc["processes"])
    assert total == doc["syscalls"]["total"]


def test_profile_layouts_match_btf():
    with L.Btf.parse(str(object_path("profile"))) as btf:
        limits = enum_values(btf, "bw_prof_limits")
        stats = struct_dtype(btf, "bw_prof_stats")
        assert stats.fields["blocked_ns"][0].shape == (limits["BW_PROF_CATS"],)
        assert set(enum_values(btf, "bw_off_reason")) == {"BW_OFF_RUNQ", "BW_OFF_IO", "BW_OFF_SLEEP", "BW_OFF_N"}
        assert {"slot", "off_reason", "off_cat", "off_ns", "on_ns"} <= set(struct_dtype(btf, "bw_prof_task").names)
        sysd = struct_dtype(btf, "bw_prof_sys")
        assert sysd.names == ("calls", "errors", "ns") and sysd.itemsize == 24
        # map values are whole rows (a slot's syscalls, a syscall's buckets): few values, quick to create
        assert struct_dtype(btf, "bw_prof_row").itemsize == limits["BW_PROF_NR"] * sysd.itemsize
        assert struct_dtype(btf, "bw_prof_hist_row").itemsize == limits["BW_PROF_HIST"] * 8
        ev = struct_dtype(btf, "bw_prof_exit_event")
        assert {"slot", "exit_code", "peak_rss_pages", "start_boot_ns"} <= set(ev.names)
    assert len(CATEGORY_IDS) < limits["BW_PROF_NO_SYSCALL"]
    # every syscall number of the host fits the kernel's table
    assert max(syscalls.table().values()) < limits["BW_PROF_NR"]
    assert np.dtype("<u8").itemsize * len(stats.names) <= stats.itemsize


def test_no_programs_left_after_sigint(tmp_path):
    p = subprocess.Popen([*BPFWATCH, "run", "--attach", str(os.getpid())], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    from conftest import wait_programs
    assert wait_programs("bw_prof_", loaded=True)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "stopped (SIGINT)" in err
    assert wait_programs("bw_prof_", loaded=False)


def test_report_from_summary(tmp_path):
    js = tmp_path / "p.json"
    assert run_cli("run", "-q", "--json", str(js), "--", "/bin/sh", "-c", "ls / >/dev/null").returncode == 0
    for ext in ("html", "svg", "png"):
        out = tmp_path / f"r.{ext}"
        p = run_cli("report", str(js), "-o", str(out))
        assert p.returncode == 0, p.stderr
        data = out.read_bytes()
        assert len(data) > 2000
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (tmp_path / "r.svg").read_bytes()
    html = (tmp_path / "r.html").read_text()
    assert "<svg" in html and "execve" in html and "syscall" in html
    p = run_cli("report", str(tmp_path / "missing.json"), "-o", str(tmp_path / "x.png"))
    assert p.returncode != 0 and "Traceback" not in p.stderr
    p = run_cli("report", str(js), "-o", str(tmp_path / "x.gif"))
    assert p.returncode == 2 and ".html, .png or .svg" in p.stderr


@pytest.mark.kernel
def test_target_still_running_at_the_end_has_its_cpu_split():
    """--keep-running: -d ends the profile of a CPU loop and leaves it
    running; its user time comes from /proc (the kernel's split arrives only
    with an exit), so it is cpu_bound, not system time."""
    doc = profile_command([sys.executable, "-c", "while True: pass"], duration=1.0, keep_running=True)
    try:
        t = doc["time"]
        assert doc["stopped_by"] == "duration" and doc["signals_sent"] == []
        assert doc["exit_code"] is None and doc["signal"] is None
        assert t["user_s"] > 0.2 and t["user_s"] > 5 * t["system_s"], t
        assert doc["behavior"]["classification"] == "cpu_bound", doc["behavior"]
        os.kill(doc["pid"], 0)  # still there
    finally:
        os.kill(doc["pid"], signal.SIGKILL)
        os.waitpid(doc["pid"], 0)


@pytest.mark.host_only  # its CMD must set a SIGTERM handler within 0.5 s: not so under emulation
def test_end_of_duration_terminates_cmd_like_timeout():
    """-d: CMD gets SIGTERM and its exit is in the profile; one that ignores
    SIGTERM gets SIGKILL --kill-after later; one that handles it exits its way."""
    doc = profile_command([sys.executable, "-c", "while True: pass"], duration=0.8)
    assert doc["stopped_by"] == "duration" and doc["signals_sent"] == ["SIGTERM"]
    assert doc["signal"] == signal.SIGTERM and doc["exit_code"] is None
    assert doc["time"]["user_s"] > 0.2 and doc["behavior"]["classification"] == "cpu_bound"
    with pytest.raises(ProcessLookupError):
        os.kill(doc["pid"], 0)
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(0.01)"
    doc = profile_command([sys.executable, "-c", stubborn], duration=0.5, kill_after=0.3)
    assert doc["signals_sent"] == ["SIGTERM", "SIGKILL"] and doc["signal"] == signal.SIGKILL
    assert 0.75 < doc["duration_s"] < 5, doc["duration_s"]
    p = run_cli("run", "-d", "0.5", "--", sys.executable, "-c",
                "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\ntime.sleep(60)")
    assert p.returncode == 3, p.stderr
    assert "exited 3 after SIGTERM at the end of --duration" in p.stderr
    p = run_cli("run", "--keep-running", "--", "/bin/true")
    assert p.returncode == 2 and "go with a command and --duration" in p.stderr


@pytest.mark.host_only  # a verdict from CPU and I/O times: emulation distorts them
def test_sleeping_tree_is_idle_and_child_waits_are_apart(tmp_path):
    """A make whose recipes sleep: the verdict is idle, not cpu_bound, and
    the time make and sh spent in wait4 is reported apart and left out of
    the charts by time."""
    (tmp_path / "Makefile").write_text("all: a b c d\n" + "".join(f"{t}:\n\tsleep 0.6\n" for t in "abcd"))
    js = tmp_path / "p.json"
    p = run_cli("run", "--json", str(js), "--", "make", "-s", "-j4", "-C", str(tmp_path))
    assert p.returncode == 0, p.stderr
    doc = json.loads(js.read_text())
    b = doc["behavior"]
    assert b["classification"] == "idle", b
    assert doc["syscalls"]["child_wait_s"] >= 0.5
    assert "waited" in p.stderr and "wait4/waitid" in p.stderr
    from bpfwatch.profiler import plots
    fig = plots.figure(doc)
    try:
        ax = next(a for a in fig.axes if a.get_title().startswith("top syscalls"))
        assert "wait4" not in [t.get_text() for t in ax.get_yticklabels()]
        assert "waiting for children" in ax.get_title()
        # the time panel puts the waits apart from the tree's own blocking
        ax = next(a for a in fig.axes if a.get_title().startswith("where the tasks' time went"))
        bars = {t.get_text(): b.get_width() for t, b in zip(ax.get_yticklabels(), ax.patches, strict=True)}
        assert bars["waiting for children"] == pytest.approx(doc["syscalls"]["child_wait_s"])
        assert "own blocking (sleep, locks, network)" in bars
    finally:
        plots._pyplot().close(fig)
    html = tmp_path / "r.html"
    assert run_cli("report", str(js), "-o", str(html)).returncode == 0
    assert "waiting for children" in html.read_text()


def test_report_panels_legends_and_processes(tmp_path):
    """The report leaves out all-zero panels and says so, keeps every legend
    outside the data, draws processes over threads so equal counts both show,
    and lists the busiest processes in the HTML."""
    js = tmp_path / "p.json"
    script = f"for i in 1 2; do {sys.executable} -c 'sum(range(2000000))'; done; sleep 0.2"
    assert run_cli("run", "-q", "--json", str(js), "--", "/bin/sh", "-c", script).returncode == 0
    doc = json.loads(js.read_text())
    from bpfwatch.profiler import plots
    fig = plots.figure(doc)
    try:
        fig.canvas.draw()
        titles = [a.get_title() for a in fig.axes if a.get_visible()]
        assert not any(t.startswith("network") for t in titles)  # nothing was sent or received
        assert any("not drawn, all zero: network" in t.get_text() for t in fig.texts)
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None and ax.get_visible():
                box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
                assert box.y1 <= area.y0, f"the legend of '{ax.get_title()}' covers its data"
        mem = next(a for a in fig.axes if a.get_title().startswith("memory"))
        twin = next(a for a in fig.axes if a is not mem and a.bbox.bounds == mem.bbox.bounds)
        procs = next(line for line in twin.get_lines() if line.get_label() == "processes")
        threads = next(c for c in twin.collections if c.get_label() == "threads")
        assert procs.get_linestyle() == "--" and procs.get_zorder() >= threads.get_zorder()
    finally:
        plots._pyplot().close(fig)
    html = tmp_path / "r.html"
    assert run_cli("report", str(js), "-o", str(html)).returncode == 0
    text = html.read_text()
    assert "<h2>processes</h2>" in text and "by on-CPU time" in text and "by system calls" in text
    section = text[text.index("<h2>processes</h2>"):]
    assert "sum(range(2000000))" in section


@pytest.mark.host_only  # a verdict from CPU and I/O times: emulation distorts them
def test_verdict_holds_on_a_loaded_cpu(tmp_path):
    """Two CPU hogs share the one CPU the fsync loop may use: it waits for
    that CPU a lot (the reason says so when it is half the busy time or more),
    but it is still io_bound."""
    hog = [sys.executable, "-c", "import os\nos.sched_setaffinity(0, {0})\nwhile True: pass"]
    hogs = [subprocess.Popen(hog) for _ in range(2)]
    try:
        argv = ["taskset", "-c", "0", sys.executable, WORKLOADS, "fsync", str(tmp_path / "f.dat"), "1500"]
        b = profile_command(argv)["behavior"]
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert b["classification"] == "io_bound", b
    ev = b["evidence"]
    assert ev["runnable_s"] > 0
    # the wait for a CPU is named when it is at least half the busy time (how
    # long fsync takes decides which side of that this run falls)
    assert ("for a CPU" in b["reason"]) == (ev["runnable_s"] >= 0.5 * ev["busy_s"]), b
