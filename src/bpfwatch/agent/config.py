"""The agent's TOML configuration: one set of dataclasses is the schema, the
defaults, the validator's rules and the commented example (`bpfwatch config
example`). Validation happens before anything loads; every problem is reported
with its key path and line, and the agent exits with status 2."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from bpfwatch.errors import UsageError
from bpfwatch.events.types import expand_types
from bpfwatch.filters import KEYS as FILTER_KEYS
from bpfwatch.filters import Filter
from bpfwatch.sensors.base import check_ring_size, check_wakeup_bytes
from bpfwatch.sensors.process import ARGS_MAX
from bpfwatch.textfile import read_small

DEFAULT_PATH = "/etc/bpfwatch/bpfwatch.toml"

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def opt(default: Any, doc: str, kind: str = "", **check: Any) -> Any:
    """A config key: its default (as written in TOML), what it means, and how
    to check it. `kind` names a conversion (size, duration, ...)."""
    meta = {"doc": doc, "kind": kind, **check}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc, "section": True})


# -- the schema ---------------------------------------------------------------------


@dataclass
class EbpfConfig:
    enabled: bool = opt(True, "Use eBPF. false: /proc polling only.")
    fallback_to_polling: bool = opt(True, "When eBPF cannot be used (no privilege, no BTF, a program the "
                                    "kernel refuses), poll /proc instead of exiting.")
    ring_buffer_size: int = opt("16MB", "Ring buffer shared by every sensor: a power of two, at least 4KB. "
                                "Raise it if events are lost.", "size", check=check_ring_size)
    network_tracing: bool = opt(True, "Network and DNS sensors (connections, flows, DNS messages).")
    file_tracing: bool = opt(True, "File sensor (opens, writes, renames, unlinks ...).")
    debug: bool = opt(False, "libbpf's own messages (loading, relocation, verifier) in the log at level debug.")
    wakeup_bytes: int = opt("64KB", "Wake the agent once per this much queued, not per event (lower CPU); "
                            "max_delay bounds the wait.", "size")
    max_delay: float = opt("250ms", "Longest an event waits in the ring before the agent reads it.", "duration",
                           min=0.001, max=10)


@dataclass
class PollingConfig:
    interval: float = opt("1s", "Polling period of the /proc fallback.", "duration", min=0.05, max=3600)
    connections: bool = opt(True, "Also poll TCP/UDP sockets (network.connect/accept/close, network.udp).")


@dataclass
class MonitorConfig:
    ebpf: EbpfConfig = section(EbpfConfig, "How events are collected.")
    polling: PollingConfig = section(PollingConfig, "The /proc polling fallback.")


@dataclass
class ProcessSensorConfig:
    threads: bool = opt(False, "Also report thread creation and exit.")
    args_max: int = opt(ARGS_MAX, "Most argv bytes captured per exec.", min=0, max=ARGS_MAX)
    snapshot: bool = opt(True, "At start, report the processes already running (source: procfs).")


@dataclass
class FileSensorConfig:
    enabled: bool = opt(True, "File events (also needs monitor.ebpf.file_tracing).")
    paths: list[str] = opt([], "Only files under these absolute path prefixes (filtered in the kernel); "
                           "empty: all.", "paths")
    failed_only: bool = opt(False, "Only operations that failed.")


@dataclass
class NetworkSensorConfig:
    enabled: bool = opt(True, "Network events (also needs monitor.ebpf.network_tracing).")
    udp_idle: float = opt("30s", "A UDP flow ends after this long without a datagram.", "duration",
                          min=0.1, max=86400)
    state_changes: bool = opt(False, "Every TCP state change as network.state (verbose).")


@dataclass
class DnsSensorConfig:
    enabled: bool = opt(True, "DNS queries and responses (also needs monitor.ebpf.network_tracing).")
    port: int = opt(53, "The DNS server port.", min=1, max=65535)


@dataclass
class SecuritySensorConfig:
    enabled: bool = opt(False, "Security findings (security.*): privilege escalation, ptrace, suspect execs, "
                        "sensitive files, BPF loads, mounts, namespaces, modules (docs/security.md).")
    rules: str = opt("", "Rules file (TOML): enable/disable, severity, paths, exceptions; empty: the "
                     "documented defaults.", "rules")


@dataclass
class SensorsConfig:
    process: ProcessSensorConfig = section(ProcessSensorConfig, "Process sensor (always on: exec, fork, exit).")
    file: FileSensorConfig = section(FileSensorConfig, "File sensor.")
    network: NetworkSensorConfig = section(NetworkSensorConfig, "Network sensor.")
    dns: DnsSensorConfig = section(DnsSensorConfig, "DNS sensor.")
    security: SecuritySensorConfig = section(SecuritySensorConfig, "Security sensor (opt-in).")


@dataclass
class FiltersConfig:
    types: list[str] = opt([], "Event types or globs to keep (process.*, network.connect); empty: all.",
                           "types")
    allow: dict[str, Any] = opt({}, "Keep only events matching every key (same keys as "
                                "'bpfwatch trace --allow', docs/filters.md), e.g. { comm = [\"nginx\"] }.",
                                "filter")
    deny: dict[str, Any] = opt({}, "Drop events matching any key; deny wins over allow, e.g. "
                               "{ path = [\"/proc\"] }.", "filter")


@dataclass
class CaptureConfig:
    enabled: bool = opt(True, "Write events to rotating JSON lines segments.")
    directory: str = opt("/var/lib/bpfwatch/capture", "Capture directory (created with mode 0700).", "path")
    max_segment_size: int = opt("64MB", "Rotate when a segment reaches this size (uncompressed).", "size",
                                min=64 << 10)
    max_segment_age: float = opt("1h", "Rotate when a segment is this old.", "duration", min=0.1)
    max_segment_events: int = opt(1000000, "Rotate after this many events.", min=1)
    compression: str = opt("zstd", "Compress closed segments.", "enum", choices=("zstd", "gzip", "none"))
    compression_level: int = opt(3, "zstd 1-19, gzip 1-9.", min=1, max=19)
    retain_size: int = opt("1GB", "Delete the oldest segments beyond this total size (0: no limit).", "size")
    retain_segments: int = opt(100, "Keep at most this many closed segments (0: no limit).", min=0)
    file_mode: int = opt("0600", "Mode of segment and manifest files (octal).", "mode")
    buffer_events: int = opt(100000, "Events held in memory while the directory cannot be written "
                             "(disk full); beyond it the oldest are dropped and counted.", min=100)
    retry_interval: float = opt("1s", "How often to retry a failed write.", "duration", min=0.01, max=600)


@dataclass
class StdoutConfig:
    enabled: bool = opt(False, "Also write events to standard output.")
    format: str = opt("json", "json lines or a table.", "enum", choices=("json", "table"))


@dataclass
class NatsConfig:
    enabled: bool = opt(False, "Send the capture's events to NATS JetStream (needs outputs.capture: the capture "
                        "is the buffer while NATS is away). See docs/fleet.md.")
    servers: list[str] = opt(["nats://127.0.0.1:4222"], "NATS server URLs (nats:// or tls://).", "nats_servers")
    user: str = opt("", "User name (with password_file).")
    password_file: str = opt("", "File holding the password.", "optional_path")
    token_file: str = opt("", "File holding an auth token.", "optional_path")
    nkey_seed: str = opt("", "File holding an NKey seed.", "optional_path")
    creds: str = opt("", "A .creds file (user JWT and NKey seed).", "optional_path")
    tls_ca: str = opt("", "CA certificate to verify the servers (PEM).", "optional_path")
    tls_cert: str = opt("", "Client certificate (PEM; with tls_key).", "optional_path")
    tls_key: str = opt("", "Client key (PEM).", "optional_path")
    host: str = opt("", "This host's name in subjects and the host list; empty: the hostname.")
    subject_prefix: str = opt("bpfwatch", "Subjects are PREFIX.events.HOST.FAMILY and PREFIX.diagnose.HOST.",
                              "subject_prefix")
    stream: str = opt("BPFWATCH_EVENTS", "JetStream stream that stores the events.", "stream_name")
    create_stream: bool = opt(True, "Create the stream if it does not exist (with the retention below).")
    stream_max_age: float = opt("7d", "Stream retention by age (when this agent creates it).", "duration",
                                min=60)
    stream_max_bytes: int = opt("10GB", "Stream retention by size (when this agent creates it).", "size",
                                min=1 << 20)
    replicas: int = opt(1, "Stream replicas (1, or 3 on a cluster).", min=1, max=5)
    duplicate_window: float = opt("1h", "How long the server remembers message ids (a batch sent twice "
                                  "within it is stored once).", "duration", min=1, max=86400)
    batch_events: int = opt(5000, "Events per batch: a range of the capture, sent as one message per family "
                            "(more when a family's lines pass 768 KiB).", min=1, max=100000)
    batch_age: float = opt("1s", "Longest a batch waits to fill.", "duration", min=0.01, max=60)
    compression: str = opt("zstd", "Batch compression.", "enum", choices=("zstd", "none"))
    heartbeat_interval: float = opt("10s", "How often this host's heartbeat is stored (fleet hosts).",
                                    "duration", min=0.5, max=3600)
    accept_diagnose: bool = opt(False, "Answer 'bpfwatch fleet diagnose' requests (traces run here).")
    diagnose_commands: bool = opt(False, "Let fleet diagnose requests run shell commands here (whatever the "
                                  "request says, false refuses them).")


@dataclass
class OutputsConfig:
    capture: CaptureConfig = section(CaptureConfig, "Rotating capture files.")
    stdout: StdoutConfig = section(StdoutConfig, "Standard output.")
    nats: NatsConfig = section(NatsConfig, "NATS JetStream: the fleet (docs/fleet.md).")


@dataclass
class MetricsConfig:
    enabled: bool = opt(True, "Serve Prometheus metrics and /healthz over HTTP.")
    address: str = opt("127.0.0.1:9469", "Listen address (host:port). Keep it on loopback unless a firewall "
                       "protects it.", "address")
    bpf_stats: bool = opt(False, "Turn on the kernel's per-program run count and run time while the agent "
                          "runs (needs CAP_SYS_ADMIN; costs ~20ns per program run).")


@dataclass
class RedactionConfig:
    enabled: bool = opt(True, "Redact secrets from argv before any output.")
    patterns: list[str] = opt(
        [r"(?i)(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|auth)[=:]\s*(\S+)",
         r"(?i)://[^/\s:@]+:([^/\s@]+)@",
         r"(?i)\bauthorization:\s*(?:bearer|basic|token|digest)?\s*([^\s\"']+)",
         r"(?i)\bbearer\s+([^\s\"']+)"],
        "Regexes applied to each argument: the first group (or the whole match) is replaced.", "regexes")
    flags: list[str] = opt(["--password", "--passwd", "--token", "--secret", "--api-key"],
                           "Options whose next argument is a secret (in any case).")
    secret_options: bool = opt(True, "Also treat as secret any long option whose last word is password, "
                               "passwd, secret, token or credential, or ends in api-key/access-key "
                               "(--db-password, --auth-token); not --password-file or --passwordless.")
    program_flags: dict[str, Any] = opt({"mysql": ["-p"], "mariadb": ["-p"], "mysqldump": ["-p"],
                                         "mysqladmin": ["-p"], "sshpass": ["-p"]},
                                        "Short options that carry a secret only for some programs (-p is a "
                                        "password to mysql, a port to ssh): program name -> options, as "
                                        "\"-p x\" or \"-px\".", "program_flags")
    replacement: str = opt("[REDACTED]", "What a secret is replaced with.")


@dataclass
class LogConfig:
    level: str = opt("info", "Least severe level logged.", "enum", choices=("debug", "info", "warn", "error"))
    format: str = opt("text", "text, or json (one object per line).", "enum", choices=("text", "json"))


@dataclass
class AgentConfig:
    monitor: MonitorConfig = section(MonitorConfig, "")
    sensors: SensorsConfig = section(SensorsConfig, "")
    filters: FiltersConfig = section(FiltersConfig, "Which events are kept (the language of 'bpfwatch trace').")
    outputs: OutputsConfig = section(OutputsConfig, "")
    metrics: MetricsConfig = section(MetricsConfig, "Prometheus metrics and health.")
    redaction: RedactionConfig = section(RedactionConfig, "Secrets in command lines.")
    log: LogConfig = section(LogConfig, "Agent log (standard error; journald keeps it under systemd).")
    path: str | None = field(default=None, metadata={"internal": True})


# -- conversions ------------------------------------------------------------------------


def parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _SIZE.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"{value!r} is not a size (e.g. \"16MB\", \"512KB\", 4096)")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()[:1]]


def parse_duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    m = _DURATION.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"{value!r} is not a duration (e.g. \"500ms\", \"30s\", \"1h\", or seconds)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_address(value: str) -> tuple[str, int]:
    """(host, port) of "127.0.0.1:9469", "[::1]:9469" or "localhost:9469";
    an empty host (":9469") means every address."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise ValueError(f"{value!r} is not HOST:PORT (an IPv6 host goes in brackets: [::1]:9469)")
    host = host[1:-1] if host.startswith("[") else host
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (a port from 1 to 65535)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host not in ("localhost", ""):
            raise ValueError(f"{value!r}: the host must be an IP address or localhost") from None
    return host or "0.0.0.0", int(port)


