"""The agent's TOML config: defaults, the example, and every kind of error
reported with its key path and line (exit status 2)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfwatch.agent import config
from bpfwatch.agent.config import ConfigError
from conftest import BPFWATCH


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        config.parse(textwrap.dedent(text), "c.toml")
    return e.value.problems


def test_defaults_and_the_monitor_ebpf_keys() -> None:
    cfg = config.parse(textwrap.dedent("""
        [monitor.ebpf]
        enabled = true
        fallback_to_polling = false
        ring_buffer_size = "32MB"
        network_tracing = false
        file_tracing = true
        debug = true
    """))
    e = cfg.monitor.ebpf
    assert (e.enabled, e.fallback_to_polling, e.ring_buffer_size, e.network_tracing, e.file_tracing, e.debug) == \
        (True, False, 32 << 20, False, True, True)
    assert cfg.monitor.polling.interval == 1.0
    assert cfg.outputs.capture.file_mode == 0o600
    assert cfg.metrics.address.startswith("127.0.0.1:")


def test_example_is_complete_and_valid() -> None:
    text = config.example()
    cfg = config.parse(text)
    assert cfg == config.parse("")  # every default, as written
    doc = tomllib.loads(text)
    # every key of the schema appears in the example
    assert set(doc["monitor"]["ebpf"]) == {"enabled", "fallback_to_polling", "ring_buffer_size", "network_tracing",
                                          "file_tracing", "debug", "wakeup_bytes", "max_delay"}
    assert set(doc) == {"monitor", "sensors", "filters", "outputs", "metrics", "redaction", "log"}
    assert all(line.startswith("#") or "=" in line or line.startswith("[") or not line
               for line in text.splitlines())


def test_unknown_key_with_line_and_suggestion() -> None:
    p = problems("""
        [monitor.ebpf]
        enabled = true
        fallback-to-polling = true
    """)
    assert p == ["c.toml:4: monitor.ebpf.fallback-to-polling: unknown key (did you mean fallback_to_polling?)"]
    assert problems("[outputs.bogus]\nx = 1\n") == [
        "c.toml:1: outputs.bogus: unknown key (known: capture, stdout, nats)"]


def test_wrong_types() -> None:
    p = problems("""
        [monitor.ebpf]
        enabled = "yes"
        [outputs.capture]
        max_segment_events = "many"
        [redaction]
        patterns = "x"
    """)
    assert p == ['c.toml:3: monitor.ebpf.enabled: expected true or false, not "yes"',
                 'c.toml:5: outputs.capture.max_segment_events: expected an integer, not "many"',
                 'c.toml:7: redaction.patterns: expected an array, not "x"']
    assert problems("monitor = 3\n") == ["c.toml:1: monitor: expected a table, not 3"]


def test_bad_sizes_durations_modes_ranges() -> None:
    p = problems("""
        [monitor.ebpf]
        ring_buffer_size = "16XB"
        [monitor.polling]
        interval = "10ms"
        [outputs.capture]
        file_mode = 600
        compression = "lz4"
        compression_level = 40
        [metrics]
        address = "localhost"
    """)
    assert p[0].startswith("c.toml:3: monitor.ebpf.ring_buffer_size: '16XB' is not a size")
    assert p[1].startswith("c.toml:5: monitor.polling.interval: '10ms' is out of range")
    assert p[2] == 'c.toml:7: outputs.capture.file_mode: 600 is not an octal mode such as "0600"'
    assert p[3] == "c.toml:8: outputs.capture.compression: 'lz4' is not one of zstd, gzip, none"
    assert p[4] == "c.toml:9: outputs.capture.compression_level: 40 is out of range (1 to 19)"
    assert p[5].startswith("c.toml:11: metrics.address: 'localhost' is not HOST:PORT")


def test_bad_filters() -> None:
    p = problems("""
        [filters]
        types = ["process.*", "bogus.x"]
        [filters.allow]
        comm = ["re:(("]
        port = 99999
        colour = "red"
        [filters.deny]
        addr = "10.0.0.0/33"
    """)
    assert p[0].startswith("c.toml:3: filters.types: unknown event type 'bogus.x'")
    assert p[1].startswith("c.toml:5: filters.allow.comm: bad regex '(('")
    assert p[2] == "c.toml:6: filters.allow.port: '99999' is not within 1-65535"
    assert p[3].startswith("c.toml:7: filters.allow.colour: unknown filter key (known: pid, ppid")
    assert p[4].startswith("c.toml:9: filters.deny.addr: ")


def test_toml_syntax_error_names_the_line() -> None:
    assert problems("[monitor.ebpf]\nenabled = tru\n") == [
        "c.toml:2: not valid TOML: Invalid value"]


def test_inline_and_dotted_keys_are_located() -> None:
    p = problems('monitor.ebpf.ring_buffer_size = "x"\nfilters = { allow = { port = "a" } }\n')
    assert p[0].startswith("c.toml:1: monitor.ebpf.ring_buffer_size:")
    assert p[1].startswith("c.toml:2: filters.allow.port:")


def test_config_check_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[monitor.ebpf]\nring_buffer_size = "8MB"\n')
    r = subprocess.run([*BPFWATCH, "config", "check", str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[monitor.ebpf]\nring_buffer_size = "8XB"\nbogus = 1\n')
    r = subprocess.run([*BPFWATCH, "config", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"bpfwatch: {bad}:2: monitor.ebpf.ring_buffer_size: '8XB' is not a size (e.g. \"16MB\", \"512KB\", 4096)",
        f"bpfwatch: {bad}:3: monitor.ebpf.bogus: unknown key (known: enabled, fallback_to_polling, "
        "ring_buffer_size, network_tracing, file_tracing, debug, wakeup_bytes, max_delay)"]
    assert "Traceback" not in r.stderr
    r = subprocess.run([*BPFWATCH, "config", "check", str(tmp_path / "none.toml")], capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = subprocess.run([*BPFWATCH, "agent", "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "ring_buffer_size" in r.stderr


def test_config_example_cli_round_trips(tmp_path: Path) -> None:
    r = subprocess.run([*BPFWATCH, "config", "example"], capture_output=True, text=True, check=True)
    f = tmp_path / "ex.toml"
    f.write_text(r.stdout)
    assert subprocess.run([*BPFWATCH, "config", "check", str(f)], capture_output=True).returncode == 0


def test_security_rules_file_is_checked_with_the_config(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[rules.bpf_load]\nexceptions = [{ program = \"x\" }]\n")
    p = problems(f"""
        [sensors.security]
        enabled = true
        rules = "{rules}"
    """)
    assert p == ["c.toml:4: sensors.security.rules: rules.toml: rules.bpf_load.exceptions[0]: unknown key "
                 "'program' (exe, comm, user, path)"]
    assert problems('[sensors.security]\nrules = "relative.toml"\n') == [
        "c.toml:2: sensors.security.rules: 'relative.toml' is not an absolute path"]
    rules.write_text("[rules.unshare]\nseverity = \"high\"\n")
    cfg = config.parse(f'[sensors.security]\nenabled = true\nrules = "{rules}"\n')
    assert cfg.sensors.security.enabled and cfg.sensors.security.rules == str(rules)


# ---- one validator for `config check` and the agent (hostile configs) ----------------------------

REFUSED = [
    ("[monitor.ebpf]\nring_buffer_size = 1000\n", "power of two"),
    ("[monitor.ebpf]\nring_buffer_size = 0\n", "power of two"),
    ('[monitor.ebpf]\nring_buffer_size = "4MB"\nwakeup_bytes = "4MB"\n', "quarter of the ring"),
    ("[filters]\nallow = { pid = [99999999999999999999] }\n", "out of range"),
    ("[filters]\nallow = { uid = [99999999999999999999] }\n", "out of range"),
    ('[outputs.capture]\ndirectory = "/tmp/a\\u0000b"\n', "not a usable path"),
    ("[outputs.capture]\nmax_segment_size = 0\n", "out of range"),
    ('[metrics]\naddress = "[::1:19515"\n', "brackets"),
    ('[outputs.capture]\nfile_mode = "4777"\n', "writable by others or setuid"),
    ("a = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ('[sensors.security]\nenabled = true\nrules = "/etc"\n', "is a directory"),
    ('[sensors.security]\nenabled = true\nrules = "/dev/zero"\n', "not a regular file"),
]


@pytest.mark.parametrize("text, needle", REFUSED)
def test_config_check_refuses_what_the_agent_would(tmp_path, text, needle) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    p = subprocess.run([*BPFWATCH, "config", "check", str(path)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "Traceback" not in p.stderr and needle in p.stderr, p.stderr


def test_config_from_a_fifo_or_a_device_is_refused_at_once(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        p = subprocess.run([*BPFWATCH, "config", "check", str(path)], capture_output=True, text=True, timeout=10)
        assert p.returncode == 2 and "not a regular file" in p.stderr


def test_metrics_on_every_address_is_a_warning(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[metrics]\naddress = ":9469"\n')
    p = subprocess.run([*BPFWATCH, "config", "check", str(path)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "warning: metrics.address ':9469' listens on every address" in p.stderr


_KEYS = [("monitor.ebpf", k) for k in ("ring_buffer_size", "wakeup_bytes", "max_delay", "enabled")] + \
    [("monitor.polling", "interval"), ("outputs.capture", "max_segment_size"), ("outputs.capture", "file_mode"),
     ("outputs.capture", "directory"), ("outputs.capture", "compression_level"), ("metrics", "address"),
     ("sensors.dns", "port"), ("sensors.network", "udp_idle"), ("filters", "types"), ("filters", "allow"),
     ("redaction", "patterns"), ("sensors.file", "paths")]
_VALUES = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True), st.booleans(), st.text(max_size=30),
    st.sampled_from(['"16MB"', '"0"', '"1e309s"', '"nan"', '"::1"', '"[::1]:0"', '"0777"', '"/x\\u0000"',
                     '{ pid = [0] }', '{ uid = ["x"] }', '["re:("]', '["process.*"]']),
    st.lists(st.text(max_size=10), max_size=3))


def _toml_value(v) -> str:
    if isinstance(v, str) and (v.startswith(('"', "{", "[")) and len(v) > 1):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    return json.dumps(v)


@settings(max_examples=int(os.environ.get("BPFWATCH_FUZZ_EXAMPLES", "300")), deadline=None)
@given(entries=st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), max_size=4))
def test_generated_configs_are_accepted_or_refused_by_key(entries) -> None:
    """Any config either parses (and then the agent can build everything it
    needs from it) or fails with ConfigError lines naming keys."""
    tables: dict[str, list[str]] = {}
    for (table, key), value in entries:
        tables.setdefault(table, []).append(f"{key} = {_toml_value(value)}")
    text = "".join(f"[{t}]\n" + "\n".join(dict.fromkeys(lines)) + "\n" for t, lines in tables.items())
    try:
        cfg = config.parse(text, "gen.toml")
    except config.ConfigError as e:
        assert all(p.startswith("gen.toml") for p in e.problems), e.problems
        return
    from bpfwatch.agent.runner import build_monitor

    build_monitor(cfg, snapshot=False)
