"""A pair of network namespaces joined by a veth pair, made for one test and
removed afterwards. Neighbours are static and IPv6 DAD is off, so the only
packets on the wire are the ones a test sends."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class VethPair:
    ns_a: str
    ns_b: str
    if_a: str = "bwa0"
    if_b: str = "bwb0"
    ip4_a: str = "10.201.0.1"
    ip4_b: str = "10.201.0.2"
    ip6_a: str = "fd00:201::1"
    ip6_b: str = "fd00:201::2"

    def run_in(self, ns: str, code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Runs Python code inside a namespace."""
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                              capture_output=True, text=True, timeout=timeout, check=True)

    def mac(self, ns: str, ifname: str) -> str:
        return ip("-n", ns, "-o", "link", "show", ifname).stdout.split("link/ether ", 1)[1].split()[0]


def create(tag: str = "") -> VethPair:
    tag = tag or str(os.getpid())
    pair = VethPair(f"bwA{tag}", f"bwB{tag}")
    destroy(pair)
    ip("netns", "add", pair.ns_a)
    ip("netns", "add", pair.ns_b)
    ip("link", "add", pair.if_a, "netns", pair.ns_a, "type", "veth", "peer", "name", pair.if_b,
       "netns", pair.ns_b)
    for ns, ifn, v4, v6 in ((pair.ns_a, pair.if_a, pair.ip4_a, pair.ip6_a),
                            (pair.ns_b, pair.if_b, pair.ip4_b, pair.ip6_b)):
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{ifn}.accept_dad=0",
                        f"net.ipv6.conf.{ifn}.router_solicitations=0"], check=False, capture_output=True)
        ip("-n", ns, "addr", "add", f"{v4}/24", "dev", ifn)
        ip("-n", ns, "addr", "add", f"{v6}/64", "dev", ifn, "nodad")
        ip("-n", ns, "link", "set", ifn, "up")
        ip("-n", ns, "link", "set", "lo", "up")
    mac_a, mac_b = pair.mac(pair.ns_a, pair.if_a), pair.mac(pair.ns_b, pair.if_b)
    for ns, ifn, v4, v6, mac in ((pair.ns_a, pair.if_a, pair.ip4_b, pair.ip6_b, mac_b),
                                 (pair.ns_b, pair.if_b, pair.ip4_a, pair.ip6_a, mac_a)):
        ip("-n", ns, "neigh", "replace", v4, "lladdr", mac, "dev", ifn, "nud", "permanent")
        ip("-n", ns, "neigh", "replace", v6, "lladdr", mac, "dev", ifn, "nud", "permanent")
    return pair


def destroy(pair: VethPair) -> None:
    for ns in (pair.ns_a, pair.ns_b):
        ip("netns", "del", ns, check=False)
