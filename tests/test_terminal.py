"""bpfwatch in a terminal: tables that fit 80 columns, a compact doctor, live
status lines (on terminals only), help for every option, shell completion,
the man page, mcp and --follow ending as they should. Real terminals are
tmux sessions (tests/terminal.py)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bpfwatch import procfs
from bpfwatch.cli.main import build_parser
from conftest import BPFWATCH, ROOT, wait_programs
from terminal import Terminal


def _long_lines(screen: str, width: int) -> list[str]:
    return [line for line in screen.splitlines() if len(line.rstrip()) > width]


# -- the parser: help, completion, man page -------------------------------------------------

def test_every_command_and_option_has_help() -> None:
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                helps = {c.dest: c.help for c in a._choices_actions}
                for name, sub in a.choices.items():
                    if not helps.get(name):
                        missing.append(f"{path} {name}")
                    if not sub.description and not helps.get(name):
                        missing.append(f"{path} {name} (description)")
                    walk(sub, f"{path} {name}")
            elif not a.help:
                missing.append(f"{path} {'/'.join(a.option_strings) or a.dest}")

    walk(build_parser(), "bpfwatch")
    assert not missing, missing


def test_version() -> None:
    from bpfwatch import __version__

    out = subprocess.run([*BPFWATCH, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"bpfwatch {__version__}"


def _complete(script: Path, *words: str) -> list[str]:
    """What bash offers after `words` (the last one is being typed)."""
    args = " ".join(f"'{w}'" for w in words)
    code = (f"source {script}\nCOMP_WORDS=({args})\nCOMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n"
            "_bpfwatch\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    out = subprocess.run(["bash", "--norc", "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_bash_completion(tmp_path: Path) -> None:
    script = tmp_path / "bpfwatch.bash"
    out = subprocess.run([*BPFWATCH, "completion", "bash"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    script.write_text(out.stdout)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert {"trace", "top", "run", "doctor", "prog", "completion"} <= set(_complete(script, "bpfwatch", ""))
    assert _complete(script, "bpfwatch", "to") == ["top"]
    assert set(_complete(script, "bpfwatch", "trace", "-t", "file.o")) == {"file.open"}
    assert set(_complete(script, "bpfwatch", "top", "-g", "")) == {"process", "command", "cgroup"}
    assert {"list", "show", "load"} <= set(_complete(script, "bpfwatch", "prog", ""))
    assert "--wide" in _complete(script, "bpfwatch", "prog", "list", "--w")
    # an option's value that looks like a command does not change the command
    assert "--wide" in _complete(script, "bpfwatch", "trace", "-c", "run", "--wi")
    (tmp_path / "somefile.txt").write_text("")
    assert str(tmp_path / "somefile.txt") in _complete(script, "bpfwatch", "trace", "-o", str(tmp_path / "some"))
    zsh = subprocess.run([*BPFWATCH, "completion", "zsh"], capture_output=True, text=True, timeout=60)
    assert zsh.stdout.startswith("#compdef bpfwatch") and "bashcompinit" in zsh.stdout


def test_man_page_is_current_and_renders() -> None:
    out = subprocess.run([sys.executable, "-m", "bpfwatch.cli.manpage"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    committed = (ROOT / "docs" / "bpfwatch.1").read_text()
    assert out.stdout == committed, "docs/bpfwatch.1 is stale: run 'make man'"
    rendered = subprocess.run(["man", "-l", str(ROOT / "docs" / "bpfwatch.1")], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"})
    assert rendered.returncode == 0, rendered.stderr
    text = rendered.stdout
    for needle in ("bpfwatch top", "bpfwatch trace", "--follow", "NO_COLOR", "EXIT STATUS"):
        assert needle in text.replace("\u2010", "-"), needle


# -- tables at 80 columns ---------------------------------------------------------------------

@pytest.mark.kernel
def test_trace_table_fits_80_columns(tmp_path: Path) -> None:
    marker = "bwtermmark"
    long_arg = "x" * 200
    with Terminal([*BPFWATCH, "trace", "-t", "process.exec", "-c", marker], 80, 24) as term:
        term.wait(lambda s: "ready" in s, what="trace ready")
        exe = tmp_path / marker
        exe.symlink_to("/bin/echo")
        subprocess.run([str(exe), long_arg], stdout=subprocess.DEVNULL, check=True)
        screen = term.wait(lambda s: marker in s and "EXEC" in s, what="the marked exec")
        assert not _long_lines(screen, 80)
        head = next(line for line in screen.splitlines() if line.startswith("TIME"))
        assert head.index("DETAILS") < 45
        line = next(line for line in screen.splitlines() if "EXEC" in line and marker in line)
        assert "…" in line and line.rstrip().endswith("x")  # cut in the middle: the end of argv shows
        term.keys("C-c")
        term.wait(lambda s: "EXITED" in s, what="trace's exit")
    wide = subprocess.run([*BPFWATCH, "trace", "--help"], capture_output=True, text=True, timeout=60)
    assert "--wide" in wide.stdout


@pytest.mark.kernel
def test_prog_and_map_list_fit_80_columns() -> None:
    import bpfwatch

    with bpfwatch.Monitor(types=["process.exec"]):
        for cmd, name in ((["prog", "list"], "bw_proc_exec"), (["map", "list"], "bw_events")):
            with Terminal([*BPFWATCH, *cmd], 80, 200) as term:
                screen = term.wait(lambda s: "EXITED" in s, what=f"{' '.join(cmd)} done")
                assert not _long_lines(screen, 80), _long_lines(screen, 80)
                line = next(line for line in screen.splitlines() if f" {name} " in line + " ")
                assert line.split()[0].isdigit()  # one row per line, the id whole
                assert "--wide shows every column" in screen
    out = subprocess.run([*BPFWATCH, "prog", "list"], capture_output=True, text=True, timeout=60)
    assert "tag" in out.stdout  # a pipe gets every column


def test_doctor_is_compact_and_verbose_lists_everything() -> None:
    with Terminal([*BPFWATCH, "doctor"], 80, 50) as term:
        screen = term.wait(lambda s: "EXITED" in s, what="doctor done")
        body = screen[: screen.index("EXITED")].strip().splitlines()
        assert body[0].startswith("bpfwatch doctor: bpfwatch can run here")
        assert len(body) <= 24 and not _long_lines(screen, 80)
        assert "--verbose lists every check" in screen
    out = subprocess.run([*BPFWATCH, "doctor", "--verbose"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "tracepoint sys_enter" in out.stdout and "bpffs" in out.stdout


# -- live status, on terminals only ----------------------------------------------------------

@pytest.mark.kernel
def test_run_shows_live_status_at_the_bottom() -> None:
    script = "for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.4; done"
    with Terminal([*BPFWATCH, "run", "--", "bash", "-c", script], 80, 24) as term:
        screen = term.wait(lambda s: "line 3" in s and "syscalls/s" in s, what="output and the status line")
        last = screen.rstrip("\n").splitlines()[-1]
        assert last.startswith("bpfwatch run") and "running" in last and "Ctrl-C" in last
        assert "line 1" in screen and "line 2" in screen  # the command's output scrolls above it
        screen = term.wait(lambda s: "EXITED" in s, what="run's exit")
        assert "EXITED 0" in screen and "syscalls/s  (Ctrl-C" not in screen  # the status is cleared
        assert "syscalls" in screen  # the report


@pytest.mark.kernel
def test_trace_to_file_shows_events_written(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    with Terminal([*BPFWATCH, "trace", "-t", "file.open", "-o", str(out), "-d", "4"], 80, 24) as term:
        term.wait(lambda s: "ready" in s, what="ready")
        for _ in range(20):
            Path("/etc/hostname").read_text()
        screen = term.wait(lambda s: "events written" in s and " lost " in s, what="the status line")
        assert "Ctrl-C" in screen
        screen = term.wait(lambda s: "EXITED" in s, what="trace's exit")
        assert "EXITED 0" in screen and "events written" not in screen
    assert out.stat().st_size > 0


@pytest.mark.kernel
def test_no_status_in_pipes(tmp_path: Path) -> None:
    p = subprocess.run([*BPFWATCH, "run", "--", "sleep", "0.6"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "\x1b" not in p.stderr
    p = subprocess.run([*BPFWATCH, "trace", "-t", "process.exec", "-o", str(tmp_path / "o"), "-d", "0.6"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "\x1b" not in p.stderr


# -- how things end --------------------------------------------------------------------------

def test_mcp_in_a_terminal_says_so_and_ctrl_c_ends_it() -> None:
    with Terminal([*BPFWATCH, "mcp"], 100, 24) as term:
        term.wait(lambda s: "waiting for an MCP client on stdin" in s, what="mcp's notice")
        term.keys("C-c")
        screen = term.wait(lambda s: "EXITED" in s, timeout=10, what="mcp's exit on Ctrl-C")
        assert "EXITED 130" in screen and "Traceback" not in screen


@pytest.mark.kernel
def test_follow_ends_when_the_tree_is_gone(no_leaks: None) -> None:
    # the child works once trace is ready, however slow the start (an emulated kernel)
    child = subprocess.Popen(["bash", "-c", "read go; cat /etc/hostname > /dev/null; (sleep 0.3) & wait"],
                             stdin=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    trace = subprocess.Popen([*BPFWATCH, "trace", "-f", str(child.pid), "--format", "json", "-d", "600"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert trace.stderr.readline().startswith("bpfwatch: ready")
    ready_after = time.monotonic() - t0
    child.stdin.write("go\n")
    child.stdin.close()
    out, err = trace.communicate(timeout=ready_after + 60)
    took = time.monotonic() - t0 - ready_after
    child.wait()
    assert trace.returncode == 0, err
    assert took < 30, took  # the tree's end, not the 600 s of --duration
    assert "the followed processes have all exited" in err
    assert '"/etc/hostname"' in out and '"process.exit"' in out


@pytest.mark.kernel
def test_follow_of_an_exited_unreaped_process_ends_at_once(no_leaks: None) -> None:
    """A zombie (exited, its parent has not reaped it) still has /proc/PID:
    following it must not wait for the whole --duration."""
    child = subprocess.Popen(["/bin/true"])
    deadline = time.monotonic() + 10
    while procfs.running(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert procfs.exists(child.pid) and not procfs.running(child.pid)  # a zombie: not reaped yet
    try:
        out = subprocess.run([*BPFWATCH, "trace", "-f", str(child.pid), "-d", "600"], capture_output=True,
                             text=True, timeout=120)
    finally:
        child.wait()
    assert out.returncode == 0, out.stderr
    assert "the followed processes have all exited" in out.stderr
    assert wait_programs("bw_", loaded=False, timeout=5) or True  # no_leaks checks it


@pytest.mark.kernel
def test_rules_without_security_warns(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[rules.bpf_load]\nenabled = false\n")
    out = subprocess.run([*BPFWATCH, "trace", "-t", "process.exec", "--rules", str(rules), "-d", "0.3",
                          "--format", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "warning: --rules" in out.stderr and "-t security" in out.stderr


def test_xdp_stats_table_says_what_is_per_interval() -> None:
    from rich.console import Console

    from bpfwatch.cli.xdp import _table
    from bpfwatch.xdp_stats import L3, L4, Sample, report

    start = Sample(0.0, np.zeros((len(L3), len(L4), 2, 2), np.uint64))
    prev = Sample(9.0, start.counts.copy())
    prev.counts[0, 0, 0] = (90, 9000)
    cur = Sample(10.0, prev.counts.copy())
    cur.counts[0, 0, 0] = (100, 10000)  # 10 packets in the last second, 100 since attach
    rep = report("lo", prev, cur, start)
    console = Console(width=120, record=True)
    console.print(_table(rep, "lo"))
    text = console.export_text()
    flat = " ".join(text.split())
    assert "over the last 1 s" in flat and "totals since attach (10 s)" in flat
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line]
    assert ["ipv4", "10", "8.00k", "100", "10000"] in rows and ["all", "10", "8.00k", "100", "10000"] in rows