def _convert(meta: dict[str, Any], value: Any, hint: Any) -> Any:
    kind = meta.get("kind", "")
    if kind == "size":
        v = parse_size(value)
        lo, hi = meta.get("min"), meta.get("max", 1 << 40)
        if (lo is not None and v < lo) or v > hi:
            raise ValueError(f"{value!r} is out of range ({lo or 0} to {hi} bytes)")
        if "check" in meta:
            try:
                meta["check"](v)
            except UsageError as e:
                raise ValueError(str(e)) from None
        return v
    if kind == "duration":
        v = parse_duration(value)
        lo, hi = meta.get("min"), meta.get("max")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError(f"{value!r} is out of range ({lo}s to {hi}s)" if hi else f"must be at least {lo}s")
        return v
    if kind == "mode":
        if not (isinstance(value, str) and re.fullmatch(r"0?[0-7]{3,4}", value)):
            raise ValueError(f"{value!r} is not an octal mode such as \"0600\"")
        mode = int(value, 8)
        if mode & 0o7022:
            raise ValueError(f"{value!r} would make captured events writable by others or setuid: use 0600 or 0640")
        return mode
    _check_type(value, hint)
    if kind == "enum" and value not in meta["choices"]:
        raise ValueError(f"{value!r} is not one of {', '.join(meta['choices'])}")
    if isinstance(value, int) and not isinstance(value, bool):
        lo, hi = meta.get("min"), meta.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"{value} is out of range ({lo} to {hi})" if hi is not None
                             else f"{value} must be at least {lo}")
    if kind == "address":
        parse_address(value)
    elif kind == "rules" and value:
        from bpfwatch.security.rules import load_rules

        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute path")
        try:
            load_rules(value)
        except UsageError as e:
            raise ValueError(str(e)) from None
    elif kind == "optional_path" and value:
        if not value.startswith("/") or "\0" in value:
            raise ValueError(f"{value!r} is not an absolute path")
    elif kind == "nats_servers":
        from bpfwatch.fleet.connect import NatsAuth

        try:
            NatsAuth(servers=value).validate()
        except UsageError as e:
            raise ValueError(str(e)) from None
    elif kind in ("subject_prefix", "stream_name"):
        from bpfwatch.fleet.connect import check_prefix, check_stream_name

        try:
            (check_prefix if kind == "subject_prefix" else check_stream_name)(value)
        except UsageError as e:
            raise ValueError(str(e)) from None
    elif kind in ("path", "paths"):
        for p in [value] if isinstance(value, str) else value:
            if not p.startswith("/"):
                raise ValueError(f"{p!r} is not an absolute path")
            if "\0" in p or len(p) > 4095:
                raise ValueError(f"{p[:80]!r} is not a usable path (NUL, or longer than PATH_MAX)")
    elif kind == "regexes":
        for p in value:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"bad regex {p!r}: {e}") from None
    elif kind == "program_flags":
        for prog, flags in value.items():
            if not isinstance(flags, list) or not all(isinstance(f, str) and f.startswith("-") for f in flags):
                raise ValueError(f"{prog}: expected an array of options such as [\"-p\"]")
    elif kind == "types":
        try:
            expand_types(value)
        except UsageError as e:
            raise ValueError(str(e)) from None
    return value


