"""The decoder's layouts come from the compiled objects' BTF; hold them to the
C headers' intent and to the Python code that reads them."""

from __future__ import annotations

import numpy as np
import pytest

from bpfwatch import libbpf as L
from bpfwatch.bpf import object_path
from bpfwatch.btf_dtype import LayoutError, enum_values, struct_dtype
from bpfwatch.sensors import process as P

# what the Python side reads of each record, by name
READ_BY_DECODER = {
    "bw_exec_event": {"ts_boot_ns", "type", "pid", "tid", "cgroup_id", "start_boot_ns", "pidns", "ppid",
                      "uid", "gid", "euid", "egid", "loginuid", "ns_pid", "argc", "args_size", "args_len",
                      "exe_len", "cwd_len", "pexe_len", "flags", "comm", "pcomm", "tty"},
    "bw_fork_event": {"ts_boot_ns", "pid", "tid", "ppid", "uid", "cgroup_id", "clone_flags",
                      "child_start_boot_ns", "child_pid", "child_tid", "flags", "comm"},
    "bw_exit_event": {"ts_boot_ns", "pid", "tid", "ppid", "uid", "cgroup_id", "start_boot_ns", "utime_ns",
                      "stime_ns", "exit_code", "flags", "comm"},
}


@pytest.fixture(scope="module")
def btf():
    with L.Btf.parse(str(object_path("process"))) as b:
        yield b


@pytest.mark.parametrize("struct", sorted(READ_BY_DECODER))
def test_decoder_fields_exist_with_btf_offsets(btf, struct):
    dt = struct_dtype(btf, struct)
    assert READ_BY_DECODER[struct] <= set(dt.names)
    t = btf.find(struct, L.BTF_KIND_STRUCT)
    assert dt.itemsize == t.size_or_type
    # every field's offset and size agree with BTF, member by member
    offsets = {}
    for name, type_id, bitoff, _ in t.members():
        rt = btf.resolve(type_id)
        if rt.kind == L.BTF_KIND_STRUCT:
            for n2, t2, b2, _ in rt.members():
                offsets[n2] = ((bitoff + b2) // 8, btf.size(t2))
        elif not (rt.kind == L.BTF_KIND_ARRAY and rt.array()[1] == 0):
            offsets[name] = (bitoff // 8, btf.size(type_id))
    for name in dt.names:
        fdt, off = dt.fields[name][:2]
        assert offsets[name] == (off, fdt.itemsize), name


def test_records_are_8_byte_multiples_and_header_first(btf):
    hdr = struct_dtype(btf, "bw_hdr")
    for struct in READ_BY_DECODER:
        dt = struct_dtype(btf, struct)
        assert dt.fields["ts_boot_ns"][1] == 0 and dt.fields["type"][1] == hdr.fields["type"][1]
        assert dt.itemsize % 8 == 0


def test_event_type_ids_match_python(btf):
    ids = enum_values(btf, "bw_event_type")
    assert set(P.TYPE_NAMES) <= set(ids)


def test_argv_cap_matches_header():
    text = object_path("process").with_name("process.h").read_text()
    assert "#define BW_ARGS_MAX (128 * 1024)" in text
    assert P.ARGS_MAX == 128 * 1024


def test_char_arrays_are_strings(btf):
    dt = struct_dtype(btf, "bw_exec_event")
    assert dt.fields["comm"][0] == np.dtype("S16")


def test_unknown_struct_is_a_clear_error(btf):
    with pytest.raises(LayoutError, match="not in the object's BTF"):
        struct_dtype(btf, "no_such_struct")


@pytest.fixture(scope="module")
def vmlinux():
    from bpfwatch import libbpf as L

    with L.Btf.parse("/sys/kernel/btf/vmlinux") as b:
        yield b


@pytest.mark.parametrize("cls,struct", [("ProgInfo", "bpf_prog_info"), ("MapInfo", "bpf_map_info")])
def test_info_structs_match_the_kernel(vmlinux, cls, struct):
    """The ctypes mirrors of the UAPI info structs, held to the kernel's BTF."""
    import ctypes

    from bpfwatch import libbpf as L

    mirror = getattr(L, cls)
    kernel = {name: bitoff // 8 for name, _t, bitoff, _bits in vmlinux.find(struct, L.BTF_KIND_STRUCT).members()}
    for name, _ctype in mirror._fields_:
        assert kernel[name] == getattr(mirror, name).offset, name
    assert ctypes.sizeof(mirror) <= vmlinux.find(struct, L.BTF_KIND_STRUCT).size_or_type


def test_link_info_header_and_union_offset(vmlinux):
    from bpfwatch import libbpf as L

    members = {n: off // 8 for n, _t, off, _b in vmlinux.find("bpf_link_info", L.BTF_KIND_STRUCT).members()}
    assert members["type"] == 0 and members["id"] == 4 and members["prog_id"] == 8
    assert members[""] == L.LinkInfo.u.offset  # the anonymous union


def test_xdp_counter_layout_matches_python():
    from bpfwatch import libbpf as L
    from bpfwatch import xdp_stats
    from bpfwatch.bpf import object_path

    with L.BpfObject(str(object_path("xdpstats"))) as obj:
        btf = obj.btf()
        l3 = btf.find("bw_l3", L.BTF_KIND_ENUM).enum_members()
        l4 = btf.find("bw_l4", L.BTF_KIND_ENUM).enum_members()
        assert [k.removeprefix("BW_L3_").lower() for k, v in sorted(l3.items(), key=lambda x: x[1])
                if k != "BW_L3_N"] == list(xdp_stats.L3)
        assert [k.removeprefix("BW_L4_").lower() for k, v in sorted(l4.items(), key=lambda x: x[1])
                if k != "BW_L4_N"] == list(xdp_stats.L4)
        count = btf.find("bw_xdp_count", L.BTF_KIND_STRUCT)
        assert [(m[0], m[2] // 8) for m in count.members()] == [("packets", 0), ("bytes", 8)]
        assert obj.map("bw_xdp_counts").max_entries == l3["BW_L3_N"] * l4["BW_L4_N"]
