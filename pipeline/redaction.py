"""Credentials never leave the edge: one redaction rule, applied at every exit.

Tables, raw text of quarantined records, the response archive, logs, error messages,
the run summary, Parquet and the views all pass through :func:`redact` (any text),
:func:`redact_obj` (parsed JSON) or :func:`redact_json` (JSON text, kept valid).

The rule, in full:

- **Credential keys**, in any spelling (``api_key``, ``apiKey``, ``API-KEY``,
  ``webhookSecret``, ``"s\\u0065cret"``, full-width or other Unicode look-alikes):
  a key is a credential when, split into words (snake, camel, kebab, dots) and
  NFKC-folded, it contains ``secret``, ``password``/``passwd``/``passphrase``,
  ``credential``, ``bearer``, ``authorization``, ``apikey``, ``privatekey``,
  ``accesskey``, ``cookie`` or the word ``auth``, or its last word is ``token``,
  ``key``, ``pwd``, ``jwt`` or ``signature`` (``input_tokens`` is not). Its value is
  blanked whatever its type (string, number, array, object); ``true``/``false``/
  ``null`` hold nothing and are kept.
- **Credential values** under any key, and anywhere in free text: ``whsec_…``,
  ``sk-…``, ``sk_live_…``/``rk_…``/``pk_…``, GitHub, Slack, AWS and Google key
  formats, JWTs, ``Bearer …``/``Basic …``, URL userinfo (``https://user:pw@host``),
  credential-named query or ``key=value`` parameters, and every secret registered
  with :func:`register_secret` (the configured API token) in any encoding.
- JSON stays valid JSON: a blanked value becomes the string ``"[REDACTED]"``
  (:func:`redact_obj` on parsed values, :func:`redact_json` on JSON text).
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import orjson

REDACTED = "[REDACTED]"
_JSON_REDACTED = '"[REDACTED]"'

# --------------------------------------------------------------------------- keys

_ANYWHERE = (
    "secret",
    "password",
    "passwd",
    "passphrase",
    "credential",
    "bearer",
    "authorization",
    "apikey",
    "privatekey",
    "accesskey",
    "cookie",
)
_WORDS = frozenset(("auth",))
_LAST_WORDS = frozenset(("token", "key", "pwd", "jwt", "signature", "secret"))
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[^0-9a-z]+")


@lru_cache(maxsize=65_536)
def is_credential_key(key: str) -> bool:
    """True when a key, in any spelling, names a credential (see the module doc)."""
    text = "".join(ch for ch in unicodedata.normalize("NFKC", key) if ch.isprintable())
    words = [w for w in _SEPARATORS.split(_CAMEL.sub(" ", text).casefold()) if w]
    if not words:
        return False
    glued = "".join(words)
    return (
        any(word in glued for word in _ANYWHERE)
        or any(w in _WORDS for w in words)
        or words[-1] in _LAST_WORDS
        or glued.endswith(("token", "key"))
    )


# --------------------------------------------------------------------------- values

_B = r"(?<![A-Za-z0-9])"  # not inside a longer word
# Each value rule, with the literals one of which any match of it contains (the rules
# are case-sensitive): a rule none of whose literals is in a text cannot match there.
_VALUE_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("whsec_",), rf"{_B}whsec_[A-Za-z0-9+/=_\-]+"),
    (("sk-",), rf"{_B}sk-[A-Za-z0-9_\-]{{6,}}"),
    (("_live_", "_test_"), rf"{_B}(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{{6,}}"),
    (
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        rf"{_B}(?:ghp|gho|ghu|ghs|ghr|github_pat)_[A-Za-z0-9_]{{10,}}",
    ),
    (("xox",), rf"{_B}xox[abprs]-[A-Za-z0-9\-]{{6,}}"),
    (("AKIA", "ASIA"), rf"{_B}(?:AKIA|ASIA)[0-9A-Z]{{16}}"),
    (("AIza",), rf"{_B}AIza[0-9A-Za-z_\-]{{20,}}"),
    (("eyJ",), r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"),
)


@lru_cache(maxsize=256)
def _value_rules(present: tuple[int, ...]) -> re.Pattern[str]:
    """The alternation of the value rules numbered ``present``, in their order: on a
    text holding no literal of the others, it finds exactly what all of them would."""
    return re.compile("|".join(_VALUE_RULES[i][1] for i in present))


def _value_pattern(text: str) -> re.Pattern[str] | None:
    present = tuple(
        i for i, (literals, _) in enumerate(_VALUE_RULES) if any(w in text for w in literals)
    )
    return _value_rules(present) if present else None


_SCHEME_TOKEN = re.compile(
    r"(?i)\b(bearer|digest)(\s+)[A-Za-z0-9._~+/=\-]{4,}|\b(Basic)(\s+)[A-Za-z0-9+/]{6,}=*"
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@\"'<>]*@")
# key=value (query strings, logs), 'key': value (Python reprs), Key: value (headers); one
# pass each.
_KV = (
    re.compile(
        r"(?<![\w.\-])(?P<k>[A-Za-z_][\w.\-]{0,80})\s*=\s*"
        r"(?P<v>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s,;&'\"{}\[\]()<>]+)"
    ),
    re.compile(r"'(?P<k>[^'\\\n]{1,80})'\s*:\s*(?P<v>'(?:[^'\\]|\\.)*'|[^\s,;'\"{}\[\]()<>]+)"),
    re.compile(
        r"(?<![\w.\-])(?P<k>[A-Za-z_][\w.\-]{0,80}):[ \t]+"
        r"(?P<v>(?:(?i:bearer|basic|token|digest)[ \t]+)?[^\s,;'\"{}\[\]()<>]+)"
    ),
)
# Each key=value rule with the text one of which any match of it contains.
_KV_RULES = ((_KV[0], ("=",)), (_KV[1], ("'",)), (_KV[2], (": ", ":\t")))
_KEEP = frozenset(("true", "false", "null", "none", "True", "False", "None", "[REDACTED]"))

# A cheap, exact superset test: text for which it finds nothing holds nothing to redact
# (apart from registered secrets, checked separately). Every value rule starts with one of
# the prefixes; every credential key holds one of the words (the last five only when no
# letter follows: ``input_tokens`` is not a credential) and is followed, somewhere, by ":"
# or "="; Unicode look-alikes and escapes take the full rule. ``MAYBE_PATTERN`` is the
# same test as one regex, for polars (Rust regex) over whole columns.
_PREFIXES = (
    "whsec_", "sk-", "sk_", "rk_", "pk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat",
    "xox", "akia", "asia", "aiza", "eyj", "bearer", "basic", "digest", "@", "\\",
)  # fmt: skip
_KEY_WORDS = (
    "secret", "passw", "passphrase", "credential", "cookie", "auth", "bearer", "apikey",
    "privatekey", "accesskey",
)  # fmt: skip
_PREFIX = re.compile("|".join(re.escape(p) for p in _PREFIXES))
_WORD = re.compile("|".join(_KEY_WORDS) + r"|(?:token|key|pwd|jwt|signature)(?![a-z])")
MAYBE_PATTERN = (
    "(?is)"
    + "|".join(re.escape(p) for p in _PREFIXES)
    + r"|(?-i:[^\x00-\x7F])"
    + "|(?:" + "|".join(_KEY_WORDS) + r").*[=:]"
    + r"|(?:token|key|pwd|jwt|signature)(?:[^a-z].*)?[=:]"
)  # fmt: skip
_MAYBE = re.compile(MAYBE_PATTERN)


def _maybe(text: str) -> bool:
    """The prefilter (MAYBE_PATTERN) as two literal searches on lower-cased text. Short
    texts repeat (metadata, event lists, statuses): their answers are remembered."""
    return _maybe_short(text) if len(text) <= 256 else _maybe_text(text)


def _maybe_text(text: str) -> bool:
    if not text.isascii():
        return True
    low = text.lower()
    if _PREFIX.search(low) is not None:
        return True
    last = max(low.rfind(":"), low.rfind("="))
    return last > 0 and _WORD.search(low, 0, last) is not None


_maybe_short = lru_cache(maxsize=16_384)(_maybe_text)

_SECRETS: dict[str, None] = {}  # registered literal secrets (insertion-ordered set)


def register_secret(value: str | None) -> None:
    """Blank ``value`` (and its URL- and JSON-escaped forms) wherever it appears from now on."""
    if value and len(value) >= 4:
        for form in (value, quote(value, safe=""), json.dumps(value)[1:-1]):
            _SECRETS[form] = None


def registered_secrets() -> list[str]:
    return list(_SECRETS)


def _literals(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _looks_secret(value: str, prose: bool) -> bool:
    last = value.rsplit(maxsplit=1)[-1]
    if last in _KEEP:
        return False
    if not prose or " " in value.strip():  # key=value, or a scheme and its credential
        return True
    return not (last.isalpha() and last.islower())  # "token: set" in a sentence is prose


def _kv(pattern: re.Pattern[str], text: str) -> str:
    """Blank credential-named values; a harmless key's value is searched again."""
    out: list[str] = []
    pos = 0
    prose = pattern is _KV[2]
    m = pattern.search(text)
    while m is not None:
        value = m.group("v")
        if is_credential_key(m.group("k")) and _looks_secret(value, prose):
            quote_char = value[0] if value[:1] in ("'", '"') else ""
            out.append(text[pos : m.start("v")] + quote_char + REDACTED + quote_char)
            pos = m.end()
            m = pattern.search(text, pos)
        else:
            m = pattern.search(text, m.start("v"))
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def redact_plain(text: str) -> str:
    """Value rules only (no JSON structure): for free text and single string values.

    A rule runs only where the text holds what any match of it must contain (a literal
    of :data:`_VALUE_RULES`; ``bearer``/``digest``/``basic`` in any case; ``://`` and
    ``@``; ``=``; a quote; a colon and a blank): the same result, without scanning a
    long record once per rule. Non-ASCII text skips no case-insensitive rule (``ſ``
    matches ``s`` there)."""
    if _SECRETS:
        text = _literals(text)
    if not _maybe(text):
        return text
    return _run_rules(text)


