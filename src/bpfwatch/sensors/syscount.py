"""Syscall counter: per (process, syscall) counts, errors and time, summed in
the kernel (bpf/syscount.bpf.c) and read from its map on demand; it sends no
records. Used by diagnostic traces (the syscall_trace capability)."""

from __future__ import annotations

from typing import Any

from bpfwatch import libbpf as L
from bpfwatch.btf_dtype import cstr, record_dict, struct_dtype
from bpfwatch.sensors.base import Request, Scope, Sensor, SensorOptions
from bpfwatch.syscalls import category, name_of


class SyscountSensor(Sensor):
    name = "syscount"
    object_name = "syscount"

    @classmethod
    def plan(cls, req: Request) -> bool | None:
        return True if req.settings.get("syscall_counts") else None

    @classmethod
    def build(cls, opts: Any, options: SensorOptions, scope: Scope) -> Sensor:
        return cls(options, scope)

    def layouts(self, btf: L.Btf) -> None:
        super().layouts(btf)
        self.key_dtype = struct_dtype(btf, "bw_sc_key")
        self.val_dtype = struct_dtype(btf, "bw_sc_stats")

    def counts(self) -> list[dict[str, Any]]:
        """Every (process, syscall) seen so far, most frequent first."""
        if self.obj is None:
            return []
        out = []
        for k, v in self.obj.map("bw_sc_counts").items():
            key, val = record_dict(self.key_dtype, k), record_dict(self.val_dtype, v)
            name = name_of(key["nr"])
            out.append({"pid": key["tgid"], "comm": cstr(val["comm"]), "syscall": name, "nr": key["nr"],
                        "category": category(name), "count": val["count"], "errors": val["errors"],
                        "total_ns": val["total_ns"], "max_ns": val["max_ns"]})
        out.sort(key=lambda r: -r["count"])
        return out

    def dropped(self) -> int:
        """Process/syscall pairs not counted because the table was full."""
        if self.obj is None:
            return 0
        return self.obj.map("bw_sc_dropped").percpu_u64_sum(self._zero_key)
