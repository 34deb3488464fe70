"""A small authoritative DNS server on a loopback address, for tests only.

Written independently of bpfwatch's parser so the two check each other.
Zone: a.test A/AAAA, alias.test CNAME a.test, everything else NXDOMAIN.
"""

from __future__ import annotations

import random
import socket
import struct
import threading

A = {"a.test": "10.1.2.3"}
AAAA = {"a.test": "2001:db8::3"}
CNAME = {"alias.test": "a.test"}


def _qname(buf: bytes, off: int) -> tuple[str, int]:
    labels = []
    while buf[off]:
        n = buf[off]
        labels.append(buf[off + 1: off + 1 + n].decode())
        off += 1 + n
    return ".".join(labels), off + 1


def _encode(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def answer(query: bytes) -> bytes:
    ident, flags = struct.unpack_from("!HH", query)
    name, off = _qname(query, 12)
    qtype, _qclass = struct.unpack_from("!HH", query, off)
    question = query[12: off + 4]
    records = []
    target = name
    if name in CNAME:
        target = CNAME[name]
        records.append(_encode(name) + struct.pack("!HHIH", 5, 1, 60, len(_encode(target))) + _encode(target))
    if qtype == 1 and target in A:
        records.append(_encode(target) + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(A[target]))
    if qtype == 28 and target in AAAA:
        records.append(_encode(target) + struct.pack("!HHIH", 28, 1, 60, 16)
                       + socket.inet_pton(socket.AF_INET6, AAAA[target]))
    known = target in A or target in AAAA
    rcode = 0 if known else 3
    rflags = 0x8000 | 0x0400 | (flags & 0x0100) | rcode  # QR, AA, RD copied
    return struct.pack("!HHHHHH", ident, rflags, 1, len(records), 0, 0) + question + b"".join(records)


class DnsServer:
    """Serves on (addr, port) until stopped; `addr` is a fresh 127.x address."""

    def __init__(self, port: int = 53) -> None:
        self.addr = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.addr, port))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        # DNS over TCP on the same address and port: 2-byte length, message
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((self.addr, self.port))
        self.tcp.listen()
        self.tcp.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._tcp_thread = threading.Thread(target=self._serve_tcp, daemon=True)

    def __enter__(self) -> DnsServer:
        self._thread.start()
        self._tcp_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._tcp_thread.join()
        self.sock.close()
        self.tcp.close()

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(3)
                try:
                    while True:
                        head = conn.recv(2, socket.MSG_WAITALL)
                        if len(head) < 2:
                            break
                        query = conn.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
                        reply = answer(query)
                        # length and message in two iovecs, as many servers send them
                        conn.sendmsg([struct.pack("!H", len(reply)), reply])
                except (OSError, IndexError, struct.error, UnicodeDecodeError):
                    continue

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            try:
                self.sock.sendto(answer(data), peer)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue
