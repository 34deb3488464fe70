"""Start-up: time from launch to the first event printed, and RSS then, for
`bpfwatch trace` and the equivalent bpftrace one-liner, while /bin/true is
exec'd every 2 ms; and the whole of `bpfwatch run -q -- /bin/true` beside
`strace -c` of the same command and the command alone."""

from __future__ import annotations

import compileall
import os
import select
import shutil
import subprocess
import time

from common import BPFWATCH, bpftrace, ensure_tracefs, median, rss_mb, save

SPAWNER = "while :; do /bin/true; sleep 0.002; done"


def first_event(cmd: list[str], marker: bytes) -> dict[str, float]:
    spawner = subprocess.Popen(["/bin/sh", "-c", SPAWNER])
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        buf = b""
        deadline = t0 + 30
        while time.perf_counter() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 0.5)
            if r:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                if marker in buf:
                    break
        elapsed = time.perf_counter() - t0
        rss = rss_mb(proc.pid)
        proc.stdout.close()  # no reader: the tracer's writes end, and so does it
        proc.terminate()
        proc.wait()
    finally:
        spawner.kill()
        spawner.wait()
    return {"first_event_s": round(elapsed, 3), "rss_mb": round(rss, 1)}


def whole_command(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def run_startup(runs: int) -> dict[str, object]:
    """`bpfwatch run` of a command that does nothing: its fixed cost, the
    number that decides whether it fits the short commands of a build."""
    cmds = {"bare": ["/bin/true"], "bpfwatch_run": [*BPFWATCH, "run", "-q", "--", "/bin/true"],
            "bpfwatch_run_count_only": [*BPFWATCH, "run", "-q", "--count-only", "--", "/bin/true"]}
    if shutil.which("strace"):
        cmds["strace_c"] = ["strace", "-f", "-c", "-o", "/dev/null", "/bin/true"]
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(runs):  # interleaved, so a busy moment hits every tool alike
        for name, cmd in cmds.items():
            times[name].append(whole_command(cmd))
    out: dict[str, object] = {f"{k}_median_s": round(median(v), 3) for k, v in times.items()}
    out["target_s"] = 0.25
    return out


def load_costs(runs: int) -> dict[str, object]:
    """Per sensor object: median time to load and attach it (verifier included)
    and the instructions the verifier walked for each of its programs (the
    same measure as `doctor --json`)."""
    from bpfwatch.doctor.sensors import SENSOR_TYPES, load_sensor

    out: dict[str, object] = {}
    for name in SENSOR_TYPES:
        loads = [load_sensor(name) for _ in range(runs)]
        out[name] = {"start_median_s": round(median([x.start_s for x in loads]), 3),
                     "verified_insns": loads[-1].verified_insns}
    return out


def compile_bytecode() -> None:
    """An installed bpfwatch starts from compiled bytecode. A checkout run with
    PYTHONDONTWRITEBYTECODE (or just edited) compiles its modules on every
    start, which cost `trace` 0.03-0.06 s and is not what users get."""
    import bpfwatch

    compileall.compile_dir(os.path.dirname(bpfwatch.__file__), quiet=1)


def main() -> None:
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    compile_bytecode()
    ours = [first_event([*BPFWATCH, "trace", "--format", "json", "-t", "process.exec", "--comm", "true"],
                        b'"comm":"true"') for _ in range(runs)]
    every = [first_event([*BPFWATCH, "trace", "--format", "json", "--comm", "true"], b'"comm":"true"')
             for _ in range(runs)]
    short_window = [first_event([*BPFWATCH, "trace", "--format", "json", "-t", "process.exec", "--comm", "true",
                                 "--max-delay", "0.01"], b'"comm":"true"') for _ in range(runs)]
    result: dict[str, object] = {
        "runs": runs, "bpfwatch": ours,
        "bpfwatch_median_s": median([x["first_event_s"] for x in ours]),
        "bpfwatch_median_rss_mb": median([x["rss_mb"] for x in ours]),
        # every default sensor (process, file, network, dns) loaded and attached
        "bpfwatch_all_sensors_median_s": median([x["first_event_s"] for x in every]),
        # the same exec trace with a 10 ms reorder window instead of 100 ms
        "bpfwatch_max_delay_10ms_median_s": median([x["first_event_s"] for x in short_window]),
        "targets": {"start_s": 0.2, "all_sensors_s": 0.35, "rss_mb": 60},
    }
    exe = bpftrace()
    if exe and ensure_tracefs():
        prog = 'tracepoint:sched:sched_process_exec /comm == "true"/ { printf("exec %d %s\\n", pid, comm); }'
        theirs = [first_event([exe, "-e", prog], b"exec ") for _ in range(runs)]
        result["bpftrace"] = theirs
        result["bpftrace_median_s"] = median([x["first_event_s"] for x in theirs])
        result["bpftrace_median_rss_mb"] = median([x["rss_mb"] for x in theirs])
    result["run"] = run_startup(max(runs, 5))
    result["load"] = load_costs(3)
    save("startup", result)


if __name__ == "__main__":
    main()
