"""The fleet for real: agents publishing their capture to NATS JetStream
(Debian's nats-server, started here on loopback: one server, and a 3-node
cluster for the fault tests), collectors writing Parquet, DuckDB queries, the
host list and fleet diagnose requests.

What must hold: a marked exec, connection (exact bytes) and file write made on
an agent's host come out of `fleet query`; an outage of NATS, a killed agent
and a killed collector lose nothing and duplicate nothing; a node of the
cluster may die; diagnose answers say per host what happened."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentproc import AgentProc, agent
from conftest import BPFWATCH, ROOT
from natsserver import NatsCluster, NatsServer, free_port, nats_server_binary

pytestmark = pytest.mark.skipif(nats_server_binary() is None and os.environ.get("BPFWATCH_REQUIRE_BPF") != "1",
                                reason="nats-server is not installed")
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture
def nats(tmp_path: Path):
    server = NatsServer(tmp_path).start()
    yield server
    server.stop()


def fleet(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*BPFWATCH, "fleet", *args], capture_output=True, text=True, env=ENV, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"fleet {args[0]} failed ({p.returncode}): {p.stderr}")
    return p


def query(store: Path, sql: str) -> list[dict[str, Any]]:
    out = fleet("query", "--store", str(store), "--json", sql).stdout
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def collect_until(server: str | list[str], store: Path, sql: str, want: Any, timeout: float = 60.0,
                  durable: str = "bpfwatch-collector", conn: list[str] | None = None) -> list[dict[str, Any]]:
    """Runs a collector while `sql` over the store does not yet return
    `want` (or a predicate over the rows); then stops it (SIGTERM)."""
    servers = [server] if isinstance(server, str) else server
    conn = (conn or []) + [a for s in servers for a in ("--server", s)]
    proc = subprocess.Popen([*BPFWATCH, "fleet", "collect", *conn, "--store", str(store), "--durable", durable],
                            env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if proc.poll() is not None:
                raise AssertionError(f"the collector exited: {proc.stderr.read() if proc.stderr else ''}")
            if any(store.rglob("*.parquet")):
                rows = query(store, sql)
                if want(rows) if callable(want) else rows == want:
                    break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return rows


def collect_until_args(conn: list[str], store: Path, sql: str, want: Any, timeout: float = 60.0
                       ) -> list[dict[str, Any]]:
    """collect_until with full connection options (TLS, credentials)."""
    return collect_until([], store, sql, want, timeout, conn=conn)


def agent_toml(work: Path, servers: list[str], host: str, root: Path | None = None, metrics_port: int = 0,
               **nats: Any) -> str:
    """An agent sending to `servers`. The collector's store and the servers'
    own files (under `root`) are left out: on one host, the collector's
    writes would be events to collect, whose writes would be events, and so
    on (the servers write their stores on every heartbeat)."""
    nats.setdefault("stream_max_bytes", "256MB")  # fits a small disk (the VM's /tmp); the default is 10 GB
    extra = "\n".join(f"{k} = {orjson.dumps(v).decode()}" for k, v in nats.items())
    root = root or work
    skip = [str(root / "store"), str(root / "nats")]
    return f"""
