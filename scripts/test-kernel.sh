#!/usr/bin/env bash
# Runs bpfwatch's kernel tests on another kernel: a Debian kernel package booted
# in QEMU with virtme-ng, on this machine's root filesystem (shared over 9p,
# read-only; the results come back through one writable directory), with the
# BPF objects built here. CO-RE is the claim this proves.
#
#   scripts/test-kernel.sh                 # Debian 12's kernel (6.1), the full kernel suite
#   KERNEL=6.1.0-54-amd64 SUITE=smoke ...  # one exact kernel; boot, doctor, one test per sensor
#   TESTS="tests/test_file_events.py" ...   # only these test files
#   CMD='.venv/bin/python -m bpfwatch.cli.main doctor' ...   # a command of your own in the VM
#   KERNEL=6.1 scripts/test-kernel.sh --which < releases  # the release KERNEL picks from a list
#
# KVM is used when it works here, else pure emulation (TCG), and the script says
# which. A guest that gives no result in VM_TIMEOUT seconds (smoke 1200, full 5400)
# is booted once more. Exit status: the tests'.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
KERNEL=${KERNEL:-6.1}
SUITE=${SUITE:-full}
CPUS=${CPUS:-2}
MEMORY=${MEMORY:-4G}
OUT=$ROOT/build/test-kernel
VNG_VENV=$ROOT/build/vng-venv
export PATH="$VNG_VENV/bin:$PATH"  # vng runs its own virtme-run
say() { echo "test-kernel: $*" >&2; }
# how long a guest may take to give its tests' result (below)
VM_TIMEOUT=${VM_TIMEOUT:-$([ "$SUITE" = smoke ] && echo 1200 || echo 5400)}
[[ "$VM_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || { say "VM_TIMEOUT must be a whole number of seconds, not '$VM_TIMEOUT'"; exit 2; }

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v busybox >/dev/null || need+=(busybox-static)  # virtme-ng builds its initramfs with it
# KERNEL is a version or a release: 6.1 means 6.1.x (6.1.0-54-amd64), never 6.12
VERSION=${KERNEL%-amd64}
RELEASE_RE="^${VERSION//./\\.}([.+-].*)?-amd64\$"
# the newest matching release of the generic flavour: the cloud flavour has no 9p, so the
# host's root cannot be shared
newest() { grep -E "$RELEASE_RE" | grep -v -e cloud -e '-rt-' | sort -V | tail -1 || true; }
installed() { ls /boot 2>/dev/null | sed -n 's/^vmlinuz-//p' | newest; }
if [ "${1:-}" = "--which" ]; then newest; exit 0; fi  # which of the releases on stdin KERNEL names (tests)
if [ -z "$(installed)" ]; then
    [ -n "$(ls /var/lib/apt/lists/*Packages 2>/dev/null | head -1)" ] || apt-get update -q >&2
    rel=$(apt-cache search --names-only '^linux-image-.*-amd64-unsigned$' | awk '{print $1}' \
          | sed 's/^linux-image-//; s/-unsigned$//' | newest)
    [ -n "$rel" ] || { say "no Debian kernel package matches '$KERNEL' (linux-image-$VERSION[.-]*-amd64-unsigned)"; exit 2; }
    need+=("linux-image-$rel-unsigned")
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then say "missing Debian packages: ${need[*]}; run as root to install them"; exit 2; fi
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi
RELEASE=$(installed)
[ -n "$RELEASE" ] || { say "no kernel matching '$KERNEL' in /boot after installing it"; exit 2; }
VMLINUZ=/boot/vmlinuz-$RELEASE
if [ ! -x "$VNG_VENV/bin/vng" ]; then
    say "installing virtme-ng in $VNG_VENV"
    python3 -m venv "$VNG_VENV"
    "$VNG_VENV/bin/pip" install -q "virtme-ng==1.42" >&2
fi

# KVM if it really boots a guest here (on some hosts it aborts: "failed to set MSR 0x10a")
accel=(--disable-kvm)
how="emulation (TCG): no /dev/kvm"
if [ -e /dev/kvm ]; then
    if timeout 120 "$VNG_VENV/bin/vng" --run "$VMLINUZ" --user root --cpus 1 --memory 1G -e "true" \
            < /dev/null 2>&1 | cat > /dev/null; then  # pipefail: vng's status
        accel=()
        how="KVM"
    else
        how="emulation (TCG): KVM is present but cannot run a guest here"
    fi
fi
say "booting $RELEASE with $how, $CPUS CPUs, $MEMORY; suite: $SUITE"

rm -rf "$OUT" && mkdir -p "$OUT"
case "$SUITE" in
    smoke) select=(-m "kernel and smoke_vm") ;;
    full)  select=(-m "kernel and not host_only") ;;
    *) say "SUITE must be smoke or full"; exit 2 ;;
esac
# inside: the same venv and objects; nothing written to the shared (read-only)
# root but the results directory; the guest's own /tmp is its memory
cat > "$OUT/inner.sh" <<EOF
set -e
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
export BPFWATCH_IN_VM=1 BPFWATCH_REQUIRE_BPF=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp HOME=/tmp
cd "$ROOT"
uname -r > "$OUT/kernel"
.venv/bin/python -m bpfwatch.cli.main doctor --json > "$OUT/doctor.json" || true
set +e
if [ -n "${CMD:-}" ]; then  # a command of your own instead of the tests: CMD='bpfwatch doctor'
    ${CMD:-} > "$OUT/cmd.log" 2>&1
    echo \$? > "$OUT/status"
    cat "$OUT/cmd.log"
    exit
fi
.venv/bin/python -m pytest -p no:cacheprovider -v -ra --tb=short --durations=25 ${select[*]@Q} --junitxml="$OUT/junit.xml" ${TESTS:-tests/} ${ARGS:-} \
    > "$OUT/pytest.log" 2>&1
echo \$? > "$OUT/status"
tail -n 40 "$OUT/pytest.log"
EOF
start=$(date +%s)
# A guest under emulation can freeze outright (seen here once: both vCPUs spinning,
# pytest's own per-test timeout never firing). The guest writes its status only when the tests
# have finished, so no status after VM_TIMEOUT means it froze or died: it is booted once more,
# and said so. Tests that ran and failed are never run again.
for attempt in 1 2; do
    rm -f "$OUT/status"
    set +e
    # through a pipe: QEMU opens the guest's stdout as a file (/proc/self/fd/1), which truncates a
    # log file our own stdout may be, and with it everything written there before (CI's log)
    timeout --kill-after=30 "$VM_TIMEOUT" "$VNG_VENV/bin/vng" --run "$VMLINUZ" "${accel[@]}" --user root \
        --cpus "$CPUS" --memory "$MEMORY" --rwdir "$OUT" -e "bash $OUT/inner.sh" 2>&1 < /dev/null | cat
    set -e
    [ -f "$OUT/status" ] && break
    if [ -s "$OUT/pytest.log" ]; then
        say "the guest gave no result within ${VM_TIMEOUT}s (attempt $attempt of 2); its test log ended with:"
        tail -n 3 "$OUT/pytest.log" | sed 's/^/    /' >&2
    else
        say "the guest gave no result within ${VM_TIMEOUT}s (attempt $attempt of 2), before its tests began"
    fi
done
status=$(cat "$OUT/status" 2>/dev/null || echo 1)
say "$RELEASE ($how): tests exited $status after $(( $(date +%s) - start )) s; results in $OUT"
exit "$status"
