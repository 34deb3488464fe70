"""Asking the fleet: the live host list (the agents' heartbeats in a KV
bucket), and one diagnose request sent to many agents at once, each answer
kept with its host's status."""

from __future__ import annotations

import asyncio
import fnmatch
import time
from typing import Any

import orjson

from bpfwatch.errors import BpfwatchError
from bpfwatch.fleet.connect import HOSTS_BUCKET, NatsAuth, Subjects, connect

STALE_AFTER = 60.0
  # a host whose last heartbeat is older than this is shown as stale


async def _hosts(nc: Any) -> list[dict[str, Any]]:
    from nats.js.errors import BucketNotFoundError, NoKeysError

    js = nc.jetstream(timeout=5)
    try:
        kv = await js.key_value(HOSTS_BUCKET)
    except BucketNotFoundError:
        return []
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    out = []
    now = time.time()
    for key in sorted(keys):
        entry = await kv.get(key)
        try:
            doc = orjson.loads(entry.value or b"{}")
        except orjson.JSONDecodeError:
            doc = {"host": key, "error": "an unreadable heartbeat"}
        if not isinstance(doc, dict):
            doc = {"host": key, "error": "an unreadable heartbeat"}
        doc.setdefault("host", key)
        seen = doc.get("time")
        age = now - seen if isinstance(seen, int | float) else None
        doc["last_seen_s"] = round(age, 1) if age is not None else None
        doc["stale"] = age is None or age > STALE_AFTER
        out.append(doc)
    return out


def hosts(auth: NatsAuth) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        nc = await connect(auth)
        try:
            return await _hosts(nc)
        finally:
            await nc.close()

    return asyncio.run(go())


def diagnose(auth: NatsAuth, pattern: str, request: dict[str, Any], timeout: float,
             subject_prefix: str = "bpfwatch") -> dict[str, Any]:
    """Sends `request` to every host matching `pattern` (a glob over the
    heartbeat list; a plain name is asked even without a heartbeat) and
    gathers the answers: status answered, refused, failed, timed out or
    unreachable (no agent listens on its subject)."""
    subjects = Subjects(subject_prefix)

    async def ask(nc: Any, host: str, data: bytes) -> tuple[str, dict[str, Any]]:
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout

        t0 = time.monotonic()
        try:
            msg = await nc.request(subjects.diagnose(host), data, timeout=timeout)
        except (NatsTimeout, TimeoutError):
            return host, {"status": "timed out", "after_s": round(time.monotonic() - t0, 1)}
        except NoRespondersError:
            return host, {"status": "unreachable", "reason": "no agent listens for this host"}
        try:
            doc = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return host, {"status": "failed", "reason": "an answer that is not JSON"}
        if not isinstance(doc, dict) or doc.get("status") not in ("answered", "refused", "failed"):
            return host, {"status": "failed", "reason": "an answer without a status"}
        doc.pop("host", None)
        doc["took_s"] = round(time.monotonic() - t0, 1)
        return host, doc

    async def go() -> dict[str, Any]:
        nc = await connect(auth)
        try:
            known = [h["host"] for h in await _hosts(nc)]
            targets = sorted({h for h in known if fnmatch.fnmatchcase(h, pattern)})
            if not targets and not any(c in pattern for c in "*?["):
                targets = [pattern]
            if not targets:
                raise BpfwatchError(f"no host matches {pattern!r} (known: {', '.join(known) or 'none'})")
            data = orjson.dumps(request)
            answers = dict(await asyncio.gather(*(ask(nc, h, data) for h in targets)))
        finally:
            await nc.close()
        summary: dict[str, int] = {}
        for a in answers.values():
            summary[a["status"]] = summary.get(a["status"], 0) + 1
        return {"hosts": answers, "summary": summary, "request": request}

    return asyncio.run(go())
