"""Events of a diagnostic trace, taken in as they arrive: a capped sample per
capability in the requested shape, and aggregates a model can read at a
glance (top processes, syscalls, connections, files, findings, counts)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
COMMON = ("ts", "time", "type", "pid", "comm", "uid", "source")
TOP = 10
FINDINGS_MAX = 50


def capability_of(event_type: str) -> str | None:
    family = event_type.split(".", 1)[0]
    return {"process": "process_trace", "network": "network_trace", "dns": "network_trace",
            "file": "file_trace", "security": "security_event", "syscall": "syscall_trace",
            "perf": "performance"}.get(family)


def shaped(ev: dict[str, Any]) -> dict[str, Any]:
    """{timestamp, event_type, process_id, process_name, user_id, data}."""
    data = ev["data"] if "data" in ev and ev["type"].startswith(("perf.", "syscall.")) else \
        {k: v for k, v in ev.items() if k not in COMMON and v is not None}
    return {"timestamp": ev["ts"], "event_type": ev["type"], "process_id": ev["pid"],
            "process_name": ev["comm"], "user_id": ev["uid"], "data": data}


class Collector:
    def __init__(self, capabilities: list[str], max_events: int) -> None:
        self.capabilities = capabilities
        self.max_events = max_events
        self.kept: dict[str, list[dict[str, Any]]] = {c: [] for c in capabilities}
        self.counts: dict[str, Counter[str]] = {c: Counter() for c in capabilities}
        self.procs: dict[int, dict[str, Any]] = {}
        self.conns: dict[tuple[str, int, str], dict[str, Any]] = {}
        self.dns: dict[str, Counter[str]] = defaultdict(Counter)
        self.files: dict[str, Counter[str]] = defaultdict(Counter)
        self.findings: list[dict[str, Any]] = []
        self.severities: Counter[str] = Counter()
        self.execs: Counter[str] = Counter()
        self.failed_exits: list[dict[str, Any]] = []
        self.perf: dict[int, dict[str, Any]] = {}
        self.host: list[dict[str, Any]] = []

    def add(self, ev: dict[str, Any]) -> bool:
        """Takes in one event; False when no requested capability wants it."""
        cap = capability_of(ev["type"])
        if cap not in self.kept:
            return False
        self.counts[cap][ev["type"]] += 1
        if len(self.kept[cap]) < self.max_events:
            self.kept[cap].append(shaped(ev))
        p = self.procs.setdefault(ev["pid"], {"pid": ev["pid"], "comm": ev["comm"], "events": 0})
        p["events"] += 1
        p["comm"] = ev["comm"] or p["comm"]
        getattr(self, f"_{cap}")(ev)
        return True

    # -- per capability ---------------------------------------------------------

    def _process_trace(self, ev: dict[str, Any]) -> None:
        if ev["type"] == "process.exec":
            self.execs[ev.get("exe") or ev["comm"]] += 1
        elif (ev["type"] == "process.exit" and not ev.get("thread") and (ev.get("signal") or ev.get("exit_code"))
              and len(self.failed_exits) < TOP):
            self.failed_exits.append({"pid": ev["pid"], "comm": ev["comm"], "exit_code": ev.get("exit_code"),
                                          "signal": ev.get("signal_name")})

    def _network_trace(self, ev: dict[str, Any]) -> None:
        t = ev["type"]
        if t.startswith("dns."):
            if t == "dns.response" and ev.get("name"):
                self.dns[ev["name"]][ev.get("rcode") or "?"] += 1
            return
        key = (ev.get("remote_addr") or "?", ev.get("remote_port") or 0, ev.get("protocol") or "?")
        c = self.conns.setdefault(key, {"remote": f"{key[0]}:{key[1]}", "protocol": key[2], "connects": 0,
                                        "failed": 0, "accepts": 0, "closes": 0, "bytes_sent": 0,
                                        "bytes_received": 0, "processes": set()})
        c["processes"].add(ev["comm"])
        if t == "network.connect":
            c["connects"] += 1
            c["failed"] += ev.get("result") != "established"
        elif t == "network.accept":
            c["accepts"] += 1
        elif t in ("network.close", "network.udp"):
            c["closes"] += t == "network.close"
            c["bytes_sent"] += ev.get("bytes_sent") or 0
            c["bytes_received"] += ev.get("bytes_received") or 0

    def _file_trace(self, ev: dict[str, Any]) -> None:
        path = ev.get("path")
        if not path:
            return
        f = self.files[path]
        op = ev["type"].split(".", 1)[1]
        f[op] += 1
        if ev.get("error"):
            f["failed"] += 1
        if op == "io":
            f["read_bytes"] += ev.get("read_bytes") or 0
            f["write_bytes"] += ev.get("write_bytes") or 0

    def _security_event(self, ev: dict[str, Any]) -> None:
        self.severities[ev["severity"]] += 1
        if len(self.findings) < 10 * FINDINGS_MAX:
            self.findings.append({"severity": ev["severity"], "rule": ev["rule"], "description": ev["description"],
                                  "pid": ev["pid"], "comm": ev["comm"], "exe": ev.get("exe"),
                                  "timestamp": ev["ts"]})

    def _syscall_trace(self, ev: dict[str, Any]) -> None:
        pass  # aggregated in the kernel; see syscalls()

    def _performance(self, ev: dict[str, Any]) -> None:
        d = ev["data"]
        if ev["type"] == "perf.host":
            self.host.append(d)
            return
        p = self.perf.setdefault(ev["pid"], {"pid": ev["pid"], "comm": ev["comm"], "cpu_percent_max": 0.0,
                                             "cpu_percent_sum": 0.0, "samples": 0, "rss_bytes_max": 0,
                                             "read_bytes": 0, "write_bytes": 0, "ctx_switches": 0})
        p["samples"] += 1
        p["cpu_percent_sum"] += d["cpu_percent"]
        p["cpu_percent_max"] = max(p["cpu_percent_max"], d["cpu_percent"])
        p["rss_bytes_max"] = max(p["rss_bytes_max"], d["rss_bytes"])
        for k in ("read_bytes", "write_bytes", "ctx_switches"):
            p[k] += d[k]

    # -- the result ---------------------------------------------------------------

    def summary(self, syscalls: list[dict[str, Any]], lost: dict[str, int]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "counts": {c: {"events": sum(n.values()), "by_type": dict(n)} for c, n in self.counts.items()},
            "lost_events": {"total": sum(lost.values()), "by_sensor": lost},
            "top_processes": sorted(self.procs.values(), key=lambda p: -p["events"])[:TOP],
        }
        caps = set(self.capabilities)
        if "process_trace" in caps:
            out["top_executables"] = [{"exe": e, "execs": n} for e, n in self.execs.most_common(TOP)]
            out["failed_exits"] = self.failed_exits
        if "syscall_trace" in caps:
            by_name: dict[str, Counter[str]] = defaultdict(Counter)
            for r in syscalls:
                agg = by_name[r["syscall"]]
                agg["count"] += r["count"]
                agg["errors"] += r["errors"]
                agg["total_ns"] += r["total_ns"]
            out["top_syscalls"] = [{"syscall": n, **dict(a)} for n, a in
                                   sorted(by_name.items(), key=lambda x: -x[1]["count"])[:15]]
            out["syscalls_total"] = sum(r["count"] for r in syscalls)
        if "network_trace" in caps:
            conns = sorted(self.conns.values(), key=lambda c: -(c["connects"] + c["accepts"] + c["closes"]))
            out["connections"] = [{**c, "processes": sorted(c["processes"])} for c in conns[:20]]
            out["dns"] = [{"name": n, "responses": dict(r)} for n, r in
                          sorted(self.dns.items(), key=lambda x: -sum(x[1].values()))[:TOP]]
        if "file_trace" in caps:
            files = sorted(self.files.items(), key=lambda x: -sum(v for k, v in x[1].items()
                                                                  if not k.endswith("bytes")))
            out["files"] = [{"path": p, **dict(c)} for p, c in files[:20]]
        if "security_event" in caps:
            found = sorted(self.findings, key=lambda f: (SEVERITY_ORDER[f["severity"]], f["timestamp"]))
            out["security_findings"] = found[:FINDINGS_MAX]
            out["security_by_severity"] = dict(self.severities)
        if "performance" in caps:
            perf = []
            for p in self.perf.values():
                avg = p.pop("cpu_percent_sum") / max(p["samples"], 1)
                perf.append({**p, "cpu_percent_avg": round(avg, 1)})
            out["top_cpu"] = sorted(perf, key=lambda p: -p["cpu_percent_avg"])[:TOP]
            if self.host:
                out["host"] = {"cpu_percent_avg": round(sum(h["cpu_percent"] for h in self.host) / len(self.host), 1),
                               "mem_available_bytes_min": min(h["mem_available_bytes"] for h in self.host),
                               "load1_max": max(h["load1"] for h in self.host)}
        return out

    def events(self) -> dict[str, dict[str, Any]]:
        return {c: {"events": self.kept[c], "event_count": sum(self.counts[c].values()),
                    "events_omitted": max(sum(self.counts[c].values()) - len(self.kept[c]), 0)}
                for c in self.capabilities}
