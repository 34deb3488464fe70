"""Runs every benchmark and prints one summary table (results in bench/results/)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["exec_latency", "ringbuf_throughput", "consumer_cpu", "startup", "sensor_overhead", "sustained",
           "event_cost", "pipeline_stages", "profile_overhead", "xdp_counter", "syscall_overhead", "fleet_publish",
           "fleet_scale", "agent_overhead"]
# agent_overhead runs ~27 minutes (10 idle, 3 x 200 s under load, 2 x 2 shipping to NATS)
ARGS = {"agent_overhead": ["--nats", "120", "--load", "200", "--load-runs", "3"]}


def main() -> int:
    if "--summary" not in sys.argv[1:]:  # --summary: only the table, from the results already there
        rc = run_benches()
        if rc:
            return rc
    return summary()


def run_benches() -> int:
    for name in BENCHES:
        print(f"== {name}", flush=True)
        rc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *ARGS.get(name, [])], cwd=HERE).returncode
        if rc:
            print(f"{name} failed with exit status {rc}", file=sys.stderr)
            return rc
    return 0


class _NotRun(dict):  # type: ignore[type-arg]
    """A benchmark without a result file: every figure read from it prints as 'not run'."""

    def __getitem__(self, key: object) -> _NotRun:
        return self

    def get(self, key: object, default: object = None) -> _NotRun:  # type: ignore[override]
        return self

    def __format__(self, spec: str) -> str:
        return "not run"

    __str__ = __repr__ = lambda self: "not run"


def _result(name: str) -> dict:
    path = HERE / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else _NotRun()


def summary() -> int:
    r = {n: _result(n) for n in BENCHES}
    el, rb, cc, st, so, po, ag = (r[n] for n in ("exec_latency", "ringbuf_throughput", "consumer_cpu", "startup",
                                                  "sensor_overhead", "profile_overhead", "agent_overhead"))
    su, ec, fp, fs = r["sustained"], r["event_cost"], r["fleet_publish"], r["fleet_scale"]
    ps = r["pipeline_stages"]
    ft, nt = so["file_untar"], so["network_short_connections"]
    rows = [
        ("exec latency median / p99, shared CPU (ms)",
         f"{el['bpfwatch_shared_cpu']['median_ms']} / {el['bpfwatch_shared_cpu']['p99_ms']}", "< 0.5 / < 2"),
        ("exec latency median / p99, separate CPUs (ms)",
         f"{el['bpfwatch_separate_cpus']['median_ms']} / {el['bpfwatch_separate_cpus']['p99_ms']}", ""),
        ("psutil polling 100 ms / 1 s: missed of 1000",
         f"{el['psutil_100ms']['missed_pct']}% / {el['psutil_1s']['missed_pct']}%", "(peer)"),
        ("ring: sustained zero-loss records/s", f"{rb['live_zero_loss_rate_median']:,}", ">= 4,000,000"),
        ("ring: drain into numpy records/s", f"{rb['drain_rate_median']:,}", ""),
        ("bpftrace -f json records/s", f"{rb['bpftrace_json'].get('received_per_s', 'n/a')}", "(peer)"),
        ("ratio vs bpftrace", f"{rb.get('ratio_vs_bpftrace', 'n/a')}x", ">= 50x"),
        ("JSON lines on disk events/s", f"{rb['json_lines_rate_median']:,}", ">= 300,000"),
        ("consumer CPU at 100k/s, batched / every record",
         f"{cc['batched_cpu_median']}% / {cc['wake_every_record_cpu_median']}%", "<= 3%"),
        ("start to first event (s), RSS (MB)", f"{st['bpfwatch_median_s']}, {st['bpfwatch_median_rss_mb']}",
         "< 0.3, < 60"),
        ("bpftrace start (s), RSS (MB)", f"{st.get('bpftrace_median_s')}, {st.get('bpftrace_median_rss_mb')}",
         "(peer)"),
        (f"untar {ft['files']} files on tmpfs: bpfwatch / bpftrace",
         f"{ft['slowdown']['bpfwatch']}x / {ft['slowdown'].get('bpftrace', 'n/a')}x", "<= 1.10x"),
        (f"{nt['connections']} short TCP connections: bpfwatch / bpftrace",
         f"{nt['slowdown']['bpfwatch']}x / {nt['slowdown'].get('bpftrace', 'n/a')}x", "<= 1.10x"),
    ]
    sc = r["syscall_overhead"]["results"]
    rows += [(f"dd storm, ns per syscall: {name}", f"{sc[name]['ns_per_syscall']:.0f}", target)
             for name, target in (("floor (empty sys_enter + sys_exit)", "(floor)"),
                                  ("floor + a 2nd empty sys_exit", "(floor)"),
                                  ("bpfwatch trace -t security", "<= 80"),
                                  ("bpfwatch trace (default sensors)", ""), ("bpfwatch trace (every sensor)", ""),
                                  ("bpftrace (security's filter)", "(peer)"))]
    rows += [
        ("trace file.open: events/s without loss", f"{su['file_open']['max_events_per_s_without_loss']:,}",
         ">= 250,000"),
        ("all sensors: events/s without loss", f"{su['all_sensors']['max_events_per_s_without_loss']:,}",
         ">= 300,000"),
    ]
    rows += [(f"Python cost per event, {family} (agent settings), µs", f"{x['agent']['us_per_event']}", "")
             for family, x in ec["families"].items()]
    rows += [
        ("agent stages per event, mixed load replayed (µs)", f"{ps['agent_us_per_event']['total']}", ""),
        ("least dict pipeline per event, same records (µs)", f"{ps['dict_pipeline_floor_us_per_event']}",
         "(floor)"),
        ("least JSON-line pipeline per event, same records (µs)", f"{ps.get('json_line_floor_us_per_event', 'n/a')}",
         "(floor)"),
        ("each record as a JSON line, same records: by record / in columns (µs)",
         f"{ps.get('record_line_floor_us_per_event', 'n/a')} / {ps.get('columnar_record_lines_us_per_event', 'n/a')}",
         "(floor)"),
    ]
    paused = ps.get("with_live_pauses", {})
    rows += [
        ("same with the live agent's pauses: agent / dict / line / record line (µs)",
         f"{paused.get('agent_us_per_event')} / {paused.get('dict_pipeline_floor_us_per_event')} / "
         f"{paused.get('json_line_floor_us_per_event', 'n/a')} / {paused.get('record_line_floor_us_per_event', 'n/a')}",
         "(floors)"),
    ]
    pure, mixed, small = po["pure_loop"], po["mixed"], po["pure_loop_small"]
    for tool in ("bpfwatch count", "bpfwatch latency", "bpftrace count", "denet ebpf"):
        if tool in pure:
            target = {"bpfwatch count": "<= 1.3x / <= 1.05x", "bpfwatch latency": "<= 1.6x"}.get(tool, "(peer)")
            rows.append((f"run: dd bs=1 / mixed slowdown, {tool}",
                         f"{pure[tool]['ratio']}x / {mixed[tool]['ratio']}x", target))
    for tool in ("strace -f -c", "perf trace -s"):
        if tool in small:
            rows.append((f"run: dd bs=1 slowdown, {tool}", f"{small[tool]['ratio']}x", "(peer)"))
    for tool, acc in po["count_accuracy_dd"].items():
        rows.append((f"run: syscalls counted vs strace, {tool}", f"{acc['vs_strace']}", "1.0"))
    st_ = fs["steady"]
    rows += [
        ("fleet: publisher events/s, batches / one message per event",
         f"{fp['batched']['events_per_s']:,} / {fp['per_event']['events_per_s']:,}", "(peer)"),
        ("fleet: 20 agents, stored / written", f"{st_['events_stored']:,} / {st_['events_written']:,}", "equal"),
        ("fleet: latency event -> disk p50 / p99 (s)", f"{st_['latency_p50_s']} / {st_['latency_p99_s']}", "p99 < 2"),
        ("fleet: wire bytes per event", f"{st_['wire_bytes_per_event']}", ""),
        ("fleet: collector events per CPU-second", f"{fs['collector']['events_per_cpu_s']:,}", ">= 200,000"),
    ]
    rows += [
        ("agent idle CPU (% of a core): eBPF / polling",
         f"{ag['idle_cpu_pct']}% / {ag['idle']['bpfwatch_poll']['cpu_pct_of_core']}%", "< 0.5%"),
        ("agent RSS max (MB), without the mapped ring", f"{ag['rss_mb_max']}, {ag['rss_mb_max_without_ring']}",
         "< 80"),
        ("agent: CPU for shipping to NATS (% of a core)",
         f"{(ag.get('shipping') or {}).get('shipping_cpu_pct_of_core', 'n/a')}", "< 5"),
        ("agent under load: events/s to capture, lost, CPU",
         f"{ag['load_events_per_s']:,}, {ag['load_lost']:.0f}, {ag['load_cpu_pct']}%", "0 lost, <= 8%"),
        ("  of which its segment compressors (% of a core)",
         f"{ag['load']['bpfwatch_ebpf'].get('of_which_compressor_pct_of_core', 'n/a')}%", ""),
        ("  beside it: each record as a JSON line, nothing else (% of a core)",
         " / ".join(f"{x}%" for x in ag.get("load_record_line_floor_cpu_pct_runs", [])) or "n/a", "(floor)"),
        ("polling agent under load (% of a core)", f"{ag['load']['bpfwatch_poll']['cpu_pct_of_core']}%", "(peer)"),
    ]
    width = max(len(a) for a, _, _ in rows)
    print()
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:>22}  {c}")
    stale = [n for n in BENCHES if _older_than_code(n, r[n])]
    if stale:
        print(f"\nolder than the code they measure (src/ or the script changed since the run): {', '.join(stale)}")
    return 0


def _older_than_code(name: str, result: dict) -> bool:
    """Whether the result was saved before the last commit to src/ or to the
    benchmark's script: its figures may not be the code's any more."""
    when = result.get("when")
    if not isinstance(when, str):
        return False
    try:
        changed = subprocess.run(["git", "log", "-1", "--format=%ct", "--", "src", f"bench/{name}.py"],
                                 cwd=HERE.parent, capture_output=True, text=True, timeout=10).stdout.strip()
        saved = time.mktime(time.strptime(when, "%Y-%m-%dT%H:%M:%S"))
    except (OSError, ValueError, subprocess.SubprocessError):
        return False
    return bool(changed) and int(changed) > saved


if __name__ == "__main__":
    sys.exit(main())