[filters]
deny = {{ path = {orjson.dumps(skip).decode()}, comm = ["nats-server"] }}
[outputs.capture]
directory = "{work / 'capture'}"
max_segment_events = 2000
retain_segments = 0
[outputs.nats]
enabled = true
servers = {orjson.dumps(servers).decode()}
host = "{host}"
batch_age = "200ms"
heartbeat_interval = "1s"
{extra}
[metrics]
enabled = {"true" if metrics_port else "false"}
address = "127.0.0.1:{metrics_port or 9469}"
[monitor.ebpf]
ring_buffer_size = "4MB"
"""


# -- end to end ------------------------------------------------------------------------------


@pytest.mark.kernel
def test_marked_exec_connection_and_file_write_reach_fleet_query(tmp_path, nats):
    host = f"bw-e2e-{uuid.uuid4().hex[:6]}"
    mark = f"fleetmark-{uuid.uuid4().hex[:8]}"
    port_metrics = free_port()
    with agent(tmp_path, agent_toml(tmp_path, [nats.url], host, metrics_port=port_metrics)) as a:
        a.wait_log("agent running")
        a.wait_log("nats output connected")
        srv = socket.create_server(("127.0.0.1", 0))
        port = srv.getsockname()[1]

        def serve() -> None:
            c, _ = srv.accept()
            got = 0
            while got < 12345:
                got += len(c.recv(65536))
            c.sendall(b"r" * 777)
            c.close()

        t = threading.Thread(target=serve)
        t.start()
        target = tmp_path / f"{mark}.out"
        client = (f"import socket, sys\nc = socket.create_connection(('127.0.0.1', {port}))\n"
                  "c.sendall(b'q' * 12345)\nn = 0\nwhile n < 777:\n    b = c.recv(4096)\n    n += len(b)\n"
                  "    if not b: break\nc.close()\n"
                  f"open({str(target)!r}, 'wb').write(b'x' * 4321)\n")
        subprocess.run([sys.executable, "-c", client, mark], check=True)
        t.join(10)
        srv.close()
        store = tmp_path / "store"
        rows = collect_until(nats.url, store, f"""
            SELECT
              (SELECT count(*) FROM events WHERE type = 'process.exec' AND list_contains(argv, '{mark}')
                 AND host = '{host}') AS execs,
              (SELECT count(*) FROM events WHERE type = 'network.close' AND remote_port = {port}
                 AND bytes_sent = 12345 AND bytes_received = 777) AS closes,
              (SELECT count(*) FROM events WHERE type = 'file.io' AND path = '{target}' AND write_bytes = 4321)
                AS writes""", lambda r: r and r[0]["execs"] == 1 and r[0]["closes"] == 1 and r[0]["writes"] == 1)
        assert rows == [{"execs": 1, "closes": 1, "writes": 1}], (rows, a.log)
        # every column the store types, checked on the exec: the partition keys, the parent in `event`
        ex = query(store, f"SELECT host, day, exe, json_extract_string(event, '$.parent.comm') AS parent "
                          f"FROM events WHERE list_contains(argv, '{mark}') AND type = 'process.exec'")
        assert ex[0]["host"] == host and ex[0]["exe"] == os.path.realpath(sys.executable)
        assert ex[0]["day"] == time.strftime("%Y-%m-%d", time.gmtime()) or ex[0]["day"]
        # nothing twice
        dup = query(store, "SELECT count(*) AS n, count(DISTINCT event) AS d FROM events")
        assert dup[0]["n"] == dup[0]["d"]
        # the agent says how it goes (its metrics are a snapshot taken once a second)
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port_metrics}/metrics", timeout=5) as r:
                metrics = r.read().decode()
            published = next(float(line.split()[1]) for line in metrics.splitlines()
                             if line.startswith("bpfwatch_nats_published_events_total "))
            if published >= dup[0]["n"] or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert "bpfwatch_nats_connected 1.0" in metrics
        assert published >= dup[0]["n"]  # the store has what was acknowledged
        assert "bpfwatch_nats_lag_events" in metrics
        assert a.stop() == 0


# -- outages, crashes ---------------------------------------------------------------------------


def marked_execs(mark: str, n: int) -> None:
    for i in range(n):
        subprocess.run(["/bin/true", mark, str(i)], check=True)


class MarkedLoad:
    """Marked execs at a steady pace in a thread, until stopped: the load an
    outage or a kill happens under. The marks in the agent's capture are what
    went in; the store must hold exactly those."""

    def __init__(self, mark: str, per_s: float = 25.0) -> None:
        self.mark, self.per_s, self.done = mark, per_s, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            subprocess.run(["/bin/true", self.mark, str(self.done)], check=True)
            self.done += 1
            self._stop.wait(1 / self.per_s)

    def __enter__(self) -> MarkedLoad:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def captured_marks(capture: Path, mark: str) -> int:
    from bpfwatch.capture import reader

    return sum(1 for e in reader.read(str(capture), types={"process.exec"}) if mark in (e.get("argv") or []))


def assert_store_has_exactly(servers: str | list[str], store: Path, mark: str, n: int) -> None:
    sql = f"SELECT count(*) AS n, count(DISTINCT exec_id) AS d FROM events WHERE list_contains(argv, '{mark}')"
    rows = collect_until(servers, store, sql, [{"n": n, "d": n}], timeout=90)
    assert rows == [{"n": n, "d": n}], f"{n} captured"
    # nothing else twice either; the start-up snapshot (source procfs) is left out: an agent started
    # again reports the processes still running again, in the very same words
    dup = query(store, "SELECT count(*) AS n, count(DISTINCT event) AS d FROM events WHERE source != 'procfs'")
    assert dup[0]["n"] == dup[0]["d"]


@pytest.mark.kernel
@pytest.mark.host_only  # a paced load and a timed outage
def test_server_stopped_30s_under_load_is_replayed_exactly_once(tmp_path, nats):
    host = f"bw-out-{uuid.uuid4().hex[:6]}"
    mark = f"outage-{uuid.uuid4().hex[:8]}"
    with agent(tmp_path, agent_toml(tmp_path, [nats.url], host)) as a:
        a.wait_log("agent running")  # the output connects first, the sensors load after it
        a.wait_log("nats output connected")
        with MarkedLoad(mark) as load:
            time.sleep(2)
            nats.stop()
            a.wait_log("nats output disconnected")
            time.sleep(30)  # the only server is gone: the capture holds what happens meanwhile
            nats.start()
            time.sleep(2)
        a.wait_events(lambda evs: sum(1 for e in evs if mark in (e.get("argv") or [])) == load.done)
        assert load.done > 700
        assert_store_has_exactly(nats.url, tmp_path / "store", mark, load.done)
        assert "nats output reconnected" in a.log
        assert a.stop() == 0


@pytest.mark.kernel
@pytest.mark.host_only  # a paced load and a timed outage
def test_agent_killed_mid_batch_sends_nothing_twice(tmp_path, nats):
    """kill -9 while batches flow: the restarted agent sends its pending range
    again with the same ids; what the capture holds reaches the store once."""
    host = f"bw-kill-{uuid.uuid4().hex[:6]}"
    mark = f"akill-{uuid.uuid4().hex[:8]}"
    toml = agent_toml(tmp_path, [nats.url], host, batch_events=7)  # many small ranges: one is in flight
    with MarkedLoad(mark, per_s=40):
        with agent(tmp_path, toml) as a:
            a.wait_log("agent running")
            time.sleep(3)
            a.stop(signal.SIGKILL)
        with agent(tmp_path, toml) as a:
            a.wait_log("agent running")
            time.sleep(3)
            assert a.stop() == 0  # SIGTERM: its last events are sent before it exits
    captured = captured_marks(tmp_path / "capture", mark)
    assert captured > 100
    assert_store_has_exactly(nats.url, tmp_path / "store", mark, captured)


async def _stream_messages(url: str, stream: str) -> int:
    import nats as natspy

    nc = await natspy.connect(servers=[url])
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


async def _stream_leader(urls: list[str], stream: str) -> str:
    import nats as natspy

    nc = await natspy.connect(servers=urls)
    try:
        info = await nc.jetstream().stream_info(stream)
        return str(info.cluster.leader)
    finally:
        await nc.close()


@pytest.mark.kernel
@pytest.mark.host_only  # a paced load and a timed outage
def test_stream_leader_of_r3_cluster_killed_while_agent_publishes(tmp_path):
    cluster = NatsCluster(tmp_path).start()
    host = f"bw-r3-{uuid.uuid4().hex[:6]}"
    mark = f"leader-{uuid.uuid4().hex[:8]}"
    try:
        with agent(tmp_path, agent_toml(tmp_path, cluster.urls, host, replicas=3)) as a:
            a.wait_log("agent running")
            a.wait_log("nats output connected")
            with MarkedLoad(mark, per_s=40):
                time.sleep(3)
                leader = asyncio.run(_stream_leader(cluster.urls, "BPFWATCH_EVENTS"))
                node = next(n for n in cluster.nodes if n.name == leader)
                node.stop(kill=True)
                time.sleep(6)
            time.sleep(2)
            captured = captured_marks(tmp_path / "capture", mark)
            assert captured > 250
            alive = [n.url for n in cluster.nodes if n.proc is not None]
            assert_store_has_exactly(alive, tmp_path / "store", mark, captured)
            assert a.stop() == 0
    finally:
        cluster.stop()


def synthetic_capture(directory: Path, count: int, start: int = 0, mark: str = "syn",
                      segment_events: int = 250, pad: int = 0) -> None:
    """Events written by the agent's own capture writer (small segments: they
    rotate and are compressed while the publisher reads them)."""
    from bpfwatch.agent.config import CaptureConfig
    from bpfwatch.capture.writer import CaptureWriter

    cfg = CaptureConfig(directory=str(directory), max_segment_events=segment_events, compression="zstd",
                        max_segment_size=64 << 20, max_segment_age=3600.0, compression_level=3,
                        retain_size=0, retain_segments=0, file_mode=0o600, buffer_events=100000,
                        retry_interval=1.0)
    w = CaptureWriter(cfg).open()
    try:
        now = time.time_ns()
        for k in range(start, start + count, 50):
            w.write([{"ts": now + i, "time": "", "type": "process.exec", "source": "ebpf", "pid": i, "tid": i,
                      "ppid": 1, "uid": 0, "user": "root", "comm": "syn", "exe": "/bin/syn", "cgroup_id": 1,
                      "exec_id": f"{mark}-{i}", "argv": [mark, str(i), "x" * pad]}
                     for i in range(k, min(k + 50, start + count))])
    finally:
        w.close()


PUBLISHER = """
import sys, time, logging
sys.path.insert(0, {src!r})
from bpfwatch.fleet.connect import NatsAuth
from bpfwatch.fleet.publisher import NatsPublisher, PublishSettings
logging.basicConfig(level=logging.INFO)
p = NatsPublisher(PublishSettings(NatsAuth(servers={servers!r}), host={host!r}, batch_events={batch},
                                  batch_age=0.05, replicas={replicas}), {capture!r}).start()
