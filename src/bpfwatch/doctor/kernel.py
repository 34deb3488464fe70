"""Facts about the running kernel: version, config, sysctls, mounts, lockdown."""

from __future__ import annotations

import gzip
import os
import subprocess
from functools import lru_cache
from pathlib import Path

from bpfwatch.mounts import fs_mounted, mounts


def release() -> str:
    return os.uname().release


def version_tuple() -> tuple[int, int]:
    parts = release().split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


@lru_cache(maxsize=1)
def config() -> tuple[str | None, dict[str, str]]:
    """(source, {CONFIG_X: value}) from /proc/config.gz or /boot/config-<release>."""
    sources = [("/proc/config.gz", True), (f"/boot/config-{release()}", False)]
    for path, gz in sources:
        try:
            raw = gzip.open(path, "rt") if gz else open(path)  # noqa: SIM115
            with raw as f:
                text = f.read()
        except OSError:
            continue
        cfg: dict[str, str] = {}
        for line in text.splitlines():
            if line.startswith("CONFIG_"):
                k, _, v = line.partition("=")
                cfg[k] = v
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                cfg[line[2:].split()[0]] = "n"
        return path, cfg
    return None, {}


def config_value(name: str) -> str | None:
    """'y', 'm', 'n' (not set), a value, or None when the config is unknown."""
    src, cfg = config()
    if src is None:
        return None
    return cfg.get(name, "n")


def sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


@lru_cache(maxsize=1)
def lockdown() -> str | None:
    """The active lockdown mode ('none', 'integrity', 'confidentiality').

    Read from securityfs; if it is not mounted, it is mounted briefly in a
    private mount namespace (nothing changes for the rest of the system).
    """
    mp = fs_mounted("securityfs")
    text = None
    if mp:
        try:
            text = Path(mp, "lockdown").read_text()
        except OSError:
            text = None
    elif os.geteuid() == 0:
        try:
            text = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 "mount -t securityfs none /sys/kernel/security && cat /sys/kernel/security/lockdown"],
                capture_output=True, text=True, timeout=5, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            text = None
    if not text:
        return None
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return None


def tracefs_path() -> str | None:
    m = mounts()
    for mp in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if m.get(mp) == "tracefs":
            return mp
    return fs_mounted("tracefs")
