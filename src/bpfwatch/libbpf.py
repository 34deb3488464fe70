"""The one binding to the system's libbpf.so.1 (ctypes).

Objects, programs, maps and links are Python objects that own their libbpf
handles and release them on close(); all are context managers. libbpf's log
is captured (never printed) so failures can be reported in one clear line,
with the verifier log kept for whoever asks for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_mod
import functools
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from bpfwatch.errors import BpfError, LibbpfError

MIN_VERSION = (1, 0)

# enum bpf_map_type / bpf_prog_type values used by the project
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_HASH = 5
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_PERCPU_HASH = 10
MAP_TYPE_QUEUE = 22
MAP_TYPE_RINGBUF = 27
MAP_TYPE_LRU_HASH = 9
MAP_TYPE_PERCPU_CGROUP_STORAGE = 21
PERCPU_MAP_TYPES = frozenset({MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_LRU_PERCPU_HASH,
                              MAP_TYPE_PERCPU_CGROUP_STORAGE})

_c_void_p = ctypes.c_void_p
_c_int = ctypes.c_int
_c_uint = ctypes.c_uint
_c_size_t = ctypes.c_size_t
_c_char_p = ctypes.c_char_p

# (name, restype, argtypes); functions missing from the library are tolerated
# only if listed in _OPTIONAL.
_PROTOTYPES: list[tuple[str, Any, list[Any]]] = [
    ("libbpf_major_version", ctypes.c_uint32, []),
    ("libbpf_minor_version", ctypes.c_uint32, []),
    ("libbpf_set_print", _c_void_p, [_c_void_p]),
    ("libbpf_strerror", _c_int, [_c_int, _c_char_p, _c_size_t]),
    ("libbpf_num_possible_cpus", _c_int, []),
    ("bpf_object__open_file", _c_void_p, [_c_char_p, _c_void_p]),
    ("bpf_object__load", _c_int, [_c_void_p]),
    ("bpf_object__close", None, [_c_void_p]),
    ("bpf_object__name", _c_char_p, [_c_void_p]),
    ("bpf_object__btf", _c_void_p, [_c_void_p]),
    ("bpf_object__next_program", _c_void_p, [_c_void_p, _c_void_p]),
    ("bpf_object__next_map", _c_void_p, [_c_void_p, _c_void_p]),
    ("bpf_program__name", _c_char_p, [_c_void_p]),
    ("bpf_program__section_name", _c_char_p, [_c_void_p]),
    ("bpf_program__fd", _c_int, [_c_void_p]),
    ("bpf_program__type", _c_int, [_c_void_p]),
    ("bpf_program__insn_cnt", _c_size_t, [_c_void_p]),
    ("bpf_program__set_autoload", _c_int, [_c_void_p, ctypes.c_bool]),
    ("bpf_program__autoload", ctypes.c_bool, [_c_void_p]),
    ("bpf_program__set_autoattach", None, [_c_void_p, ctypes.c_bool]),
    ("bpf_program__autoattach", ctypes.c_bool, [_c_void_p]),
    ("bpf_program__attach", _c_void_p, [_c_void_p]),
    ("bpf_program__attach_xdp", _c_void_p, [_c_void_p, _c_int]),
    ("bpf_program__attach_cgroup", _c_void_p, [_c_void_p, _c_int]),
    ("bpf_program__attach_uprobe", _c_void_p,
     [_c_void_p, ctypes.c_bool, _c_int, _c_char_p, _c_size_t]),
    ("bpf_program__attach_uprobe_opts", _c_void_p, [_c_void_p, _c_int, _c_char_p, _c_size_t, _c_void_p]),
    ("bpf_program__attach_tracepoint", _c_void_p, [_c_void_p, _c_char_p, _c_char_p]),
    ("bpf_program__attach_raw_tracepoint", _c_void_p, [_c_void_p, _c_char_p]),
    ("bpf_program__attach_kprobe", _c_void_p, [_c_void_p, ctypes.c_bool, _c_char_p]),
    ("bpf_program__attach_trace", _c_void_p, [_c_void_p]),
    ("bpf_program__attach_lsm", _c_void_p, [_c_void_p]),
    ("bpf_program__expected_attach_type", _c_int, [_c_void_p]),
    ("bpf_program__set_type", _c_int, [_c_void_p, _c_int]),
    ("bpf_program__set_expected_attach_type", _c_int, [_c_void_p, _c_int]),
    ("bpf_link__pin", _c_int, [_c_void_p, _c_char_p]),
    ("bpf_link__disconnect", None, [_c_void_p]),
    ("bpf_program__set_attach_target", _c_int, [_c_void_p, _c_int, _c_char_p]),
    ("bpf_xdp_detach", _c_int, [_c_int, ctypes.c_uint32, _c_void_p]),
    ("bpf_object__open_mem", _c_void_p, [_c_void_p, _c_size_t, _c_void_p]),
    ("bpf_link__destroy", _c_int, [_c_void_p]),
    ("bpf_link__fd", _c_int, [_c_void_p]),
    ("bpf_map__fd", _c_int, [_c_void_p]),
    ("bpf_map__name", _c_char_p, [_c_void_p]),
    ("bpf_map__type", _c_int, [_c_void_p]),
    ("bpf_map__key_size", ctypes.c_uint32, [_c_void_p]),
    ("bpf_map__value_size", ctypes.c_uint32, [_c_void_p]),
    ("bpf_map__max_entries", ctypes.c_uint32, [_c_void_p]),
    ("bpf_map__set_max_entries", _c_int, [_c_void_p, ctypes.c_uint32]),
    ("bpf_map__initial_value", _c_void_p, [_c_void_p, ctypes.POINTER(_c_size_t)]),
    ("bpf_map__btf_value_type_id", ctypes.c_uint32, [_c_void_p]),
    ("bpf_map__reuse_fd", _c_int, [_c_void_p, _c_int]),
    ("bpf_map_lookup_elem", _c_int, [_c_int, _c_void_p, _c_void_p]),
    ("bpf_map_update_elem", _c_int, [_c_int, _c_void_p, _c_void_p, ctypes.c_uint64]),
    ("bpf_map_delete_elem", _c_int, [_c_int, _c_void_p]),
    ("bpf_map_lookup_and_delete_elem", _c_int, [_c_int, _c_void_p, _c_void_p]),
    ("bpf_map_get_next_key", _c_int, [_c_int, _c_void_p, _c_void_p]),
    ("bpf_map_lookup_batch", _c_int,
     [_c_int, _c_void_p, _c_void_p, _c_void_p, _c_void_p, ctypes.POINTER(ctypes.c_uint32), _c_void_p]),
    ("bpf_map_update_batch", _c_int,
     [_c_int, _c_void_p, _c_void_p, ctypes.POINTER(ctypes.c_uint32), _c_void_p]),
    ("bpf_map_create", _c_int,
     [_c_int, _c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, _c_void_p]),
    ("bpf_link_create", _c_int, [_c_int, _c_int, _c_int, _c_void_p]),
    ("libbpf_probe_bpf_helper", _c_int, [_c_int, _c_int, _c_void_p]),
    ("bpf_link_detach", _c_int, [_c_int]),
    ("bpf_obj_pin", _c_int, [_c_int, _c_char_p]),
    ("bpf_obj_get", _c_int, [_c_char_p]),
    ("bpf_prog_get_next_id", _c_int, [ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]),
    ("bpf_map_get_next_id", _c_int, [ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]),
    ("bpf_link_get_next_id", _c_int, [ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]),
    ("bpf_prog_get_fd_by_id", _c_int, [ctypes.c_uint32]),
    ("bpf_map_get_fd_by_id", _c_int, [ctypes.c_uint32]),
    ("bpf_link_get_fd_by_id", _c_int, [ctypes.c_uint32]),
    ("bpf_prog_test_run_opts", _c_int, [_c_int, _c_void_p]),
    ("bpf_xdp_query", _c_int, [_c_int, _c_int, _c_void_p]),
    ("bpf_tc_hook_create", _c_int, [_c_void_p]),
    ("bpf_tc_hook_destroy", _c_int, [_c_void_p]),
    ("bpf_tc_attach", _c_int, [_c_void_p, _c_void_p]),
    ("bpf_tc_detach", _c_int, [_c_void_p, _c_void_p]),
    ("btf__load_from_kernel_by_id", _c_void_p, [ctypes.c_uint32]),
    ("bpf_obj_get_info_by_fd", _c_int, [_c_int, _c_void_p, ctypes.POINTER(ctypes.c_uint32)]),
    ("bpf_enable_stats", _c_int, [_c_int]),
    ("btf__parse", _c_void_p, [_c_char_p, _c_void_p]),
    ("btf__free", None, [_c_void_p]),
    ("btf__type_cnt", ctypes.c_uint32, [_c_void_p]),
    ("btf__type_by_id", _c_void_p, [_c_void_p, ctypes.c_uint32]),
    ("btf__name_by_offset", _c_char_p, [_c_void_p, ctypes.c_uint32]),
    ("btf__find_by_name_kind", ctypes.c_int32, [_c_void_p, _c_char_p, ctypes.c_uint32]),
    ("btf__resolve_size", ctypes.c_int64, [_c_void_p, ctypes.c_uint32]),
]
_OPTIONAL: set[str] = set()

_PRINT_FN = ctypes.CFUNCTYPE(_c_int, _c_int, _c_char_p, _c_void_p)

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [_c_char_p, _c_size_t, _c_char_p, _c_void_p]
_libc.vsnprintf.restype = _c_int
if hasattr(_libc, "malloc_trim"):  # glibc only
    _libc.malloc_trim.argtypes, _libc.malloc_trim.restype = [_c_size_t], _c_int
    # One malloc arena for every thread. Objects load on parallel threads, and
    # glibc gives each its own arena, whose free top malloc_trim cannot cut:
    # after a first load has raised the dynamic trim threshold, every restart
    # (a reload with other sensors) kept ~5 MB per loader thread. Python
    # allocates under the GIL, so one arena costs no contention (measured: the
    # trace pipeline's us/event is unchanged). Takes effect only before a
    # second thread has allocated, hence here, at import.
    _libc.mallopt.argtypes, _libc.mallopt.restype = [_c_int, _c_int], _c_int
    _libc.mallopt(-8, 1)  # M_ARENA_MAX


class _Log:
    """libbpf's messages, kept per thread so each load can report its own."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.echo = bool(os.environ.get("BPFWATCH_LIBBPF_DEBUG"))
        self.sink: Callable[[str], None] | None = None  # every message, debug ones included (agent debug)

    @property
    def lines(self) -> list[str]:
        lines = getattr(self._local, "lines", None)
        if lines is None:
            lines = self._local.lines = []
        return lines

    def mark(self) -> int:
        return len(self.lines)

    def since(self, mark: int) -> list[str]:
        return self.lines[mark:]

    def clear(self) -> None:
        self.lines.clear()

    def add(self, text: str) -> None:
        lines = self.lines
        lines.append(text)
        if len(lines) > 20000:  # bounded: verifier logs can be huge
            del lines[: len(lines) - 20000]
        if self.echo:
            os.write(2, text.encode() + b"\n")
        if self.sink is not None:
            self.sink(text)