while True:
    time.sleep(0.05)
    print(p.stats.published_events, flush=True)
"""


def publisher_proc(capture: Path, servers: list[str], host: str, batch: int = 20, replicas: int = 1
                   ) -> subprocess.Popen[str]:
    code = PUBLISHER.format(src=str(ROOT / "src"), servers=servers, host=host, batch=batch, capture=str(capture),
                            replicas=replicas)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)


def wait_published(p: subprocess.Popen[str], at_least: int, timeout: float = 30.0) -> int:
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    n = 0
    while n < at_least and time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        n = int(line)
    return n


def test_publisher_killed_mid_send_duplicates_nothing(tmp_path, nats):
    """SIGKILL while ranges are in flight: the next publisher sends the
    pending range again with the same ids, and the server keeps one copy."""
    cap = tmp_path / "capture"
    synthetic_capture(cap, 2000, mark="kill")
    p = publisher_proc(cap, [nats.url], "bw-kill")
    wait_published(p, 300)
    p.send_signal(signal.SIGKILL)
    p.wait()
    cursor = orjson.loads((cap / "nats-cursor.json").read_bytes())
    p = publisher_proc(cap, [nats.url], "bw-kill")
    assert wait_published(p, 2000 - cursor["line"] if cursor["seq"] == 0 else 1) > 0
    try:
        rows = collect_until(nats.url, tmp_path / "store",
                             "SELECT count(*) AS n, count(DISTINCT exec_id) AS d FROM events",
                             [{"n": 2000, "d": 2000}])
    finally:
        p.kill()
        p.wait()
    assert rows == [{"n": 2000, "d": 2000}], cursor


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_big_events_are_split_under_the_servers_max_payload(tmp_path, nats, compression):
    """5,000 events of 2 KiB in one range: 10 MB of JSON, over the server's
    1 MB max_payload unless split; every event arrives, once."""
    from bpfwatch.fleet.connect import NatsAuth
    from bpfwatch.fleet.publisher import NatsPublisher, PublishSettings

    cap = tmp_path / "capture"
    synthetic_capture(cap, 5000, mark="big", segment_events=5000, pad=2048)
    pub = NatsPublisher(PublishSettings(NatsAuth(servers=[nats.url]), host="bw-big", batch_age=0.05,
                                        compression=compression), str(cap)).start()
    _wait(lambda: pub.stats.published_events == 5000 or pub.stats.publish_errors > 0)
    pub.close()
    assert pub.stats.publish_errors == 0 and pub.stats.published_events == 5000
    assert pub.stats.published_messages >= 10
    rows = collect_until(nats.url, tmp_path / "store", "SELECT count(*) AS n, count(DISTINCT exec_id) AS d "
                         "FROM events", [{"n": 5000, "d": 5000}])
    assert rows == [{"n": 5000, "d": 5000}]


def test_collectors_share_the_work_and_a_killed_one_loses_nothing(tmp_path, nats):
    cap = tmp_path / "capture"
    synthetic_capture(cap, 3000, mark="coll")
    p = publisher_proc(cap, [nats.url], "bw-coll", batch=10)
    try:
        assert wait_published(p, 3000) == 3000
    finally:
        p.kill()
        p.wait()
    store = tmp_path / "store"
    args = [*BPFWATCH, "fleet", "collect", "--server", nats.url, "--store", str(store), "--batch", "4",
            "--ack-wait", "2", "--until-idle", "4"]
    first = subprocess.Popen(args, env=ENV, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(args, env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not any(store.rglob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    first.send_signal(signal.SIGKILL)  # whatever it held unacknowledged goes to the other after 2 s
    first.wait()
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    done = int(err.strip().splitlines()[-1].split()[1])
    assert done > 0  # the second one worked too
    rows = query(store, "SELECT count(*) AS n, count(DISTINCT exec_id) AS d FROM events")
    assert rows == [{"n": 3000, "d": 3000}]


# -- hosts and diagnose ------------------------------------------------------------------------------


@pytest.mark.kernel
def test_hosts_and_fleet_diagnose(tmp_path, nats):
    tag = uuid.uuid4().hex[:6]
    yes, no = f"bwd-{tag}-yes", f"bwd-{tag}-no"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = AgentProc(tmp_path / "a", agent_toml(tmp_path / "a", [nats.url], yes, tmp_path, accept_diagnose=True))
    b = AgentProc(tmp_path / "b", agent_toml(tmp_path / "b", [nats.url], no, tmp_path))
    try:
        for x in (a, b):
            x.wait_log("agent running")
            x.wait_log("nats output connected")
        deadline = time.monotonic() + 20
        while True:
            found = {h["host"]: h for h in orjson.loads(fleet("hosts", "--server", nats.url, "--json").stdout)}
            if (yes in found and no in found and found[yes].get("sensors")) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert found[yes]["accept_diagnose"] is True and found[no]["accept_diagnose"] is False
        assert found[yes]["mode"] == "ebpf" and not found[yes]["stale"]
        assert "process" in found[yes]["sensors"]

        req = tmp_path / "req.json"
        req.write_text(orjson.dumps({"reasoning": "fleet test", "ebpf_capabilities": ["process_trace"],
                                     "ebpf_duration_seconds": 3}).decode())

        answered = threading.Event()

        def poke() -> None:  # marked execs until the answer is in: some fall in the session, however slow its start
            while not answered.wait(0.2):
                subprocess.run(["/bin/true", f"diag-{tag}"], check=True)

        t = threading.Thread(target=poke)
        t.start()
        try:
            out = fleet("diagnose", "--server", nats.url, "--hosts", f"bwd-{tag}-*", "--request", str(req),
                        "--timeout", "40")
        finally:
            answered.set()
            t.join()
        doc = orjson.loads(out.stdout)
        assert doc["hosts"][yes]["status"] == "answered", doc
        assert doc["hosts"][no]["status"] == "refused" and "accept_diagnose" in doc["hosts"][no]["reason"]
        assert doc["summary"] == {"answered": 1, "refused": 1}
        assert f"diag-{tag}" in orjson.dumps(doc["hosts"][yes]["result"]).decode()

        # commands: refused by the agent's own policy, whatever the request says
        req.write_text(orjson.dumps({"reasoning": "x", "commands": [{"id": "c1", "command": "id"}],
                                     "ebpf_capabilities": ["process_trace"],
                                     "ebpf_duration_seconds": 1}).decode())
        out = fleet("diagnose", "--server", nats.url, "--hosts", yes, "--request", str(req), check=False)
        doc = orjson.loads(out.stdout)
        assert out.returncode == 1 and doc["hosts"][yes]["status"] == "refused"
        assert "diagnose_commands" in orjson.dumps(doc["hosts"][yes]).decode()

        out = fleet("diagnose", "--server", nats.url, "--hosts", f"bwd-{tag}-ghost", "--request", str(req),
                    "--timeout", "3", check=False)
        assert orjson.loads(out.stdout)["hosts"][f"bwd-{tag}-ghost"]["status"] == "unreachable"

        # the same through MCP, as an AI agent would ask
        mcp = asyncio.run(asyncio.wait_for(_mcp_fleet(nats.url, f"bwd-{tag}-*"), 120))
        assert {"fleet_diagnose", "fleet_hosts"} <= set(mcp["tools"])
        assert {h["host"] for h in mcp["hosts"]["hosts"]} >= {yes, no}
        assert mcp["diag"]["hosts"][yes]["status"] == "answered" and mcp["diag"]["hosts"][no]["status"] == "refused"
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


async def _mcp_fleet(url: str, pattern: str) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "bpfwatch.cli.main", "mcp", "--fleet", url],
                                   cwd=str(ROOT), env=ENV)
    out: dict[str, Any] = {}
    async with Client(params) as client:
        out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
        out["hosts"] = (await client.call_tool("fleet_hosts", {})).structured_content
        out["diag"] = (await client.call_tool("fleet_diagnose", {
            "hosts": pattern, "request": {"ebpf_capabilities": ["process_trace"], "ebpf_duration_seconds": 1}})
        ).structured_content
    return out


# -- clear errors ---------------------------------------------------------------------------------------


def test_fleet_errors_are_one_line(tmp_path):
    p = fleet("query", "--store", str(tmp_path / "nope"), "SELECT 1", check=False)
    assert p.returncode == 2 and "no such store directory" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "store").mkdir()
    p = fleet("query", "--store", str(tmp_path / "store"), "SELEC broken", check=False)
    assert p.returncode == 1 and p.stderr.startswith("bpfwatch: query failed:") and len(p.stderr.splitlines()) == 1
    p = fleet("query", "--store", str(tmp_path / "store"), "SELECT count(*) AS n FROM events", "--json")
    assert orjson.loads(p.stdout) == {"n": 0}  # an empty store answers
    p = fleet("hosts", "--server", "nats://127.0.0.1:1", check=False)
    assert p.returncode == 1 and "cannot reach NATS" in p.stderr and len(p.stderr.splitlines()) == 1
    p = fleet("hosts", "--server", "http://x", check=False)
    assert p.returncode == 2 and "is not a URL" in p.stderr


@pytest.mark.parametrize("how", ["token", "password"])
def test_authenticated_servers(tmp_path, how):
    """A server that wants a token, or a user and password: the secret comes
    from a file; without it the refusal is one line."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret-" + uuid.uuid4().hex[:8] + "\n")
    extra = ["--auth", secret.read_text().strip()] if how == "token" else \
        ["--user", "bw", "--pass", secret.read_text().strip()]
    server = NatsServer(tmp_path, extra=extra).start()
    try:
        creds = ["--token-file", str(secret)] if how == "token" else ["--user", "bw", "--password-file", str(secret)]
        assert fleet("hosts", "--server", server.url, "--json", *creds).stdout.strip() == "[]"
        p = fleet("hosts", "--server", server.url, check=False)
        assert p.returncode == 1 and "cannot reach NATS" in p.stderr and "uthorization" in p.stderr
        assert len(p.stderr.splitlines()) == 1
        cap = tmp_path / "capture"
        synthetic_capture(cap, 100, mark="auth")
        from bpfwatch.fleet.connect import NatsAuth
        from bpfwatch.fleet.publisher import NatsPublisher, PublishSettings

        auth = NatsAuth(servers=[server.url], token_file=str(secret)) if how == "token" else \
            NatsAuth(servers=[server.url], user="bw", password_file=str(secret))
        pub = NatsPublisher(PublishSettings(auth, host="bw-auth", batch_age=0.05), str(cap)).start()
        deadline = time.monotonic() + 20
        while pub.stats.published_events < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        pub.close()
        assert pub.stats.published_events == 100
    finally:
        server.stop()