def _run_rules(text: str) -> str:
    """The value and key=value rules of :func:`redact_plain`, without its prefilter."""
    value = _value_pattern(text)
    if value is not None:
        text = value.sub(REDACTED, text)
    low = text.lower() if text.isascii() else None
    if low is None or "bearer" in low or "digest" in low or "basic" in low:
        text = _SCHEME_TOKEN.sub(
            lambda m: (m.group(1) or m.group(3)) + (m.group(2) or m.group(4)) + REDACTED, text
        )
    if "://" in text and "@" in text:
        text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    for pattern, needs in _KV_RULES:
        if any(w in text for w in needs):
            text = _kv(pattern, text)
    return text


# --------------------------------------------------------------------------- JSON text

_STRING = {'"': re.compile(r'"(?:[^"\\]|\\.)*"', re.S), "'": re.compile(r"'(?:[^'\\]|\\.)*'", re.S)}
_KEY = re.compile(r"""(["'])((?:(?!\1)[^\\]|\\.){0,400}?)\1\s*:""", re.S)
_SCALAR_END = re.compile(r"[\s,}\]]")


def _decode_key(raw: str) -> str:
    if "\\" not in raw:
        return raw
    try:
        return str(json.loads('"' + raw.replace('\\"', '"').replace('"', '\\"') + '"'))
    except ValueError:
        return raw


