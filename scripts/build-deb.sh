#!/usr/bin/env bash
# Builds dist/bpfwatch_VERSION-1_amd64.deb from the wheel in dist/ (make dist):
# the tool in its own venv under /opt/bpfwatch/venv (built with Debian's
# python3, so it runs on Debian 12's python3.11), /usr/bin/bpfwatch, the man
# page, bash completion, the systemd unit and a 'bpfwatch' system user.
# Depends on libbpf1 and python3 only: no compiler, no headers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3   # Debian's: the venv links to it, not to a build host's own Python
[ -x "$PY" ] || { echo "build-deb: Debian's python3 is needed ($PY)" >&2; exit 2; }
command -v dpkg-deb >/dev/null || { echo "build-deb: dpkg-deb is needed" >&2; exit 2; }
WHEEL=$(ls dist/bpfwatch-*-manylinux_*_x86_64.whl 2>/dev/null | tail -1)
[ -n "$WHEEL" ] || { echo "build-deb: no wheel in dist/: run 'make dist' first" >&2; exit 2; }
VERSION=$(basename "$WHEEL" | cut -d- -f2)
PYVER=$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
NEXT=$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')
STAGE=build/deb/root
VENV=/opt/bpfwatch/venv
rm -rf build/deb && mkdir -p "$STAGE/DEBIAN"

# the venv is made where it is staged, then its absolute paths are made /opt's
"$PY" -m venv "$STAGE$VENV"
"$STAGE$VENV/bin/pip" install -q --disable-pip-version-check --no-compile "$WHEEL"
"$STAGE$VENV/bin/pip" uninstall -q -y pip
grep -rlI --null "$PWD/$STAGE$VENV" "$STAGE$VENV" | xargs -0 -r sed -i "s#$PWD/$STAGE$VENV#$VENV#g"
find "$STAGE$VENV" -name __pycache__ -prune -exec rm -rf {} +

mkdir -p "$STAGE/usr/bin" "$STAGE/usr/share/man/man1" "$STAGE/usr/share/bash-completion/completions" \
         "$STAGE/lib/systemd/system" "$STAGE/usr/share/doc/bpfwatch"
ln -s "$VENV/bin/bpfwatch" "$STAGE/usr/bin/bpfwatch"
gzip -9n < docs/bpfwatch.1 > "$STAGE/usr/share/man/man1/bpfwatch.1.gz"
"$STAGE$VENV/bin/python" -m bpfwatch.cli.main completion bash > "$STAGE/usr/share/bash-completion/completions/bpfwatch"
sed "s#/opt/bpfwatch/.venv/bin/bpfwatch#/usr/bin/bpfwatch#; s#file:///opt/bpfwatch/docs/agent.md#man:bpfwatch(1)#" \
    packaging/bpfwatch.service > "$STAGE/lib/systemd/system/bpfwatch.service"
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: bpfwatch"
    echo
    echo "Files: *"
    echo "License: Apache-2.0"
    echo " See /usr/share/common-licenses/Apache-2.0."
    echo
    echo "Files: opt/bpfwatch/venv/lib/python*/site-packages/bpfwatch/bpf/*"
    echo "License: GPL-2.0-only"
    echo " The BPF programs. See /usr/share/common-licenses/GPL-2."
    echo
    echo "Files: opt/bpfwatch/venv/lib/python*/site-packages/*"
    echo "License: various"
    echo " bpfwatch's Python dependencies, each under its own license (see its dist-info)."
} > "$STAGE/usr/share/doc/bpfwatch/copyright"

SIZE=$(du -sk "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<EOF
Package: bpfwatch
Version: $VERSION-1
Architecture: amd64
Maintainer: bpfwatch developers <bpfwatch@localhost>
Installed-Size: $SIZE
Depends: libbpf1, python3 (>= $PYVER), python3 (<< $NEXT), adduser
Section: admin
Priority: optional
Description: what processes really do, seen from the kernel (eBPF)
 bpfwatch traces execs, exits and forks, network connections and flows,
 file activity, DNS queries, security-relevant events and per-process
 syscall profiles with CO-RE eBPF programs, built once and shipped compiled.
 It runs as a one-shot trace, a live view (top), a profiler around a command
 (run) and a host agent (the bpfwatch systemd service).
EOF
cat > "$STAGE/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd bpfwatch >/dev/null; then
        adduser --system --group --no-create-home --home /var/lib/bpfwatch --shell /usr/sbin/nologin \
            --quiet bpfwatch
    fi
    if [ ! -e /etc/bpfwatch/bpfwatch.toml ]; then
        mkdir -p /etc/bpfwatch
        /usr/bin/bpfwatch config example > /etc/bpfwatch/bpfwatch.toml
        chmod 0644 /etc/bpfwatch/bpfwatch.toml
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
fi
exit 0
EOF
cat > "$STAGE/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -rf /etc/bpfwatch
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
EOF
chmod 0755 "$STAGE/DEBIAN/postinst" "$STAGE/DEBIAN/postrm"
DEB=dist/bpfwatch_${VERSION}-1_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
echo "build-deb: $DEB ($(du -h "$DEB" | cut -f1), installed $((SIZE / 1024)) MiB)"
