"""Loading a user's BPF object: validate, open, load (with the verifier's
verdict in one line), attach by spec, pin. The Python API behind `bpfwatch
prog load`:

    with bpfwatch.programs.load("counter.bpf.o") as obj:
        obj.attach("xdp", iface="veth0", mode="generic")

Everything is released on close() unless it was pinned.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from bpfwatch import caps, limits
from bpfwatch import libbpf as L
from bpfwatch.errors import BpfError, BpfwatchError, UsageError
from bpfwatch.programs import bpffs
from bpfwatch.programs import spec as S
from bpfwatch.programs.elfcheck import MAX_INSNS, Problem, check_elf
from bpfwatch.programs.kinds import MAP_TYPES, PROG_TYPES, name_of

BPF_XDP = 37
BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47
SO_ATTACH_BPF = 50
ETH_P_ALL = 0x0003
# bpffs holds only pins, so what `--pin DIR` set up is recorded beside it, in
# tmpfs like the pins themselves (both are gone after a reboot)
MANIFEST_DIR = "/run/bpfwatch/pins"
MAX_OBJECT_BYTES = 256 << 20
# map types whose max_entries may be 0: perf event array (libbpf sizes it),
# cgroup/sk/inode/task/cgrp storage, struct_ops
_NO_ENTRIES_OK = {4, 19, 21, 24, 26, 28, 29, 32}


class ValidationError(BpfwatchError):
    """The object is unusable; `problems` has one line per reason."""

    exit_code = 2

    def __init__(self, path: str, problems: list[Problem]) -> None:
        errors = [p for p in problems if p.level == "error"]
        first = errors[0].message if errors else "invalid object"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{os.path.basename(path)}: {first}{more}")
        self.problems = problems


class VerifierError(BpfError):
    """The kernel's verifier refused a program; `trimmed` is the end of its log."""

    exit_code = 2

    def __init__(self, message: str, errno: int, log: str, trimmed: list[str]) -> None:
        super().__init__(message, errno, log)
        self.trimmed = trimmed


@dataclass(slots=True)
class ProgramReport:
    name: str
    section: str
    type: str
    insns: int


@dataclass(slots=True)
class MapReport:
    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int


@dataclass
class Report:
    path: str
    problems: list[Problem] = field(default_factory=list)
    license: str | None = None
    btf: bool = False
    programs: list[ProgramReport] = field(default_factory=list)
    maps: list[MapReport] = field(default_factory=list)
    load_error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not any(p.level == "error" for p in self.problems)


def _read(path: str) -> bytes:
    try:
        if os.path.isdir(path):
            raise UsageError(f"{path} is a directory, not a BPF object file")
        size = os.path.getsize(path)
        if size > MAX_OBJECT_BYTES:
            raise UsageError(f"{path}: {size} bytes is too large for a BPF object")
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except PermissionError:
        raise UsageError(f"cannot read {path}: permission denied") from None


def validate(path: str, trial: dict[str, str] | None = None) -> Report:
    """Every problem of the object, found without the kernel: ELF structure,
    then libbpf's parse (programs, maps, BTF), then what this kernel refuses.

    With `trial` (program -> load-time attach target), the isolated child
    also loads the object once, so that neither a libbpf crash on damaged
    relocations nor a verifier refusal can happen in this process."""
    data = _read(path)
    rep = Report(path)
    elf = check_elf(data)
    rep.problems.extend(elf.problems)
    rep.license, rep.btf = elf.license, elf.has_btf
    if not rep.ok:
        return rep
    parsed = _parse_isolated(path, trial)
    if "error" in parsed:
        rep.problems.append(Problem("error", parsed["error"]))
        return rep
    for name, section, ptype, expected, insns in parsed["programs"]:
        rep.programs.append(ProgramReport(name, section, name_of(PROG_TYPES, ptype), insns))
        if ptype == 0:
            rep.problems.append(Problem("error", f"program {name}: section '{section}' does not name a "
                                                 'program type (e.g. SEC("xdp"), SEC("tc"), SEC("tp/..."))'))
        elif insns > MAX_INSNS:
            rep.problems.append(Problem("error", f"program {name}: {insns} instructions, over "
                                                 f"the kernel's limit of {MAX_INSNS}"))
        refused = _refused(ptype, expected)
        if refused:
            rep.problems.append(Problem("error", f"program {name} ({section}): {refused}"))
    if not rep.programs:
        rep.problems.append(Problem("error", "no programs: libbpf found no program in any section"))
    for name, mtype, key_size, value_size, max_entries in parsed["maps"]:
        rep.maps.append(MapReport(name, name_of(MAP_TYPES, mtype), key_size, value_size, max_entries))
        _check_map(rep, name, mtype, max_entries)
    rep.load_error = parsed.get("load_error")
    return rep


