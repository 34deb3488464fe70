"""The security sensor on the real kernel: every rule triggered by the real
thing (a setuid-root helper run as nobody, a ptrace attach, execs from
/dev/shm and a memfd, writes to sensitive paths, a BPF load, unshare, mount,
module syscalls, a sysctl write), and none by benign look-alikes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BPFWATCH, ROOT

pytestmark = pytest.mark.kernel
PY = sys.executable
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def py(code: str, *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, PY, "-c", code], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def findings(tmp_path_factory):
    """One monitor for every trigger and look-alike; the events it saw."""
    from bpfwatch import Monitor
    from bpfwatch.security.rules import load_rules

    root = tmp_path_factory.mktemp("secroot")
    os.chmod(root, 0o755)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    rules_file = root / "rules.toml"
    rules_file.write_text(f"""
[rules.sensitive_file_write]
extend_paths = ["{root}/etc/passwd", "{root}/etc/sudoers.d/*"]

[rules.exec_world_writable]
exceptions = [{{ exe = "/dev/shm/bw_excepted_*" }}]
""")
    m = Monitor(types=["security.*"], rules=load_rules(str(rules_file)), include_self=False)
    m.start()
    time.sleep(0.3)
    try:
        _trigger(root)
        time.sleep(0.5)
        events: list[dict] = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            events.extend(m.poll(0.1))
        lost = m.lost()
    finally:
        m.close()
    assert not any(lost.values()), lost
    return root, events


def _trigger(root: Path) -> None:
    # privilege escalation through a setuid-root binary, run as nobody; and the look-alikes:
    # root running it (no change), nobody running a copy without the setuid bit
    shutil.copy("/usr/bin/id", root / "bw_suid_id")
    os.chmod(root / "bw_suid_id", 0o4755)
    shutil.copy("/usr/bin/id", root / "bw_plain_id")
    assert "euid=0" in subprocess.run([*NOBODY, str(root / "bw_suid_id")], capture_output=True, text=True).stdout
    subprocess.run([str(root / "bw_suid_id")], capture_output=True, check=True)
    subprocess.run([*NOBODY, str(root / "bw_plain_id")], capture_output=True, check=True)
    # credential syscalls: nobody asking for root (refused), root dropping to nobody
    py("import os\ntry:\n    os.setuid(0)\nexcept PermissionError:\n    pass", *NOBODY)
    py("import os; os.setresuid(65534, 65534, 65534)")
    # ptrace attach to a sleeping child; PTRACE_TRACEME is not an attach
    py("""
import ctypes, os, subprocess, time
libc = ctypes.CDLL(None, use_errno=True)
p = subprocess.Popen(['sleep', '5'])
time.sleep(0.2)
assert libc.ptrace(16, p.pid, 0, 0) == 0
os.waitpid(p.pid, 0)
libc.ptrace(17, p.pid, 0, 0)
p.kill()
p.wait()
""")
    py("import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0)")
    # process_vm_writev into a child's buffer (the child checks it changed)
    out = py("""
import ctypes, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import ctypes, sys\\nb = ctypes.create_string_buffer(b'before', 16)\\n"
                          "print(ctypes.addressof(b), flush=True)\\nsys.stdin.readline()\\nprint(b.value.decode())"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
