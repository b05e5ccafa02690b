"""Secrets never leave the proxy: every text that goes to a client, a log line, a metric or the quota
view passes through `redact` with the secrets it might contain."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# A bearer or basic credential in any text, whatever its value (an upstream may echo a header).
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}")
MIN_SECRET_LENGTH = 4  # shorter "secrets" would redact ordinary words


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret and every `Bearer …`/`Basic …` value replaced by `[redacted]`."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, REDACTED)
    return _CREDENTIAL.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


class Redactor:
    """The secrets of one running config (tokens, keys, credentials), longest first, plus any a
    provider learns while running (an OAuth access token): thread-safe to read while one is added."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        known = set(self._secrets)
        known.update(s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH)
        self._secrets = tuple(sorted(known, key=len, reverse=True))  # one atomic swap

    def __call__(self, text: str) -> str:
        return redact(text, self._secrets)
