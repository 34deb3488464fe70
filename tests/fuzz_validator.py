"""Mutates real BPF objects (byte flips, truncation, header and section-table
damage) and runs each through the validator, loading those it accepts.
Prints one JSON line of counts; any crash or stray exception fails the run.

    python tests/fuzz_validator.py SEED COUNT
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bpfwatch.errors import BpfwatchError
from bpfwatch.programs import load, validate

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "build" / "testbpf" / "tc_count.bpf.o", ROOT / "src" / "bpfwatch" / "bpf" / "xdpstats.bpf.o",
           ROOT / "src" / "bpfwatch" / "bpf" / "process.bpf.o"]
LOAD_AT_MOST = 150


def mutate(rng: random.Random, data: bytearray) -> bytearray:
    op = rng.randrange(5)
    if op == 0:  # scattered byte flips
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif op == 1:  # truncation
        data = data[:rng.randrange(len(data))]
    elif op == 2:  # the ELF header
        data[rng.randrange(64)] = rng.randrange(256)
    elif op == 3:  # the section header table
        shoff = int.from_bytes(data[40:48], "little")
        for _ in range(rng.randint(1, 4)):
            j = shoff + rng.randrange(max(1, len(data) - shoff))
            if j < len(data):
                data[j] = rng.randrange(256)
    else:  # a run of garbage
        start = rng.randrange(len(data))
        data[start:start + 16] = bytes(rng.randrange(256) for _ in range(16))
    return data


def main() -> int:
    seed, count = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    sources = [p.read_bytes() for p in SOURCES]
    stats: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mutant.o")
        for _ in range(count):
            data = mutate(rng, bytearray(rng.choice(sources)))
            with open(path, "wb") as f:
                f.write(data)
            stats["total"] += 1
            report = validate(path)
            if not report.ok:
                stats["rejected"] += 1
                continue
            stats["accepted"] += 1
            if stats["load_tried"] >= LOAD_AT_MOST:
                continue
            stats["load_tried"] += 1
            try:
                load(path).close()
                stats["loaded"] += 1
            except BpfwatchError:
                stats["load_refused"] += 1
    for key in ("rejected", "accepted", "load_tried", "loaded", "load_refused"):
        stats.setdefault(key, 0)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
