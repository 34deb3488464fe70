"""The host's TCP and UDP sockets, from the kernel's socket diagnostics
(NETLINK_SOCK_DIAG, as `ss` reads them), for the polling fallback.

`psutil.net_connections()` parses /proc/net/tcp{,6} and udp{,6}: every
socket, TIME_WAIT ones included, then reads every process's fds to name the
owners, on every scan. A host that makes 1,000 short connections a second
holds ~60,000 TIME_WAIT sockets (60 s each), and the polling agent's CPU
doubled (9% to 18% of a core, bench/agent_overhead.py). Here the kernel
filters by state, so those sockets are never sent, and owners are looked up
only for the sockets the caller has not seen before.

Where the socket diagnostics are missing (a kernel without CONFIG_INET_DIAG),
`Sockets.available` is False and the caller keeps to psutil.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from typing import NamedTuple

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
INET_DIAG_NOCOOKIE = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")              # len, type, flags, seq, pid
_REQ = struct.Struct("=BBBBI2s2s16s16sIII")      # inet_diag_req_v2 with its inet_diag_sockid
# inet_diag_msg: family, state, timer, retrans, sockid (ports and addresses in network
# order), expires, rqueue, wqueue, uid, inode
_MSG = struct.Struct("=BBBB2s2s16s16sIIIIIIII")
_ERR = struct.Struct("=i")

# include/net/tcp_states.h, named as psutil names them
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "SYN_RECV"}
_STATE_BIT = {name: 0 for name in TCP_STATES.values()}
for _nr, _name in TCP_STATES.items():
    _STATE_BIT[_name] |= 1 << _nr
ALL_STATES = 0xFFFFFFFF
LOOKUPS_AT_ONCE = 64
TIMEOUT_S = 2.0  # a reply that never comes must not stop the agent


def state_mask(*names: str) -> int:
    """The kernel's state filter for these TCP states (psutil's names)."""
    mask = 0
    for n in names:
        mask |= _STATE_BIT[n]
    return mask


class Addr(NamedTuple):
    ip: str
    port: int


class Conn(NamedTuple):
    """One socket, with psutil's field names (psutil.net_connections)."""

    fd: int
    family: int
    type: int
    laddr: Addr | tuple[()]
    raddr: Addr | tuple[()]
    status: str
    pid: int | None
    inode: int


def _ip(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)