_TOML_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "a table"}


def _check_type(value: Any, hint: Any) -> None:
    origin = getattr(hint, "__origin__", hint)
    if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
        return
    if origin is int and isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    if not isinstance(value, origin):
        raise ValueError(f"expected {_TOML_NAMES.get(origin, origin.__name__)}, not {_toml_repr(value)}")
    if origin is list:
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"expected an array of strings, found {_toml_repr(item)}")


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


# -- loading -----------------------------------------------------------------------------


class ConfigError(UsageError):
    """Every problem of one config file, each `FILE:LINE: key.path: what`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\nbpfwatch: ".join(problems))
        self.problems = problems


class _Validator:
    def __init__(self, source: str, text: str) -> None:
        from bpfwatch.agent.toml_lines import key_lines

        self.source = source
        self.lines = key_lines(text)
        self.problems: list[str] = []

    def problem(self, path: tuple[str, ...], message: str) -> None:
        from bpfwatch.agent.toml_lines import line_of

        line = line_of(self.lines, path)
        where = f"{self.source}:{line}" if line else self.source
        self.problems.append(f"{where}: {'.'.join(path)}: {message}")

    def build(self, cls: type, data: Any, path: tuple[str, ...]) -> Any:
        if not isinstance(data, dict):
            self.problem(path, f"expected a table, not {_toml_repr(data)}")
            return cls()
        hints = get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        for key in data:
            if key not in known:
                near = [k for k in known if k.replace("_", "") == key.replace("_", "").replace("-", "")]
                hint = f" (did you mean {near[0]}?)" if near else f" (known: {', '.join(known)})"
                self.problem((*path, key), f"unknown key{hint}")
        values: dict[str, Any] = {}
        for name, f in known.items():
            sub = (*path, name)
            if f.metadata.get("section"):
                values[name] = self.build(hints[name], data.get(name, {}), sub)
                continue
            raw = data.get(name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
            try:
                values[name] = self.field(f.metadata, raw, hints[name], sub)
            except ValueError as e:
                self.problem(sub, str(e))
                values[name] = _convert(f.metadata, f.default if f.default is not dataclasses.MISSING
                                        else f.default_factory(), hints[name])
        return cls(**values)

    def field(self, meta: dict[str, Any], raw: Any, hint: Any, path: tuple[str, ...]) -> Any:
        if meta.get("kind") == "filter":
            return self.filter_table(raw, path)
        return _convert(meta, raw, hint)

    def filter_table(self, raw: Any, path: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise ValueError(f"expected a table of filter keys, not {_toml_repr(raw)}")
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in FILTER_KEYS:
                self.problem((*path, key), f"unknown filter key (known: {', '.join(FILTER_KEYS)})")
                continue
            items = value if isinstance(value, list) else [value]
            if not items or not all(isinstance(v, str | int | bool) and not isinstance(v, dict) for v in items):
                self.problem((*path, key), "expected a value or an array of strings or integers")
                continue
            try:
                Filter(**{path[-1]: {key: items}})
            except UsageError as e:
                self.problem((*path, key), re.sub(r"^filter [\w.]+: ", "", str(e)))
                continue
            out[key] = items
        return out


def _line_number(problem: str) -> int:
    m = re.match(r"^.*?:(\d+): ", problem)
    return int(m.group(1)) if m else 0


def parse(text: str, source: str = "<config>") -> AgentConfig:
    """Validates a TOML text; raises ConfigError listing every problem."""
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError([f"{source}: nested too deeply"]) from None
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        where = f"{source}:{m.group(1)}" if m else source
        raise ConfigError([f"{where}: not valid TOML: {str(e).split(' (at line')[0]}"]) from None
    v = _Validator(source, text)
    cfg: AgentConfig = v.build(AgentConfig, data, ())
    nats = cfg.outputs.nats
    if nats.enabled and not cfg.outputs.capture.enabled:
        v.problem(("outputs", "nats", "enabled"), "needs outputs.capture.enabled: the capture is what is sent, "
                  "and the buffer while NATS is away")
    if nats.enabled:
        try:
            nats_auth(cfg).validate()
        except UsageError as e:
            v.problem(("outputs", "nats"), str(e))
    if not v.problems:
        try:
            Filter(cfg.filters.allow, cfg.filters.deny)
        except UsageError as e:
            v.problem(("filters",), str(e))
    if not v.problems:
        # what the agent builds from the config, built here without loading
        # anything: `config check` and the agent refuse the same configs
        from bpfwatch.agent.runner import build_monitor, build_poller

        try:
            check_wakeup_bytes(cfg.monitor.ebpf.wakeup_bytes, cfg.monitor.ebpf.ring_buffer_size)
            build_monitor(cfg, snapshot=False)
            build_poller(cfg, snapshot=False)
        except UsageError as e:
            v.problem(("monitor", "ebpf"), str(e))
    if v.problems:
        raise ConfigError(sorted(v.problems, key=_line_number))
    cfg.path = source
    return cfg


def nats_auth(cfg: AgentConfig) -> Any:
    from bpfwatch.fleet.connect import NatsAuth

    n = cfg.outputs.nats
    return NatsAuth(servers=n.servers, user=n.user, password_file=n.password_file, token_file=n.token_file,
                    nkey_seed=n.nkey_seed, creds=n.creds, tls_ca=n.tls_ca, tls_cert=n.tls_cert, tls_key=n.tls_key,
                    name=f"bpfwatch-agent-{n.host or socket.gethostname()}")


def warnings(cfg: AgentConfig) -> list[str]:
    """Settings that work but are probably not what the user wants."""
    out = []
    if cfg.metrics.enabled:
        host, _ = parse_address(cfg.metrics.address)
        if host in ("0.0.0.0", "::"):
            out.append(f"metrics.address {cfg.metrics.address!r} listens on every address: anyone who can reach "
                       "this host reads the metrics and /healthz (use 127.0.0.1, or a firewall)")
    return out


def load(path: str | None) -> AgentConfig:
    """The config at `path` (default /etc/bpfwatch/bpfwatch.toml; a missing
    default file means every default)."""
    target = path or DEFAULT_PATH
    if path is None and not os.path.lexists(target):
        return parse("", "<defaults>")
    raw = read_small(target, "config file")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ConfigError([f"{target}: not UTF-8 text"]) from None
    return parse(text, target)


# -- the example ---------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if "'" in value:  # a literal string cannot hold it: a basic string, escaped
            return json.dumps(value)
        return "'" + value + "'" if "\\" in value or '"' in value else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, int):
        return f"{value:_}" if value >= 100000 else str(value)
    return str(value)


def _wrap(text: str, width: int = 96) -> list[str]:
    words, lines, cur = text.split(), [], "#"
    for w in words:
        if len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = "#"
        cur += " " + w
    return [*lines, cur] if cur != "#" else lines


def example() -> str:
    """A complete, commented config: every key with its default."""
    out = ["# bpfwatch agent configuration (bpfwatch agent --config FILE).",
           "# Every key is shown with its default. Check a file with 'bpfwatch config check FILE'.",
           "# Sizes: \"16MB\", \"512KB\" or bytes. Durations: \"250ms\", \"30s\", \"1h\" or seconds.",
           "# SIGHUP reloads filters, outputs, redaction and logging; see docs/agent.md."]

    def walk(cls: type, path: tuple[str, ...], doc: str) -> None:
        plain = [f for f in dataclasses.fields(cls) if not f.metadata.get("section") and not f.metadata.get("internal")]
        if plain:
            out.append("")
            out.extend(_wrap(doc) if doc else [])
            out.append(f"[{'.'.join(path)}]")
            for f in plain:
                out.extend(_wrap(f.metadata["doc"]))
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                out.append(f"{f.name} = {_toml_value(default)}")
        for f in dataclasses.fields(cls):
            if f.metadata.get("section"):
                walk(get_type_hints(cls)[f.name], (*path, f.name), f.metadata["doc"])

    walk(AgentConfig, (), "")
    return "\n".join(out) + "\n"

