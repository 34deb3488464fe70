"""Map keys and values as JSON-able data, through the map's BTF when it has
one (structs, arrays, enums, char arrays as strings), raw hex otherwise; and
back, for `map get/set`."""

from __future__ import annotations

import json
import struct
from typing import Any

from bpfwatch import libbpf as L
from bpfwatch.errors import UsageError


def hexstr(raw: bytes) -> str:
    return raw.hex(" ")


def parse_hex(text: str, size: int, what: str) -> bytes:
    """`hex:01 00 00 00`, `0x01 0x00 ...` or `01 00 00 00`."""
    body = text.removeprefix("hex:").replace("0x", " ").replace(",", " ")
    try:
        raw = bytes(int(b, 16) for b in body.split())
    except ValueError:
        raise UsageError(f"{what}: '{text}' is not hex bytes") from None
    if len(raw) != size:
        raise UsageError(f"{what}: {len(raw)} bytes given, the map needs {size}")
    return raw


class Codec:
    """Decodes and encodes one key or value type of one map."""

    def __init__(self, btf: L.Btf | None, type_id: int, size: int, what: str) -> None:
        self.btf = btf if type_id else None
        self.type_id = type_id
        self.size = size
        self.what = what

    # ---- bytes -> data ----

    def decode(self, raw: bytes) -> Any:
        if self.btf is None:
            return hexstr(raw[:self.size])
        return self._dec(self.type_id, raw[:self.size], 0)

    def _dec(self, tid: int, raw: bytes, off: int) -> Any:
        btf = self.btf
        assert btf is not None
        t = btf.resolve(tid)
        if t.kind == L.BTF_KIND_INT:
            signed, _bits = t.int_encoding()
            n = t.size_or_type
            return int.from_bytes(raw[off:off + n], "little", signed=signed)
        if t.kind in (L.BTF_KIND_ENUM, 19):  # ENUM, ENUM64
            n = t.size_or_type
            v = int.from_bytes(raw[off:off + n], "little")
            names = {val & ((1 << (8 * n)) - 1): k for k, val in t.enum_members().items()} if t.kind == 6 else {}
            return names.get(v, v)
        if t.kind == L.BTF_KIND_PTR:
            return hex(int.from_bytes(raw[off:off + 8], "little"))
        if t.kind == L.BTF_KIND_FLOAT:
            n = t.size_or_type
            return struct.unpack_from({4: "<f", 8: "<d"}.get(n, "<d"), raw, off)[0] if n in (4, 8) else hexstr(
                raw[off:off + n])
        if t.kind == L.BTF_KIND_ARRAY:
            elem, count = t.array()
            et = btf.resolve(elem)
            esize = btf.size(elem)
            if et.kind == L.BTF_KIND_INT and esize == 1:
                chunk = raw[off:off + count]
                text = chunk.split(b"\0", 1)[0]
                if all(32 <= c < 127 for c in text) and (not chunk[len(text):].strip(b"\0") or not text):
                    return text.decode()
                return hexstr(chunk)
            return [self._dec(elem, raw, off + i * esize) for i in range(count)]
        if t.kind in (L.BTF_KIND_STRUCT, L.BTF_KIND_UNION):
            out: dict[str, Any] = {}
            for name, mtid, bitoff, bitsize in t.members():
                if bitsize:
                    word = int.from_bytes(raw[off:off + t.size_or_type], "little")
                    out[name] = (word >> bitoff) & ((1 << bitsize) - 1)
                else:
                    out[name or f"@{bitoff // 8}"] = self._dec(mtid, raw, off + bitoff // 8)
            return out
        return hexstr(raw[off:off + max(btf.size(tid), 0)])

    # ---- data -> bytes ----

    def encode(self, text: str) -> bytes:
        """From hex (`hex:...`), an integer, or JSON shaped like decode()'s output."""
        text = text.strip()
        if text.startswith("hex:") or (self.btf is None and not _is_int(text)):
            return parse_hex(text, self.size, self.what)
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = text  # a bare string (enum name, char array)
        except RecursionError:
            raise UsageError(f"{self.what}: nested too deeply") from None
        except ValueError as e:  # an integer of more digits than Python converts
            raise UsageError(f"{self.what}: {e}") from None
        if self.btf is None:
            if not isinstance(data, int):
                raise UsageError(f"{self.what}: the map has no BTF: give an integer or hex bytes")
            return _int_bytes(data, self.size, self.what)
        buf = bytearray(self.size)
        self._enc(self.type_id, data, buf, 0, self.what)
        return bytes(buf)

    def _enc(self, tid: int, data: Any, buf: bytearray, off: int, path: str) -> None:
        btf = self.btf
        assert btf is not None
        t = btf.resolve(tid)
        n = max(btf.size(tid), 0)
        if isinstance(data, str) and data.startswith("hex:"):
            buf[off:off + n] = parse_hex(data, n, path)
            return
        if t.kind in (L.BTF_KIND_INT, L.BTF_KIND_PTR, L.BTF_KIND_ENUM, 19):
            if isinstance(data, str) and t.kind == L.BTF_KIND_ENUM:
                members = t.enum_members()
                if data not in members:
                    raise UsageError(f"{path}: '{data}' is not one of {', '.join(members)}")
                data = members[data]
            if isinstance(data, str) and data.lower().startswith("0x"):
                data = int(data, 16)
            if not isinstance(data, int) or isinstance(data, bool):
                raise UsageError(f"{path}: expected an integer, got {json.dumps(data)}")
            signed = t.kind == L.BTF_KIND_INT and t.int_encoding()[0]
            buf[off:off + n] = _int_bytes(data, n, path, signed)
        elif t.kind == L.BTF_KIND_FLOAT and n in (4, 8):
            if isinstance(data, bool) or not isinstance(data, int | float):
                raise UsageError(f"{path}: expected a number, got {json.dumps(data)}")
            try:
                buf[off:off + n] = struct.pack("<f" if n == 4 else "<d", float(data))
            except (OverflowError, struct.error):
                raise UsageError(f"{path}: {data} does not fit in a {8 * n}-bit float") from None
        elif t.kind == L.BTF_KIND_ARRAY:
            elem, count = t.array()
            esize = btf.size(elem)
            if isinstance(data, str) and esize == 1:
                raw = data.encode()
                if len(raw) > count:
                    raise UsageError(f"{path}: '{data}' is longer than {count} bytes")
                buf[off:off + len(raw)] = raw
                return
            if not isinstance(data, list) or len(data) > count:
                raise UsageError(f"{path}: expected a list of at most {count} elements")
            for i, item in enumerate(data):
                self._enc(elem, item, buf, off + i * esize, f"{path}[{i}]")
        elif t.kind in (L.BTF_KIND_STRUCT, L.BTF_KIND_UNION):
            if not isinstance(data, dict):
                raise UsageError(f"{path}: expected an object with fields "
                                 f"{', '.join(m[0] for m in t.members())}")
            members = {m[0]: m for m in t.members()}
            for key, item in data.items():
                if key not in members:
                    raise UsageError(f"{path}: no field '{key}' (fields: {', '.join(members)})")
                _name, mtid, bitoff, bitsize = members[key]
                if bitsize:
                    raise UsageError(f"{path}.{key}: bitfields cannot be set; use hex:")
                self._enc(mtid, item, buf, off + bitoff // 8, f"{path}.{key}")
        else:
            raise UsageError(f"{path}: this type can only be given as hex:")


def _is_int(text: str) -> bool:
    try:
        int(text, 0)
    except ValueError:
        return False
    return True


def _int_bytes(v: int, n: int, path: str, signed: bool = False) -> bytes:
    if v < 0 and not signed:
        # -1 into a u32 would silently become 4294967295
        raise UsageError(f"{path}: {v} is negative, and the field is unsigned ({n} bytes): give a value from 0 "
                         f"to {(1 << (8 * n)) - 1}, or hex bytes")
    try:
        return v.to_bytes(n, "little", signed=signed)
    except OverflowError:
        raise UsageError(f"{path}: {v} does not fit in {n} bytes") from None


def sum_values(values: list[Any]) -> Any:
    """Per-CPU copies summed: numbers add, structures add field by field."""
    first = values[0]
    if isinstance(first, bool) or not isinstance(first, (int, float, dict, list)):
        return first
    if isinstance(first, (int, float)):
        return sum(v for v in values if isinstance(v, (int, float)))
    if isinstance(first, dict):
        return {k: sum_values([v[k] for v in values]) for k in first}
    return [sum_values([v[i] for v in values]) for i in range(len(first))]