log = _Log()


# One reused buffer: verifier logs arrive as a single multi-megabyte message. It is
# an anonymous mapping, so only the pages the longest message so far reached are
# in memory: a zeroed ctypes buffer put all 8 MiB in every process's RSS.
_print_map = mmap.mmap(-1, 8 << 20)
_print_buf = (ctypes.c_char * len(_print_map)).from_buffer(_print_map)
_print_lock = threading.Lock()


LIBBPF_DEBUG = 2  # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2


def _on_print(level: int, fmt: bytes, args: int) -> int:
    if level >= LIBBPF_DEBUG and not log.echo and log.sink is None:
        return 0  # hundreds of lines per load; verifier logs come as warnings
    with _print_lock:
        n = _libc.vsnprintf(_print_buf, len(_print_buf), fmt, args)
        text = ctypes.string_at(_print_buf, min(max(n, 0), len(_print_buf) - 1))
    log.add(text.decode(errors="replace").rstrip("\n"))
    return 0


_print_cb = _PRINT_FN(_on_print)


def lib() -> ctypes.CDLL:
    """The loaded libbpf, with prototypes set; raises LibbpfError if unusable."""
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        name = os.environ.get("BPFWATCH_LIBBPF", "libbpf.so.1")
        try:
            cdll = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise LibbpfError(
                f"libbpf cannot be loaded ({e}): install it with 'apt-get install libbpf1'"
                " or point BPFWATCH_LIBBPF at a libbpf.so.1"
            ) from None
        for fname, restype, argtypes in _PROTOTYPES:
            try:
                fn = getattr(cdll, fname)
            except AttributeError:
                if fname in _OPTIONAL:
                    continue
                raise LibbpfError(
                    f"{name} lacks {fname}(): libbpf >= {MIN_VERSION[0]}.{MIN_VERSION[1]} "
                    "is required; install it with 'apt-get install libbpf1'"
                ) from None
            fn.restype = restype
            fn.argtypes = argtypes
        ver = (cdll.libbpf_major_version(), cdll.libbpf_minor_version())
        if ver < MIN_VERSION:
            raise LibbpfError(
                f"libbpf {ver[0]}.{ver[1]} is too old: bpfwatch needs >= "
                f"{MIN_VERSION[0]}.{MIN_VERSION[1]} (apt-get install libbpf1)"
            )
        cdll.libbpf_set_print(ctypes.cast(_print_cb, _c_void_p))
        _lib = cdll
        return cdll


