"""Each sensor loaded for real, alone: does it load on this kernel, how long
its object takes to load and attach (the verifier's time, mostly), and how
many instructions the verifier walked for each of its programs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# sensor -> the event types that make a Monitor load it (and only it, beside the process sensor)
SENSOR_TYPES = {"process": ["process.exec"], "file": ["file.*"], "network": ["network.*"], "dns": ["dns.*"],
                "security": ["security.*"]}


@dataclass(slots=True)
class SensorLoad:
    name: str
    ok: bool
    start_s: float = 0.0  # Monitor.start() with only this sensor (and the process sensor it builds on)
    verified_insns: dict[str, int] = field(default_factory=dict)
    error: str = ""

    @property
    def largest(self) -> tuple[str, int]:
        return max(self.verified_insns.items(), key=lambda kv: kv[1], default=("", 0))


def load_sensor(name: str) -> SensorLoad:
    import bpfwatch
    from bpfwatch import libbpf as L
    from bpfwatch.errors import BpfwatchError

    m = bpfwatch.Monitor(types=SENSOR_TYPES[name])
    try:
        t0 = time.perf_counter()
        m.start()
        took = time.perf_counter() - t0
        insns: dict[str, int] = {}
        for s in m.sensors:
            if s.name == name and s.obj is not None:
                for p in s.obj.programs():
                    if p.fd >= 0:
                        insns[p.name] = int(L.prog_info(p.fd).get("verified_insns") or 0)
        return SensorLoad(name, True, round(took, 3), insns)
    except BpfwatchError as e:
        return SensorLoad(name, False, error=str(e))
    finally:
        m.close()


def load_all() -> list[SensorLoad]:
    return [load_sensor(n) for n in SENSOR_TYPES]