def _parse(path: str, trial: dict[str, str] | None) -> dict[str, Any]:
    """libbpf's view of the object, and with `trial` the outcome of one load."""
    try:
        obj = L.BpfObject(path)
    except BpfError as e:
        return {"error": f"libbpf cannot parse it: {_reason(e)}"}
    with obj:
        out: dict[str, Any] = {
            "programs": [(p.name, p.section, p.prog_type, p.expected_attach_type, p.insn_count)
                         for p in obj.programs()],
            "maps": [(m.name, m.map_type, m.key_size, m.value_size, m.max_entries) for m in obj.maps()]}
        if trial is not None and all(p[2] for p in out["programs"]):
            try:
                for prog in obj.programs():
                    if prog.name in trial:
                        prog.set_attach_target(trial[prog.name])
                obj.load()
            except BpfError as e:
                out["load_error"] = {"message": str(e), "errno": e.errno, "log": e.log}
        return out


def _parse_isolated(path: str, trial: dict[str, str] | None = None) -> dict[str, Any]:
    """_parse() in a forked child: libbpf 1.1 can crash on a damaged object
    that passes the ELF checks, and a crash must become a problem line."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(rfd)
            with os.fdopen(wfd, "w") as out:
                json.dump(_parse(path, trial), out)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        what = "loading" if trial is not None else "parsing"
        return {"error": f"libbpf crashed ({sig}) {what} it: the ELF, BTF or relocation data is damaged"}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"error": "libbpf could not parse it (no result)"}


def _check_map(rep: Report, name: str, mtype: int, max_entries: int) -> None:
    if mtype == 0 or mtype not in MAP_TYPES:
        rep.problems.append(Problem("error", f"map {name}: unknown map type {mtype}"))
    elif mtype == L.MAP_TYPE_RINGBUF:
        page = os.sysconf("SC_PAGE_SIZE")
        if max_entries < page or max_entries & (max_entries - 1):
            rep.problems.append(Problem("error", f"map {name}: ring buffer size {max_entries} must be a power "
                                                 f"of 2 and at least the page size ({page})"))
    elif max_entries == 0 and mtype not in _NO_ENTRIES_OK and not name.endswith(
            (".rodata", ".data", ".bss", ".kconfig")):
        rep.problems.append(Problem("error", f"map {name}: max_entries is 0"))


def _refused(prog_type: int, expected_attach_type: int) -> str:
    """Why this kernel will refuse the program's type at load, if it will."""
    kind = {24: "fentry", 25: "fexit"}.get(expected_attach_type) if prog_type == 26 else None
    if prog_type == 29:
        kind = "lsm"
    if kind is None:
        return ""
    ok, detail, _ = S._feature(kind)
    return "" if ok else f"{detail}; use tp_btf or raw tracepoints instead"


def _reason(e: BpfError) -> str:
    return str(e).split(": ", 1)[-1]


_INSN = re.compile(r"^(\d+): \([0-9a-f]{2}\) (.*)$")


def verifier_error(path: str, prog: str, e: BpfError) -> VerifierError:
    """A verifier refusal as one line (where, which instruction, why) plus the
    end of the log."""
    lines = e.log.splitlines()
    body: list[str] = []
    inside = False
    for line in lines:
        if "-- BEGIN PROG LOAD LOG --" in line:
            inside, body = True, []
        elif "-- END PROG LOAD LOG --" in line:
            inside = False
        elif inside:
            body.extend(x for x in line.splitlines() if x.strip())
    if not body:
        return VerifierError(str(e), e.errno, e.log, [])
    useful = [b for b in body if not b.startswith(("processed ", "verification time", "stack depth"))]
    why = useful[-1].strip() if useful else "rejected"
    insn = next((m for b in reversed(useful) if (m := _INSN.match(b.strip()))), None)
    where = f" at insn {insn.group(1)} '{insn.group(2).strip()}'" if insn else ""
    name = os.path.basename(path)
    msg = f"{name}: the verifier rejected program {prog}{where}: {why}"
    return VerifierError(msg, e.errno, e.log, useful[-20:])