def version() -> str:
    lb = lib()
    return f"{lb.libbpf_major_version()}.{lb.libbpf_minor_version()}"


def num_possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise BpfError("cannot read the number of possible CPUs", -n)
    return n


def kernel_has_tracepoint(name: str) -> bool:
    """Whether the running kernel has a BTF tracepoint (for tp_btf programs);
    looked up in the kernel's BTF parsed once, not once per question."""
    return tracepoint_args(name) is not None


_vmlinux_lock = threading.RLock()
_vmlinux: list[Btf | None] = []  # [the parsed BTF or None] once parsed


def vmlinux_btf() -> Btf | None:
    """The running kernel's BTF (parsed once, about 9 ms), or None without it.
    A caller that comes while a prefetch parses waits for that parse."""
    with _vmlinux_lock:
        if not _vmlinux:
            try:
                _vmlinux.append(Btf.parse("/sys/kernel/btf/vmlinux"))
            except (BpfError, OSError):
                _vmlinux.append(None)
        return _vmlinux[0]


def release_vmlinux_btf() -> None:
    """Frees the parsed kernel BTF (about 6 MB) once the sensors are loaded:
    what they asked of it stays cached, and a later question parses it again."""
    with _vmlinux_lock:
        if _vmlinux and _vmlinux[0] is not None:
            _vmlinux[0].close()
        _vmlinux.clear()


def prefetch_vmlinux_btf() -> None:
    """Parses the kernel's BTF on another thread, while the caller imports
    (libbpf lets go of the GIL): sensors ask it about tracepoints before loading."""
    if not _vmlinux:
        threading.Thread(target=_prefetch, name="bw-btf", daemon=True).start()


def _prefetch() -> None:
    # a failure here (no libbpf at all) is the caller's to report, in its own words
    with contextlib.suppress(Exception):
        vmlinux_btf()


@functools.lru_cache(maxsize=64)
def tracepoint_args(name: str) -> int | None:
    """How many arguments a BTF tracepoint passes (its btf_trace_NAME
    typedef, without the context pointer); None when the kernel has none.
    Arguments change between kernels (sched_process_exit gained group_dead)."""
    with _vmlinux_lock:  # held while it is read: release_vmlinux_btf() frees it
        btf = vmlinux_btf()
        if btf is None:
            return None
        try:
            proto = btf.resolve(btf.resolve(btf.find(f"btf_trace_{name}", BTF_KIND_TYPEDEF).id).size_or_type)
        except KeyError:
            return None
        return max(proto.vlen - 1, 0)


def strerror(err: int) -> str:
    err = abs(err)
    buf = ctypes.create_string_buffer(256)
    if lib().libbpf_strerror(err, buf, len(buf)) == 0:
        return buf.value.decode()
    return os.strerror(err)


def _errno() -> int:
    return ctypes.get_errno() or errno_mod.EINVAL


def _check_ptr(ptr: int | None, what: str) -> int:
    if not ptr:
        err = _errno()
        raise BpfError(f"{what}: {strerror(err)}", err)
    return ptr


def _check_rc(rc: int, what: str) -> int:
    if rc < 0:
        raise BpfError(f"{what}: {strerror(rc)}", -rc)
    return rc


# ---- BTF -------------------------------------------------------------------

BTF_KIND_INT = 1
BTF_KIND_PTR = 2
BTF_KIND_ARRAY = 3
BTF_KIND_STRUCT = 4
BTF_KIND_UNION = 5
BTF_KIND_ENUM = 6
BTF_KIND_TYPEDEF = 8
BTF_KIND_VOLATILE = 9
BTF_KIND_CONST = 10
BTF_KIND_RESTRICT = 11
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15
BTF_KIND_FLOAT = 16
BTF_KIND_TYPE_TAG = 18
BTF_KIND_ENUM64 = 19

_MODIFIERS = {BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT,
              BTF_KIND_TYPE_TAG}


