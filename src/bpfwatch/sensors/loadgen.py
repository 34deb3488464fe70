"""Synthetic load from bpf/loadgen.bpf.c: fixed-size records at a known rate,
to measure and test the ring buffer path. Not a user-facing sensor."""

from __future__ import annotations

from typing import Any

import numpy as np

from bpfwatch import libbpf as L
from bpfwatch.btf_dtype import struct_dtype
from bpfwatch.ringbuf import Run
from bpfwatch.sensors.base import Sensor, SensorOptions


class LoadgenSensor(Sensor):
    name = "loadgen"
    object_name = "loadgen"
    uses_scope = False

    def __init__(self, target_tgid: int, target_nr: int = -1, burst: int = 1,
                 options: SensorOptions | None = None, keep: bool = False) -> None:
        super().__init__(options)
        self.target_tgid = target_tgid
        self.target_nr = target_nr
        self.burst = burst
        self.keep = keep
        self.batches: list[np.ndarray] = []
        self.count = 0

    def configure(self, obj: L.BpfObject) -> None:
        obj.set_rodata(target_tgid=self.target_tgid, target_nr=self.target_nr, burst=self.burst)

    def layouts(self, btf: L.Btf) -> None:
        super().layouts(btf)
        self.dtype = struct_dtype(btf, "bw_bench_event")

    def decode(self, run: Run, out: list[dict[str, Any]]) -> None:
        self.count += run.count
        if self.keep:
            self.batches.append(run.copy(self.dtype))  # copied: the ring moves on

    def records(self) -> np.ndarray:
        if not self.batches:
            return np.zeros(0, self.dtype)
        return np.concatenate([b.astype(self.dtype) for b in self.batches])
