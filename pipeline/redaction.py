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


# Every credential key ends in one of these words (see _WORDS).
_KEY_ENDINGS = ('secret"', 'password"', 'passwd"', 'key"', 'authorization"', 'token"')


def _may_hold_secret(text: str) -> bool:
    """True unless ``text`` surely holds no credential key with a string value.

    Cheap where the full pattern (a key tried at every quote) costs several µs: look for
    a key ending in a credential word and followed by ``:`` and a string. Non-ASCII text
    always gets the full pattern (its case-insensitive match folds 'ſ' and 'K' too).
    """
    if not text.isascii():
        return True
    low = text.lower()
    for ending in _KEY_ENDINGS:
        at = low.find(ending)
        while at != -1:
            rest = low[at + len(ending) :].lstrip()
            if rest[:1] == ":" and rest[1:].lstrip()[:1] == '"':
                return True
            at = low.find(ending, at + 1)
    return False


def redact(text: str) -> str:
    """Blank out credential-looking string values in JSON text (even malformed text)."""
    if not _may_hold_secret(text) or not _SECRET_VALUE.search(text):
        return text
    return _SECRET_VALUE.sub(lambda m: m.group(1) + REDACTED, text)