class BtfType:
    """One decoded BTF type record (name, kind, size/type, and members)."""

    __slots__ = ("_addr", "_btf", "id", "kflag", "kind", "name", "size_or_type", "vlen")

    def __init__(self, btf: Btf, type_id: int) -> None:
        addr = _check_ptr(lib().btf__type_by_id(btf.ptr, type_id), f"BTF type {type_id}")
        name_off, info, size_or_type = (ctypes.c_uint32 * 3).from_address(addr)
        self._btf = btf
        self._addr = addr
        self.id = type_id
        self.name = btf.name(name_off)
        self.kind = (info >> 24) & 0x1F
        self.vlen = info & 0xFFFF
        self.kflag = bool(info >> 31)
        self.size_or_type = size_or_type

    def _extra(self, n_words: int) -> list[int]:
        return list((ctypes.c_uint32 * n_words).from_address(self._addr + 12))

    def int_encoding(self) -> tuple[bool, int]:
        """(signed, bits) of an INT type."""
        (enc,) = self._extra(1)
        return bool((enc >> 24) & 1), enc & 0xFF

    def members(self) -> list[tuple[str, int, int, int]]:
        """(name, type id, bit offset, bitfield size) of a STRUCT/UNION."""
        words = self._extra(3 * self.vlen)
        out = []
        for i in range(self.vlen):
            name_off, type_id, offset = words[3 * i: 3 * i + 3]
            bitsize = offset >> 24 if self.kflag else 0
            bitoff = offset & 0xFFFFFF if self.kflag else offset
            out.append((self._btf.name(name_off), type_id, bitoff, bitsize))
        return out

    def array(self) -> tuple[int, int]:
        """(element type id, number of elements) of an ARRAY."""
        elem, _index, nelems = self._extra(3)
        return elem, nelems

    def enum_members(self) -> dict[str, int]:
        """name -> value of an ENUM."""
        words = (ctypes.c_int32 * (2 * self.vlen)).from_address(self._addr + 12)
        return {self._btf.name(words[2 * i] & 0xFFFFFFFF): words[2 * i + 1] for i in range(self.vlen)}

    def datasec_vars(self) -> list[tuple[str, int, int]]:
        """(variable name, offset, size) of a DATASEC."""
        words = self._extra(3 * self.vlen)
        out = []
        for i in range(self.vlen):
            var_id, offset, size = words[3 * i: 3 * i + 3]
            out.append((self._btf.type(var_id).name, offset, size))
        return out


class Btf:
    """BTF of an object or a file; owned (freed on close) only if parsed here."""

    def __init__(self, ptr: int, owned: bool = False) -> None:
        self.ptr = ptr
        self._owned = owned

    @classmethod
    def parse(cls, path: str) -> Btf:
        ptr = _check_ptr(lib().btf__parse(os.fsencode(path), None), f"BTF of {path}")
        return cls(ptr, owned=True)

    def close(self) -> None:
        if self._owned and self.ptr:
            lib().btf__free(self.ptr)
        self.ptr = 0

    def __enter__(self) -> Btf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def name(self, off: int) -> str:
        raw = lib().btf__name_by_offset(self.ptr, off)
        return raw.decode() if raw else ""

    def type(self, type_id: int) -> BtfType:
        return BtfType(self, type_id)

    def find(self, name: str, kind: int) -> BtfType:
        tid = lib().btf__find_by_name_kind(self.ptr, name.encode(), kind)
        if tid < 0:
            raise KeyError(name)
        return self.type(tid)

    def resolve(self, type_id: int) -> BtfType:
        """Follows typedefs and qualifiers to the underlying type."""
        t = self.type(type_id)
        while t.kind in _MODIFIERS:
            t = self.type(t.size_or_type)
        return t

    def size(self, type_id: int) -> int:
        return _check_rc(lib().btf__resolve_size(self.ptr, type_id), f"size of BTF type {type_id}")

    def type_count(self) -> int:
        return lib().btf__type_cnt(self.ptr)


# ---- objects, programs, maps, links -----------------------------------------


class Link:
    """An attachment; detached on close()."""

    def __init__(self, ptr: int, what: str) -> None:
        self.ptr = ptr
        self.what = what

    @property
    def fd(self) -> int:
        return lib().bpf_link__fd(self.ptr)

    def close(self) -> None:
        if self.ptr:
            lib().bpf_link__destroy(self.ptr)
            self.ptr = 0

    def pin(self, path: str) -> None:
        """Pins the link in bpffs; it then outlives this process (close() only
        lets go of it, without detaching)."""
        _check_rc(lib().bpf_link__pin(self.ptr, os.fsencode(path)), f"pin link at {path}")
        lib().bpf_link__disconnect(self.ptr)

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Program:
    def __init__(self, obj: BpfObject, ptr: int) -> None:
        self.obj = obj
        self.ptr = ptr
        self.name = lib().bpf_program__name(ptr).decode()
        self.section = (lib().bpf_program__section_name(ptr) or b"").decode()

    @property
    def fd(self) -> int:
        return lib().bpf_program__fd(self.ptr)

    @property
    def prog_type(self) -> int:
        return lib().bpf_program__type(self.ptr)

    @property
    def insn_count(self) -> int:
        return lib().bpf_program__insn_cnt(self.ptr)

    @property
    def autoload(self) -> bool:
        return bool(lib().bpf_program__autoload(self.ptr))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        _check_rc(lib().bpf_program__set_autoload(self.ptr, value), f"autoload of {self.name}")

    @property
    def autoattach(self) -> bool:
        """Whether attach_all() attaches it (a loaded program may run only as
        another's tail call)."""
        return bool(lib().bpf_program__autoattach(self.ptr))

    @autoattach.setter
    def autoattach(self, value: bool) -> None:
        lib().bpf_program__set_autoattach(self.ptr, value)

    def _link(self, ptr: int | None, what: str) -> Link:
        mark = log.mark()
        if not ptr:
            err = _errno()
            detail = _last_error_line(log.since(mark))
            raise BpfError(f"attach {self.name} ({what}): {strerror(err)}"
                           + (f" [{detail}]" if detail else ""), err)
        link = Link(ptr, what)
        self.obj._links.append(link)
        return link

    def attach(self) -> Link:
        """Attaches by section name (tp_btf/..., raw_tp/..., tp/..., ...)."""
        return self._link(lib().bpf_program__attach(self.ptr), self.section)

    def attach_xdp(self, ifindex: int) -> Link:
        return self._link(lib().bpf_program__attach_xdp(self.ptr, ifindex), f"xdp ifindex {ifindex}")

    def attach_cgroup(self, cgroup_fd: int) -> Link:
        return self._link(lib().bpf_program__attach_cgroup(self.ptr, cgroup_fd), "cgroup")

    def attach_uprobe(self, binary: str, offset: int, pid: int = -1, retprobe: bool = False) -> Link:
        ptr = lib().bpf_program__attach_uprobe(self.ptr, retprobe, pid, os.fsencode(binary), offset)
        return self._link(ptr, f"uprobe {binary}+{offset:#x}")

    def attach_uprobe_func(self, binary: str, func: str, pid: int = -1, retprobe: bool = False) -> Link:
        """A uprobe on a function found by name in the binary's symbols."""
        opts = _UprobeOpts(sz=ctypes.sizeof(_UprobeOpts), retprobe=retprobe, func_name=func.encode())
        ptr = lib().bpf_program__attach_uprobe_opts(self.ptr, pid, os.fsencode(binary), 0, ctypes.byref(opts))
        return self._link(ptr, f"uprobe {binary}:{func}")

    def attach_tracepoint(self, category: str, name: str) -> Link:
        ptr = lib().bpf_program__attach_tracepoint(self.ptr, category.encode(), name.encode())
        return self._link(ptr, f"tracepoint {category}:{name}")

    def attach_raw_tracepoint(self, name: str) -> Link:
        return self._link(lib().bpf_program__attach_raw_tracepoint(self.ptr, name.encode()), f"raw_tp {name}")

    def attach_kprobe(self, func: str, retprobe: bool = False) -> Link:
        return self._link(lib().bpf_program__attach_kprobe(self.ptr, retprobe, func.encode()), f"kprobe {func}")

    def attach_trace(self) -> Link:
        """fentry/fexit/tp_btf, at the target named when the object was opened."""
        return self._link(lib().bpf_program__attach_trace(self.ptr), self.section)

    def attach_lsm(self) -> Link:
        return self._link(lib().bpf_program__attach_lsm(self.ptr), self.section)

    def set_attach_target(self, name: str) -> None:
        """Before load: the kernel function or tracepoint of a BTF-targeted program."""
        _check_rc(lib().bpf_program__set_attach_target(self.ptr, 0, name.encode()),
                  f"attach target {name} of {self.name}")

    @property
    def expected_attach_type(self) -> int:
        return lib().bpf_program__expected_attach_type(self.ptr)


