#!/usr/bin/env bash
# Installs the Debian packages bpfwatch needs, only those missing (idempotent).
# --test adds what only the test suite uses, --bench the peers bench/ runs beside bpfwatch.
set -euo pipefail
pkgs=(clang llvm libbpf-dev libbpf1 bpftool make python3 python3-venv python3-dev
      strace util-linux libcap2-bin iproute2 procps bind9-dnsutils)
if [ "${1:-}" = "--test" ]; then
    pkgs+=(prometheus)  # the agent's metrics test scrapes with a real Prometheus server
    # the peers of tests/peers: execsnoop, exitsnoop, opensnoop, tcpstates, tcplife, syscount;
    # auditd (started by hand by the tests); dnsmasq answering dig in a network namespace
    pkgs+=(libbpf-tools auditd dnsmasq-base)
    pkgs+=(nats-server)  # the fleet tests start their own JetStream servers and a 3-node cluster
    pkgs+=(tmux)  # the terminal tests (top, live status) drive a real terminal
fi
if [ "${1:-}" = "--bench" ]; then
    pkgs+=(bpftrace linux-perf)  # the peers of the benchmarks (denet comes from PyPI into its own venv)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "bpfwatch setup: missing Debian packages: ${missing[*]}; run as root (sudo make ...) to install them" >&2
    exit 2
fi
echo "bpfwatch setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian starts the prometheus service it installs; the tests run their own
# server, so leave the host as it was (only when we installed it just now)
for svc in prometheus auditd nats-server; do
    if [[ " ${missing[*]} " == *" $svc "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
done
