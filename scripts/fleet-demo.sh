#!/usr/bin/env bash
# `make fleet-demo`: a one-host fleet on loopback. A JetStream server, an agent
# sending its capture to it, a collector writing Parquet, then a few queries
# and the host list. Everything lives in a temp directory and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BW=(.venv/bin/python -m bpfwatch.cli.main)
work=$(mktemp -d /tmp/bpfwatch-fleet-demo.XXXXXX)
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="nats://127.0.0.1:$port"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
nats-server -js -sd "$work/nats" -a 127.0.0.1 -p "$port" >"$work/nats.log" 2>&1 &
pids+=($!)
cat >"$work/agent.toml" <<TOML
[filters]
deny = { path = ["$work"], comm = ["nats-server"] }
[outputs.capture]
directory = "$work/capture"
[outputs.nats]
enabled = true
servers = ["$url"]
batch_age = "500ms"
heartbeat_interval = "2s"
accept_diagnose = true
[metrics]
enabled = false
TOML
"${BW[@]}" agent --config "$work/agent.toml" 2>"$work/agent.log" &
pids+=($!)
until grep -q "agent running" "$work/agent.log"; do sleep 0.2; done
echo "== agent running, sending to $url; making some activity"
for i in 1 2 3; do /bin/true fleet-demo "$i"; done
curl -s -o /dev/null http://127.0.0.1:1/ 2>/dev/null || true
sleep 3
echo "== fleet hosts"
"${BW[@]}" fleet hosts --server "$url"
echo "== fleet collect (until idle)"
"${BW[@]}" fleet collect --server "$url" --store "$work/store" --until-idle 3
echo "== fleet query: events by type"
"${BW[@]}" fleet query --store "$work/store" \
    "SELECT host, type, count(*) AS n FROM events GROUP BY ALL ORDER BY n DESC LIMIT 10"
echo "== fleet query: the marked execs"
"${BW[@]}" fleet query --store "$work/store" \
    "SELECT host, time, exe, argv FROM events WHERE type = 'process.exec' AND list_contains(argv, 'fleet-demo')"
echo "== fleet diagnose: a 2-second process trace on every host"
printf '{"reasoning": "demo", "ebpf_capabilities": ["process_trace"], "ebpf_duration_seconds": 2}' >"$work/req.json"
"${BW[@]}" fleet diagnose --server "$url" --hosts '*' --request "$work/req.json" \
    | .venv/bin/python -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d["summary"]))'
