"""Process sensor: process.exec, process.fork and process.exit.

BPF side: bpf/process.bpf.c (tp_btf sched_process_exec, task_newtask,
sched_process_exit). Filters on pid sets (with descendants followed from
fork, in the kernel), uid, exact comm and event type run in the kernel.
"""

from __future__ import annotations

import errno
import signal
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from bpfwatch import libbpf as L
from bpfwatch import syscalls
from bpfwatch.btf_dtype import cstr, enum_values, struct_dtype
from bpfwatch.errors import UsageError
from bpfwatch.events.ids import exec_id, tick_floor
from bpfwatch.events.model import common_fields, from_shape, shape
from bpfwatch.events.text import text
from bpfwatch.ringbuf import Run
from bpfwatch.sensors.base import Fields, RowDecoder, Scope, Sensor, SensorOptions

ARGS_MAX = 128 * 1024  # BW_ARGS_MAX in process.h: the most argv bytes captured

EXEC_ARGS_TRUNCATED = 1 << 0
EXEC_EXE_TRUNCATED = 1 << 1
EXEC_CWD_TRUNCATED = 1 << 2
EXEC_PEXE_TRUNCATED = 1 << 3
EXEC_EXE_PSEUDO = 1 << 5
EXEC_PATHS_TRUNCATED = EXEC_EXE_TRUNCATED | EXEC_CWD_TRUNCATED | EXEC_PEXE_TRUNCATED
EXEC_FAIL_ARGS_TRUNCATED = 1 << 0
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
FORK_THREAD = 1 << 0
EXIT_THREAD = 1 << 0

# the events' shapes (events/model.shape): their fields in schema order
_EXEC_FIELDS = ("gid", "euid", "egid", "loginuid", "argv", "argc", "argv_truncated", "argv_omitted_args",
                "argv_omitted_bytes", "filename", "interpreter", "exe_memfd", "cwd", "tty", "ns_pid", "pidns",
                "start_boot_ns", "parent")
_EXEC_SHAPE = shape("process.exec", *_EXEC_FIELDS)
_EXEC_SHAPE_CUT = shape("process.exec", *_EXEC_FIELDS, "paths_truncated", paths_truncated=True)
_FORK_SHAPE = shape("process.fork", "child_pid", "child_tid", "thread", "clone_flags", "child_start_boot_ns",
                    "child_exec_id")
_EXIT_SHAPE = shape("process.exit", "exit_code", "signal", "signal_name", "core_dumped", "status", "thread",
                    "duration_ns", "start_boot_ns", "user_time_ns", "system_time_ns")

# clone flags worth naming (include/uapi/linux/sched.h)
CLONE_FLAGS = {
    0x100: "CLONE_VM", 0x200: "CLONE_FS", 0x400: "CLONE_FILES", 0x800: "CLONE_SIGHAND",
    0x1000: "CLONE_PIDFD", 0x2000: "CLONE_PTRACE", 0x4000: "CLONE_VFORK", 0x8000: "CLONE_PARENT",
    0x10000: "CLONE_THREAD", 0x20000: "CLONE_NEWNS", 0x40000: "CLONE_SYSVSEM",
    0x2000000: "CLONE_NEWCGROUP", 0x4000000: "CLONE_NEWUTS", 0x8000000: "CLONE_NEWIPC",
    0x10000000: "CLONE_NEWUSER", 0x20000000: "CLONE_NEWPID", 0x40000000: "CLONE_NEWNET",
    0x80000000: "CLONE_IO", 0x100000000: "CLONE_CLEAR_SIGHAND", 0x200000000: "CLONE_INTO_CGROUP",
}

TYPE_NAMES = {"BW_EV_EXEC": "process.exec", "BW_EV_FORK": "process.fork", "BW_EV_EXIT": "process.exit",
              "BW_EV_EXEC_FAIL": "process.exec_failed"}
# failed execs need a sys_exit program (a cost on every syscall): only when asked for
ALWAYS_TYPES = {"process.exec", "process.fork", "process.exit"}


def clone_flag_names(flags: int) -> list[str]:
    return list(_clone_flag_names(flags))


@lru_cache(maxsize=1024)  # few distinct flag sets: each is named once
def _clone_flag_names(flags: int) -> tuple[str, ...]:
    return tuple(name for bit, name in CLONE_FLAGS.items() if flags & bit)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


def decode_wait_status(status: int) -> tuple[int | None, int | None, bool]:
    """(exit code, terminating signal, core dumped) of a wait status."""
    sig = status & 0x7F
    if sig:
        return None, sig, bool(status & 0x80)
    return (status >> 8) & 0xFF, None, False


def split_argv(args: bytes, truncated: bool) -> tuple[list[str], int]:
    """(argv, how many arguments are complete) from NUL-separated bytes."""
    parts = args.split(b"\0")
    if truncated:
        partial = parts.pop()  # an argument cut short ('' if the cut fell after a NUL)
        complete = len(parts)
        if partial:
            parts.append(partial)
    else:
        if parts and parts[-1] == b"":
            parts.pop()  # the NUL that ends the last argument
        complete = len(parts)
    return [text(p) for p in parts], complete


