"""numpy dtypes built from the BTF of a compiled BPF object.

The C header is the one source of truth for record layouts: the decoder never
restates offsets or sizes, it asks the object's BTF.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from functools import lru_cache
from typing import Any

import numpy as np

from bpfwatch import libbpf as L
from bpfwatch.events.text import text


class LayoutError(Exception):
    pass


def struct_dtype(btf: L.Btf, name: str, flatten: bool = True) -> np.dtype:
    """The numpy dtype of `struct name`; nested structs are flattened into
    their fields (names must then be unique), flexible arrays are left out."""
    try:
        t = btf.find(name, L.BTF_KIND_STRUCT)
    except KeyError:
        raise LayoutError(f"struct {name} is not in the object's BTF") from None
    fields: dict[str, tuple[np.dtype, int]] = {}
    _add_struct(btf, t, 0, fields, flatten)
    return np.dtype({
        "names": list(fields),
        "formats": [f[0] for f in fields.values()],
        "offsets": [f[1] for f in fields.values()],
        "itemsize": t.size_or_type,
    })


def _add_struct(btf: L.Btf, t: L.BtfType, base: int, out: dict[str, tuple[np.dtype, int]],
                flatten: bool) -> None:
    for mname, mtype, bitoff, bitsize in t.members():
        if bitsize or bitoff % 8:
            raise LayoutError(f"{t.name}.{mname}: bitfields are not supported in event records")
        off = base + bitoff // 8
        rt = btf.resolve(mtype)
        if rt.kind == L.BTF_KIND_STRUCT and flatten:
            # a nested struct's fields keep their names, unless taken: then member_field
            names: dict[str, tuple[np.dtype, int]] = {}
            _add_struct(btf, rt, off, names, flatten)
            for n, v in names.items():
                key = f"{mname}_{n}" if n in out else n
                if key in out:
                    raise LayoutError(f"{t.name}.{mname}.{n}: field name used twice once flattened")
                out[key] = v
            continue
        if rt.kind == L.BTF_KIND_ARRAY and rt.array()[1] == 0:
            continue  # flexible array member: variable data after the record
        if mname in out:
            raise LayoutError(f"{t.name}.{mname}: field name used twice once flattened")
        out[mname] = (_member_dtype(btf, rt, f"{t.name}.{mname}"), off)


def _member_dtype(btf: L.Btf, t: L.BtfType, where: str) -> np.dtype:
    if t.kind == L.BTF_KIND_INT:
        signed, bits = t.int_encoding()
        size = t.size_or_type
        if bits == 8 * size and size in (1, 2, 4, 8):
            return np.dtype(f"<{'i' if signed else 'u'}{size}")
        raise LayoutError(f"{where}: unsupported integer of {bits} bits")
    if t.kind in (L.BTF_KIND_ENUM, L.BTF_KIND_ENUM64):
        return np.dtype(f"<u{t.size_or_type}")
    if t.kind == L.BTF_KIND_PTR:
        return np.dtype("<u8")
    if t.kind == L.BTF_KIND_ARRAY:
        elem_id, n = t.array()
        elem = btf.resolve(elem_id)
        if elem.kind == L.BTF_KIND_INT and elem.name == "char":
            return np.dtype(f"S{n}")  # C strings: numpy strips the trailing NULs
        return np.dtype((_member_dtype(btf, elem, where), (n,)))
    if t.kind == L.BTF_KIND_STRUCT:
        fields: dict[str, tuple[np.dtype, int]] = {}
        _add_struct(btf, t, 0, fields, flatten=False)
        return np.dtype({"names": list(fields), "formats": [f[0] for f in fields.values()],
                         "offsets": [f[1] for f in fields.values()], "itemsize": t.size_or_type})
    raise LayoutError(f"{where}: unsupported BTF kind {t.kind}")


def enum_values(btf: L.Btf, name: str) -> dict[str, int]:
    """Values of `enum name` from BTF (e.g. event type ids)."""
    return btf.find(name, L.BTF_KIND_ENUM).enum_members()


@lru_cache(maxsize=4096)  # comms repeat: nearly every call is a hit
def cstr(raw: bytes) -> str:
    """A C char array as text: up to the first NUL (the bytes after it are
    whatever the buffer held before), invalid UTF-8 as \\xNN escapes."""
    return text(raw.split(b"\0", 1)[0])


_CODES = {"u1": "B", "u2": "H", "u4": "I", "u8": "Q", "i1": "b", "i2": "h", "i4": "i", "i8": "q"}


@lru_cache(maxsize=64)
def record_struct(dtype: np.dtype) -> struct.Struct:
    """A struct.Struct with the same layout as dtype: unpacking one record
    this way costs a fraction of numpy's per-call overhead. Byte arrays
    (char[] and __u8[]) come out as bytes."""
    return picker(dtype, field_names(dtype))


@lru_cache(maxsize=128)
def picker(dtype: np.dtype, names: tuple[str, ...]) -> struct.Struct:
    """A struct.Struct that unpacks only `names` of a dtype record (the rest
    is skipped as padding), as a plain tuple: the hot decoders unpack it into
    locals, which costs a fraction of a named tuple's attribute reads.

    `names` must be in the record's offset order, which is the order the
    tuple comes in; a decoder written against an older header fails here,
    at load, instead of reading one field as another."""
    fields = dtype.fields or {}
    missing = [n for n in names if n not in fields]
    if missing:
        raise LayoutError(f"record has no field {', '.join(missing)}")
    offsets = [fields[n][1] for n in names]
    if offsets != sorted(offsets) or len(set(offsets)) != len(offsets):
        raise LayoutError(f"fields {', '.join(names)} are not in the record's order ({', '.join(field_names(dtype))})")
    fmt, pos = "<", 0
    for name, off in zip(names, offsets, strict=True):
        fdt = fields[name][0]
        if off > pos:
            fmt += f"{off - pos}x"
        if fdt.kind == "S" or (fdt.subdtype is not None and fdt.subdtype[0] == np.dtype("u1")):
            fmt += f"{fdt.itemsize}s"
        elif fdt.str[1:] in _CODES:
            fmt += _CODES[fdt.str[1:]]
        else:
            raise LayoutError(f"{name}: no struct code for {fdt}")
        pos = off + fdt.itemsize
    if dtype.itemsize > pos:
        fmt += f"{dtype.itemsize - pos}x"
    return struct.Struct(fmt)


@lru_cache(maxsize=64)
def field_names(dtype: np.dtype) -> tuple[str, ...]:
    """Field names in offset order (the order record_struct unpacks them)."""
    return tuple(n for n, _ in sorted(dtype.fields.items(), key=lambda kv: kv[1][1]))


@lru_cache(maxsize=64)
def record_tuple(dtype: np.dtype) -> type:
    """A named tuple type with dtype's fields in offset order: what the hot
    decoders read records into (a named tuple costs a third of a dict)."""
    return namedtuple("Record", field_names(dtype))  # type: ignore[misc]


@lru_cache(maxsize=256)
def padded_struct(st: struct.Struct, stride: int) -> struct.Struct:
    """st padded to `stride` bytes (iter_unpack over records stride apart)."""
    return struct.Struct(st.format + f"{stride - st.size}x") if stride > st.size else st


def record_dict(dtype: np.dtype, raw: bytes | memoryview, offset: int = 0) -> dict[str, Any]:
    """One record (bytes laid out as dtype) as {field: value}."""
    return dict(zip(field_names(dtype), record_struct(dtype).unpack_from(raw, offset), strict=True))
