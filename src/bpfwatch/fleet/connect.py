"""How bpfwatch reaches NATS: the servers and credentials shared by the agent's
`[outputs.nats]` and the `bpfwatch fleet` commands, the subjects it uses, and
the one connect call (nats-py, asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from bpfwatch.errors import BpfwatchError, UsageError

SCHEMA_VERSION = "1"
HOSTS_BUCKET = "bpfwatch_hosts"
FAMILIES = ("process", "file", "network", "dns", "security", "other")
_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def subject_token(text: str) -> str:
    """`text` as one subject token: NATS splits subjects on dots and gives `*`
    and `>` a meaning, so anything but letters, digits, `_` and `-` becomes `_`."""
    return _TOKEN.sub("_", text)[:128] or "_"


@dataclass
class Subjects:
    prefix: str = "bpfwatch"

    def events(self, host: str, family: str) -> str:
        return f"{self.prefix}.events.{subject_token(host)}.{family}"

    def all_events(self) -> str:
        return f"{self.prefix}.events.>"

    def diagnose(self, host: str) -> str:
        return f"{self.prefix}.diagnose.{subject_token(host)}"


def check_prefix(prefix: str) -> str:
    parts = prefix.split(".")
    if not prefix or any(not p or _TOKEN.search(p) for p in parts):
        raise UsageError(f"subject prefix {prefix!r}: dot-separated tokens of letters, digits, '_' or '-'")
    return prefix


def check_stream_name(name: str) -> str:
    if not name or _TOKEN.search(name):
        raise UsageError(f"stream name {name!r}: letters, digits, '_' or '-' only")
    return name


@dataclass
class NatsAuth:
    """Servers and credentials. Secrets come from files (token_file,
    password_file, nkey_seed, creds), so a config can be shown without them."""

    servers: list[str] = field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    user: str = ""
    password_file: str = ""
    token_file: str = ""
    nkey_seed: str = ""      # a file holding an NKey seed
    creds: str = ""          # a .creds file (JWT + seed)
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    name: str = "bpfwatch"

    def validate(self) -> None:
        if not self.servers:
            raise UsageError("nats servers: at least one server URL")
        for s in self.servers:
            if not re.match(r"^(nats|tls|ws|wss)://[^\s/]+(:\d+)?/?$", s):
                raise UsageError(f"nats server {s!r} is not a URL such as nats://10.0.0.5:4222")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise UsageError("nats tls_cert and tls_key go together")
        for what in ("password_file", "token_file", "nkey_seed", "creds", "tls_ca", "tls_cert", "tls_key"):
            path = getattr(self, what)
            if path and not os.path.isabs(path):
                raise UsageError(f"nats {what} {path!r} must be an absolute path")
        if self.password_file and not self.user:
            raise UsageError("nats password_file needs a user")
        if sum(bool(x) for x in (self.user, self.token_file, self.nkey_seed, self.creds)) > 1:
            raise UsageError("nats: one way to authenticate (user/password_file, token_file, nkey_seed or creds)")

    def connect_options(self) -> dict[str, Any]:
        from bpfwatch.textfile import read_small

        opts: dict[str, Any] = {"servers": self.servers, "name": self.name}
        if self.user:
            opts["user"] = self.user
            if self.password_file:
                opts["password"] = read_small(self.password_file, "NATS password file").decode().strip()
        if self.token_file:
            opts["token"] = read_small(self.token_file, "NATS token file").decode().strip()
        if self.nkey_seed:
            read_small(self.nkey_seed, "NATS NKey seed file")  # a clear error before nats-py's own
            opts["nkeys_seed"] = self.nkey_seed
        if self.creds:
            read_small(self.creds, "NATS credentials file")
            opts["user_credentials"] = self.creds
        if self.tls_ca or self.tls_cert:
            ctx = ssl.create_default_context(cafile=self.tls_ca or None)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            opts["tls"] = ctx
        return opts


async def connect(auth: NatsAuth, initial_timeout: float = 5.0, **extra: Any) -> Any:
    """A connected nats-py client, or a clear BpfwatchError when no server
    lets us in within `initial_timeout` (at once when a server refuses the
    credentials). Once connected, the client reconnects by itself for as long
    as it lives (every server, then round again)."""
    import nats

    # asyncio's own warnings about TLS connections the server closed would add lines to ours
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    errors: list[BaseException] = []
    refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    callback = extra.pop("error_cb", _quiet)

    async def note(e: Exception) -> None:
        errors.append(e)
        if "authorization" in str(e).lower() and not refused.done():
            refused.set_result(None)  # retrying with the same credentials cannot help
        await callback(e)

    opts = {**auth.connect_options(), "connect_timeout": 2, "reconnect_time_wait": 0.5,
            "max_reconnect_attempts": -1, "error_cb": note, **extra}
    attempt = asyncio.ensure_future(nats.connect(**opts))
    done, _ = await asyncio.wait({attempt, refused}, timeout=initial_timeout, return_when=asyncio.FIRST_COMPLETED)
    if attempt in done and attempt.exception() is None:
        return attempt.result()
    attempt.cancel()
    with contextlib.suppress(BaseException):
        await attempt
    if attempt in done and attempt.exception() is not None:
        errors.append(attempt.exception())  # type: ignore[arg-type]
    denied = [e for e in errors if "authorization" in str(e).lower()]
    why = _describe((denied or errors)[-1]) if errors else f"no answer within {initial_timeout:g} s"
    raise BpfwatchError(f"cannot reach NATS at {', '.join(auth.servers)}: {why}")


def _describe(e: BaseException) -> str:
    return str(e).strip().removeprefix("nats: ").strip("'\"") or type(e).__name__


async def _quiet(e: Exception) -> None:
    """nats-py prints every connection error to stderr by default; callers
    report failures themselves."""


def family_of(line: bytes) -> str:
    """The event family of a captured JSON line, read without parsing it: the
    writer puts `"type":"family.name"` near the start of every line."""
    i = line.find(b'"type":"')
    if i < 0:
        return "other"
    j = line.find(b".", i + 8, i + 40)
    fam = line[i + 8: j].decode("ascii", "replace") if j > 0 else "other"
    return fam if fam in FAMILIES else "other"


def ts_of(line: bytes) -> int | None:
    """The `ts` of a captured JSON line (its first field)."""
    if not line.startswith(b'{"ts":'):
        return None
    end = line.find(b",", 6, 40)
    try:
        return int(line[6:end])
    except ValueError:
        return None