addr = int(child.stdout.readline())
class Iov(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
src = ctypes.create_string_buffer(b"after!", 6)
n = ctypes.CDLL(None).process_vm_writev(child.pid, ctypes.byref(Iov(ctypes.addressof(src), 6)), 1,
                                        ctypes.byref(Iov(addr, 6)), 1, 0)
print(n, child.communicate("go\\n")[0].strip())
""")
    assert out.stdout.split() == ["6", "after!"], out.stderr
    # joining a network namespace (its own: setns all the same)
    subprocess.run(["nsenter", "--net=/proc/self/ns/net", "true"], check=True)
    # exec of a file deleted before it ran
    py(f"import os, shutil\nshutil.copy('/bin/true', '{root}/bw_deleted_true')\n"
       f"fd = os.open('{root}/bw_deleted_true', os.O_RDONLY)\nos.unlink('{root}/bw_deleted_true')\n"
       "pid = os.fork()\nif pid == 0:\n    os.execv(f'/proc/self/fd/{fd}', ['bw_deleted'])\nos.waitpid(pid, 0)")
    # exec from a world-writable directory (and an excepted name there), and from a 0755 one
    for name in ("bw_shm_true", "bw_excepted_true"):
        shutil.copy("/bin/true", f"/dev/shm/{name}")
        subprocess.run([f"/dev/shm/{name}"], check=True)
        os.unlink(f"/dev/shm/{name}")
    shutil.copy("/bin/true", root / "bw_safe_true")
    subprocess.run([str(root / "bw_safe_true")], check=True)
    # fileless: exec of a memfd; a memfd written but never run
    py("import os\nfd = os.memfd_create('bw_fileless')\nos.write(fd, open('/bin/true', 'rb').read())\n"
       "os.execv(f'/proc/self/fd/{fd}', ['bw_fileless'])")
    py("import os\nfd = os.memfd_create('bw_idle')\nos.write(fd, b'x' * 100)")
    # sensitive files: a write, a rename onto one, an unlink; look-alikes: a read, a near name
    passwd = root / "etc" / "passwd"
    py(f"open('{passwd}', 'a').write('bw_user:x:1234:1234::/:/bin/sh\\n')")
    (root / "etc" / "sudoers.d").mkdir()
    py(f"open('{root}/etc/new', 'w').write('x')\nimport os\nos.rename('{root}/etc/new', '{root}/etc/sudoers.d/bw')")
    py(f"import os; os.unlink('{root}/etc/sudoers.d/bw')")
    py(f"open('{passwd}').read()")
    py(f"open('{root}/etc/passwd.bak', 'w').write('x')")
    # a BPF load by another process; listing programs is not a load
    pin = f"/sys/fs/bpf/bw_sec_test{os.getpid()}"
    subprocess.run(["bpftool", "prog", "load", str(ROOT / "build/testbpf/foreign.bpf.o"), pin], check=True)
    os.unlink(pin)
    subprocess.run(["bpftool", "prog", "show"], capture_output=True, check=True)
    # namespaces: unshare of a network namespace; unshare of the file table is not one
    subprocess.run(["unshare", "--net", "true"], check=True)
    py("import ctypes; assert ctypes.CDLL(None).unshare(0x400) == 0")
    # module syscalls (this kernel has none: ENOSYS)
    py("import ctypes; ctypes.CDLL(None).syscall(313, 0, b'', 0)")
    py("import ctypes; ctypes.CDLL(None).syscall(176, b'bw_nomod', 0)")
    # mount and unmount
    (root / "mnt").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "bwtmp", str(root / "mnt")], check=True)
    subprocess.run(["umount", str(root / "mnt")], check=True)
    # a sysctl written (with its own value); one read
    knob = "/proc/sys/kernel/printk_ratelimit"
    py(f"v = open('{knob}').read(); open('{knob}', 'w').write(v)")
    py(f"open('{knob}').read()")


def _by(events: list[dict], rule: str) -> list[dict]:
    return [e for e in events if e["rule"] == rule]


def test_every_event_is_a_valid_finding(findings):
    import jsonschema

    from bpfwatch.schema import event_schema

    _root, events = findings
    validator = jsonschema.Draft202012Validator(event_schema())
    for e in events:
        validator.validate(e)
        assert e["type"].startswith("security.") and e["severity"] in ("info", "low", "medium", "high", "critical")


def test_setuid_root_helper_run_by_nobody_is_privilege_escalation(findings):
    root, events = findings
    esc = [e for e in _by(events, "privilege_escalation") if e["exe"] == f"{root}/bw_suid_id"]
    assert len(esc) == 1, _by(events, "privilege_escalation")
    e = esc[0]
    assert e["severity"] == "high" and e["type"] == "security.privilege_escalation"
    assert e["evidence"]["old"]["uid"] == 65534 and e["evidence"]["new"]["euid"] == 0
    assert e["evidence"]["setuid"] is True and e["evidence"]["owner_uid"] == 0
    # root running it, and nobody running the plain copy, change nothing
    assert not [x for x in events if x["exe"] and "bw_plain_id" in x["exe"]]
    assert not [x for x in events if x["exe"] == f"{root}/bw_suid_id" and x["uid"] == 0]


@pytest.mark.smoke_vm
def test_credential_syscalls(findings):
    _root, events = findings
    creds = _by(events, "credential_change")
    refused = [e for e in creds if e["syscall"] == "setuid" and e["outcome"] == "failed"]
    assert refused and refused[0]["severity"] == "low" and refused[0]["error"] == "EPERM"
    dropped = [e for e in creds if e["syscall"] == "setresuid" and e["evidence"]["new"]["uid"] == 65534
               and e["evidence"]["old"]["uid"] == 0 and e["comm"] == "python"]
    assert dropped and dropped[0]["severity"] == "info"
    assert not [e for e in _by(events, "privilege_escalation") if e["syscall"] == "setuid"]


def test_ptrace_attach(findings):
    _root, events = findings
    pt = _by(events, "ptrace_attach")
    assert len(pt) == 1, pt
    assert pt[0]["evidence"]["request"] == "PTRACE_ATTACH" and pt[0]["outcome"] == "succeeded"


def test_exec_from_world_writable_dir_and_memfd(findings):
    _root, events = findings
    ww = _by(events, "exec_world_writable")
    assert [e["exe"] for e in ww] == ["/dev/shm/bw_shm_true"]  # the excepted one is not reported
    assert ww[0]["evidence"]["dir_mode"] == "0o1777"
    mem = _by(events, "exec_memfd")
    assert len(mem) == 1 and mem[0]["severity"] == "high" and mem[0]["evidence"]["file"].startswith("/proc/self/fd/")
    assert not [e for e in events if e["exe"] and "bw_safe_true" in e["exe"]]


def test_sensitive_file_writes(findings):
    root, events = findings
    sens = _by(events, "sensitive_file_write")
    ops = sorted((e["evidence"]["operation"], e["evidence"]["path"]) for e in sens)
    assert ops == [("open", f"{root}/etc/passwd"), ("rename", f"{root}/etc/sudoers.d/bw"),
                   ("unlink", f"{root}/etc/sudoers.d/bw")], ops
    assert all(e["severity"] == "high" and e["outcome"] == "succeeded" for e in sens)


def test_bpf_load_by_another_process(findings):
    _root, events = findings
    loads = [e for e in _by(events, "bpf_load") if e["evidence"]["prog_name"] == "foreign_tc"]
    assert len(loads) == 1 and loads[0]["comm"] == "bpftool"
    assert loads[0]["evidence"]["prog_type"] == "sched_cls" and loads[0]["evidence"]["insn_cnt"] == 2
    assert not [e for e in _by(events, "bpf_load") if e["pid"] == os.getpid()]


def test_process_vm_write_setns_and_deleted_exec(findings):
    _root, events = findings
    vm = _by(events, "process_vm_write")
    assert len(vm) == 1 and vm[0]["severity"] == "high" and vm[0]["evidence"]["bytes"] == 6
    assert vm[0]["comm"] == "python"
    ns = _by(events, "setns")
    assert [e["evidence"]["nstype"] for e in ns] == [["CLONE_NEWNET"]] and ns[0]["comm"] == "nsenter"
    gone = _by(events, "exec_deleted")
    assert len(gone) == 1 and gone[0]["severity"] == "high" and gone[0]["evidence"]["file"].startswith("/proc/self/fd/")


def test_namespaces_modules_mounts_sysctl(findings):
    root, events = findings
    ns = _by(events, "unshare")
    assert [e["evidence"]["flags"] for e in ns] == [["CLONE_NEWNET"]]
    mods = _by(events, "module_load")
    assert {e["syscall"] for e in mods} == {"finit_module", "delete_module"}
    from bpfwatch.doctor import kernel

    if kernel.config_value("CONFIG_MODULES") == "n":  # this machine: the calls fail, and the finding says why
        assert all(e["error"] == "ENOSYS" and "CONFIG_MODULES is off" in e["description"] for e in mods)
    else:  # a kernel with modules (Debian's 6.1): a bogus image and module are refused all the same
        assert all(e["error"] is not None and "kernel module" in e["description"] for e in mods)
    assert [e["evidence"]["name"] for e in mods if e["syscall"] == "delete_module"] == ["bw_nomod"]
    mounts = _by(events, "mount")
    assert any(e["evidence"]["target"] == f"{root}/mnt" and e["evidence"]["fstype"] == "tmpfs" for e in mounts)
    assert any(e["evidence"]["target"] == f"{root}/mnt" for e in _by(events, "umount"))
    sysctl = _by(events, "sysctl_write")
    assert [e["evidence"]["path"] for e in sysctl] == ["/proc/sys/kernel/printk_ratelimit"]


def test_trace_type_security_with_a_rules_file(tmp_path, no_leaks):
    rules = tmp_path / "rules.toml"
    rules.write_text("[rules.unshare]\nseverity = \"critical\"\n")
    proc = subprocess.Popen([*BPFWATCH, "trace", "--type", "security", "--rules", str(rules), "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stderr is not None
        while "ready" not in (line := proc.stderr.readline()):  # loaded: nothing from now on is missed
            assert line, "trace ended before it was ready"
        for _ in range(3):
            subprocess.run(["unshare", "--uts", "true"], check=True)
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    events = [json.loads(line) for line in out.splitlines()]
    ns = [e for e in events if e["rule"] == "unshare"]
    assert ns and ns[0]["severity"] == "critical" and ns[0]["evidence"]["flags"] == ["CLONE_NEWUTS"], err


def test_bad_rules_file_is_one_line(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text("[rules.ptrace_attach]\nseverity = \"severe\"\n")
    proc = subprocess.run([*BPFWATCH, "trace", "-t", "security", "--rules", str(rules)], capture_output=True,
                          text=True, cwd=ROOT, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("bpfwatch: rules.toml: rules.ptrace_attach.severity: 'severe' is not one of "
                                   "info, low, medium, high, critical")