@dataclass(slots=True)
class ProcessOptions:
    types: set[str] = field(default_factory=lambda: set(ALWAYS_TYPES))
    threads: bool = False            # report thread creation/exit too
    args_max: int = ARGS_MAX

    def validate(self) -> None:
        if not 0 <= self.args_max <= ARGS_MAX:
            raise UsageError(f"args_max must be between 0 and {ARGS_MAX}")


class ProcessSensor(Sensor):
    name = "process"
    object_name = "process"

    def __init__(self, popts: ProcessOptions | None = None, options: SensorOptions | None = None,
                 scope: Scope | None = None) -> None:
        super().__init__(options, scope)
        self.popts = popts or ProcessOptions()
        self.popts.validate()
        # pids whose process.exit the current read decoded: the other sensors'
        # tick gets them, so none of them has to look through every event
        self.exited: list[int] = []

    # -- loading ----------------------------------------------------------------

    def configure(self, obj: L.BpfObject) -> None:
        obj.map("bw_exec_scratch").max_entries = L.num_possible_cpus()
        with obj.btf() as btf:
            ids = enum_values(btf, "bw_event_type")
        mask = 0
        for cname, tname in TYPE_NAMES.items():
            if tname in self.popts.types:
                mask |= 1 << ids[cname]
        nrs = syscalls.table()
        obj.set_rodata(flt_follow=int(bool(self.scope.follow)), emit_mask=mask,
                       emit_threads=int(self.popts.threads), args_max=self.popts.args_max,
                       nr_execve=nrs.get("execve", -1), nr_execveat=nrs.get("execveat", -1))
        obj.program("bw_proc_exec_fail").autoload = "process.exec_failed" in self.popts.types
        # Linux >= 6.16 says in the tracepoint whether the whole group died
        new_exit = (L.tracepoint_args("sched_process_exit") or 1) >= 2
        obj.program("bw_proc_exit").autoload = new_exit
        obj.program("bw_proc_exit_old").autoload = not new_exit

    def layouts(self, btf: L.Btf) -> None:
        super().layouts(btf)
        ids = enum_values(btf, "bw_event_type")
        self.exec_dtype = struct_dtype(btf, "bw_exec_event")
        self.fork_dtype = struct_dtype(btf, "bw_fork_event")
        self.exit_dtype = struct_dtype(btf, "bw_exit_event")
        self.fail_dtype = struct_dtype(btf, "bw_exec_fail_event")
        self.exec_fields = Fields(self.exec_dtype, "ts_boot_ns pid tid cgroup_id start_boot_ns pidns ppid uid gid "
                                  "euid egid loginuid ns_pid argc args_size args_len exe_len cwd_len pexe_len "
                                  "flags filename_len interp_len comm pcomm tty")
        self.fork_fields = Fields(self.fork_dtype, "ts_boot_ns pid tid cgroup_id clone_flags "
                                  "child_start_boot_ns ppid uid child_pid child_tid flags comm")
        self.exit_fields = Fields(self.exit_dtype, "ts_boot_ns pid tid cgroup_id start_boot_ns utime_ns "
                                  "stime_ns ppid uid exit_code flags comm")
        self.decoders = {ids["BW_EV_EXEC_FAIL"]: self._decode_exec_fail}
        self.decode_rows({ids["BW_EV_EXEC"]: RowDecoder(self.exec_fields, self._exec_event, tail=True),
                          ids["BW_EV_FORK"]: RowDecoder(self.fork_fields, self._fork_event),
                          ids["BW_EV_EXIT"]: RowDecoder(self.exit_fields, self._exit_event)})

    # -- decoding ---------------------------------------------------------------

    def drain(self, out: list[dict[str, Any]], max_bytes: int | None = None) -> int:
        # read on its own (no Monitor to empty `exited` after each read), it
        # must not keep every exit it ever saw
        self.exited.clear()
        return super().drain(out, max_bytes)

    @staticmethod
    def _exec_event(row: tuple[Any, ...], data: bytes) -> dict[str, Any]:
        (ts, pid, tid, cgroup_id, start, pidns, ppid, uid, gid, euid, egid, loginuid, ns_pid, argc, args_size,
         args_len, exe_len, cwd_len, pexe_len, flags, filename_len, interp_len, comm, pcomm, raw_tty) = row
        o = 0
        exe = text(data[o: o + exe_len].rstrip(b"\0")) if exe_len else None
        o += exe_len
        cwd = text(data[o: o + cwd_len].rstrip(b"\0")) if cwd_len else None
        o += cwd_len
        pexe = text(data[o: o + pexe_len].rstrip(b"\0")) if pexe_len else None
        o += pexe_len
        filename = text(data[o: o + filename_len].rstrip(b"\0")) if filename_len else None
        o += filename_len
        interp = text(data[o: o + interp_len].rstrip(b"\0")) if interp_len else None
        o += interp_len
        args = data[o: o + args_len]
        memfd = bool(flags & EXEC_EXE_PSEUDO)
        if memfd and exe is not None:
            exe += " (deleted)"  # what the kernel's d_path (/proc/PID/exe, auditd) shows
        truncated = bool(flags & EXEC_ARGS_TRUNCATED) or args_len < args_size
        argv, complete = split_argv(args, truncated)
        tty = cstr(raw_tty) or None
        if tty and tty.startswith("pts") and tty[3:].isdigit():
            tty = f"pts/{tty[3:]}"
        ev = from_shape(_EXEC_SHAPE_CUT if flags & EXEC_PATHS_TRUNCATED else _EXEC_SHAPE, ts, pid, tid, ppid, uid,
                        cstr(comm), cgroup_id)
        ev["exe"] = exe
        ev["exec_id"] = exec_id(pid, ts)
        ev["gid"] = gid
        ev["euid"] = euid
        ev["egid"] = egid
        ev["loginuid"] = None if loginuid == 0xFFFFFFFF else loginuid
        ev["argv"] = argv
        ev["argc"] = argc
        ev["argv_truncated"] = truncated
        ev["argv_omitted_args"] = max(argc - complete, 0) if truncated else 0
        ev["argv_omitted_bytes"] = args_size - args_len
        ev["filename"] = filename
        ev["interpreter"] = interp
        ev["exe_memfd"] = memfd
        ev["cwd"] = cwd
        ev["tty"] = tty
        ev["ns_pid"] = ns_pid
        ev["pidns"] = pidns
        ev["start_boot_ns"] = start
        ev["parent"] = {"pid": ppid, "comm": cstr(pcomm), "exe": pexe, "exec_id": None}
        return ev

    def _decode_exec_fail(self, run: Run, idx: list[int] | None, out: list[dict[str, Any]]) -> None:
        for r, data in self.variable_rows(run, idx, self.fail_dtype):
            o, n = 0, r.cwd_len
            cwd = text(data[o: o + n].rstrip(b"\0")) if n else None
            o += n
            n = r.filename_len
            filename = text(data[o: o + n].rstrip(b"\0")) if n else None
            o += n
            truncated = bool(r.flags & EXEC_FAIL_ARGS_TRUNCATED)
            argv, _ = split_argv(data[o: o + r.args_len], truncated)
            err = -r.ret
            dirfd = r.dirfd
            out.append({
                **common_fields("process.exec_failed", r.ts_boot_ns, r.pid, r.tid, r.ppid, r.uid,
                                cstr(r.comm), None, r.cgroup_id, None),
                "filename": filename, "argv": argv, "argv_truncated": truncated, "cwd": cwd,
                "ret": r.ret, "error": errno.errorcode.get(err, f"E{err}"),
                "syscall": "execve" if dirfd == AT_FDCWD and not r.at_flags else "execveat",
                "dirfd": None if dirfd == AT_FDCWD else dirfd,
                "empty_path": bool(r.at_flags & AT_EMPTY_PATH),
            })

    @staticmethod
    def _fork_event(row: tuple[Any, ...]) -> dict[str, Any]:
        ts, pid, tid, cgroup_id, clone_flags, cstart, ppid, uid, cpid, ctid, flags, comm = row
        ev = from_shape(_FORK_SHAPE, ts, pid, tid, ppid, uid, cstr(comm), cgroup_id)
        ev["child_pid"] = cpid
        ev["child_tid"] = ctid
        ev["thread"] = bool(flags & FORK_THREAD)
        ev["clone_flags"] = clone_flag_names(clone_flags)
        ev["child_start_boot_ns"] = cstart
        ev["child_exec_id"] = exec_id(cpid, tick_floor(cstart))
        return ev

    def _exit_event(self, row: tuple[Any, ...]) -> dict[str, Any]:
        ts, pid, tid, cgroup_id, start, utime, stime, ppid, uid, status, flags, comm = row
        if not flags & EXIT_THREAD:
            self.exited.append(pid)
        code, sig, core = decode_wait_status(status)
        ev = from_shape(_EXIT_SHAPE, ts, pid, tid, ppid, uid, cstr(comm), cgroup_id)
        ev["exec_id"] = exec_id(pid, tick_floor(start))
        ev["exit_code"] = code
        ev["signal"] = sig
        ev["signal_name"] = signal_name(sig) if sig else None
        ev["core_dumped"] = core
        ev["status"] = status
        ev["thread"] = bool(flags & EXIT_THREAD)
        ev["duration_ns"] = max(ts - start, 0)
        ev["start_boot_ns"] = start
        ev["user_time_ns"] = utime
        ev["system_time_ns"] = stime
        return ev
