"""XDP counter cost and attach/detach latency, on a veth pair between two
network namespaces.

Throughput: a traffic source in namespace A sends 64-byte UDP frames with
BPF_PROG_TEST_RUN in live-frames mode (XDP_REDIRECT out of veth A, the
kernel's own xdp-trafficgen technique), and veth B receives them with either
an empty XDP program (XDP_PASS; veth needs an XDP program or GRO to take
redirected frames, so this is the baseline) or bpfwatch's counter. Rounds
alternate; medians and the ratio are reported, plus the counter's own cost
per packet from the kernel's run statistics.

Latency: attaching and detaching XDP on veth B through the Python API (one
link syscall), the bpfwatch CLI, bpftool and `ip link set xdp`.

    python bench/xdp_counter.py [--rounds 7] [--packets 5000000] [--reps 15]
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from common import BPFWATCH, median, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import netns  # noqa: E402
from bpfwatch import libbpf as L  # noqa: E402
from bpfwatch.bpf import object_path  # noqa: E402
from bpfwatch.programs import load  # noqa: E402
from bpfwatch.xdp_stats import enter_netns  # noqa: E402

GEN_OBJ = str(ROOT / "build" / "testbpf" / "xdp_gen.bpf.o")
COUNTER_OBJ = str(object_path("xdpstats"))
LIVE_FRAMES = 2  # BPF_F_TEST_XDP_LIVE_FRAMES

GEN = """
import socket, struct, sys, time
sys.path.insert(0, {src!r})
from bpfwatch import libbpf as L
obj = L.BpfObject({obj!r})
obj.set_rodata(out_ifindex=socket.if_nametoindex({if_a!r}))
for p in obj.programs():
    p.autoload = p.name == "bw_xdp_gen"
obj.load()
pkt = bytes.fromhex({pkt!r})
n = int(sys.argv[1])
L.test_run(obj.program("bw_xdp_gen").fd, pkt, repeat=10000, flags=2, batch_size=64)  # warm up
print("ready", flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    L.test_run(obj.program("bw_xdp_gen").fd, pkt, repeat=n, flags=2, batch_size=64)
    print(time.perf_counter() - t, flush=True)
"""


def frame(pair: netns.VethPair, valid: bool = True) -> bytes:
    """A 60-byte UDP frame A -> B; with valid=False its IP checksum is wrong,
    so B's stack drops it at once (the cheapest path through the host)."""
    mac_a = bytes.fromhex(pair.mac(pair.ns_a, pair.if_a).replace(":", ""))
    mac_b = bytes.fromhex(pair.mac(pair.ns_b, pair.if_b).replace(":", ""))
    payload = b"\0" * 18  # 14 + 20 + 8 + 18 = 60 bytes (64 on the wire with FCS)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 0, 0, 64, 17, 0, socket.inet_aton(pair.ip4_a),
                     socket.inet_aton(pair.ip4_b))
    csum = sum(struct.unpack("!10H", ip))
    csum = (csum & 0xFFFF) + (csum >> 16)
    ip = ip[:10] + struct.pack("!H", (~csum & 0xFFFF) if valid else 0) + ip[12:]
    return mac_b + mac_a + b"\x08\x00" + ip + struct.pack("!HHHH", 1234, 9, 26, 0) + payload


def rx_packets(ifname: str) -> int:
    with open("/proc/self/net/dev") as f:
        for line in f:
            if line.strip().startswith(f"{ifname}:"):
                return int(line.split(":", 1)[1].split()[1])
    raise RuntimeError(f"no {ifname}")