@dataclass
class Attachment:
    """One program attached to one hook; detached by close() unless pinned."""

    spec: S.AttachSpec
    program: str
    description: str
    link: L.Link | None = None
    link_fd: int = -1
    tc: tuple[L.TcHook, L.TcOpts] | None = None
    sock: socket.socket | None = None
    pinned: str = ""

    @property
    def fd(self) -> int:
        if self.link is not None:
            return self.link.fd
        return self.link_fd

    def link_id(self) -> int | None:
        fd = self.fd
        if fd < 0:
            return None
        return L.link_info(fd)[0].id

    def pin(self, path: str) -> None:
        if self.sock is not None:
            raise UsageError(f"{self.spec}: a socket filter lives with its socket and cannot be pinned")
        if self.link is not None:
            self.link.pin(path)
        elif self.link_fd >= 0:
            L.obj_pin(self.link_fd, path)
        self.pinned = path

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.link_fd >= 0:
            os.close(self.link_fd)
            self.link_fd = -1
        if self.tc is not None:
            if not self.pinned:
                L.tc_clsact_detach(*self.tc)
            self.tc = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class LoadedObject:
    """A loaded BPF object with its attachments."""

    def __init__(self, path: str, obj: L.BpfObject, report: Report) -> None:
        self.path = path
        self.obj = obj
        self.report = report
        self.attachments: list[Attachment] = []
        self.pin_dir = ""

    def __enter__(self) -> LoadedObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def programs(self) -> list[L.Program]:
        return [p for p in self.obj.programs() if p.autoload]

    @property
    def maps(self) -> list[L.Map]:
        return self.obj.maps()

    def program_ids(self) -> dict[str, int]:
        return {p.name: L.prog_info(p.fd)["id"] for p in self.programs}

    def close(self) -> None:
        for a in reversed(self.attachments):
            a.close()
        self.attachments.clear()
        self.obj.close()

    def attach(self, kind: str | S.AttachSpec, program: str | None = None, **target: Any) -> Attachment:
        """attach("xdp", iface="veth0", mode="generic"), attach("tc", iface=..,
        direction="egress"), attach("tracepoint", category=.., name=..),
        attach("raw_tracepoint", name=..), attach("uprobe", binary=.., func=..),
        attach("cgroup", path=..), attach("socket", iface=..), or a spec."""
        spec = kind if isinstance(kind, S.AttachSpec) else S.parse(_spec_text(kind, program, target))
        S.check(spec)
        prog = self._program_for(spec)
        a = _attach(spec, prog)
        self.attachments.append(a)
        return a

    def _program_for(self, spec: S.AttachSpec) -> L.Program:
        return pick_program(self.programs, spec)

    def _pin_all(self, directory: str, pins: list[str]) -> None:
        os.makedirs(os.path.join(directory, "maps"), mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(directory, "links"), mode=0o700, exist_ok=True)
        meta: dict[str, Any] = {"object": os.path.abspath(self.path), "pinned_at": time.time(),
                                "programs": {}, "maps": {}, "attachments": []}
        for p in self.programs:
            path = os.path.join(directory, _pin_name(p.name))
            L.obj_pin(p.fd, path)
            pins.append(path)
            meta["programs"][p.name] = L.prog_info(p.fd)["id"]
        for m in self.maps:
            path = os.path.join(directory, "maps", _pin_name(m.name))
            L.obj_pin(m.fd, path)
            pins.append(path)
            meta["maps"][m.name] = L.map_info(m.fd).id
        for i, a in enumerate(self.attachments):
            rec: dict[str, Any] = {"program": a.program, "spec": str(a.spec), "description": a.description}
            if a.tc is not None:
                hook, opts = a.tc
                a.pinned = "clsact"  # no link to pin: the filter stays in its qdisc, recorded below
                rec["tc"] = {"ifindex": hook.ifindex, "attach_point": hook.attach_point,
                             "handle": opts.handle, "priority": opts.priority}
            else:
                path = os.path.join(directory, "links", _pin_name(f"{a.program}_{a.spec.kind}_{i}"))
                a.pin(path)
                pins.append(path)
                rec["link"] = path
            meta["attachments"].append(rec)
        manifest = manifest_path(directory)
        os.makedirs(os.path.dirname(manifest), mode=0o700, exist_ok=True)
        with open(manifest, "w") as f:
            json.dump(meta, f, indent=2)
        pins.append(manifest)

    def pin(self, directory: str) -> list[str]:
        """Pins programs, maps and attachments under `directory` (on bpffs),
        with a manifest `prog unload` reads; all of it outlives this process."""
        directory = bpffs.pin_dir(directory)
        pins: list[str] = []
        try:
            self._pin_all(directory, pins)
        except BaseException:
            for a in self.attachments:
                a.pinned = ""
            for path in reversed(pins):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        self.pin_dir = directory
        return pins
        self.pin_dir = directory
        return pins


