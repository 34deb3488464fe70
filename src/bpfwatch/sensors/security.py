"""Security sensor: security.* findings with a rule id, a severity and the
evidence. Observe only.

BPF side (bpf/security.bpf.c): watched syscalls at entry and return with the
credentials before and after; execs that change credentials or run a memfd,
deleted or world-writable-directory file. Writes to sensitive files and to
/proc/sys/kernel come from the file sensor's events (the Monitor runs it with
the rules' path prefixes in the kernel), judged here.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any

from bpfwatch import libbpf as L
from bpfwatch.btf_dtype import cstr, enum_values, struct_dtype
from bpfwatch.events.model import common_fields
from bpfwatch.ringbuf import Run
from bpfwatch.security.rules import RULES, RuleSet, collapse_prefixes, default_rules
from bpfwatch.sensors.base import Request, Scope, Sensor, SensorOptions
from bpfwatch.sensors.file import PREFIXES, FileOptions, FileSensor
from bpfwatch.syscalls import name_of, table

NR_MAX = 512  # BW_SEC_NR_MAX
# syscall -> (kind name, user-string argument 1, argument 2)
WATCHED: dict[str, tuple[str, int, int]] = {
    **{n: ("BW_SEC_CRED", -1, -1) for n in ("setuid", "setgid", "setreuid", "setregid", "setresuid",
                                             "setresgid", "setfsuid", "setfsgid", "setgroups", "capset")},
    "ptrace": ("BW_SEC_PTRACE", -1, -1),
    "process_vm_writev": ("BW_SEC_VM_WRITE", -1, -1),
    "bpf": ("BW_SEC_BPF", -1, -1),
    "mount": ("BW_SEC_MOUNT", 1, 2),        # target, fstype
    "move_mount": ("BW_SEC_MOUNT", 3, -1),  # to_pathname
    "umount2": ("BW_SEC_UMOUNT", 0, -1),
    "umount": ("BW_SEC_UMOUNT", 0, -1),
    "setns": ("BW_SEC_SETNS", -1, -1),
    "unshare": ("BW_SEC_UNSHARE", -1, -1),
    "init_module": ("BW_SEC_MODULE", 2, -1),    # parameters
    "finit_module": ("BW_SEC_MODULE", 1, -1),   # parameters
    "delete_module": ("BW_SEC_MODULE", 0, -1),  # module name
    "execve": ("BW_SEC_EXEC", -1, -1),
    "execveat": ("BW_SEC_EXEC", -1, -1),
}
# which rules need which kinds in the kernel
KIND_RULES = {"BW_SEC_CRED": ("privilege_escalation", "credential_change"), "BW_SEC_PTRACE": ("ptrace_attach",),
              "BW_SEC_VM_WRITE": ("process_vm_write",), "BW_SEC_BPF": ("bpf_load",),
              "BW_SEC_MOUNT": ("mount",), "BW_SEC_UMOUNT": ("umount",), "BW_SEC_SETNS": ("setns",),
              "BW_SEC_UNSHARE": ("unshare",), "BW_SEC_MODULE": ("module_load",),
              "BW_SEC_EXEC": ("privilege_escalation", "credential_change", "exec_world_writable",
                              "exec_deleted", "exec_memfd")}
X_MEMFD, X_DELETED, X_WW_DIR, X_SETUID, X_SETGID, X_CRED = 1, 2, 4, 8, 16, 32
NS_FLAGS = {0x00020000: "CLONE_NEWNS", 0x02000000: "CLONE_NEWCGROUP", 0x04000000: "CLONE_NEWUTS",
            0x08000000: "CLONE_NEWIPC", 0x10000000: "CLONE_NEWUSER", 0x20000000: "CLONE_NEWPID",
            0x40000000: "CLONE_NEWNET", 0x00000080: "CLONE_NEWTIME"}
PROG_TYPE_NAMES = {1: "socket_filter", 2: "kprobe", 3: "sched_cls", 4: "sched_act", 5: "tracepoint", 6: "xdp",
                   7: "perf_event", 8: "cgroup_skb", 9: "cgroup_sock", 17: "raw_tracepoint", 26: "tracing",
                   29: "lsm", 31: "syscall"}
WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"}
FILE_OPS = {"file.open", "file.unlink", "file.rename", "file.chmod", "file.chown", "file.truncate",
            "file.link", "file.symlink"}
CAP_NAMES = ["chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
             "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
             "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
             "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
             "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
             "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore"]


COMMON_KEYS = tuple(common_fields("", 0, 0, 0, 0, 0, "", None, 0, None))


def cap_names(mask: int) -> list[str]:
    return [f"CAP_{n.upper()}" for i, n in enumerate(CAP_NAMES) if mask >> i & 1]


@dataclass(slots=True)
class SecurityOptions:
    rules: RuleSet = field(default_factory=default_rules)
    types: set[str] = field(default_factory=lambda: {t for t, _s, _d in RULES.values()})


def _creds(r: dict[str, Any], p: str) -> dict[str, Any]:
    return {"uid": r[f"{p}uid"], "euid": r[f"{p}euid"], "suid": r[f"{p}suid"], "fsuid": r[f"{p}fsuid"],
            "gid": r[f"{p}gid"], "egid": r[f"{p}egid"], "cap_effective": hex(r[f"{p}cap_effective"])}


def _proc(pid: int) -> dict[str, Any]:
    """uid, comm and exe of a live process (the target of a ptrace)."""
    out: dict[str, Any] = {"pid": pid, "uid": None, "comm": None, "exe": None}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    out["uid"] = int(line.split()[1])
        with open(f"/proc/{pid}/comm") as f:
            out["comm"] = f.read().strip()
        out["exe"] = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError, IndexError):
        pass
    return out


def _error(ret: int) -> str | None:
    return errno.errorcode.get(-ret, f"E{-ret}") if ret < 0 else None


class SecuritySensor(Sensor):
    name = "security"
    object_name = "security"

    @classmethod
    def plan(cls, req: Request) -> SecurityOptions | None:
        types = req.types_of("security")
        return SecurityOptions(req.settings.get("rules") or default_rules(), types) if types else None

    @classmethod
    def adjust(cls, req: Request, plans: dict[type[Sensor], Any]) -> None:
        """File rules need the file sensor: write operations on the rules'
        paths, filtered in the kernel, merged with what the caller asked of it
        (whose own filters the Python side still applies)."""
        sopts = plans[cls]
        rs = sopts.rules
        if not sopts.types & {r.event_type for r in rs.file_rules()}:
            return
        asked = plans.get(FileSensor)
        if asked is None:
            plans[FileSensor] = FileOptions(types=set(FILE_OPS), prefixes=rs.file_prefixes(), open_write_only=True)
            return
        prefixes = asked.prefixes and collapse_prefixes(asked.prefixes + rs.file_prefixes(), PREFIXES)
        plans[FileSensor] = FileOptions(types=asked.types | set(FILE_OPS), failed_only=False, prefixes=prefixes or [])

    def __init__(self, sopts: SecurityOptions | None = None, options: SensorOptions | None = None,
                 scope: Scope | None = None) -> None:
        super().__init__(options, scope)
        self.sopts = sopts or SecurityOptions()
        self.rules = self.sopts.rules
        # the rules do not change while the sensor runs: match against them as prepared once
        self._file_rules = [(r, r.path_matcher()) for r in self.rules.file_rules()
                            if r.event_type in self.sopts.types]
        self._has_exceptions = any(r.exceptions for r in self.rules.rules.values())

    def configure(self, obj: L.BpfObject) -> None:
        obj.set_rodata(self_tgid=os.getpid())

    def populate(self, obj: L.BpfObject) -> None:
        kinds = enum_values(obj.btf(), "bw_sec_kind")
        nrs = table()
        m = obj.map("bw_sec_kinds")
        for name, (kind, s1, s2) in WATCHED.items():
            nr = nrs.get(name)
            if nr is None or nr >= NR_MAX or not any(self.rules.on(r) for r in KIND_RULES[kind]):
                continue
            m.update(nr.to_bytes(4, "little"), bytes([kinds[kind], s1 & 0xFF, s2 & 0xFF, 0]))
        self._kind_names = {v: k for k, v in kinds.items()}

    def layouts(self, btf: L.Btf) -> None:
        super().layouts(btf)
        self.sys_dtype = struct_dtype(btf, "bw_sec_event")
        self.exec_dtype = struct_dtype(btf, "bw_sec_exec_event")
        types = enum_values(btf, "bw_event_type")
        self.decoders = {types["BW_EV_SEC_SYSCALL"]: self._decode_syscall,
                         types["BW_EV_SEC_EXEC"]: self._decode_exec}

    # -- findings ----------------------------------------------------------------

    def _finding(self, rule_id: str, r: dict[str, Any], uid: int, description: str, evidence: dict[str, Any],
                 severity: str | None = None, exe: str | None = None, syscall: str | None = None,
                 ret: int | None = None) -> dict[str, Any] | None:
        rule = self.rules[rule_id]
        if not rule.enabled or rule.event_type not in self.sopts.types:
            return None
        ev = common_fields(rule.event_type, r["ts_boot_ns"], r["pid"], r["tid"], r["ppid"], uid, cstr(r["comm"]),
                           exe, r["cgroup_id"], None)
        ev.update(rule=rule_id, severity=severity or rule.severity, description=description, syscall=syscall,
                  ret=ret, error=_error(ret) if ret is not None else None,
                  outcome=None if ret is None else ("failed" if ret < 0 else "succeeded"), evidence=evidence)
        return ev

    def _decode_syscall(self, run: Run, idx: list[int] | None, out: list[dict[str, Any]]) -> None:
        for r, data in self.variable_records(run, idx, self.sys_dtype):
            s1 = cstr(data[:r["str1_len"]]) if r["str1_len"] else None
            s2 = cstr(data[r["str1_len"]:]) if r["str2_len"] else None
            ev = self._syscall_finding(r, s1, s2)
            if ev is not None:
                out.append(ev)

    def _syscall_finding(self, r: dict[str, Any], s1: str | None, s2: str | None) -> dict[str, Any] | None:
        kind = self._kind_names.get(r["kind"], "")
        sc = name_of(r["nr"])
        ret = r["ret"]
        args = [r[f"arg{i}"] for i in range(6)]
        uid = r["new_uid"]
        if kind == "BW_SEC_CRED":
            return self._cred_finding(r, sc, ret, args)
        if kind == "BW_SEC_PTRACE":
            target = _proc(int(args[1]))
            sev = None
            if target["uid"] is not None and target["uid"] != r["old_uid"]:
                sev = "high"  # another user's process
            req = "PTRACE_ATTACH" if args[0] == 16 else "PTRACE_SEIZE"
            return self._finding("ptrace_attach", r, uid, f"{req} to pid {args[1]} ({target['comm']})",
                                 {"request": req, "target": target}, sev, syscall=sc, ret=ret)
        if kind == "BW_SEC_VM_WRITE":
            target = _proc(int(args[0]))
            return self._finding("process_vm_write", r, uid,
                                 f"wrote into the memory of pid {args[0]} ({target['comm']})",
                                 {"target": target, "bytes": ret if ret > 0 else 0}, syscall=sc, ret=ret)
        if kind == "BW_SEC_BPF":
            ptype = PROG_TYPE_NAMES.get(r["aux"], f"type {r['aux']}")
            return self._finding("bpf_load", r, uid,
                                 f"loaded a BPF {ptype} program '{s1 or ''}' ({r['aux2']} instructions)",
                                 {"prog_type": ptype, "prog_name": s1, "insn_cnt": r["aux2"]}, syscall=sc, ret=ret)
        if kind == "BW_SEC_MOUNT":
            return self._finding("mount", r, uid, f"mount {s2 or ''} on {s1}".replace("  ", " "),
                                 {"target": s1, "fstype": s2, "flags": hex(args[3])}, syscall=sc, ret=ret)
        if kind == "BW_SEC_UMOUNT":
            return self._finding("umount", r, uid, f"unmount {s1}", {"target": s1, "flags": args[1]},
                                 syscall=sc, ret=ret)
        if kind == "BW_SEC_SETNS":
            ns = [n for bit, n in NS_FLAGS.items() if args[1] & bit] or ["any"]
            return self._finding("setns", r, uid, f"joined a namespace ({', '.join(ns)}) through fd {args[0]}",
                                 {"fd": args[0], "nstype": ns}, syscall=sc, ret=ret)
        if kind == "BW_SEC_UNSHARE":
            ns = [n for bit, n in NS_FLAGS.items() if args[0] & bit]
            if not ns:
                return None  # unshare of files or fs: no new namespace
            return self._finding("unshare", r, uid, f"created namespaces {', '.join(ns)}",
                                 {"flags": ns}, syscall=sc, ret=ret)
        if kind == "BW_SEC_MODULE":
            what = "unload" if sc == "delete_module" else "load"
            desc = f"kernel module {what} attempt" + (f" ({s1})" if s1 else "")
            if ret == -errno.ENOSYS:
                desc += ": refused, this kernel has no loadable module support (CONFIG_MODULES is off)"
            ev = {"name" if what == "unload" else "params": s1}
            return self._finding("module_load", r, uid, desc, ev, syscall=sc, ret=ret)
        return None

    def _cred_finding(self, r: dict[str, Any], sc: str, ret: int, args: list[int]) -> dict[str, Any] | None:
        uid = r["new_uid"]
        old, new = _creds(r, "old_"), _creds(r, "new_")
        evidence = {"old": old, "new": new, "args": args[:3]}
        was_root = r["old_euid"] == 0 or r["old_uid"] == 0
        gained = r["new_cap_effective"] & ~r["old_cap_effective"]
        if gained:
            evidence["capabilities_gained"] = cap_names(gained)
        if ret == 0 and not was_root and (r["new_euid"] == 0 or r["new_uid"] == 0 or r["new_fsuid"] == 0):
            return self._finding("privilege_escalation", r, uid,
                                 f"uid {r['old_uid']} (euid {r['old_euid']}) became root through {sc}",
                                 evidence, syscall=sc, ret=ret)
        changed = any(old[k] != new[k] for k in old)
        if ret == 0 and (changed or sc == "setgroups"):
            sev = "medium" if gained and not was_root else None
            desc = f"{sc}: uid {r['old_uid']}->{r['new_uid']}, euid {r['old_euid']}->{r['new_euid']}, " \
                   f"gid {r['old_gid']}->{r['new_gid']}"
            if gained:
                desc += f", gained {', '.join(evidence['capabilities_gained'])}"
            return self._finding("credential_change", r, uid, desc, evidence, sev, syscall=sc, ret=ret)
        if ret < 0 and not was_root and sc.startswith("set") and 0 in [a & 0xFFFFFFFF for a in args[:3]]:
            return self._finding("credential_change", r, uid, f"{sc} to root refused ({_error(ret)})", evidence,
                                 "low", syscall=sc, ret=ret)
        return None

    def _decode_exec(self, run: Run, idx: list[int] | None, out: list[dict[str, Any]]) -> None:
        for r, tail in self.variable_records(run, idx, self.exec_dtype):
            name = cstr(tail[:r["name_len"]])
            out.extend(self._exec_findings(r, name))

    def _exec_findings(self, r: dict[str, Any], name: str) -> list[dict[str, Any]]:
        flags, uid = r["flags"], r["new_uid"]
        old, new = _creds(r, "old_"), _creds(r, "new_")
        file_info = {"file": name, "mode": oct(r["file_mode"] & 0o7777), "owner_uid": r["file_uid"],
                     "setuid": bool(flags & X_SETUID), "setgid": bool(flags & X_SETGID)}
        found: list[dict[str, Any] | None] = []
        gained = r["new_cap_effective"] & ~r["old_cap_effective"]
        ids_changed = any(old[k] != new[k] for k in ("uid", "euid", "suid", "fsuid", "gid", "egid"))
        # capabilities dropped at exec (a non-root process never keeps them) are no finding
        if flags & X_CRED and (ids_changed or gained):
            was_root = r["old_euid"] == 0 or r["old_uid"] == 0
            ev = {"old": old, "new": new, **file_info}
            if gained:
                ev["capabilities_gained"] = cap_names(gained)
            if not was_root and r["new_euid"] == 0:
                via = "a setuid-root binary" if flags & X_SETUID else "exec"
                found.append(self._finding("privilege_escalation", r, uid,
                                           f"uid {r['old_uid']} became euid 0 by running {via} {name}", ev,
                                           exe=name, syscall="execve", ret=0))
            else:
                found.append(self._finding("credential_change", r, uid,
                                           f"exec of {name} changed credentials: euid {r['old_euid']}->"
                                           f"{r['new_euid']}, egid {r['old_egid']}->{r['new_egid']}", ev,
                                           "medium" if gained and not was_root else None, exe=name,
                                           syscall="execve", ret=0))
        if flags & X_MEMFD:
            found.append(self._finding("exec_memfd", r, uid, f"fileless execution: ran a memfd ({name})",
                                       file_info, exe=name, syscall="execve", ret=0))
        elif flags & X_DELETED:
            found.append(self._finding("exec_deleted", r, uid, f"ran a deleted file {name}", file_info, exe=name,
                                       syscall="execve", ret=0))
        if flags & X_WW_DIR and not flags & X_MEMFD:
            found.append(self._finding("exec_world_writable", r, uid,
                                       f"ran {name} from a world-writable directory",
                                       {**file_info, "dir_mode": oct(r["dir_mode"] & 0o7777)}, exe=name,
                                       syscall="execve", ret=0))
        return [f for f in found if f is not None]

    # -- file-derived findings, and exceptions -------------------------------------

    def tick(self, out: list[dict[str, Any]], exited: list[int], force: bool = False) -> None:
        """Judges the file sensor's events of this batch against the file rules."""
        rules = self._file_rules
        if not rules:
            return
        found = []
        for ev in out:
            if ev["type"] not in FILE_OPS:
                continue
            if ev["type"] == "file.open" and not WRITE_FLAGS & set(ev.get("flags") or ()):
                continue
            paths = [p for p in (ev.get("path"), ev.get("new_path")) if p]
            for rule, matcher in rules:
                hit = next((p for p in paths if matcher.match(p)), None)
                if hit is None:
                    continue
                op = ev["type"].split(".", 1)[1]
                what = "write-open" if op == "open" else op
                f = {k: ev[k] for k in COMMON_KEYS}
                f.update(type=rule.event_type, rule=rule.id, severity=rule.severity,
                         description=f"{what} of {hit}" + (f" ({ev['error']})" if ev.get("error") else ""),
                         syscall=ev.get("syscall"), ret=ev.get("ret"), error=ev.get("error"),
                         outcome="failed" if (ev.get("ret") or 0) < 0 else "succeeded",
                         evidence={"operation": op, "path": hit, "file_event": ev["type"],
                                   "flags": ev.get("flags"), "new_path": ev.get("new_path")})
                found.append(f)
        out.extend(found)

    def after_enrich(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drops findings an exception covers (exceptions match exe and user,
        known only after enrichment)."""
        if not self._has_exceptions:
            return events
        rules = self.rules.rules
        return [e for e in events if not (e["type"].startswith("security.") and rules[e["rule"]].excepted(
            {**e, "path": (e.get("evidence") or {}).get("path") or e.get("exe")}))]
