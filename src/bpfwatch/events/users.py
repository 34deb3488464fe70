"""uid -> user name, cached (names change rarely; lookups hit NSS)."""

from __future__ import annotations

import pwd
from functools import lru_cache


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str | None:
    if uid < 0 or uid == 0xFFFFFFFF:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
