"""`bpfwatch fleet collect|query|hosts|diagnose`: the central side of a fleet
of agents streaming to NATS JetStream (docs/fleet.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import orjson

from bpfwatch.cli.options import int_in, parse_seconds
from bpfwatch.errors import UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("fleet", help="collect, query and diagnose a fleet of agents over NATS JetStream",
                       description="The central side of a fleet: agents publish their events to NATS JetStream "
                                   "([outputs.nats]); these commands collect them into a Parquet store, query it "
                                   "with SQL, list the hosts and send diagnose requests. See docs/fleet.md.")
    fs = p.add_subparsers(dest="fleet_command", metavar="ACTION", parser_class=type(p), required=True)

    c = fs.add_parser("collect", help="write the events stream into a Parquet store (a durable consumer)",
                      description="Pulls event batches from the stream and writes them to DIR, partitioned by "
                                  "host and day; a batch is acknowledged only once it is on disk. Several "
                                  "collectors with the same --durable share the work.")
    _connection(c)
    c.add_argument("--store", required=True, metavar="DIR", help="the Parquet store directory")
    c.add_argument("--durable", default="bpfwatch-collector", metavar="NAME",
                   help="durable consumer name (collectors sharing it share the work)")
    c.add_argument("--batch", type=int_in(1, 4096), default=64, metavar="N", help="messages fetched at once")
    c.add_argument("--ack-wait", type=parse_seconds, default=30.0, metavar="SECONDS",
                   help="a batch not acknowledged this long after delivery (its collector died) goes to another "
                        "(default 30)")
    c.add_argument("--until-idle", type=parse_seconds, metavar="SECONDS",
                   help="stop once nothing has arrived for this long (default: run until SIGINT/SIGTERM)")
    c.set_defaults(func=run_collect)

    q = fs.add_parser("query", help="SQL over the store (DuckDB; the table is `events`)",
                      description="Runs one SQL statement with DuckDB over the store, where `events` is a view of "
                                  "every Parquet file (columns: docs/fleet.md; `event` holds the whole event as "
                                  "JSON). Example: SELECT host, exe, count(*) FROM events WHERE type = "
                                  "'process.exec' GROUP BY ALL")
    q.add_argument("sql", help="one SQL statement; the table is `events`")
    q.add_argument("--store", required=True, metavar="DIR", help="the Parquet store directory")
    q.add_argument("--json", action="store_true", help="one JSON object per row")
    q.set_defaults(func=run_query)

    h = fs.add_parser("hosts", help="the live host list (agents' heartbeats)")
    _connection(h)
    h.add_argument("--json", action="store_true", help="the heartbeat documents as JSON")
    h.set_defaults(func=run_hosts)

    d = fs.add_parser("diagnose", help="send one diagnose request to many agents and gather the answers",
                      description="Sends a diagnose request (docs/diagnose.md) to every agent whose host matches "
                                  "--hosts and prints one JSON document with each host's status: answered, "
                                  "refused (the agent does not accept fleet requests, or not this one), failed, "
                                  "timed out, unreachable.")
    _connection(d)
    d.add_argument("--hosts", required=True, metavar="GLOB", help="host names (a glob: 'web-*', '*')")
    d.add_argument("--request", required=True, metavar="FILE", help="the request (JSON; '-' reads stdin)")
    d.add_argument("--timeout", type=parse_seconds, metavar="SECONDS",
                   help="how long to wait for each host (default: the request's duration + 30 s)")
    d.add_argument("--indent", action="store_true", help="indented JSON")
    d.set_defaults(func=run_diagnose)


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", action="append", metavar="URL",
                   help="NATS server (repeatable; default $BPFWATCH_NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--user", default="", help="user name (with --password-file)")
    p.add_argument("--password-file", default="", metavar="FILE", help="file holding the password")
    p.add_argument("--token-file", default="", metavar="FILE", help="file holding an auth token")
    p.add_argument("--nkey-seed", default="", metavar="FILE", help="file holding an NKey seed")
    p.add_argument("--creds", default="", metavar="FILE", help="a .creds file (JWT and NKey seed)")
    p.add_argument("--tls-ca", default="", metavar="FILE", help="CA certificate to verify the servers (PEM)")
    p.add_argument("--tls-cert", default="", metavar="FILE", help="client certificate (PEM; with --tls-key)")
    p.add_argument("--tls-key", default="", metavar="FILE", help="client key (PEM)")
    p.add_argument("--prefix", default="bpfwatch", metavar="PREFIX", help="subject prefix (default bpfwatch)")
    p.add_argument("--stream", default="BPFWATCH_EVENTS", metavar="NAME",
                   help="stream name (default BPFWATCH_EVENTS)")


def auth_from(args: argparse.Namespace) -> Any:
    from bpfwatch.fleet.connect import NatsAuth, check_prefix, check_stream_name

    servers = args.server or [os.environ.get("BPFWATCH_NATS_URL") or "nats://127.0.0.1:4222"]
    absolute = {k: (os.path.abspath(v) if v else "") for k, v in (
        ("password_file", args.password_file), ("token_file", args.token_file), ("nkey_seed", args.nkey_seed),
        ("creds", args.creds), ("tls_ca", args.tls_ca), ("tls_cert", args.tls_cert), ("tls_key", args.tls_key))}
    auth = NatsAuth(servers=servers, user=args.user, name="bpfwatch-fleet", **absolute)
    auth.validate()
    check_prefix(args.prefix)
    check_stream_name(args.stream)
    return auth


def run_collect(args: argparse.Namespace) -> int:
    from bpfwatch.fleet.collector import Collector, CollectSettings

    auth = auth_from(args)
    os.makedirs(args.store, mode=0o750, exist_ok=True)
    collector = Collector(CollectSettings(auth, args.store, stream=args.stream, durable=args.durable,
                                          subject_prefix=args.prefix, batch=args.batch, ack_wait=args.ack_wait,
                                          idle_exit=args.until_idle))

    import logging

    logging.basicConfig(format="bpfwatch: %(message)s", level=logging.WARNING)

    async def go() -> Any:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, collector.stop)
        sys.stderr.write(f"bpfwatch: collecting {args.prefix}.events.> from stream {args.stream} into "
                         f"{args.store} (durable {args.durable})\n")
        return await collector.run()

    stats = asyncio.run(go())
    p50, p99 = stats.latency(0.5), stats.latency(0.99)
    lat = f", latency from event to disk p50 {p50:.3f} s p99 {p99:.3f} s" if p50 is not None else ""
    sys.stderr.write(f"bpfwatch: {stats.events} events in {stats.messages} batches from {len(stats.by_host)} "
                     f"hosts, {stats.rejected} rejected{lat}\n")
    return 0


def run_query(args: argparse.Namespace) -> int:
    from bpfwatch.fleet.store import query

    names, rows = query(args.store, args.sql)
    if args.json:
        out = sys.stdout.buffer
        for r in rows:
            out.write(orjson.dumps(dict(zip(names, r, strict=True)), default=str,
                                   option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for n in names:
        table.add_column(n, overflow="fold")
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    Console().print(table)
    sys.stderr.write(f"{len(rows)} rows\n")
    return 0


def run_hosts(args: argparse.Namespace) -> int:
    from bpfwatch.fleet.remote import hosts

    found = hosts(auth_from(args))
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(found, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="bpfwatch fleet hosts")
    for col in ("host", "last seen", "version", "mode", "lost", "lag", "diagnose"):
        table.add_column(col)
    for h in found:
        seen = "never" if h["last_seen_s"] is None else f"{h['last_seen_s']:g} s ago"
        table.add_row(h["host"], f"[red]{seen} (stale)[/]" if h["stale"] else seen, str(h.get("version", "")),
                      str(h.get("mode", "")), str(h.get("lost_events", "")),
                      f"{h.get('lag_events', 0)} events / {h.get('lag_seconds', 0)} s",
                      "yes" if h.get("accept_diagnose") else "no")
    Console().print(table)
    return 0


def run_diagnose(args: argparse.Namespace) -> int:
    from bpfwatch.diagnose.request import parse_text
    from bpfwatch.fleet.remote import diagnose
    from bpfwatch.textfile import read_small

    raw = sys.stdin.buffer.read(1 << 20) if args.request == "-" else read_small(args.request, "request file")
    req = parse_text(raw, 86400)  # a request this side cannot even read goes nowhere
    timeout = args.timeout or req.duration + 30
    if not 0 < timeout <= 86400:
        raise UsageError("--timeout: from 0 to 86400 seconds")
    doc = diagnose(auth_from(args), args.hosts, req.as_dict(), timeout, args.prefix)
    opts = orjson.OPT_APPEND_NEWLINE | (orjson.OPT_INDENT_2 if args.indent else 0)
    sys.stdout.buffer.write(orjson.dumps(doc, option=opts))
    return 0 if doc["summary"].get("answered") else 1