def throughput(pair: netns.VethPair, rounds: int, packets: int, valid: bool) -> dict:
    """Rates with run statistics off (they cost every program, the source's
    too), then one counter round with them on for its ns per packet."""
    pkt = frame(pair, valid).hex()
    gen = subprocess.Popen(["ip", "netns", "exec", pair.ns_a, sys.executable, "-c",
                            GEN.format(src=str(ROOT / "src"), obj=GEN_OBJ, if_a=pair.if_a, pkt=pkt),
                            str(packets)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert gen.stdout and gen.stdin and gen.stdout.readline().strip() == "ready"
    base = L.BpfObject(GEN_OBJ)
    for p in base.programs():
        p.autoload = p.name == "bw_xdp_pass"
    base.load()
    counter = load(COUNTER_OBJ)
    progs = {"xdp_pass": base.program("bw_xdp_pass").fd, "counter": counter.programs[0].fd}
    idx = socket.if_nametoindex(pair.if_b)
    rates: dict[str, list[float]] = {"xdp_pass": [], "counter": []}
    lost: dict[str, int] = {"xdp_pass": 0, "counter": 0}

    def one_round(cfg: str) -> tuple[float, int]:
        fd = L.link_create(progs[cfg], idx, 37, 4)  # BPF_XDP, native
        try:
            before = rx_packets(pair.if_b)
            gen.stdin.write("go\n")
            gen.stdin.flush()
            secs = float(gen.stdout.readline())
            time.sleep(0.05)
            return secs, rx_packets(pair.if_b) - before
        finally:
            os.close(fd)

    try:
        for _ in range(rounds):
            for cfg in ("xdp_pass", "counter"):
                secs, got = one_round(cfg)
                rates[cfg].append(got / secs)
                lost[cfg] += packets - got
        stats_fd = L.enable_stats()
        try:
            info0 = L.prog_info(progs["counter"])
            one_round("counter")
            info1 = L.prog_info(progs["counter"])
        finally:
            os.close(stats_fd)
    finally:
        gen.stdin.close()
        gen.wait(timeout=30)
        counter.close()
        base.close()
    runs = max(info1["run_cnt"] - info0["run_cnt"], 1)
    base_pps, counter_pps = median(rates["xdp_pass"]), median(rates["counter"])
    return {"packets_per_round": packets, "rounds": rounds, "frame_bytes": 60,
            "pps_xdp_pass": base_pps, "pps_counter": counter_pps,
            "throughput_loss_pct": 100 * (1 - counter_pps / base_pps),
            "counter_ns_per_packet": (info1["run_time_ns"] - info0["run_time_ns"]) / runs,
            "not_received": lost, "all_rates": rates}


def _timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t


def latency(pair: netns.VethPair, reps: int) -> dict:
    """Medians in milliseconds; this process is in namespace B."""
    ifb = pair.if_b
    api_attach, api_detach = [], []
    with load(COUNTER_OBJ) as obj:
        for _ in range(reps):
            t0 = time.perf_counter()
            a = obj.attach("xdp", iface=ifb, mode="native")
            t1 = time.perf_counter()
            obj.attachments.remove(a)
            a.close()
            api_attach.append(t1 - t0)
            api_detach.append(time.perf_counter() - t1)
    pin = f"/sys/fs/bpf/bwbench{os.getpid()}"
    cli_load, cli_unload = [], []
    for _ in range(reps):
        cli_load.append(_timed([*BPFWATCH, "prog", "load", COUNTER_OBJ, "--attach", f"xdp:{ifb}:native",
                                "--pin", pin]))
        cli_unload.append(_timed([*BPFWATCH, "prog", "unload", pin]))
    prog_pin = f"/sys/fs/bpf/bwbench_prog{os.getpid()}"
    subprocess.run(["bpftool", "prog", "load", COUNTER_OBJ, prog_pin], check=True)
    bt_attach, bt_detach, bt_load_attach = [], [], []
    try:
        for _ in range(reps):
            bt_attach.append(_timed(["bpftool", "net", "attach", "xdpdrv", "pinned", prog_pin, "dev", ifb]))
            bt_detach.append(_timed(["bpftool", "net", "detach", "xdpdrv", "dev", ifb]))
    finally:
        os.unlink(prog_pin)
    for _ in range(reps):
        p2 = prog_pin + "b"
        t = time.perf_counter()
        subprocess.run(["bpftool", "prog", "load", COUNTER_OBJ, p2], check=True)
        subprocess.run(["bpftool", "net", "attach", "xdpdrv", "pinned", p2, "dev", ifb], check=True)
        bt_load_attach.append(time.perf_counter() - t)
        subprocess.run(["bpftool", "net", "detach", "xdpdrv", "dev", ifb], check=True)
        os.unlink(p2)
    ip_attach, ip_detach = [], []
    for _ in range(reps):
        ip_attach.append(_timed(["ip", "link", "set", "dev", ifb, "xdpdrv", "obj", COUNTER_OBJ, "sec", "xdp"]))
        ip_detach.append(_timed(["ip", "link", "set", "dev", ifb, "xdpdrv", "off"]))
    ms = {k: 1000 * median(v) for k, v in {
        "api_attach": api_attach, "api_detach": api_detach,
        "bpfwatch_cli_load_attach_pin": cli_load, "bpfwatch_cli_unload": cli_unload,
        "bpftool_attach_pinned": bt_attach, "bpftool_detach": bt_detach,
        "bpftool_load_and_attach": bt_load_attach,
        "ip_link_load_attach": ip_attach, "ip_link_detach": ip_detach}.items()}
    return {"reps": reps, "median_ms": ms}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--packets", type=int, default=5_000_000)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    pair = netns.create("bench")
    try:
        enter_netns(pair.ns_b)
        tps = {"delivered": throughput(pair, args.rounds, args.packets, valid=True),
               "dropped_by_ip": throughput(pair, args.rounds, args.packets, valid=False)}
        lat = latency(pair, args.reps)
    finally:
        netns.destroy(pair)
    print(f"XDP on veth, 60-byte frames, {args.rounds} rounds x {args.packets:,} packets (medians)")
    for name, tp in tps.items():
        print(f"  {name}: empty XDP program {tp['pps_xdp_pass'] / 1e6:6.3f} Mpps, bpfwatch counter "
              f"{tp['pps_counter'] / 1e6:6.3f} Mpps (throughput loss {tp['throughput_loss_pct']:.2f}%, "
              f"{tp['counter_ns_per_packet']:.1f} ns/packet in the counter; not received {tp['not_received']})")
    print(f"attach/detach on veth (native XDP), median of {args.reps}, ms:")
    for k, v in lat["median_ms"].items():
        print(f"  {k:32s} {v:8.3f}")
    save("xdp_counter", {"throughput": tps, "latency": lat})
    return 0


if __name__ == "__main__":
    sys.exit(main())
