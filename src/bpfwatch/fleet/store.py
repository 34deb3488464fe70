"""The fleet's columnar store: Parquet files partitioned by host and day
(`host=H/day=YYYY-MM-DD/part-<stream seq>.parquet`), queried with DuckDB.

One schema for every file: the fields every event has, the fields people
filter on most (paths, argv, addresses and ports, bytes, DNS names, rules),
typed; and `event`, the whole event as JSON, for everything else
(`json_extract(event, '$.parent.exe')`). A value of the wrong type for its
column is left null there (it is still in `event`).

A file is named after the stream message it came from, so a message delivered
twice (a collector killed after writing, before acknowledging) rewrites the
same file instead of adding a copy.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bpfwatch.errors import BpfwatchError, UsageError

# column -> arrow type name; order is the table's
COLUMNS: dict[str, str] = {
    "ts": "int64", "time": "string", "type": "string", "source": "string",
    "pid": "int64", "tid": "int64", "ppid": "int64", "uid": "int64", "user": "string", "comm": "string",
    "exe": "string", "cgroup_id": "uint64", "exec_id": "string",
    "argv": "list<string>", "cwd": "string", "filename": "string", "exit_code": "int64", "signal": "int64",
    "child_pid": "int64",
    "path": "string", "new_path": "string", "syscall": "string", "ret": "int64", "error": "string",
    "reads": "int64", "writes": "int64", "read_bytes": "int64", "write_bytes": "int64",
    "protocol": "string", "local_addr": "string", "local_port": "int64", "remote_addr": "string",
    "remote_port": "int64", "bytes_sent": "int64", "bytes_received": "int64", "duration_ns": "int64",
    "result": "string",
    "name": "string", "qtype": "string", "rcode": "string", "addresses": "list<string>",
    "rule": "string", "severity": "string",
    "batch": "int64",  # the stream sequence of the message the event came in (where it came from, and dedup)
    "event": "string",
}
_DICTIONARY = [c for c in COLUMNS if c not in ("event", "ts", "time", "exec_id", "batch")]
_BATCHES_KEY = b"bpfwatch.batches"  # Parquet metadata: the stream sequences whose events the file holds
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _schema() -> Any:
    import pyarrow as pa

    kinds = {"int64": pa.int64(), "uint64": pa.uint64(), "string": pa.string(),
             "list<string>": pa.list_(pa.string())}
    return pa.schema([(name, kinds[t]) for name, t in COLUMNS.items()])


def _valid(kind: str, v: Any) -> bool:
    if kind in ("int64", "uint64"):
        if not isinstance(v, int) or isinstance(v, bool):
            return False
        return (0 <= v < 1 << 64) if kind == "uint64" else (-(1 << 63) <= v < 1 << 63)
    if kind == "string":
        return isinstance(v, str)
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _clean(text: str) -> str:
    """Text Parquet can hold: raw bytes (surrogates) as U+FFFD."""
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode()


def day_of(ts: Any) -> str:
    if isinstance(ts, int) and not isinstance(ts, bool):
        with contextlib.suppress(OverflowError, ValueError, OSError):
            return datetime.fromtimestamp(ts / 1e9, UTC).strftime("%Y-%m-%d")
    return "unknown"


def partition_dir(store: str, host: str, day: str) -> str:
    return os.path.join(store, f"host={_SAFE.sub('_', host) or '_'}", f"day={day}")


def _table(batches: list[tuple[int, bytes]]) -> Any:
    """The events of some batches (stream sequence, JSON lines) as one table
    with the store's schema, parsed in C++ by Arrow's JSON reader; None when
    it cannot take them as they are (a value of another type than its column,
    raw bytes in a string): then the event-by-event path does."""
    import pyarrow as pa
    import pyarrow.json as pj

    chunks = [d if d.endswith(b"\n") else d + b"\n" for _, d in batches if d]
    data = b"".join(chunks)
    seqs: list[int] = []
    for (seq, _), chunk in zip(((q, d) for q, d in batches if d), chunks, strict=True):
        seqs += [seq] * chunk.count(b"\n")
    if not seqs:
        return None
    lines = data.split(b"\n")
    lines.pop()  # after the last newline
    schema = _schema()
    typed = pa.schema([f for f in schema if f.name not in ("event", "batch")])
    try:
        # one thread: collectors scale out by process; Arrow's pool cost more CPU than it saved here
        read = pj.ReadOptions(block_size=max(len(data) + 1, 1 << 20), use_threads=False)
        table = pj.read_json(pa.py_buffer(data), read_options=read,
                             parse_options=pj.ParseOptions(explicit_schema=typed, unexpected_field_behavior="ignore"))
        if table.num_rows != len(lines):
            return None
        # the lines themselves, as text: the writer's JSON is always UTF-8 (raw bytes go as \\udcXX escapes);
        # the columns come in the schema's order and types, so no cast (a copy) is needed
        columns = [table.column(f.name) for f in typed]
        return pa.Table.from_arrays([*columns, pa.array(seqs, pa.int64()),
                                     pa.array(lines, pa.binary()).cast(pa.string())], schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _rows(seq: int, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    from bpfwatch.events.text import loads

    rows = []
    for line in data.splitlines():
        if not line:
            continue
        ev = loads(line)
        if not isinstance(ev, dict):
            raise ValueError("a line that is not an event object")
        ev["batch"] = seq
        rows.append((ev, line))
    return rows


TABLE_EVENTS = 4000  # events parsed into one table (and file) at most: Arrow's JSON reader is 2.4x slower per
#                     event on a 78k-event table than on a 3k one


def write_batches(store: str, host: str, batches: list[tuple[int, bytes]], skip_written: bool = False) -> int:
    """write_group over consecutive groups of batches of about TABLE_EVENTS events."""
    n, group, size = 0, [], 0
    for seq, data in batches:
        lines = data.count(b"\n")
        if group and size + lines > TABLE_EVENTS:
            n += write_group(store, host, group, skip_written)
            group, size = [], 0
        group.append((seq, data))
        size += lines
    if group:
        n += write_group(store, host, group, skip_written)
    return n


def write_group(store: str, host: str, batches: list[tuple[int, bytes]], skip_written: bool = False) -> int:
    """Writes the events of several batches of one host: one Parquet file per
    day, named after the batches' sequence range, listing in its metadata the
    batches it holds. With `skip_written` (batches delivered again, after a
    collector died between writing and acknowledging), the events of a batch
    already in the store for a day are left out. Returns the events written.
    ValueError when a batch is not event lines."""
    import pyarrow.compute as pc

    table = _table(batches)
    if table is None:  # the slow path, one batch at a time
        n, seen = 0, {}
        for seq, data in batches:
            rows = _rows(seq, data)
            if skip_written:
                for day in {day_of(ev.get("ts")) for ev, _ in rows} - seen.keys():
                    seen[day] = written_batches(store, host, day)
                rows = [r for r in rows if seq not in seen[day_of(r[0].get("ts"))]]
            n += write_events(store, host, f"{seq:012d}-{seq:012d}", rows)
        return n
    name = f"{min(q for q, _ in batches):012d}-{max(q for q, _ in batches):012d}"
    # the UTC day of each event by integer division; only the distinct days are formatted
    days = pc.fill_null(pc.divide(table["ts"], 86_400_000_000_000), -1)
    n = 0
    distinct = pc.unique(days).to_pylist()
    for d in distinct:
        day = day_of(d * 86_400_000_000_000) if d >= 0 else "unknown"
        part = table if len(distinct) == 1 else table.filter(pc.equal(days, d))  # nearly always one day
        if skip_written:
            done = written_batches(store, host, day)
            if done:
                part = part.filter(pc.invert(pc.is_in(part["batch"], pc.cast(list(done), "int64"))))
            if part.num_rows == 0:
                continue
        _write_file(store, host, day, name, part, sorted(pc.unique(part["batch"]).to_pylist()))
        n += part.num_rows
    return n


def written_batches(store: str, host: str, day: str) -> set[int]:
    """The batches whose events a (host, day) partition holds, from its files'
    metadata (read only for batches delivered again: rare)."""
    import pyarrow.parquet as pq

    directory = partition_dir(store, host, day)
    out: set[int] = set()
    if not os.path.isdir(directory):
        return out
    for name in os.listdir(directory):
        if not name.endswith(".parquet"):
            continue
        meta = pq.read_schema(os.path.join(directory, name)).metadata or {}
        out.update(int(x) for x in meta.get(_BATCHES_KEY, b"").split(b",") if x)
    return out


def _write_file(store: str, host: str, day: str, part: str, table: Any, batches: list[int]) -> None:
    """One Parquet file, written under a temp name, fsynced and renamed."""
    import pyarrow.parquet as pq

    table = table.replace_schema_metadata({_BATCHES_KEY: ",".join(map(str, batches)).encode()})
    directory = partition_dir(store, host, day)
    os.makedirs(directory, mode=0o750, exist_ok=True)
    final = os.path.join(directory, f"part-{part}.parquet")
    tmp = final + ".tmp"
    # dictionaries only where values repeat: for the raw event and the stamps they cost time and bytes
    pq.write_table(table, tmp, compression="zstd", use_dictionary=_DICTIONARY)
    fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


def write_events(store: str, host: str, part: str, rows: Iterable[tuple[dict[str, Any], bytes]]) -> int:
    """Writes (event, its JSON line) pairs into the store, one file per day
    named `part`; each file is written to a temp name, fsynced and renamed.
    Returns the events written."""
    import pyarrow as pa

    by_day: dict[str, list[tuple[dict[str, Any], bytes]]] = {}
    for ev, line in rows:
        by_day.setdefault(day_of(ev.get("ts")), []).append((ev, line))
    schema = _schema()
    n = 0
    for day, items in by_day.items():
        cols: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        for ev, line in items:
            for name, kind in COLUMNS.items():
                if name == "event":
                    cols[name].append(_clean(line.decode("utf-8", "replace")))
                    continue
                v = ev.get(name)
                if v is not None and _valid(kind, v):
                    if kind == "string":
                        v = _clean(v)
                    elif kind == "list<string>":
                        v = [_clean(x) for x in v]
                    cols[name].append(v)
                else:
                    cols[name].append(None)
        _write_file(store, host, day, part, pa.table(cols, schema=schema),
                    sorted({ev["batch"] for ev, _ in items if isinstance(ev.get("batch"), int)}))
        n += len(items)
    return n


def connect(store: str) -> Any:
    """A DuckDB connection with the store as the view `events`."""
    import duckdb

    if not os.path.isdir(store):
        raise UsageError(f"{store}: no such store directory (made by 'bpfwatch fleet collect --store {store}')")
    con = duckdb.connect(":memory:")
    pattern = os.path.join(store, "host=*", "day=*", "*.parquet")
    has_files = any(f.endswith(".parquet") for _, _, files in os.walk(store) for f in files)
    if has_files:
        quoted = "'" + pattern.replace("'", "''") + "'"  # a view cannot take a bound parameter
        con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet({quoted}, hive_partitioning = true, "
                    "union_by_name = true)")
    else:  # an empty store still answers, with no rows
        cols = ", ".join(f"NULL::{_duck(t)} AS {c}" for c, t in COLUMNS.items())
        con.execute(f"CREATE VIEW events AS SELECT {cols}, NULL::VARCHAR AS host, NULL::VARCHAR AS day LIMIT 0")
    return con


def _duck(kind: str) -> str:
    return {"int64": "BIGINT", "uint64": "UBIGINT", "string": "VARCHAR", "list<string>": "VARCHAR[]"}[kind]


def query(store: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of `sql` over the store; a bad query is a
    one-line error naming DuckDB's reason."""
    import duckdb

    con = connect(store)
    try:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description or []]
        return names, cur.fetchall()
    except duckdb.Error as e:
        raise BpfwatchError(f"query failed: {str(e).splitlines()[0]}") from None
    finally:
        con.close()
