"""Redaction of secrets in command lines before any output sees them.

Each argument runs through the patterns (the first group, or the whole match,
is replaced). An argument that follows a secret option (`--password hunter2`,
`--DB-Password x`) is replaced whole; `--password=hunter2` keeps the option
and loses the value. Short options that are secrets only for some programs
(`mysql -p x`, `-px`) are redacted for those programs. A shell command line
inside one argument (`sh -c "mysql --password x"`) gets the same treatment
on its words."""

from __future__ import annotations

import re
from typing import Any

from bpfwatch.agent.config import RedactionConfig

MEMO_SIZE = 4096  # words remembered as clean (and option names judged); emptied when full
_SECRET_LAST = {"password", "passwd", "pass", "pwd", "secret", "token", "apikey", "credential", "credentials"}
_KEY_KINDS = {"api", "access", "secret", "private"}
# inside a shell string: an option naming a secret, then its value after a space or '='
_INLINE_FLAG = re.compile(r"(?i)(?<![\w-])(--?[\w-]*(?:password|passwd|secret|token|api[_-]?key)[\w-]*)"
                          r"(\s+|=)(\"[^\"]*\"|'[^']*'|\S+)")


class Redactor:
    def __init__(self, cfg: RedactionConfig | None = None) -> None:
        cfg = cfg or RedactionConfig()
        self.enabled = cfg.enabled
        self.patterns = [re.compile(p) for p in cfg.patterns]
        self.flags = {f.lower() for f in cfg.flags}
        self.guess = cfg.secret_options
        self.program_flags = {prog: set(flags) for prog, flags in cfg.program_flags.items()}
        self.replacement = cfg.replacement
        self.redacted = 0  # arguments changed (a metric)
        # arguments the patterns leave as they are, and what each long option's
        # name is: command lines repeat their words (a build's -c, -O2, -o), and
        # the patterns cost ~2 us an argument. Only clean words are remembered,
        # so no secret stays here longer than its event
        self._clean: dict[str, None] = {}
        self._flag_is_secret: dict[str, bool] = {}

    def _sub(self, m: re.Match[str]) -> str:
        if m.re.groups:
            start, end = m.span(1) if m.group(1) is not None else m.span()
            whole = m.group(0)
            return whole[:start - m.start()] + self.replacement + whole[end - m.start():]
        return self.replacement

    def _secret_flag(self, flag: str) -> bool:
        """--password, --DB-Password, --auth-token, --api-key: the option's
        last word names a secret. Not --passwordless (a switch), nor
        --password-file /run/x (where the secret is, not the secret)."""
        known = self._flag_is_secret.get(flag)
        if known is None:
            known = self._flag_is_secret[flag] = self._judge_flag(flag)
            if len(self._flag_is_secret) > MEMO_SIZE:
                self._flag_is_secret.clear()
        return known

    def _judge_flag(self, flag: str) -> bool:
        low = flag.lower()
        if low in self.flags:
            return True
        if not self.guess or not low.startswith("--"):
            return False
        words = re.split(r"[-_]", low[2:])
        return words[-1] in _SECRET_LAST or (words[-1] == "key" and len(words) > 1 and words[-2] in _KEY_KINDS)

    def argv(self, argv: list[str]) -> list[str]:
        prog = argv[0].rpartition("/")[2] if argv else ""  # os.path.basename's answer
        short = self.program_flags.get(prog, set())
        out, changed, secret_next = [], False, False
        clean = self._clean
        for i, arg in enumerate(argv):
            if secret_next:
                out.append(self.replacement)
                changed, secret_next = True, False
                continue
            if i and arg.startswith("-"):  # an option: what it is may make it, or the next word, a secret
                if short and not arg.startswith("--"):
                    hit = next((f for f in short if arg.startswith(f)), None)
                    if hit is not None:
                        if arg == hit:
                            secret_next = True
                            out.append(arg)
                        else:  # -pSECRET
                            out.append(hit + self.replacement)
                            changed = True
                        continue
                flag, eq, _ = arg.partition("=")
                if self._secret_flag(flag):
                    if eq:
                        out.append(f"{flag}={self.replacement}")
                        changed = True
                    else:
                        out.append(arg)
                        secret_next = True
                    continue
            if arg in clean:
                out.append(arg)
                continue
            new = self.scrub(arg)
            if new == arg:
                clean[arg] = None
                if len(clean) > MEMO_SIZE:
                    clean.clear()
            else:
                changed = True
            out.append(new)
        if changed:
            self.redacted += 1
        return out

    def scrub(self, arg: str) -> str:
        """One argument through the patterns (and, holding a shell command
        line, the secret options in it): what argv() does to a word that no
        option before it marks as a secret."""
        if any(c.isspace() for c in arg):  # a shell command line in one argument
            return self.text(arg)
        for p in self.patterns:
            arg = p.sub(self._sub, arg)
        return arg

    def text(self, s: str) -> str:
        """Free text (a command's output): the patterns and secret options."""
        new = _INLINE_FLAG.sub(lambda m: m.group(1) + m.group(2) + self.replacement, s)
        for p in self.patterns:
            new = p.sub(self._sub, new)
        return new

    def __call__(self, events: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        for ev in events:
            argv = ev.get("argv")
            if argv:
                ev["argv"] = self.argv(argv)