def make_ca(d: Path) -> tuple[Path, Path, Path]:
    """A CA made here, and a server certificate for 127.0.0.1 signed by it."""
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=bpfwatch test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    return d / "ca.pem", d / "server.pem", d / "server.key"


SECURE_CONF = """
listen: 127.0.0.1:{port}
jetstream { store_dir: "{store}" }
tls { cert_file: "%(cert)s", key_file: "%(key)s", timeout: 3 }
authorization {
  users = [
    { user: "admin", password: "%(admin)s" }
    { user: "host-a", password: "%(pa)s", permissions: {
        publish: { allow: ["bpfwatch.events.host-a.>", "$KV.bpfwatch_hosts.host-a",
                           "$JS.API.STREAM.INFO.>", "$JS.API.CONSUMER.INFO.>"] }
        subscribe: { allow: ["_INBOX.>", "bpfwatch.diagnose.host-a"] } } }
  ]
}
"""


def test_tls_and_per_host_permissions(tmp_path):
    """A TLS server (CA made by the test) where a host may publish only under
    its own subjects: its events arrive; publishing as another host is
    refused; wrong credentials or no CA fail in one clear line."""
    from bpfwatch.fleet.connect import NatsAuth
    from bpfwatch.fleet.publisher import NatsPublisher, PublishSettings

    (tmp_path / "pki").mkdir()
    ca, cert, key = make_ca(tmp_path / "pki")
    pw = {"admin": uuid.uuid4().hex, "pa": uuid.uuid4().hex}
    for name, value in pw.items():
        (tmp_path / f"{name}.pw").write_text(value)
    server = NatsServer(tmp_path, config=SECURE_CONF % {"cert": cert, "key": key, **pw}).start()
    admin = ["--server", server.url, "--tls-ca", str(ca), "--user", "admin", "--password-file",
             str(tmp_path / "admin.pw")]
    try:
        assert server.url.startswith("tls://")
        # the operator makes the stream and the bucket; hosts only publish
        admin_auth = NatsAuth(servers=[server.url], tls_ca=str(ca), user="admin",
                              password_file=str(tmp_path / "admin.pw"))
        cap0 = tmp_path / "cap0"
        synthetic_capture(cap0, 10, mark="setup")
        setup = NatsPublisher(PublishSettings(admin_auth, host="operator", batch_age=0.05), str(cap0)).start()
        _wait(lambda: setup.stats.published_events == 10)
        setup.close()

        host_a = NatsAuth(servers=[server.url], tls_ca=str(ca), user="host-a", password_file=str(tmp_path / "pa.pw"))
        cap = tmp_path / "cap-a"
        synthetic_capture(cap, 300, mark="tls")
        pub = NatsPublisher(PublishSettings(host_a, host="host-a", batch_age=0.05, create_stream=False),
                            str(cap)).start()
        _wait(lambda: pub.stats.published_events == 300)
        pub.close()
        assert pub.stats.published_events == 300

        # host-a's credentials, another host's name: nothing gets in
        cap_b = tmp_path / "cap-b"
        synthetic_capture(cap_b, 50, mark="spoof")
        spoof = NatsPublisher(PublishSettings(host_a, host="host-b", batch_age=0.05, create_stream=False),
                              str(cap_b)).start()
        _wait(lambda: spoof.stats.publish_errors >= 1)
        spoof.close()
        assert spoof.stats.published_events == 0

        rows = collect_until_args(admin, tmp_path / "store",
                                  "SELECT host, count(*) AS n FROM events GROUP BY ALL ORDER BY host",
                                  [{"host": "host-a", "n": 300}, {"host": "operator", "n": 10}])
        assert rows == [{"host": "host-a", "n": 300}, {"host": "operator", "n": 10}]

        # wrong password, or no CA: one line each
        (tmp_path / "bad.pw").write_text("wrong")
        p = fleet("hosts", "--server", server.url, "--tls-ca", str(ca), "--user", "host-a", "--password-file",
                  str(tmp_path / "bad.pw"), check=False)
        assert p.returncode == 1 and "Authorization Violation" in p.stderr and len(p.stderr.splitlines()) == 1
        p = fleet("hosts", "--server", server.url, check=False)
        assert p.returncode == 1 and "cannot reach NATS" in p.stderr and len(p.stderr.splitlines()) == 1
        assert "CERTIFICATE_VERIFY_FAILED" in p.stderr or "certificate" in p.stderr.lower()
    finally:
        server.stop()


