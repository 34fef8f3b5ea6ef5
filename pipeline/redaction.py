"""Credentials never leave the edge: one definition of what looks like a secret.

Applied as text to every JSON value or raw record we keep (rejects, archives, JSON
columns), so it also works on malformed JSON. A key is a credential when it is, or ends
in, one of the words below (``secret``, ``webhook_secret``, ``api_key``, ``token``...);
usage counters such as ``input_tokens`` are not.
"""

from __future__ import annotations

import re

_WORDS = (
    r"secret|password|passwd|api[_-]?key|apikey|authorization|access[_-]?token"
    r"|refresh[_-]?token|auth[_-]?token|private[_-]?key|token"
)
SECRET_KEY = re.compile(rf"^(?:[A-Za-z0-9]+[_-])*(?:{_WORDS})$", re.IGNORECASE)
_SECRET_VALUE = re.compile(
    rf'("(?:[A-Za-z0-9]+[_-])*(?:{_WORDS})"\s*:\s*)"(?:[^"\\]|\\.)*"', re.IGNORECASE
)
REDACTED = '"[REDACTED]"'


def _may_hold_secret(text: str) -> bool:
    """Every credential key holds one of these words; most texts hold none, and five
    substring tests cost ~0.3 µs where the full pattern (a key tried at every quote) or
    an alternation regex costs several µs. Non-ASCII text always gets the full pattern
    (its case-insensitive match also folds letters such as 'ſ' or 'K')."""
    if not text.isascii():
        return True
    low = text.lower()
    return "secret" in low or "passw" in low or "key" in low or "authoriz" in low or "token" in low


def redact(text: str) -> str:
    """Blank out credential-looking string values in JSON text (even malformed text)."""
    if not _may_hold_secret(text) or not _SECRET_VALUE.search(text):
        return text
    return _SECRET_VALUE.sub(lambda m: m.group(1) + REDACTED, text)
