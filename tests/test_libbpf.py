"""The libbpf binding's error paths: each a clear one-line BpfError."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from bpfwatch import libbpf as L
from bpfwatch.bpf import object_path
from bpfwatch.errors import BpfError
from conftest import ROOT

TEST_OBJECTS = ROOT / "build" / "testbpf"


def test_version_is_new_enough():
    major, minor = (int(x) for x in L.version().split("."))
    assert (major, minor) >= L.MIN_VERSION


@pytest.mark.parametrize("content, needle", [
    (b"not an elf at all", "cannot open BPF object"),
    (b"", "cannot open BPF object"),
])
def test_bad_objects(tmp_path, content, needle):
    path = tmp_path / "bad.bpf.o"
    path.write_bytes(content)
    with pytest.raises(BpfError, match=needle) as e:
        L.BpfObject(str(path))
    assert "\n" not in str(e.value)


def test_truncated_object(tmp_path):
    src = object_path("probes").read_bytes()
    path = tmp_path / "cut.bpf.o"
    path.write_bytes(src[: len(src) // 3])
    with pytest.raises(BpfError) as e:
        L.BpfObject(str(path))
    assert "\n" not in str(e.value)


def test_missing_object(tmp_path):
    with pytest.raises(BpfError, match="No such file"):
        L.BpfObject(str(tmp_path / "nope.o"))


def test_rodata_errors():
    with L.BpfObject(str(object_path("process"))) as obj:
        with pytest.raises(KeyError, match="no global nope"):
            obj.set_rodata(nope=1)
        obj.set_rodata(flt_uid=1234)  # a real one works


@pytest.mark.kernel
def test_verifier_rejection_is_one_line_with_reason():
    # a program every kernel's verifier rejects (a map value read without the NULL check)
    with L.BpfObject(str(TEST_OBJECTS / "bad_verifier.bpf.o")) as obj, pytest.raises(BpfError) as e:
        obj.load()
    msg = str(e.value)
    assert "\n" not in msg and "bw_test_bad" in msg and "verifier:" in msg
    assert "ulimit" not in msg


@pytest.mark.kernel
def test_map_operations_roundtrip():
    with L.BpfObject(str(object_path("process"))) as obj:
        obj.map("bw_exec_scratch").max_entries = L.num_possible_cpus()
        for p in obj.programs():  # the maps alone: which exit program loads depends on the kernel
            p.autoload = False
        obj.load()
        m = obj.map("bw_tracked")
        key = (4242).to_bytes(4, "little")
        assert m.lookup(key) is None
        m.update(key, b"\1")
        assert m.lookup(key) == b"\1"
        assert list(m.keys()) == [key]
        assert m.delete(key) and not m.delete(key)
        assert obj.map("bw_lost").percpu_u64_sum(b"\0\0\0\0") == 0


def test_bpftool_is_installed_for_the_leak_checks():
    assert shutil.which("bpftool") or __import__("os").path.exists("/usr/sbin/bpftool")


def test_the_binding_keeps_no_megabytes_it_does_not_use():
    """libbpf's messages are formatted into one 8 MiB buffer (a verifier log is
    one message of megabytes); as a zeroed ctypes buffer all of it was in the
    RSS of every process that imported the binding."""
    code = ("import bpfwatch.errors\n"
            "def anon():\n"
            "    return int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('RssAnon')))\n"
            "before = anon()\n"
            "from bpfwatch import libbpf\n"
            "libbpf.lib()\n"
            "print(anon() - before)\n")
    grown_kb = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert grown_kb < 4096, f"importing the binding grew RssAnon by {grown_kb} kB"


@pytest.mark.kernel
def test_kernel_btf_is_freed_after_the_load_and_parsed_again_on_demand():
    """The sensors ask the kernel's BTF about tracepoints before they load;
    its ~6 MB are freed once they have, and a later question parses it again."""
    import bpfwatch

    L.prefetch_vmlinux_btf()
    with bpfwatch.Monitor(types=["process.exec"]):
        assert not L._vmlinux  # freed by start()
    L.tracepoint_args.cache_clear()
    assert L.tracepoint_args("sched_process_exec") == 3  # (p, pid, bprm): parsed again
    assert L._vmlinux and L._vmlinux[0] is not None
    L.release_vmlinux_btf()
    assert L.tracepoint_args("sched_process_exec") == 3  # the answer stays cached


@pytest.mark.kernel
def test_starting_a_monitor_gives_back_what_libbpf_freed():
    """libbpf parses every object's ELF and BTF and frees it after the load;
    without a trim glibc kept ~30 MB of those pages in the agent's RSS. Measured
    in a fresh interpreter, as the agent starts: a process that has loaded
    objects before has raised glibc's trim threshold, and the loader threads'
    arenas keep their free tops (~5 MB each, malloc_trim does not cut those)."""
    code = """
import bpfwatch, subprocess
def anon_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024
after = []
for i in range(4):
    m = bpfwatch.Monitor(types=["process.*", "file.*", "network.*", "dns.*", "security.*"])
    before = anon_mb()
    with m:
        subprocess.run(["true"], check=True)
        if i == 0:
            first = anon_mb() - before
    after.append(anon_mb())
print(first, after[3] - after[0])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first, later = (float(x) for x in out.split())
    assert first < 8, f"RssAnon grew {first:.1f} MB while the sensors loaded"
    # a restart (the agent's reload with other sensors) reuses what the first ones kept
    assert later < 3, f"RssAnon grew {later:.1f} MB over three more starts"