def manifest_path(directory: str) -> str:
    """Where the record of a pin directory lives."""
    key = os.path.realpath(directory).strip("/").replace("/", "%")
    return os.path.join(MANIFEST_DIR, f"{key}.json")


def _pin_name(name: str) -> str:
    """bpffs refuses names with dots (reserved for its own files)."""
    return name.replace(".", "_").replace("/", "_")


def pick_program(programs: list[L.Program], spec: S.AttachSpec) -> L.Program:
    if spec.program:
        prog = next((p for p in programs if p.name == spec.program), None)
        if prog is None:
            names = ", ".join(p.name for p in programs)
            raise UsageError(f"attach spec '{spec}': no program {spec.program} in the object ({names})")
        S.check_type(spec, prog.name, prog.prog_type)
        return prog
    fits = [p for p in programs if p.prog_type in S.KINDS[spec.kind]]
    if spec.kind in S.LOAD_TIME_TARGET:
        fits = [p for p in fits if p.expected_attach_type == S.LOAD_TIME_TARGET[spec.kind]]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        types = ", ".join(f"{p.name} ({name_of(PROG_TYPES, p.prog_type)})" for p in programs)
        raise UsageError(f"attach spec '{spec}': no program in the object can attach to {spec.kind}: {types}")
    raise UsageError(f"attach spec '{spec}': {len(fits)} programs could attach to {spec.kind} "
                     f"({', '.join(p.name for p in fits)}): say which with PROGRAM={spec}")


def _spec_text(kind: str, program: str | None, t: dict[str, Any]) -> str:
    k = S.ALIASES.get(kind, kind)
    if k == "xdp":
        body = f"{t['iface']}:{t.get('mode', 'auto')}"
    elif k == "tc":
        body = f"{t['iface']}:{t.get('direction', 'ingress')}:{t.get('impl', 'auto')}".removesuffix(":auto")
    elif k == "tracepoint":
        body = f"{t['category']}:{t['name']}"
    elif k in ("uprobe", "uretprobe"):
        body = f"{t['binary']}:{t['func']}" + (f":{t['pid']}" if "pid" in t else "")
    elif k in ("cgroup",):
        body = str(t["path"])
    elif k in ("socket",):
        body = str(t["iface"])
    elif k == "section":
        return f"{program}=section" if program else "section"
    else:
        body = str(t.get("name") or t.get("func") or t.get("hook"))
    return (f"{program}=" if program else "") + f"{k}:{body}"


def _attach(spec: S.AttachSpec, prog: L.Program) -> Attachment:
    k, t = spec.kind, spec.target
    a = Attachment(spec, prog.name, f"{k} {t}".strip())
    if k == "xdp":
        idx = S.ifindex(t, spec.text)
        mode = spec.options.get("mode", "auto")
        try:
            a.link_fd = L.link_create(prog.fd, idx, BPF_XDP, S.XDP_MODES[mode])
        except BpfError as e:
            if mode == "native" and e.errno in (95, 22):
                raise BpfError(f"attach spec '{spec}': {t}'s driver has no native XDP: "
                               f"use xdp:{t}:generic", e.errno) from None
            if e.errno in (16, 17):
                raise BpfError(f"attach spec '{spec}': {t} already has an XDP program "
                               "(see 'bpfwatch prog list')", e.errno) from None
            raise
        a.description = f"xdp {t} ({mode})"
    elif k == "tc":
        idx = S.ifindex(t, spec.text)
        egress = spec.options.get("direction") == "egress"
        impl = spec.options.get("impl", "auto")
        if impl == "auto":
            impl = "tcx" if S.tcx_available() else "clsact"
        if impl == "tcx":
            a.link_fd = L.link_create(prog.fd, idx, BPF_TCX_EGRESS if egress else BPF_TCX_INGRESS)
        else:
            a.tc = L.tc_clsact_attach(idx, egress, prog.fd)
        a.description = f"{impl} {t} {'egress' if egress else 'ingress'}"
    elif k == "tracepoint":
        root = S.ensure_tracefs()
        cat, name = t.split(":", 1)
        if not os.path.isdir(os.path.join(root, "events", cat, name)):
            raise UsageError(f"attach spec '{spec}': this kernel has no tracepoint {cat}:{name} "
                             f"(see {root}/events/{cat})")
        a.link = prog.attach_tracepoint(cat, name)
    elif k == "raw_tracepoint":
        a.link = prog.attach_raw_tracepoint(t)
    elif k in ("tp_btf", "fentry", "fexit"):
        a.link = prog.attach_trace()
    elif k == "lsm":
        a.link = prog.attach_lsm()
    elif k in ("kprobe", "kretprobe"):
        a.link = prog.attach_kprobe(t, retprobe=k == "kretprobe")
    elif k in ("uprobe", "uretprobe"):
        func, pid = spec.options["func"], int(spec.options.get("pid", -1))
        ret = k == "uretprobe"
        if func.lower().startswith("0x") or limits.decimal(func):
            a.link = prog.attach_uprobe(t, int(func, 0), pid, ret)
        else:
            a.link = prog.attach_uprobe_func(t, func, pid, ret)
        a.description = f"{k} {t}:{func}"
    elif k == "cgroup":
        fd = os.open(t, os.O_RDONLY | os.O_DIRECTORY)
        try:
            a.link = prog.attach_cgroup(fd)
        finally:
            os.close(fd)
    elif k == "socket":
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.bind((t, 0))
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog.fd)
        except OSError as e:
            sock.close()
            raise BpfError(f"attach spec '{spec}': {e.strerror}", e.errno or 0) from None
        a.sock = sock
        a.description = f"socket filter on a packet socket on {t}"
    else:  # section: the same checks as the spec the section stands for
        sec = prog.section
        if sec.startswith(("kprobe/", "kretprobe/")):
            S.check(S.AttachSpec("kprobe", sec.split("/", 1)[1], text=spec.text))
        elif sec.startswith(("fentry/", "fexit/", "lsm/")):
            S.check(S.AttachSpec(sec.split("/", 1)[0], sec.split("/", 1)[1], text=spec.text))
        elif sec.startswith(("tp/", "tracepoint/")):
            S.ensure_tracefs()
        a.link = prog.attach()
        a.description = f"section {prog.section}"
    return a