def _value_end(text: str, at: int) -> int:
    """End of the JSON value that starts at ``at`` (the end of the text if it never closes)."""
    n = len(text)
    if at >= n:
        return n
    ch = text[at]
    if ch in "\"'":
        m = _STRING[ch].match(text, at)
        return m.end() if m else n
    if ch in "[{":
        depth, i = 0, at
        while i < n:
            c = text[i]
            if c in "\"'":
                m = _STRING[c].match(text, i)
                if not m:
                    return n
                i = m.end()
                continue
            if c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    m = _SCALAR_END.search(text, at)
    return m.start() if m else n


def _redact_structure(text: str) -> str:
    """Blank the value of every credential key (any quoting, any value type)."""
    out: list[str] = []
    pos = 0
    for m in _KEY.finditer(text):
        if m.start() < pos:
            continue  # inside a value already blanked
        if not is_credential_key(_decode_key(m.group(2))):
            continue
        start = m.end()
        while start < len(text) and text[start] in " \t\r\n":
            start += 1
        end = _value_end(text, start)
        value = text[start:end]
        if value.strip() in _KEEP or not value:
            continue
        out.append(text[pos:start])
        out.append(_JSON_REDACTED if value[:1] != "'" else "'" + REDACTED + "'")
        pos = end
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _redact_escaped_strings(text: str) -> str:
    """Strings with escapes (``\\u0073k-…``, embedded JSON) are decoded and checked too."""

    def one(m: re.Match[str]) -> str:
        token = m.group(0)
        if "\\" not in token:
            return token
        try:
            decoded = json.loads(token)
        except ValueError:
            return token
        if not isinstance(decoded, str):
            return token
        clean = redact(decoded)
        return token if clean == decoded else json.dumps(clean, ensure_ascii=False)

    return _STRING['"'].sub(one, text)


def redact(text: str) -> str:
    """Blank every credential in any text: JSON (even malformed), reprs, logs, messages."""
    if _SECRETS:
        text = _literals(text)
    if not _maybe(text):
        return text
    text = _redact_structure(text)
    if "\\" in text:
        text = _redact_escaped_strings(text)
    # the prefilter passed above: the rules run (a rule that finds nothing changes nothing)
    return _run_rules(_literals(text) if _SECRETS else text)


def redact_obj(value: Any) -> Any:
    """A parsed JSON value with every credential blanked (the input is not modified)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = redact_plain(k) if isinstance(k, str) else k
            if is_credential_key(str(k)) and v is not None and not isinstance(v, bool):
                out[key] = REDACTED
            else:
                out[key] = redact_obj(v)
        return out
    if isinstance(value, list):
        return [redact_obj(v) for v in value]
    return value


def may_hold_secret(text: str) -> bool:
    """False only when ``text`` surely holds nothing :func:`redact` would change."""
    if _SECRETS and any(secret in text for secret in _SECRETS):
        return True
    return _maybe(text)


def redact_json(text: str) -> str:
    """Blank credentials in JSON text and keep it valid JSON (re-serialised only when a
    value had to change); text that is not JSON gets :func:`redact`."""
    if not may_hold_secret(text):
        return text
    try:
        obj = orjson.loads(text)
        clean = redact_obj(obj)
    except (orjson.JSONDecodeError, RecursionError):
        return redact(text)
    return text if clean == obj else orjson.dumps(clean).decode()
