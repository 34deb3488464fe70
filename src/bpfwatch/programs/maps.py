"""Any map on the host, by fd: its entries read and written through its BTF."""

from __future__ import annotations

import os
from typing import Any

from bpfwatch import libbpf as L
from bpfwatch.errors import BpfError, UsageError
from bpfwatch.programs.kinds import MAP_TYPES, name_of
from bpfwatch.programs.values import Codec, sum_values

# map types whose entries cannot be listed by key (or only destructively)
_NO_DUMP = {4: "a perf event array holds per-CPU buffers, not entries",
            7: "stack trace maps are read by stack id",
            22: "reading a queue removes its elements", 23: "reading a stack removes its elements",
            27: "a ring buffer is a stream, not entries (bpfwatch trace reads its own)",
            31: "a user ring buffer is a stream", 30: "a bloom filter has no keys",
            24: "socket storage is keyed by socket fds", 28: "inode storage is keyed by fds",
            29: "task storage is keyed by pidfds", 32: "cgroup storage is keyed by fds"}
UPDATE_FLAGS = {"any": 0, "noexist": 1, "exist": 2}


class MapHandle(L.MapOps):
    """A map opened by id or pin; owns its fd."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.info = L.map_info(fd)
        self.name = self.info.name.decode(errors="replace")
        self.btf: L.Btf | None = None
        if self.info.btf_id:
            try:
                self.btf = L.btf_from_kernel(self.info.btf_id)
            except BpfError:
                self.btf = None
        self.key = Codec(self.btf, self.info.btf_key_type_id, self.info.key_size, "key")
        self.value = Codec(self.btf, self.info.btf_value_type_id, self.info.value_size, "value")

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def map_type(self) -> int:
        return self.info.type

    @property
    def key_size(self) -> int:
        return self.info.key_size

    @property
    def value_size(self) -> int:
        return self.info.value_size

    def close(self) -> None:
        if self.btf is not None:
            self.btf.close()
            self.btf = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> MapHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _decode_value(self, raw: bytes) -> Any:
        if not self.percpu:
            return self.value.decode(raw)
        step = ((self.value_size + 7) // 8) * 8
        per_cpu = [self.value.decode(raw[i:i + step]) for i in range(0, len(raw), step)]
        return {"sum": sum_values(per_cpu), "per_cpu": per_cpu}

    def readable(self) -> None:
        why = _NO_DUMP.get(self.map_type)
        if why:
            raise UsageError(f"map {self.info.id} ({self.name}, {name_of(MAP_TYPES, self.map_type)}): "
                             f"cannot be dumped: {why}")

    def dump(self, limit: int = 0) -> tuple[list[dict[str, Any]], int]:
        """(entries, total count); at most `limit` entries decoded if limit > 0."""
        self.readable()
        keys = list(self.keys())
        out = []
        for k in keys[:limit] if limit else keys:
            raw = self.lookup(k)
            if raw is not None:
                out.append({"key": self.key.decode(k), "value": self._decode_value(raw)})
        return out, len(keys)

    def get(self, key_text: str) -> dict[str, Any]:
        self.readable()
        k = self.key.encode(key_text)
        raw = self.lookup(k)
        if raw is None:
            raise UsageError(f"map {self.info.id} ({self.name}) has no key {key_text}")
        return {"key": self.key.decode(k), "value": self._decode_value(raw)}

    def set(self, key_text: str, value_text: str, flags: str = "any") -> dict[str, Any]:
        if self.percpu:
            one = self.value.encode(value_text)
            step = ((self.value_size + 7) // 8) * 8
            raw = b"".join(one.ljust(step, b"\0") for _ in range(L.num_possible_cpus()))
        else:
            raw = self.value.encode(value_text)
        k = self.key.encode(key_text)
        self.update(k, raw, UPDATE_FLAGS[flags])
        return {"key": self.key.decode(k), "value": self._decode_value(self.lookup(k) or raw)}
