"""One redaction rule, property-tested: credential keys in any spelling and any value type,
credential-looking values under any key, registered secrets in any encoding."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import redaction
from pipeline.redaction import (
    is_credential_key,
    may_hold_secret,
    redact,
    redact_json,
    redact_obj,
    register_secret,
)

MARK = "Zq7MARKzq"  # a secret's body: must never survive redaction

CREDENTIAL_WORDS = [
    ["secret"], ["webhook", "secret"], ["client", "secret"], ["signing", "secret"],
    ["bearer", "token"], ["session", "token"], ["access", "token"], ["refresh", "token"],
    ["secret", "key"], ["aws", "secret", "access", "key"], ["openai", "key"], ["signing", "key"],
    ["api", "key"], ["private", "key"], ["credentials"], ["bearer"], ["password"], ["passwd"],
    ["authorization"], ["auth"], ["token"], ["x", "api", "key"], ["db", "password", "hint"],
]  # fmt: skip
SAFE_KEYS = ["id", "team", "input_tokens", "output_tokens", "total_tokens", "session_id",
             "model", "count", "url", "status", "cost_nanos", "note"]  # fmt: skip


def spell(words: list[str], style: int) -> str:
    if style == 0:
        return "_".join(words)
    if style == 1:
        return words[0] + "".join(w.title() for w in words[1:])  # camelCase
    if style == 2:
        return "-".join(w.upper() for w in words)  # KEBAB-UPPER
    if style == 3:
        return "".join(w.title() for w in words)  # PascalCase
    if style == 4:
        return ".".join(words)
    return "".join(
        chr(ord(c) + 0xFEE0) if c.isalpha() else c for c in "_".join(words)
    )  # full-width


credential_keys = st.builds(spell, st.sampled_from(CREDENTIAL_WORDS), st.integers(0, 5))
secret_leaf = st.sampled_from([MARK, f"sk-{MARK}", 12345678901, f"Bearer {MARK}"])
secret_values = st.recursive(
    secret_leaf,
    lambda inner: (
        st.lists(inner, min_size=1, max_size=3)
        | st.dictionaries(st.sampled_from(SAFE_KEYS), inner, min_size=1, max_size=3)
    ),
    max_leaves=6,
)
plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.sampled_from(["a", "search", "gpt-4o", "x y"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(SAFE_KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)


def _leaks(text: str) -> bool:
    return MARK in text or "12345678901" in text


@settings(max_examples=300, deadline=None)
@given(plain_values, credential_keys, secret_values, st.sampled_from(SAFE_KEYS))
def test_a_credential_key_is_blanked_whatever_its_spelling_and_value(
    around: Any, key: str, value: Any, where: str
) -> None:
    doc = {where: around, "nested": [{key: value}], key: value}
    text = json.dumps(doc, ensure_ascii=False)
    assert is_credential_key(key), key
    for out in (redact(text), redact_json(text), orjson.dumps(redact_obj(doc)).decode()):
        assert not _leaks(out), out
    assert orjson.loads(redact_json(text))[where] == around  # the rest is kept, JSON stays valid


@settings(max_examples=200, deadline=None)
@given(credential_keys, secret_values)
def test_escaped_and_pretty_printed_json_is_redacted_as_text(key: str, value: Any) -> None:
    escaped = json.dumps({key: value}, ensure_ascii=True, indent=2)  # \\uXXXX keys, newlines
    assert not _leaks(redact(escaped))
    cut = escaped[: len(escaped) * 2 // 3]  # truncated JSON: blanked to the end
    assert not _leaks(redact(cut))


@settings(max_examples=300, deadline=None)
@given(plain_values)
def test_json_without_credentials_is_unchanged(doc: Any) -> None:
    text = orjson.dumps(doc).decode()
    assert redact_json(text) == text
    assert redact_obj(doc) == doc


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_the_prefilter_never_skips_what_the_rule_would_change(text: str) -> None:
    if not may_hold_secret(text):
        assert redact(text) == text
    assert redact(redact(text)) == redact(text)  # idempotent


@pytest.mark.parametrize(
    "value",
    [f"whsec_{MARK}", f"sk-{MARK}", f"sk-proj-{MARK}", f"sk_live_{MARK}", f"ghp_{MARK}abcdef",
     f"xoxb-{MARK}", "AKIAABCDEFGHIJKLMNOP", f"AIza{MARK}abcdefghijklmno",
     f"eyJ{MARK}abc.eyJ{MARK}def.sig{MARK}", f"Bearer {MARK}", f"Basic {MARK}==",
     f"https://user:{MARK}@example.com/x", f"https://x.example/cb?api_key={MARK}&a=1",
     f"token={MARK}", f"{{'token': '{MARK}'}}", f"Authorization: Bearer {MARK}",
     f"x-api-key: {MARK}"],
)  # fmt: skip
def test_credential_looking_values_are_blanked_under_any_key_and_in_free_text(value: str) -> None:
    assert not _leaks(redact(f"error: {value} (retry)"))
    as_json = orjson.dumps({"note": value, "list": [value]}).decode()
    assert not _leaks(redact_json(as_json))
    assert not _leaks(redact(as_json))
    assert orjson.loads(redact_json(as_json))["note"] != value


def test_a_registered_secret_is_blanked_in_every_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redaction, "_SECRETS", {})
    token = "tok/Plain+Value=1"
    register_secret(token)
    for text in (f"echo {token}", "url?t=tok%2FPlain%2BValue%3D1", json.dumps({"x": token})):
        assert "Plain" not in redact(text), text
    assert "Plain" not in redact_json(json.dumps({"note": f"see {token}"}))


def test_usage_counters_and_ordinary_words_are_not_secrets() -> None:
    for key in ("input_tokens", "output_tokens", "total_tokens", "max_tokens", "token_count",
                "session_id", "author", "tokenizer", "prompt_tokens_details", "keys"):  # fmt: skip
        assert not is_credential_key(key), key
    text = '{"input_tokens":5,"session_id":"sess_a","has_secret":true,"secret":null}'
    assert redact_json(text) == text  # booleans and null hold nothing


_FRAGMENTS = st.sampled_from(
    ['"', "'", ":", "=", " ", "\n", ",", "{", "}", "[", "]", "\\", "x", "_", "-", "api", "Key", "key",
     "token", "Token", "s", "secret", "passwd", "auth", "Bearer ", "sk-", "whsec_", "@", "://", "abcdef12",
     "input_tokens", "ſ", "K", "Ｓ", "true", "1", "eyJ", "AKIA", "?", "&"]
)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=25).map("".join))
def test_the_prefilter_is_a_superset_of_the_rule_on_credential_shaped_text(text: str) -> None:
    if not may_hold_secret(text):
        assert redact(text) == text
        assert redact_json(text) == text


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.lists(_FRAGMENTS, max_size=12).map("".join) | st.text(max_size=12),
        min_size=1,
        max_size=20,
    )
)
def test_the_column_wise_prefilter_agrees_with_the_python_one(values: list[str]) -> None:
    import polars as pl

    from pipeline.redaction import _MAYBE, MAYBE_PATTERN

    assert pl.Series(values).str.contains(MAYBE_PATTERN).to_list() == [
        may_hold_secret(v) for v in values
    ]
    assert [bool(_MAYBE.search(v)) for v in values] == [may_hold_secret(v) for v in values]


# --------------------------------------------------------------------------- prefilters
def _every_rule(text: str) -> str:
    """redact_plain as it was before its per-rule prefilters: every rule over the text."""
    if redaction._SECRETS:
        text = redaction._literals(text)
    if not redaction._maybe(text):
        return text
    every_value_rule = "|".join(rule for _, rule in redaction._VALUE_RULES)
    text = re.sub(every_value_rule, redaction.REDACTED, text)
    text = redaction._SCHEME_TOKEN.sub(
        lambda m: (m.group(1) or m.group(3)) + (m.group(2) or m.group(4)) + redaction.REDACTED,
        text,
    )
    text = redaction._USERINFO.sub(lambda m: m.group(1) + redaction.REDACTED + "@", text)
    for pattern in redaction._KV:
        text = redaction._kv(pattern, text)
    return text


FRAGMENTS = [
    "whsec_Zq7MARKzq", "sk-Zq7MARKzq12", "sk_live_Zq7MARKzq", "rk_test_Zq7MARKzq", "pk_live_",
    "ghp_Zq7MARKzq1234", "github_pat_Zq7MARKzq12", "gh", "xoxb-Zq7MARKzq", "xox",
    "AKIAZQ7MARKZQ1234567", "ASIA", "AIzaZq7MARKzq1234567890123", "eyJZq7MARKzq.eyJZq7MARKzq.x",
    "eyJ", "Bearer Zq7MARKzq", "BEARER  Zq7MARKzq", "bearer", "Digest Zq7MARKzq",
    "Basic Zq7MARKzq==", "basic", "Baſic Zq7MARKzq", "BEARER\tZq7MARKzq", "beareR", "bEaRer",
    "https://u:Zq7MARKzq@h/x", "ftp://", "@", "://", "token=Zq7MARKzq", "api_key = 'Zq7MARKzq'",
    "=", "'token': 'Zq7MARKzq'", "'", "'api_key':Zq7MARKzq", "Authorization: Bearer Zq7MARKzq",
    "password:\tZq7MARKzq", "token: set", ": ", ":\t", ":", '"secret":"Zq7MARKzq"', " ", "\t",
    "\n", "x", "9", "_", "-", "é", "K", "İ", "ı", "ſ", "\u200b", '"', "{", "}", "[REDACTED]",
]  # fmt: skip


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=8), st.text(max_size=6))
def test_the_rules_prefilters_change_nothing(parts: list[str], noise: str) -> None:
    text = noise.join(parts) if noise else "".join(parts)
    assert redaction.redact_plain(text) == _every_rule(text)


def test_the_value_rules_each_have_their_literals() -> None:
    for literals, rule in redaction._VALUE_RULES:
        assert literals, rule
    # every rule is in the one alternation, in order
    every = tuple(range(len(redaction._VALUE_RULES)))
    assert redaction._value_rules(every).pattern == "|".join(r for _, r in redaction._VALUE_RULES)
    assert redaction._value_pattern("nothing here") is None
    assert redaction._value_pattern("whsec_x and eyJ").pattern == "|".join(  # type: ignore[union-attr]
        [redaction._VALUE_RULES[0][1], redaction._VALUE_RULES[7][1]]
    )