def _wait(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.kernel
def test_agent_with_wrong_credentials_says_so_once_and_keeps_capturing(tmp_path):
    server = NatsServer(tmp_path, extra=["--user", "bw", "--pass", "right"]).start()
    (tmp_path / "pw").write_text("wrong")
    try:
        toml = agent_toml(tmp_path, [server.url], "bw-badcreds", user="bw", password_file=str(tmp_path / "pw"))
        with agent(tmp_path, toml) as a:
            a.wait_log("agent running")
            a.wait_log("Authorization Violation", timeout=20)
            marked_execs("badcreds-mark", 3)
            a.wait_events(lambda evs: sum(1 for e in evs if "badcreds-mark" in (e.get("argv") or [])) == 3)
            time.sleep(4)  # retries go on, quietly
            lines = [x for x in a.log.splitlines() if "Authorization Violation" in x]
            assert len(lines) == 1, lines
            assert a.stop() == 0
    finally:
        server.stop()


@pytest.mark.kernel
def test_stream_larger_than_the_servers_store_is_named_with_its_key(tmp_path):
    """The default stream limit (10 GB) on a server whose JetStream has less:
    the agent says which setting to lower, once, and keeps capturing."""
    conf = 'listen: "127.0.0.1:{port}"\njetstream { store_dir: "{store}", max_file_store: 64MB }\n'
    server = NatsServer(tmp_path, config=conf).start()
    try:
        with agent(tmp_path, agent_toml(tmp_path, [server.url], "bw-small-store", stream_max_bytes="10GB")) as a:
            a.wait_log("agent running")
            a.wait_log("outputs.nats.stream_max_bytes", timeout=30)
            assert "insufficient storage resources" in a.log and "max_file_store" in a.log
            marked_execs("smallstore-mark", 2)
            a.wait_events(lambda evs: sum(1 for e in evs if "smallstore-mark" in (e.get("argv") or [])) == 2)
            # the remedy: a smaller limit, and a reload
            a.config.write_text(agent_toml(tmp_path, [server.url], "bw-small-store", stream_max_bytes="32MB"))
            mark = len(a.log)
            a.proc.send_signal(signal.SIGHUP)
            a.wait_log("config reloaded", after=mark)
            a.wait_log("nats output connected", after=mark, timeout=30)
            assert a.stop() == 0
        assert asyncio.run(_stream_messages(server.url, "BPFWATCH_EVENTS")) > 0  # what waited was sent
    finally:
        server.stop()


@pytest.mark.parametrize("toml, key", [
    ("[outputs.capture]\nenabled = false\n[outputs.nats]\nenabled = true\n", "outputs.nats.enabled"),
    ("[outputs.nats]\nservers = [\"localhost:4222\"]\n", "outputs.nats.servers"),
    ("[outputs.nats]\ncreds = \"relative.creds\"\n", "outputs.nats.creds"),
    ("[outputs.nats]\nsubject_prefix = \"a..b\"\n", "outputs.nats.subject_prefix"),
    ("[outputs.nats]\nenabled = true\ntoken_file = \"/t\"\nuser = \"u\"\n", "outputs.nats"),
])
def test_nats_config_errors_name_the_key(tmp_path, toml, key):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    p = subprocess.run([*BPFWATCH, "config", "check", str(cfg)], capture_output=True, text=True, env=ENV)
    assert p.returncode == 2 and f": {key}" in p.stderr, p.stderr


def test_tail_follows_rotation_compression_and_resumes(tmp_path):
    from bpfwatch.fleet.tail import CaptureTail, Cursor

    cap = tmp_path / "capture"
    synthetic_capture(cap, 1000, mark="tail")  # 4 segments of 250, compressed
    tail = CaptureTail(str(cap), Cursor())
    got: list[tuple[int, int]] = []
    pids: list[int] = []
    while (rng := tail.read(70)) is not None:
        if got and rng.seq == got[-1][0]:
            assert rng.start == got[-1][1]  # continues where the last range ended
        else:
            assert rng.start == 0 and (not got or rng.seq == got[-1][0] + 1)
        got.append((rng.seq, rng.end))
        pids += [orjson.loads(x)["pid"] for x in rng.lines]
    assert pids == list(range(1000))
    assert len({seq for seq, _ in got}) == 4
    # resume from a cursor in the middle of a compressed segment: the rest, once
    c = Cursor(seq=got[0][0] + 1, line=100)
    tail = CaptureTail(str(cap), c)
    rest = []
    while (rng := tail.read(1000)) is not None:
        rest += [orjson.loads(x)["pid"] for x in rng.lines]
    assert rest == list(range(350, 1000))


def test_tail_skips_segments_retention_deleted_and_counts_them(tmp_path):
    from bpfwatch.fleet.tail import CaptureTail, Cursor

    cap = tmp_path / "capture"
    synthetic_capture(cap, 1000, mark="ret")  # segments 1-4
    for f in cap.glob("bpfwatch-00000001-*"):
        f.unlink()  # gone, though index.json still lists it
    for f in cap.glob("bpfwatch-00000002-*"):
        f.unlink()
    tail = CaptureTail(str(cap), Cursor(seq=1, line=10))
    pids = []
    for _ in range(20):
        rng = tail.read(1000)
        if rng is not None:
            pids += [orjson.loads(x)["pid"] for x in rng.lines]
    assert pids == list(range(500, 1000))
    assert tail.skipped_segments == 2


def test_a_damaged_cursor_is_a_clear_error(tmp_path):
    from bpfwatch.errors import BpfwatchError
    from bpfwatch.fleet.tail import Cursor

    (tmp_path / "nats-cursor.json").write_text("{not json")
    with pytest.raises(BpfwatchError, match="not a cursor file"):
        Cursor.load(str(tmp_path))
    os.unlink(tmp_path / "nats-cursor.json")
    os.symlink("/etc/passwd", tmp_path / "nats-cursor.json")
    with pytest.raises(BpfwatchError):
        Cursor.load(str(tmp_path))
