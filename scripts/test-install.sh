#!/usr/bin/env bash
# Proves the wheel and the .deb (make dist, make deb) on a truly fresh Debian:
# two bookworm roots made with mmdebstrap, entered with chroot (same kernel, so
# BPF works inside). The wheel's root gets only python3, python3-venv, pipx and
# libbpf1, then `pipx install` of the wheel; the .deb's root gets only what
# `apt-get install ./bpfwatch.deb` pulls in. Only this machine's CA bundle and
# pip config are copied in (a fresh machine here has them); no venv, no
# /usr/local, no source tree. In each: --version, doctor, a trace that sees a
# marked exec, run -- true, and the agent for a few seconds with its capture
# read back.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOTS=${ROOTS:-$PWD/build/install-roots}
SUITE=${SUITE:-bookworm}
say() { echo "test-install: $*" >&2; }
WHEEL=$(ls dist/bpfwatch-*-manylinux_*_x86_64.whl 2>/dev/null | tail -1)
DEB=$(ls dist/bpfwatch_*_amd64.deb 2>/dev/null | tail -1)
[ -n "$WHEEL" ] && [ -n "$DEB" ] || { say "run 'make dist deb' first"; exit 2; }
command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >&2

mounted=()
cleanup() {
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT

# a fresh root with these packages, and what a fresh machine here has: the CA bundle and pip's config
make_root() {
    local root=$1 include=$2
    rm -rf "$root"
    local t0=$SECONDS
    mmdebstrap --quiet --variant=minbase --include="$include" "$SUITE" "$root" >&2
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    [ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
    for m in proc sys dev; do
        mount --rbind "/$m" "$root/$m" && mount --make-rslave "$root/$m" && mounted+=("$root/$m")
    done
    say "$(basename "$root"): made in $((SECONDS - t0)) s with $include"
}

# inside a root: the same checks whatever installed bpfwatch
in_root() {
    chroot "$1" /usr/bin/env -i PATH=/root/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        /bin/bash -euo pipefail -c "$2"
}

CHECKS='
cd /tmp
command -v bpfwatch
bpfwatch --version
bpfwatch doctor
ln -sf /bin/true /tmp/bwinstallmark
bpfwatch trace -t process.exec --format json -d 6 > /tmp/trace.jsonl 2> /tmp/trace.err &
tracer=$!
for i in $(seq 100); do grep -q ready /tmp/trace.err && break; sleep 0.1; done
/tmp/bwinstallmark
wait $tracer
grep -q "\"comm\":\"bwinstallmark\"" /tmp/trace.jsonl && echo "trace saw the marked exec"
bpfwatch run -q --json /tmp/run.json -- true
grep -q "\"exit_code\": 0" /tmp/run.json && echo "run -- true profiled"
mkdir -p /tmp/agent
printf "[outputs.capture]\ndirectory = \"/tmp/agent/capture\"\n[metrics]\nenabled = false\n" > /tmp/agent/bpfwatch.toml
bpfwatch agent --config /tmp/agent/bpfwatch.toml 2> /tmp/agent/log &
agent=$!
for i in $(seq 200); do grep -q "agent running" /tmp/agent/log && break; sleep 0.1; done
/tmp/bwinstallmark
sleep 2
kill -TERM $agent
wait $agent
bpfwatch capture read /tmp/agent/capture -t process.exec | grep -q "\"comm\":\"bwinstallmark\"" \
    && echo "agent captured the marked exec"
'

mkdir -p "$ROOTS"
status=0
# 1. the wheel, with pipx
root=$ROOTS/wheel
make_root "$root" python3,python3-venv,pipx,libbpf1,ca-certificates
cp "$WHEEL" "$root/tmp/"
t0=$SECONDS
in_root "$root" "pipx install /tmp/$(basename "$WHEEL") >/dev/null"
say "wheel: pipx install took $((SECONDS - t0)) s ($(du -h "$WHEEL" | cut -f1) wheel)"
in_root "$root" "if [ -e /usr/local/bin/bpfwatch ] || command -v clang || command -v bpftool; then exit 1; fi" \
    || { say "wheel root is not clean: a compiler or a host install leaked in"; status=1; }
in_root "$root" "$CHECKS" || { say "wheel: the checks FAILED"; status=1; }
cleanup; mounted=()

# 2. the .deb, with apt
root=$ROOTS/deb
make_root "$root" ca-certificates
cp "$DEB" "$root/tmp/"
t0=$SECONDS
in_root "$root" "apt-get update -q >/dev/null && apt-get install -y -q /tmp/$(basename "$DEB") >/dev/null"
say "deb: apt-get install took $((SECONDS - t0)) s ($(du -h "$DEB" | cut -f1) package)"
in_root "$root" "getent passwd bpfwatch >/dev/null && test -f /lib/systemd/system/bpfwatch.service \
    && test -f /etc/bpfwatch/bpfwatch.toml && bpfwatch config check /etc/bpfwatch/bpfwatch.toml" \
    || { say "deb: user, unit or config missing"; status=1; }
in_root "$root" "$CHECKS" || { say "deb: the checks FAILED"; status=1; }
[ $status -eq 0 ] && say "the wheel and the .deb both work on a fresh $SUITE"
exit $status
