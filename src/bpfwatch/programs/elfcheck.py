"""Structural checks of a BPF ELF object, in pure Python, before libbpf or the
kernel sees it. Every check is bounds-checked, so a damaged file yields
problems, never an exception (tests fuzz this)."""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, field

EM_BPF = 247
ET_REL = 1
SHT_SYMTAB = 2
SHT_NOBITS = 8
SHF_EXECINSTR = 0x4
MAX_INSNS = 1_000_000  # BPF_COMPLEXITY_LIMIT_INSNS (privileged loaders)
BTF_MAGIC = 0xEB9F
MACHINES = {3: "x86 (i386)", 62: "x86-64", 40: "ARM", 183: "AArch64", 243: "RISC-V", 8: "MIPS",
            20: "PowerPC", 21: "PowerPC64", 22: "s390"}


@dataclass(slots=True)
class Problem:
    level: str  # "error" or "warning"
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


@dataclass(slots=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int


@dataclass
class ElfReport:
    problems: list[Problem] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    license: str | None = None
    program_sections: list[Section] = field(default_factory=list)
    has_btf: bool = False

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    def error(self, msg: str) -> None:
        self.problems.append(Problem("error", msg))

    def warn(self, msg: str) -> None:
        self.problems.append(Problem("warning", msg))


def _cstr(data: bytes, off: int) -> str | None:
    if not 0 <= off < len(data):
        return None
    end = data.find(b"\0", off)
    if end < 0:
        return None
    return data[off:end].decode(errors="replace")


def check_elf(data: bytes) -> ElfReport:
    """Every structural problem of the object in `data`."""
    rep = ElfReport()
    if len(data) < 4 or data[:4] != b"\x7fELF":
        rep.error("not an ELF file (no \\x7fELF magic): pass the .o that clang -target bpf produced")
        return rep
    if len(data) < 64:
        rep.error(f"truncated ELF: {len(data)} bytes, shorter than an ELF header")
        return rep
    ei_class, ei_data = data[4], data[5]
    if ei_data not in (1, 2):
        rep.error(f"invalid ELF data encoding {ei_data}")
        return rep
    little = ei_data == 1
    host_little = sys.byteorder == "little"
    end = "<" if little else ">"
    machine = struct.unpack_from(end + "H", data, 18)[0]
    if machine != EM_BPF:
        what = MACHINES.get(machine, f"machine {machine}")
        rep.error(f"an ELF for {what}, not BPF (e_machine {machine}, BPF is {EM_BPF}): "
                  "compile with clang -target bpf")
        return rep
    if ei_class != 2:
        rep.error(f"ELF class {ei_class} is not 64-bit: BPF objects are ELFCLASS64")
        return rep
    if little != host_little:
        rep.error(f"{'little' if little else 'big'}-endian object on a {sys.byteorder}-endian host: "
                  f"compile with -target {'bpfel' if host_little else 'bpfeb'}")
        return rep
    e_type = struct.unpack_from(end + "H", data, 16)[0]
    if e_type != ET_REL:
        rep.error(f"ELF type {e_type} is not a relocatable object (ET_REL): compile with -c")
        return rep
    shoff, = struct.unpack_from(end + "Q", data, 40)
    shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 58)
    if shnum == 0:
        rep.error("no section headers")
        return rep
    if shentsize != 64:
        rep.error(f"section header size {shentsize}, expected 64")
        return rep
    if shoff + shnum * 64 > len(data):
        rep.error(f"truncated: section headers end at byte {shoff + shnum * 64}, "
                  f"the file has {len(data)}")
        return rep
    raw = []
    for i in range(shnum):
        raw.append(struct.unpack_from(end + "IIQQQQIIQQ", data, shoff + i * 64))
    if shstrndx >= shnum:
        rep.error(f"section name table index {shstrndx} is out of range ({shnum} sections)")
        return rep
    _n, _t, _f, _a, str_off, str_size, *_ = raw[shstrndx]
    if str_off + str_size > len(data):
        rep.error("truncated: the section name table lies past the end of the file")
        return rep
    strtab = data[str_off:str_off + str_size]
    for i, (name_off, sh_type, flags, _addr, off, size, *_rest) in enumerate(raw):
        if i == 0:
            continue
        name = _cstr(strtab, name_off)
        if name is None:
            rep.error(f"section {i}: name offset {name_off} is outside the name table")
            continue
        if sh_type != SHT_NOBITS and off + size > len(data):
            rep.error(f"truncated: section {name} ends at byte {off + size}, the file has {len(data)}")
            continue
        rep.sections.append(Section(i, name, sh_type, flags, off, size))
    if rep.errors:
        return rep
    _check_sections(rep, data, end)
    return rep


def _check_sections(rep: ElfReport, data: bytes, end: str) -> None:
    names = {s.name: s for s in rep.sections}
    lic = names.get("license")
    if lic is None:
        rep.warn("no license section: the kernel will refuse GPL-only helpers "
                 '(add char LICENSE[] SEC("license") = "GPL";)')
    else:
        rep.license = data[lic.offset:lic.offset + lic.size].split(b"\0", 1)[0].decode(errors="replace")
    if not any(s.type == SHT_SYMTAB for s in rep.sections):
        rep.error("no symbol table: the object was stripped (use llvm-strip -g, which keeps it)")
    progs = [s for s in rep.sections if s.flags & SHF_EXECINSTR and s.size > 0 and s.name != ".text"]
    for s in progs:
        if s.size % 8:
            rep.error(f"section {s.name}: {s.size} bytes is not a whole number of 8-byte instructions")
        elif s.size // 8 > MAX_INSNS:
            rep.error(f"section {s.name}: {s.size // 8} instructions, over the kernel's limit of {MAX_INSNS}")
    rep.program_sections = progs
    if not progs:
        rep.error("no programs: no executable section other than .text "
                  '(mark each program with SEC("xdp"), SEC("tc"), SEC("tp/...") ...)')
    if "maps" in names:
        rep.error("legacy 'maps' section (struct bpf_map_def): libbpf >= 1.0 needs BTF-defined maps "
                  'in SEC(".maps")')
    btf = names.get(".BTF")
    if btf is None:
        if ".maps" in names:
            rep.error("no .BTF section, but BTF-defined maps (.maps) need it: compile with -g")
        else:
            rep.warn("no .BTF section: no CO-RE relocations, and map values will be shown as raw hex "
                     "(compile with -g)")
        return
    rep.has_btf = True
    _check_btf_header(rep, data[btf.offset:btf.offset + btf.size], end)


def _check_btf_header(rep: ElfReport, sec: bytes, end: str) -> None:
    if len(sec) < 24:
        rep.error(f".BTF: {len(sec)} bytes, shorter than its header")
        return
    magic, version, _flags, hdr_len = struct.unpack_from(end + "HBBI", sec, 0)
    if magic != BTF_MAGIC:
        rep.error(f".BTF: bad magic {magic:#x} (expected {BTF_MAGIC:#x})")
        return
    if version != 1:
        rep.error(f".BTF: version {version} is unknown (expected 1)")
        return
    type_off, type_len, str_off, str_len = struct.unpack_from(end + "IIII", sec, 8)
    if hdr_len < 24 or hdr_len > len(sec):
        rep.error(f".BTF: header length {hdr_len} is invalid")
        return
    body = len(sec) - hdr_len
    if type_off + type_len > body or str_off + str_len > body:
        rep.error(".BTF: the type or string table lies past the end of the section")
    elif str_len == 0 or sec[hdr_len + str_off + str_len - 1] != 0:
        rep.error(".BTF: the string table is not NUL-terminated")