def _port(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


class Sockets:
    """One netlink socket for every query of a polling source."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = 0
        self._buf: bytearray | None = None
        self.available = True  # False: no socket diagnostics here, or they failed

    def open(self) -> Sockets:
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
            self._sock.bind((0, 0))
            self._sock.settimeout(TIMEOUT_S)
        except OSError:
            self.available = False
            self.close()
        self._buf = bytearray(1 << 17)
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Sockets:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries ---------------------------------------------------------------------

    def dump(self, tcp_states: int) -> list[Conn]:
        """Every TCP socket in one of `tcp_states` (a state_mask) and every UDP
        socket, IPv4 and IPv6, owners not looked up (pid None)."""
        out: list[Conn] = []
        for proto, kind, states in ((socket.IPPROTO_TCP, socket.SOCK_STREAM, tcp_states),
                                    (socket.IPPROTO_UDP, socket.SOCK_DGRAM, ALL_STATES)):
            for family in (socket.AF_INET, socket.AF_INET6):
                self._send(_REQ.pack(family, proto, 0, 0, states, b"\0\0", b"\0\0", bytes(16), bytes(16), 0,
                                     INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE), NLM_F_REQUEST | NLM_F_DUMP)
                self._receive(kind, proto, out, dump=True, since=self._seq)
        return out

    def tcp_states(self, keys: list[tuple[int, str, int, str, int]]) -> dict[tuple[int, str, int, str, int], str]:
        """The state of each TCP socket named by (family, local ip, local port,
        remote ip, remote port), TIME_WAIT ones included; sockets that are
        gone are left out. One request each, sent together."""
        if not keys:
            return {}
        found: dict[tuple[int, str, int, str, int], str] = {}
        replies: list[Conn] = []
        # a few at a time: replies wait in the socket's receive buffer until read
        for at in range(0, len(keys), LOOKUPS_AT_ONCE):
            part = keys[at: at + LOOKUPS_AT_ONCE]
            since = self._seq + 1
            for family, lip, lport, rip, rport in part:
                self._send(_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, ALL_STATES, lport.to_bytes(2, "big"),
                                     rport.to_bytes(2, "big"), _raw_ip(family, lip), _raw_ip(family, rip), 0,
                                     INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE), NLM_F_REQUEST)
            for _ in part:  # one reply (the socket, or an error) per request
                self._receive(socket.SOCK_STREAM, socket.IPPROTO_TCP, replies, dump=False, since=since)
        # with no such connection the kernel may answer with the port's listener: not it
        for c in replies:
            if c.laddr and c.raddr:
                found[(c.family, c.laddr.ip, c.laddr.port, c.raddr.ip, c.raddr.port)] = c.status
        return found

    # -- netlink -------------------------------------------------------------------------

    def _send(self, payload: bytes, flags: int) -> None:
        if self._sock is None:
            raise OSError(errno.ENOTCONN, "socket diagnostics are not open")
        self._seq += 1
        self._sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(payload), SOCK_DIAG_BY_FAMILY, flags, self._seq, 0)
                        + payload)

    def _receive(self, kind: int, proto: int, out: list[Conn], dump: bool, since: int = 0) -> None:
        """Reads replies until the dump's DONE (dump) or one reply (not dump).
        Replies to requests before sequence number `since` (left by a query
        that failed midway) are passed over."""
        assert self._sock is not None and self._buf is not None
        buf, view = self._buf, memoryview(self._buf)
        while True:
            n = self._sock.recv_into(buf)
            off = 0
            while off + _NLMSGHDR.size <= n:
                length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(buf, off)
                if length < _NLMSGHDR.size or off + length > n:
                    raise OSError(errno.EPROTO, "socket diagnostics: malformed netlink reply")
                body = off + _NLMSGHDR.size
                if seq < since:
                    off += (length + 3) & ~3
                    continue
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    if length < _NLMSGHDR.size + _ERR.size:
                        raise OSError(errno.EPROTO, "socket diagnostics: malformed netlink error")
                    err = -_ERR.unpack_from(buf, body)[0]
                    if not dump and err in (errno.ENOENT, 0):
                        return  # that socket is gone
                    raise OSError(err, f"socket diagnostics: {os.strerror(err) if 0 < err < 4096 else err}")
                if mtype == SOCK_DIAG_BY_FAMILY and length >= _NLMSGHDR.size + _MSG.size:
                    (family, state, _t, _r, sport, dport, src, dst, _if, _c0, _c1, _exp, _rq, _wq, _uid,
                     inode) = _MSG.unpack_from(view, body)
                    if family not in (socket.AF_INET, socket.AF_INET6):
                        raise OSError(errno.EPROTO, f"socket diagnostics: a socket of address family {family}")
                    rport = _port(dport)
                    raddr: Addr | tuple[()] = ()
                    if rport:
                        raddr = Addr(_ip(family, dst), rport)
                    status = TCP_STATES.get(state, "NONE") if proto == socket.IPPROTO_TCP else "NONE"
                    out.append(Conn(-1, family, kind, Addr(_ip(family, src), _port(sport)), raddr, status, None,
                                    inode))
                    if not dump:
                        return
                off += (length + 3) & ~3


def _raw_ip(family: int, ip: str) -> bytes:
    return socket.inet_pton(family, ip).ljust(16, b"\0")


def socket_owners(inodes: set[int]) -> dict[int, int]:
    """The pid (tgid) holding each socket inode open, read from every
    process's fds, stopping once all are found. A socket held by several
    processes (inherited) is named once, by the first pid listed."""
    owners: dict[int, int] = {}
    want = {i for i in inodes if i}
    if not want:
        return owners
    with os.scandir("/proc") as procs:
        for p in procs:
            if not p.name.isdigit():
                continue
            with contextlib.suppress(OSError), os.scandir(f"/proc/{p.name}/fd") as fds:
                for fd in fds:
                    try:
                        link = os.readlink(fd.path)
                    except OSError:
                        continue
                    if link.startswith("socket:["):
                        inode = int(link[8:-1])
                        if inode in want and inode not in owners:
                            owners[inode] = int(p.name)
            if len(owners) == len(want):
                break
    return owners