# program types the kernel lets load with CAP_BPF + CAP_PERFMON, and with CAP_BPF + CAP_NET_ADMIN
_TRACING = {"kprobe", "tracepoint", "perf_event", "raw_tracepoint", "raw_tracepoint_writable", "tracing", "lsm"}
_NETWORK = {"sched_cls", "sched_act", "xdp", "lwt_in", "lwt_out", "lwt_xmit", "lwt_seg6local", "sk_skb",
            "sk_msg", "flow_dissector", "sk_lookup", "netfilter"}


def _caps_needed(report: Report, specs: list[S.AttachSpec]) -> list[str]:
    types = {p.type for p in report.programs}
    needed = ["CAP_BPF"]
    if types & _TRACING:
        needed.append("CAP_PERFMON")
    if types & _NETWORK or any(sp.kind in ("xdp", "tc", "socket") for sp in specs):
        needed.append("CAP_NET_ADMIN")
    return needed


def _failed_prog(log: str) -> str:
    found = re.search(r"prog '([^']+)'", log or "")
    return found.group(1) if found else "?"


def load(path: str, attach: list[str] | tuple[str, ...] = (), *, pin: str | None = None) -> LoadedObject:
    """Validates, loads and attaches an object; raises ValidationError,
    VerifierError or UsageError with one clear line."""
    path = str(path)
    specs = [S.parse(s) for s in attach]
    report = validate(path)  # opened in a child first: a damaged object cannot crash us
    if not report.ok:
        raise ValidationError(path, report.problems)
    caps.require(_caps_needed(report, specs), f"load {os.path.basename(path)}")
    for sp in specs:
        S.check(sp)
    obj = L.BpfObject(path)
    try:
        progs = obj.programs()
        chosen = [pick_program(progs, sp) for sp in specs]
        targets = {p.name: sp.target for sp, p in zip(specs, chosen, strict=True)
                   if sp.kind in S.LOAD_TIME_TARGET and sp.target}
        report = validate(path, trial=targets)  # one load in a child, as it will be done here
        if not report.ok:
            raise ValidationError(path, report.problems)
        if report.load_error:
            err = report.load_error
            raise verifier_error(path, _failed_prog(err["log"]),
                                 BpfError(err["message"], err["errno"], err["log"]))
        for p in progs:
            if p.name in targets:
                p.set_attach_target(targets[p.name])
        try:
            obj.load()
        except BpfError as e:
            raise verifier_error(path, _failed_prog(e.log), e) from None
        loaded = LoadedObject(path, obj, report)
    except BaseException:
        obj.close()
        raise
    try:
        for sp in specs:
            loaded.attach(sp)
        if pin:
            loaded.pin(pin)
    except BaseException:
        loaded.close()
        raise
    return loaded
