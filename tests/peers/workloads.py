"""Workloads nobody wrote for bpfwatch: a generated C project built with
make -j2, shell pipelines, shebang scripts, git on a real repository, tar of
/usr/share/doc, a multi-threaded program, a virtualenv with pip installing a
local wheel."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

THREADED = ("import os, threading, time\n"
            "def spin():\n"
            "    while True: pass\n"
            "for _ in range(2): threading.Thread(target=spin, daemon=True).start()\n"
            "threading.Thread(target=lambda: (time.sleep(0.03), os._exit(3))).start()\n"
            "spin()\n")


def c_project(root: Path, files: int) -> Path:
    src = root / "cproj"
    src.mkdir()
    for i in range(files):
        (src / f"f{i}.c").write_text(f'#include <stdio.h>\nint f{i}(int x) {{ return x * {i} + 1; }}\n')
    calls = " + ".join(f"f{i}(1)" for i in range(files))
    decls = "".join(f"int f{i}(int);\n" for i in range(files))
    main = f'#include <stdio.h>\n{decls}int main(void) {{ printf("%d\\n", {calls}); return 0; }}\n'
    (src / "main.c").write_text(main)
    objs = " ".join(f"f{i}.o" for i in range(files))
    (src / "Makefile").write_text(f"prog: main.o {objs}\n\tcc -o $@ $^\n%.o: %.c\n\tcc -O0 -c $< -o $@\n"
                                  "check: prog\n\t./prog > out.txt\n\tgrep -q . out.txt\n")
    return src


def build(root: Path, files: int = 12) -> None:
    src = c_project(root, files)
    subprocess.run(["make", "-s", "-j2", "-C", str(src), "check"], check=True, stdout=subprocess.DEVNULL)


def shell(root: Path) -> None:
    script = root / "bw-peer-script"
    script.write_text("#!/bin/sh\nls / | sort | head -3 | wc -l >/dev/null\nexit 4\n")
    script.chmod(0o755)
    subprocess.run(["/bin/sh", "-c", f"cat /etc/hostname | tr a-z A-Z | wc -c >/dev/null; {script} a 'b c'; "
                    "for i in 1 2 3; do /bin/true $i; done; (exit 9); /bin/false || true; "
                    "nonexistent-bw-cmd 2>/dev/null; exit 0"], check=True)
    subprocess.run([str(script)], check=False)


def threaded(n: int = 6) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", THREADED]) for _ in range(n)]
    for p in procs:
        p.wait()


def git(root: Path) -> None:
    repo = root / "repo"
    env = {"GIT_AUTHOR_NAME": "bw", "GIT_AUTHOR_EMAIL": "bw@test", "GIT_COMMITTER_NAME": "bw",
           "GIT_COMMITTER_EMAIL": "bw@test", "PATH": "/usr/bin:/bin", "HOME": str(root)}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    for i in range(5):
        (repo / f"f{i}.txt").write_text(f"line {i}\n" * 50)
        subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
        subprocess.run(["git", "-C", str(repo), "commit", "-qm", f"c{i}"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "log", "--stat", "-p"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["git", "-C", str(repo), "gc", "-q"], check=True, env=env)


def tar_docs(root: Path) -> None:
    subprocess.run(["tar", "czf", str(root / "doc.tgz"), "-C", "/usr/share", "doc"], check=True,
                   stderr=subprocess.DEVNULL)


def _wheel(root: Path) -> Path:
    """A minimal pure-Python wheel, built here: pip installs it offline."""
    files = {
        "bwpeer_pkg/__init__.py": b"VALUE = 42\n",
        "bwpeer_pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: bwpeer-pkg\nVersion: 1.0\n",
        "bwpeer_pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: bwpeer\nRoot-Is-Purelib: true\n"
                                          b"Tag: py3-none-any\n",
    }
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for name, data in files.items())
    files["bwpeer_pkg-1.0.dist-info/RECORD"] = (record + "bwpeer_pkg-1.0.dist-info/RECORD,,\n").encode()
    path = root / "bwpeer_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def venv_pip(root: Path) -> None:
    wheel = _wheel(root)
    env_dir = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", "--no-index", "--no-deps",
                    "--disable-pip-version-check", str(wheel)], check=True)
    subprocess.run([str(env_dir / "bin" / "python"), "-c", "import bwpeer_pkg; assert bwpeer_pkg.VALUE == 42"],
                   check=True)