class MapOps:
    """Element operations on a map fd; subclasses say what the map is."""

    name: str

    @property
    def fd(self) -> int:
        raise NotImplementedError

    @property
    def map_type(self) -> int:
        raise NotImplementedError

    @property
    def key_size(self) -> int:
        raise NotImplementedError

    @property
    def value_size(self) -> int:
        raise NotImplementedError

    @property
    def percpu(self) -> bool:
        return self.map_type in PERCPU_MAP_TYPES

    def _value_len(self) -> int:
        if self.percpu:
            return ((self.value_size + 7) // 8) * 8 * num_possible_cpus()
        return self.value_size

    def lookup(self, key: bytes) -> bytes | None:
        val = ctypes.create_string_buffer(self._value_len())
        rc = lib().bpf_map_lookup_elem(self.fd, key, val)
        if rc < 0:
            if -rc == errno_mod.ENOENT:
                return None
            _check_rc(rc, f"lookup in map {self.name}")
        return val.raw

    def update(self, key: bytes | None, value: bytes, flags: int = 0) -> None:
        """key None pushes onto a queue or stack map."""
        _check_rc(lib().bpf_map_update_elem(self.fd, key, value, flags), f"update of map {self.name}")

    def array_range(self, start: int, count: int) -> bytes:
        """Values of array keys [start, start + count) read in batches, one
        after another (per-CPU maps: every CPU's copy, each padded to 8 bytes)."""
        vlen = self._value_len()
        keys = (ctypes.c_uint32 * count)()
        vals = ctypes.create_string_buffer(vlen * count)
        got = 0
        while got < count:
            n = ctypes.c_uint32(count - got)
            prev = ctypes.c_uint32(start + got - 1)
            out = ctypes.c_uint32()
            rc = lib().bpf_map_lookup_batch(self.fd, ctypes.byref(prev) if start + got else None,
                                            ctypes.byref(out), ctypes.byref(keys, 4 * got),
                                            ctypes.byref(vals, vlen * got), ctypes.byref(n), None)
            got += n.value
            if rc < 0:
                if -rc == errno_mod.ENOENT:
                    break
                _check_rc(rc, f"batch lookup in map {self.name}")
            if not n.value:
                break
        if got != count:
            raise BpfError(f"map {self.name}: read {got} of keys {start}..{start + count - 1}",
                           errno_mod.ERANGE)
        return vals.raw

    def zero_range(self, start: int, count: int) -> None:
        """Sets array keys [start, start + count) to zero in one call."""
        keys = (ctypes.c_uint32 * count)(*range(start, start + count))
        vals = ctypes.create_string_buffer(self._value_len() * count)
        n = ctypes.c_uint32(count)
        _check_rc(lib().bpf_map_update_batch(self.fd, keys, vals, ctypes.byref(n), None),
                  f"batch update of map {self.name}")

    def delete(self, key: bytes) -> bool:
        rc = lib().bpf_map_delete_elem(self.fd, key)
        if rc < 0 and -rc == errno_mod.ENOENT:
            return False
        _check_rc(rc, f"delete from map {self.name}")
        return True

    def pop(self, key: bytes) -> bytes | None:
        """Atomically reads and deletes an entry (hash maps, Linux >= 5.14)."""
        val = ctypes.create_string_buffer(self._value_len())
        rc = lib().bpf_map_lookup_and_delete_elem(self.fd, key, val)
        if rc < 0:
            if -rc == errno_mod.ENOENT:
                return None
            _check_rc(rc, f"lookup-and-delete in map {self.name}")
        return val.raw

    def keys(self) -> Iterator[bytes]:
        key = ctypes.create_string_buffer(self.key_size)
        prev: bytes | None = None
        while True:
            rc = lib().bpf_map_get_next_key(self.fd, prev, key)
            if rc < 0:
                if -rc == errno_mod.ENOENT:
                    return
                _check_rc(rc, f"iteration of map {self.name}")
            prev = key.raw
            yield prev

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def percpu_u64_sum(self, key: bytes) -> int:
        """Sum over CPUs of a per-CPU u64 value (counters)."""
        raw = self.lookup(key)
        if raw is None:
            return 0
        step = ((self.value_size + 7) // 8) * 8
        return sum(int.from_bytes(raw[i: i + 8], "little") for i in range(0, len(raw), step))



class Map(MapOps):
    """A map of an opened BPF object."""

    def __init__(self, obj: BpfObject | None, ptr: int) -> None:
        self.obj = obj
        self.ptr = ptr
        self.name = lib().bpf_map__name(ptr).decode()

    @property
    def fd(self) -> int:
        return lib().bpf_map__fd(self.ptr)

    @property
    def map_type(self) -> int:
        return lib().bpf_map__type(self.ptr)

    @property
    def key_size(self) -> int:
        return lib().bpf_map__key_size(self.ptr)

    @property
    def value_size(self) -> int:
        return lib().bpf_map__value_size(self.ptr)

    @property
    def max_entries(self) -> int:
        return lib().bpf_map__max_entries(self.ptr)

    @max_entries.setter
    def max_entries(self, n: int) -> None:
        _check_rc(lib().bpf_map__set_max_entries(self.ptr, n), f"max_entries of map {self.name}")

    def reuse_fd(self, fd: int) -> None:
        """Before load: use an existing map (e.g. one shared by several objects)."""
        _check_rc(lib().bpf_map__reuse_fd(self.ptr, fd), f"sharing map {self.name}")


class BpfObject:
    """An opened (then loaded) BPF ELF object with its programs and maps.

    Everything it created, links included, is released by close().
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self._links: list[Link] = []
        self.loaded = False
        mark = log.mark()
        ptr = lib().bpf_object__open_file(os.fsencode(self.path), None)
        if not ptr:
            err = _errno()
            detail = _last_error_line(log.since(mark))
            raise BpfError(f"cannot open BPF object {self.path}: {strerror(err)}"
                           + (f" ({detail})" if detail else ""), err)
        self.ptr = ptr
        self.name = lib().bpf_object__name(ptr).decode()

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for link in reversed(self._links):
            link.close()
        self._links.clear()
        if self.ptr:
            lib().bpf_object__close(self.ptr)
            self.ptr = 0

    @property
    def closed(self) -> bool:
        return not self.ptr

    def programs(self) -> list[Program]:
        out = []
        p = lib().bpf_object__next_program(self.ptr, None)
        while p:
            out.append(Program(self, p))
            p = lib().bpf_object__next_program(self.ptr, p)
        return out

    def maps(self) -> list[Map]:
        out = []
        m = lib().bpf_object__next_map(self.ptr, None)
        while m:
            out.append(Map(self, m))
            m = lib().bpf_object__next_map(self.ptr, m)
        return out

    def program(self, name: str) -> Program:
        for p in self.programs():
            if p.name == name:
                return p
        raise KeyError(f"no program {name} in {self.path}")

    def has_map(self, name: str) -> bool:
        return any(m.name == name for m in self.maps())

    def map(self, name: str) -> Map:
        for m in self.maps():
            if m.name == name:
                return m
        raise KeyError(f"no map {name} in {self.path}")

    def btf(self) -> Btf:
        return Btf(_check_ptr(lib().bpf_object__btf(self.ptr), f"BTF of {self.path}"))

    def has_global(self, name: str, section: str = ".rodata") -> bool:
        """Whether the object has the global `name` in `section`."""
        try:
            datasec = self.btf().find(section, BTF_KIND_DATASEC)
        except KeyError:
            return False
        return any(n == name for n, _off, _size in datasec.datasec_vars())

    def set_rodata(self, **values: int) -> None:
        """Sets `const volatile` globals before load (integers only)."""
        self._set_section(".rodata", values)

    def _set_section(self, section: str, values: dict[str, int]) -> None:
        if self.loaded:
            raise BpfError(f"{section} of {self.name} can only be set before load", errno_mod.EBUSY)
        m = next((m for m in self.maps() if m.name.endswith(section)), None)
        if m is None:
            raise KeyError(f"{self.path} has no {section} section")
        size = _c_size_t()
        base = _check_ptr(lib().bpf_map__initial_value(m.ptr, ctypes.byref(size)), section)
        layout = {n: (off, sz) for n, off, sz in self.btf().find(section, BTF_KIND_DATASEC).datasec_vars()}
        for name, value in values.items():
            if name not in layout:
                raise KeyError(f"{self.path} has no global {name} in {section}")
            off, sz = layout[name]
            data = int(value).to_bytes(sz, "little", signed=value < 0)
            ctypes.memmove(base + off, data, sz)

    def load(self) -> None:
        mark = log.mark()
        rc = lib().bpf_object__load(self.ptr)
        if rc < 0:
            lines = log.since(mark)
            raise BpfError(_load_failure(self.path, -rc, lines), -rc, log="\n".join(lines))
        self.loaded = True

    def attach_all(self) -> list[Link]:
        """Attaches every loaded program by its section name, but those set
        not to (autoattach off)."""
        return [p.attach() for p in self.programs() if p.autoload and p.autoattach]


def _useful(lines: list[str]) -> list[str]:
    """libbpf lines minus its 'try raising ulimit -l' hint, wrong on kernels
    that account BPF memory to the cgroup (5.11+)."""
    return [ln for ln in lines if "ulimit -l" not in ln and ln.strip()]


def _last_error_line(lines: list[str]) -> str:
    for line in reversed(_useful(lines)):
        if "failed" in line or "error" in line.lower() or "invalid" in line.lower():
            return line.strip().removeprefix("libbpf: ")
    return ""


def _load_failure(path: str, err: int, lines: list[str]) -> str:
    """One line saying why a load failed, with the verifier's last words."""
    verifier: list[str] = []
    inside = False
    prog = ""
    # libbpf's messages may hold several lines each: look at lines, not messages
    for line in (x for message in lines for x in message.splitlines()):
        if "-- BEGIN PROG LOAD LOG --" in line:
            inside, verifier = True, []
            continue
        if "-- END PROG LOAD LOG --" in line:
            inside = False
            continue
        if inside:
            if line.strip():
                verifier.append(line)
        elif "prog '" in line and "failed to load" in line:
            prog = line.split("prog '", 1)[1].split("'", 1)[0]
    reason = "the kernel refused it (EPERM)" if err == errno_mod.EPERM else strerror(err)
    msg = f"cannot load {os.path.basename(path)}"
    if prog:
        msg += f" program {prog}"
    msg += f": {reason}"
    tail = [v.strip() for v in verifier if not v.startswith(("processed ", "verification time"))]
    if tail:
        msg += f"; verifier: {tail[-1]}"
    elif not prog and lines:
        detail = _last_error_line(lines)
        if detail:
            msg += f" ({detail})"
    return msg


PROG_TYPE_SOCKET_FILTER = 1
HELPER_IDS = {"bpf_loop": 181, "bpf_ringbuf_reserve": 131, "bpf_get_current_task_btf": 158}


def helper_available(name: str, prog_type: int = PROG_TYPE_SOCKET_FILTER) -> bool:
    """Whether the kernel offers a BPF helper (libbpf loads a tiny program to see)."""
    return lib().libbpf_probe_bpf_helper(prog_type, HELPER_IDS[name], None) == 1


def trim_heap() -> None:
    """Gives the C heap's free pages back to the kernel (glibc's malloc_trim;
    nothing elsewhere). Loading objects makes libbpf parse ELF files and BTF
    and then free it all, and glibc keeps the pages: ~30 MB of RSS after a
    Monitor's objects were opened in the main thread."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, name: str = "") -> int:
    """Creates a standalone map and returns its fd (caller closes it)."""
    fd = lib().bpf_map_create(map_type, name.encode() or None, key_size, value_size, max_entries, None)
    return _check_rc(fd, f"create map type {map_type}")


class _LinkCreateOpts(ctypes.Structure):
    _fields_ = [("sz", _c_size_t), ("flags", ctypes.c_uint32), ("iter_info", _c_void_p),
                ("iter_info_len", ctypes.c_uint32), ("target_btf_id", ctypes.c_uint32),
                ("u", ctypes.c_uint64 * 5)]


def link_create(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0) -> int:
    """bpf(BPF_LINK_CREATE) for attach types libbpf 1.1 has no helper for;
    flags go to the kernel as they are (e.g. the mode of an XDP link)."""
    opts = _LinkCreateOpts(sz=ctypes.sizeof(_LinkCreateOpts), flags=flags)
    return _check_rc(lib().bpf_link_create(prog_fd, target_fd, attach_type, ctypes.byref(opts)),
                     f"link type {attach_type}")


def prog_info(fd: int) -> dict[str, Any]:
    """bpf(BPF_OBJ_GET_INFO_BY_FD) on a program: id, name, tag and, while
    kernel BPF statistics are on, run_cnt and run_time_ns."""
    info = prog_info_full(fd, with_map_ids=False)[0]
    return {"type": info.type, "id": info.id, "tag": bytes(info.tag).hex(), "load_time": info.load_time,
            "created_by_uid": info.created_by_uid, "name": info.name.decode(errors="replace"),
            "run_time_ns": info.run_time_ns, "run_cnt": info.run_cnt,
            "recursion_misses": info.recursion_misses, "verified_insns": info.verified_insns}


BPF_STATS_RUN_TIME = 0


def enable_stats() -> int:
    """Turns on the kernel's per-program run count and time for as long as the
    returned fd stays open (needs CAP_SYS_ADMIN); the caller closes it."""
    return _check_rc(lib().bpf_enable_stats(BPF_STATS_RUN_TIME), "enable BPF statistics")


def stats_enabled() -> bool:
    """Whether run statistics are on (the sysctl, or someone's enable fd)."""
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            return f.read().strip() != "0"
    except OSError:
        return False


class _UprobeOpts(ctypes.Structure):
    _fields_ = [("sz", _c_size_t), ("ref_ctr_offset", _c_size_t), ("bpf_cookie", ctypes.c_uint64),
                ("retprobe", ctypes.c_bool), ("func_name", _c_char_p)]


# ---- kernel-wide objects: ids, fds, pins, info --------------------------------

def next_ids(kind: str) -> Iterator[int]:
    """Ids of every loaded program, map or link ("prog", "map", "link")."""
    fn = {"prog": lib().bpf_prog_get_next_id, "map": lib().bpf_map_get_next_id,
          "link": lib().bpf_link_get_next_id}[kind]
    cur = ctypes.c_uint32(0)
    nxt = ctypes.c_uint32()
    while True:
        rc = fn(cur.value, ctypes.byref(nxt))
        if rc < 0:
            if -rc == errno_mod.ENOENT:
                return
            _check_rc(rc, f"listing {kind} ids")
        yield nxt.value
        cur.value = nxt.value


def fd_by_id(kind: str, obj_id: int) -> int:
    """A new fd for the program, map or link with this id (caller closes)."""
    fn = {"prog": lib().bpf_prog_get_fd_by_id, "map": lib().bpf_map_get_fd_by_id,
          "link": lib().bpf_link_get_fd_by_id}[kind]
    return _check_rc(fn(obj_id), f"no {kind} with id {obj_id}")


def obj_pin(fd: int, path: str) -> None:
    _check_rc(lib().bpf_obj_pin(fd, os.fsencode(path)), f"pin at {path}")


def obj_get(path: str) -> int:
    """fd of a pinned object (caller closes)."""
    return _check_rc(lib().bpf_obj_get(os.fsencode(path)), f"open pinned object {path}")


def link_detach(fd: int) -> None:
    """Detaches a link from its hook even while other fds still hold it."""
    _check_rc(lib().bpf_link_detach(fd), "detach link")


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info (UAPI, append-only); tests hold it to the kernel's BTF."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16),
                ("ifindex", ctypes.c_uint32), ("gpl_compatible", ctypes.c_uint32),
                ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64),
                ("nr_jited_ksyms", ctypes.c_uint32), ("nr_jited_func_lens", ctypes.c_uint32),
                ("jited_ksyms", ctypes.c_uint64), ("jited_func_lens", ctypes.c_uint64),
                ("btf_id", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
                ("func_info", ctypes.c_uint64), ("nr_func_info", ctypes.c_uint32),
                ("nr_line_info", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("jited_line_info", ctypes.c_uint64), ("nr_jited_line_info", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("jited_line_info_rec_size", ctypes.c_uint32),
                ("nr_prog_tags", ctypes.c_uint32), ("prog_tags", ctypes.c_uint64),
                ("run_time_ns", ctypes.c_uint64), ("run_cnt", ctypes.c_uint64),
                ("recursion_misses", ctypes.c_uint64), ("verified_insns", ctypes.c_uint32),
                ("attach_btf_obj_id", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32)]


class MapInfo(ctypes.Structure):
    """struct bpf_map_info (UAPI)."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32),
                ("btf_vmlinux_value_type_id", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
                ("netns_ino", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
                ("btf_key_type_id", ctypes.c_uint32), ("btf_value_type_id", ctypes.c_uint32),
                ("btf_vmlinux_id", ctypes.c_uint32), ("map_extra", ctypes.c_uint64)]


class LinkInfo(ctypes.Structure):
    """struct bpf_link_info: the header, then the union read as raw words.

    Link types whose target is a string (raw_tracepoint, perf_event) get a
    buffer pointer and length placed where the kernel expects them."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("prog_id", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32), ("u", ctypes.c_uint64 * 8)]


def _info(fd: int, info: ctypes.Structure, what: str) -> None:
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check_rc(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), what)


def prog_info_full(fd: int, with_map_ids: bool = True) -> tuple[ProgInfo, list[int]]:
    """The program's info and the ids of the maps it uses."""
    info = ProgInfo()
    _info(fd, info, "program info")
    ids: list[int] = []
    if with_map_ids and info.nr_map_ids:
        n = info.nr_map_ids
        arr = (ctypes.c_uint32 * n)()
        info2 = ProgInfo(nr_map_ids=n, map_ids=ctypes.addressof(arr))
        _info(fd, info2, "program map ids")
        ids = list(arr[:min(n, info2.nr_map_ids)])
    return info, ids


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    _info(fd, info, "map info")
    return info


LINK_TYPE_RAW_TRACEPOINT = 1
LINK_TYPE_PERF_EVENT = 7


def link_info(fd: int) -> tuple[LinkInfo, str]:
    """The link's info and, for tracepoint-like links, its target's name."""
    info = LinkInfo()
    _info(fd, info, "link info")
    name = ""
    if info.type in (LINK_TYPE_RAW_TRACEPOINT, LINK_TYPE_PERF_EVENT):
        buf = ctypes.create_string_buffer(256)
        again = LinkInfo()
        # raw_tracepoint: tp_name at u[0], tp_name_len at u[1];
        # perf_event: type at u[0] low word, name pointer at u[1], name_len at u[2] low word.
        slot = 0 if info.type == LINK_TYPE_RAW_TRACEPOINT else 1
        again.u[slot] = ctypes.addressof(buf)
        again.u[slot + 1] = len(buf)
        try:
            _info(fd, again, "link info")
            name = buf.value.decode(errors="replace")
            info = again
        except BpfError:
            pass
    return info, name


class _XdpQueryOpts(ctypes.Structure):
    _fields_ = [("sz", _c_size_t), ("prog_id", ctypes.c_uint32), ("drv_prog_id", ctypes.c_uint32),
                ("hw_prog_id", ctypes.c_uint32), ("skb_prog_id", ctypes.c_uint32),
                ("attach_mode", ctypes.c_uint8)]


XDP_ATTACHED_MODES = {0: "none", 1: "native", 2: "generic", 3: "offload", 4: "multi"}


def xdp_query(ifindex: int) -> dict[str, int | str]:
    """Which XDP programs an interface has (by netlink): ids per mode."""
    opts = _XdpQueryOpts(sz=ctypes.sizeof(_XdpQueryOpts))
    _check_rc(lib().bpf_xdp_query(ifindex, 0, ctypes.byref(opts)), f"XDP query of ifindex {ifindex}")
    return {"prog_id": opts.prog_id, "native": opts.drv_prog_id, "generic": opts.skb_prog_id,
            "offload": opts.hw_prog_id, "mode": XDP_ATTACHED_MODES.get(opts.attach_mode, "?")}


class TcHook(ctypes.Structure):
    _fields_ = [("sz", _c_size_t), ("ifindex", _c_int), ("attach_point", _c_int), ("parent", ctypes.c_uint32)]


class TcOpts(ctypes.Structure):
    _fields_ = [("sz", _c_size_t), ("prog_fd", _c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32), ("priority", ctypes.c_uint32)]


def tc_clsact_attach(ifindex: int, egress: bool, prog_fd: int) -> tuple[TcHook, TcOpts]:
    """Legacy tc: a clsact qdisc (created if absent) and a direct-action filter."""
    hook = TcHook(sz=ctypes.sizeof(TcHook), ifindex=ifindex, attach_point=2 if egress else 1)
    rc = lib().bpf_tc_hook_create(ctypes.byref(hook))
    if rc < 0 and -rc != errno_mod.EEXIST:
        _check_rc(rc, f"clsact qdisc on ifindex {ifindex}")
    opts = TcOpts(sz=ctypes.sizeof(TcOpts), prog_fd=prog_fd)
    _check_rc(lib().bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)), f"tc filter on ifindex {ifindex}")
    return hook, opts


def xdp_detach(ifindex: int, flags: int = 0) -> None:
    """Removes a netlink (non-link) XDP program from an interface."""
    _check_rc(lib().bpf_xdp_detach(ifindex, flags, None), f"XDP detach from ifindex {ifindex}")


def tc_clsact_detach(hook: TcHook, opts: TcOpts) -> None:
    done = TcOpts(sz=ctypes.sizeof(TcOpts), handle=opts.handle, priority=opts.priority)
    lib().bpf_tc_detach(ctypes.byref(hook), ctypes.byref(done))


class TestRunOpts(ctypes.Structure):
    _fields_ = [("sz", _c_size_t), ("data_in", _c_void_p), ("data_out", _c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", _c_void_p), ("ctx_out", _c_void_p), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("repeat", _c_int),
                ("duration", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32)]


def test_run(prog_fd: int, data: bytes, repeat: int = 1, flags: int = 0, ctx: bytes = b"",
             batch_size: int = 0) -> tuple[int, int]:
    """bpf(BPF_PROG_TEST_RUN): (return value, mean ns per run)."""
    buf = ctypes.create_string_buffer(data, len(data))
    cbuf = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts), data_in=ctypes.addressof(buf), data_size_in=len(data),
                       repeat=repeat, flags=flags, batch_size=batch_size)
    if cbuf is not None:
        opts.ctx_in = ctypes.addressof(cbuf)
        opts.ctx_size_in = len(ctx)
    _check_rc(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "test run")
    return opts.retval, opts.duration


def btf_from_kernel(btf_id: int) -> Btf:
    """The BTF object with this id (a map's or program's types)."""
    return Btf(_check_ptr(lib().btf__load_from_kernel_by_id(btf_id), f"BTF id {btf_id}"), owned=True)


def fdinfo(fd: int) -> dict[str, str]:
    """/proc/self/fdinfo of a BPF fd (memlock, prog_id, map_id, ...)."""
    out = {}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out
