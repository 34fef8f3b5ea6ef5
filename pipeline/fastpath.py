"""Column-wise fast path: flatten the well-typed batch objects of a chunk in bulk.

DuckDB's JSON functions read every record of the chunk at once (``json_transform`` into
the shape of a batch object, with each leaf kept as its JSON text; ``json_keys`` and
``json_type`` for the objects' keys and the containers' types); polars then checks and
converts each column with vectorised expressions. A record takes this path only when
every value has exactly the JSON type its column expects and nothing about it needs a
reason in words: an unknown or repeated key, a value of another type, a timestamp in
another spelling, anything DuckDB's reader accepts and orjson's does not. Every other
record is handed back to the per-record normaliser (:func:`pipeline.transform.
normalize_batch`), which keeps its exact reasons and drift notes.

Both paths give identical rows (``tests/test_fastpath.py`` checks it on generated and
hostile records). The small JSON columns (``metadata``, ``errors``, ``usage``,
``webhook``) go through the normaliser's own functions, value by value, so their text and
redaction are the normaliser's by construction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson
import polars as pl

from pipeline import schema
from pipeline.transform import (
    BATCH_SCHEMA,
    HAS_SECRET_FLAG,
    KNOWN_BILLING,
    KNOWN_BREAKDOWN,
    KNOWN_LINE,
    KNOWN_STATUSES,
    KNOWN_TOP_LEVEL,
    LINE_SCHEMA,
    REC,
    TOP_JSON_COLUMNS,
    RecordError,
    _json,
    may_hold_secrets,
    webhook_columns,
)

# Records whose text holds what DuckDB's JSON reader accepts and orjson's does not (NaN,
# Infinity, trailing commas, numbers beyond a double), or integers beyond 64 bits: left
# to the per-record path. Matches inside strings only cost that record the fast path.
_SCREEN = r"[:\[,]\s*-?(NaN|Infinity|[0-9]{19}|[0-9.]+[eE][+-]?[0-9]{3})|,\s*[\]}]"

_TOP = sorted(KNOWN_TOP_LEVEL - {"requests"})  # request rows take the per-record path
_COUNTS = sorted(schema.keys_of("request_counts"))
_BILLING = sorted(KNOWN_BILLING - {"pricing_breakdown"})
_BREAKDOWN = sorted(KNOWN_BREAKDOWN)
_LINE = sorted(KNOWN_LINE)
_CONTAINERS = ("request_counts", "billing", "billing.pricing_breakdown", "pricing_lines")
_OBJECT_OK = ("NULL", "OBJECT")


def _structure() -> str:
    leaf = "JSON"
    top: dict[str, Any] = {k: leaf for k in _TOP}
    top["request_counts"] = dict.fromkeys(_COUNTS, leaf)
    top["billing"] = {
        **dict.fromkeys(_BILLING, leaf),
        "pricing_breakdown": dict.fromkeys(_BREAKDOWN, leaf),
    }
    top["pricing_lines"] = [dict.fromkeys(_LINE, leaf)]
    return json.dumps(top)


# The usage and webhook objects are read apart (their own JSON text is a column too).
_SUB = {"usage": "u", "webhook": "w"}
_USAGE = sorted(schema.keys_of("usage"))
_HOOK = (*sorted(schema.keys_of("webhook")), "secret")
# json_keys paths (k) and json_type paths (ct), by position
_KEYS = ("", "request_counts", "billing", "billing.pricing_breakdown", *TOP_JSON_COLUMNS,
         "webhook", "webhook.delivery")  # fmt: skip
_HOOK_KEYS = _KEYS.index("webhook")  # the webhook's keys, then its delivery object's
_TYPES = (*_CONTAINERS, "usage", "webhook")


def _paths(paths: Sequence[str]) -> str:
    return ", ".join(f"'$.{p}'" if p else "'$'" for p in paths)


_SQL = f"""
select {REC},
    try(json_transform(t, '{_structure()}')) as v,
    try(json_keys(t, [{_paths(_KEYS)}])) as k,
    try(json_keys(t, '$.pricing_lines[*]')) as lk,
    try(json_type(t, [{_paths(_TYPES)}])) as ct
from candidates
"""  # noqa: S608 - built from the spec's constant names

# the usage and webhook objects' own fields, read from their (short) texts
_SUB_SQL = f"""
select
    try(json_transform(usage, '{json.dumps(dict.fromkeys(_USAGE, "JSON"))}')) as u,
    try(json_transform(webhook, '{json.dumps(dict.fromkeys(_HOOK, "JSON"))}')) as w
from subobjects
"""  # noqa: S608 - built from the spec's constant names


def _query(sql: str, name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """One query over a frame, on a connection of its own: closing it gives its parse
    memory back at once (a kept connection held ~70 MB more per worker)."""
    con = duckdb.connect(config={"threads": 1, "memory_limit": "128MB"})
    try:
        con.register(name, frame)
        result: pl.DataFrame = con.sql(sql).pl()
        return result
    finally:
        con.close()


@dataclass
class Fast:
    """What the fast path made of a chunk: the records it took (chunk positions), their
    staged frames (``_rec`` + BATCH/LINE columns) and the drift notes it owes."""

    taken: set[int]
    batches: pl.DataFrame
    lines: pl.DataFrame
    drift: list[tuple[int, str, str, str]] = field(default_factory=list)  # rec, path, note, id


def _empty() -> Fast:
    return Fast(
        set(),
        pl.DataFrame(schema={REC: pl.Int64, **BATCH_SCHEMA}),
        pl.DataFrame(schema={REC: pl.Int64, **LINE_SCHEMA}),
    )


# --------------------------------------------------------------------------- leaf checks
# A leaf is its JSON text (null when absent or JSON null). Each kind gives (ok, value):
# ok is false where the value needs the per-record rules.


def _text(c: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    return c.is_null() | c.str.starts_with('"'), c.str.json_decode(pl.String)


def _int(c: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    return c.is_null() | c.str.contains(r"^-?[0-9]{1,18}$"), c.cast(pl.Int64, strict=False)


def _number(c: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    ok = c.is_null() | c.str.contains(r"^-?[0-9]{1,18}(\.[0-9]+)?([eE][+-]?[0-9]{1,2})?$")
    return ok, c.cast(pl.Float64, strict=False)


def _flag(c: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    return c.is_null() | c.is_in(["true", "false"]), c == "true"


def _usd_text(c: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    ok = c.is_null() | (c == '""') | c.str.contains(r'^"-?[0-9]{1,29}(\.[0-9]{1,9})?"$')
    return ok, pl.when(c != '""').then(c.str.slice(1, c.str.len_bytes() - 2))


_ISO = (
    r'^"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]'
    r':[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?"$'
)


def _timestamp(c: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Unix seconds as an integer below 10^11, or ISO-8601 in its common spellings."""
    seconds = c.str.contains(r"^[0-9]{1,11}$")
    iso = c.str.contains(_ISO) & ~c.str.starts_with('"0000')
    text = c.str.slice(1, c.str.len_bytes() - 2).str.replace(r"Z$", "+00:00")
    text = (
        pl.when(text.str.contains(r"[+-][0-9]{2}:[0-9]{2}$")).then(text).otherwise(text + "+00:00")
    )
    parsed = text.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", time_zone="UTC", strict=False
    ).dt.epoch("us")
    value = pl.when(seconds).then(c.cast(pl.Int64, strict=False) * 1_000_000).when(iso).then(parsed)
    ok = c.is_null() | (c == '""') | seconds | (iso & parsed.is_not_null())
    return ok, value


_KIND_CHECK = {
    "id": _text,
    "text": _text,
    "count": _int,
    "nanos": _int,
    "number": _number,
    "usd_float": _number,
    "flag": _flag,
    "usd_text": _usd_text,
    "timestamp": _timestamp,
}


def _leaves(
    columns: Sequence[schema.Column], path: dict[str, pl.Expr]
) -> tuple[list[pl.Expr], list[pl.Expr]]:
    oks, values = [], []
    for col in columns:
        if col.name in path:
            ok, value = _KIND_CHECK[col.kind](path[col.name])
            oks.append(ok.fill_null(False))
            values.append(value.cast(col.staged).alias(col.name))
    return oks, values


def _unique(keys: pl.Expr) -> pl.Expr:
    return keys.is_null() | (keys.list.len() == keys.list.n_unique())


def _keys_ok(keys: pl.Expr, known: Sequence[str]) -> pl.Expr:
    """No key repeated and none unknown (null: the object is absent)."""
    return _unique(keys) & (keys.is_null() | keys.list.eval(pl.element().is_in(known)).list.all())


# --------------------------------------------------------------------------- batches


_field = pl.col("v").struct.field


def _source(path: str) -> pl.Expr:
    """A column's source path in the spec (``billing.pricing_breakdown.total_nanos``) as
    the expression reading its leaf."""
    first, *rest = path.split(".")
    expr = pl.col(_SUB[first]) if first in _SUB and rest else _field(first)
    for part in rest:
        expr = expr.struct.field(part)
    return expr


def _batch_paths() -> dict[str, pl.Expr]:
    """Every batch column read from one leaf, from its source path in the spec. The JSON
    columns and the webhook's events and has_secret follow rules of their own (below)."""
    return {
        c.name: _source(c.source)
        for c in schema.BATCH
        if c.source and c.kind in _KIND_CHECK and c.name != "webhook_has_secret"
    }


_BATCH_OKS, _BATCH_VALUES = _leaves(schema.BATCH, _batch_paths())
_HOOK_COLUMNS = ("webhook", "webhook_events", "webhook_has_secret")  # url, id: as text


def _line_paths() -> dict[str, pl.Expr]:
    """Every line column from its key in the spec; in the fallback shape, the money
    columns from the keys ``schema.LINE_FALLBACK`` names."""
    line = pl.col("line").struct.field
    paths = {}
    for col in schema.under(schema.LINES, schema.LINE):
        key = col.source.removeprefix(f"{schema.LINES}.") if col.source else col.name
        paths[col.name] = line(key)
        if col.name in schema.LINE_FALLBACK:
            fallback = line(schema.LINE_FALLBACK[col.name])
            paths[col.name] = pl.when("fallback").then(fallback).otherwise(paths[col.name])
    return paths


_LINE_OKS, _LINE_VALUES = _leaves(schema.LINE, _line_paths())


def flatten(recs: Sequence[int], texts: Sequence[str]) -> Fast:
    """Flatten the records it can of ``texts`` (record ``recs[i]`` of the chunk)."""
    if not texts:
        return _empty()
    frame = pl.DataFrame({REC: recs, "t": texts}, schema={REC: pl.Int64, "t": pl.String})
    candidates = frame.filter(pl.col("t").str.starts_with("{") & ~pl.col("t").str.contains(_SCREEN))
    raw = _query(_SQL, "candidates", candidates)
    if raw.height == 0:
        return _empty()
    subobjects = raw.select(usage=_field("usage"), webhook=_field("webhook"))
    raw = raw.hstack(_query(_SUB_SQL, "subobjects", subobjects))
    ct = pl.col("ct")
    k = pl.col("k")
    objects_ok = [
        ct.list.get(i, null_on_oob=True).is_null() | ct.list.get(i).is_in(_OBJECT_OK)
        for i in (0, 1, 2, 4, 5)
    ]
    lines_type = ct.list.get(3, null_on_oob=True)
    checks = [
        pl.col("v").is_not_null(),
        k.is_not_null(),
        ct.is_not_null(),
        _field("id").str.contains(r'^"[!-\[\]-~]([^\\]*[!-\[\]-~])?"$'),  # no strip needed
        _field("pricing_lines").list.len().fill_null(0) == pl.col("lk").list.len().fill_null(0),
        *objects_ok,
        lines_type.is_null() | lines_type.is_in(["NULL", "ARRAY"]),
        _keys_ok(k.list.get(0), _TOP),
        # request_counts: unknown keys are ignored by both paths, repeated ones are not
        _unique(k.list.get(1)),
        _keys_ok(k.list.get(2), sorted(KNOWN_BILLING)),
        _keys_ok(k.list.get(3), _BREAKDOWN),
        *(_unique(k.list.get(i)) for i in (_KEYS.index("usage"), _HOOK_KEYS)),
        *_BATCH_OKS,
        *_hook_oks(),
    ]
    raw = raw.with_columns(
        _lines=_field("pricing_lines").fill_null([]),
        _ok=pl.all_horizontal(checks),
    ).filter("_ok")
    lk = pl.col("lk")
    lines = (
        raw.select(REC, "_lines", lk.fill_null([]), batch_id=_field("id"))
        .with_columns(line_index=pl.int_ranges(pl.col("_lines").list.len(), dtype=pl.Int32))
        .explode("_lines", "lk", "line_index")
        .filter(pl.col("line_index").is_not_null())
        .rename({"_lines": "line"})
        .with_columns(
            fallback=~lk.list.contains("line_nanos")
            & (lk.list.contains("total_nanos") | lk.list.contains("units"))
        )
    )
    line_ok = pl.all_horizontal(lk.list.len() > 0, _keys_ok(lk, _LINE), *_LINE_OKS)
    rejected = lines.filter(~line_ok).get_column(REC).unique()
    raw = raw.filter(~pl.col(REC).is_in(rejected.implode()))
    raw, py = _json_columns(raw)
    if raw.height == 0:
        return _empty()
    taken = set(raw.get_column(REC).to_list())
    batches = raw.select(
        REC,
        *_BATCH_VALUES,
        has_billing=(pl.col("ct").list.get(1) == "OBJECT").fill_null(False),
        pricing_line_count=pl.col("_lines").list.len().cast(pl.Int32),
        extra=pl.lit(None, pl.String),
    ).hstack(py)
    batches = batches.select(REC, *BATCH_SCHEMA)
    lines = (
        lines.filter(pl.col(REC).is_in(raw.get_column(REC).implode()))
        .with_columns(
            batch_id=pl.col("batch_id").str.json_decode(pl.String),
            line_shape=pl.when("fallback").then(pl.lit("fallback")).otherwise(pl.lit("priced")),
            extra=pl.lit(None, pl.String),
        )
        .with_columns(*_LINE_VALUES)
        .select(REC, *LINE_SCHEMA)
    )
    status = batches.get_column("status")
    unknown = batches.filter(status.is_not_null() & ~status.is_in(KNOWN_STATUSES))
    drift = [
        (r, f"status={s[:100]}", "new status value (loaded as it is)", i)
        for r, s, i in unknown.select(REC, "status", "id").iter_rows()
    ]
    return Fast(taken, batches, lines, drift)


# --------------------------------------------------------------------------- JSON columns
# The JSON columns hold what orjson writes for the parsed value. DuckDB's text of a value
# (written back by its JSON library) is the same text when nothing in it is spelt
# differently by the two writers: no escape, no repeated key, no number outside the
# spellings both write alike. Such values are taken as they are, column-wise; any other
# value, and any value a column-wise secret test flags, takes the normaliser's function.

_NUMBER = r"[:\[,]-?[0-9][0-9.eE+-]*"
_SAME_NUMBER = r"^[:\[,](0|-?[1-9][0-9]{0,17}|-?0\.0{0,3}[1-9][0-9]*|-?[1-9][0-9]{0,15}\.[0-9]+)$"
_SIMPLE_LIST = r'^\[("[^"\\]*"(,"[^"\\]*")*)?\]$'


def _same_text(text: pl.Expr, keys: pl.Expr, nested: pl.Expr | None = None) -> pl.Expr:
    """Where DuckDB's text of a value is what orjson writes for it (see above)."""
    braces = text.str.count_matches("{", literal=True)
    flat = (braces == 0) | ((braces == 1) & _unique(keys) & text.str.starts_with("{"))
    if nested is not None:  # one nested object, whose keys are checked too
        flat = flat | ((braces == 2) & _unique(keys) & (nested.list.len() > 0) & _unique(nested))
    numbers = text.str.extract_all(_NUMBER).list.eval(pl.element().str.contains(_SAME_NUMBER))
    return text.is_null() | (
        ~text.str.contains("\\", literal=True) & flat & numbers.list.all()
    ).fill_null(False)


def _hook_oks() -> list[pl.Expr]:
    """A webhook the column-wise rules can give the columns of (any other: per record)."""
    w = pl.col("w").struct.field
    secret = w("secret")
    return [
        (w("events").is_null() | w("events").str.contains(_SIMPLE_LIST)).fill_null(False),
        (secret.is_null() | secret.str.contains(r'^"[^"\\]*"$')).fill_null(False),
    ]


def _hook_columns() -> list[pl.Expr]:
    hook = _field("webhook")
    keys = pl.col("k").list.get(_HOOK_KEYS)
    has = pl.col("w").struct.field("has_secret")
    secret = pl.col("w").struct.field("secret")
    empty = keys.list.len() == 0
    has_secret = (
        pl.when(hook.is_null() | empty)
        .then(None)
        .when(has.is_in(["true", "false"]))
        .then(has == "true")
        .otherwise(secret.is_not_null() & (secret != '""'))
    )
    with_secret = keys.list.contains("secret").fill_null(False)
    kept = (
        pl.when(~with_secret)
        .then(hook)
        .otherwise(
            hook.str.replace(r',"secret":"[^"]*"', "")
            .str.replace(r'^\{"secret":"[^"]*",', "{")
            .str.replace(r'^\{"secret":"[^"]*"\}$', "{}")
        )
    )
    simple = _same_text(hook, keys, pl.col("k").list.get(_HOOK_KEYS + 1)) & (
        ~with_secret | (hook.str.count_matches('"secret":', literal=True) == 1)
    )
    return [
        pl.when(hook.is_null() | empty).then(None).otherwise(kept).alias("webhook"),
        pl.col("w").struct.field("events").alias("webhook_events"),
        has_secret.alias("webhook_has_secret"),
        simple.alias("_hook_same"),
        # the has_secret flag is never a secret, and alone it would flag every webhook
        kept.str.replace_all(HAS_SECRET_FLAG, "").alias("_hook_test"),
    ]


def _json_columns(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The JSON and webhook columns: column-wise where DuckDB's text is orjson's and no
    secret may hide; value by value through the normaliser's functions elsewhere. A
    record they would give a reason goes back to the per-record path."""
    k = pl.col("k")
    cols = raw.select(
        REC,
        *(_field(n).alias(n) for n in TOP_JSON_COLUMNS),
        *(
            _same_text(_field(n), k.list.get(_KEYS.index(n))).alias(f"_{n}_same")
            for n in TOP_JSON_COLUMNS
        ),
        *_hook_columns(),
    )
    redo: dict[str, list[int]] = {
        n: (~cols.get_column(f"_{n}_same") | may_hold_secrets(cols.get_column(n)))
        .arg_true()
        .to_list()
        for n in TOP_JSON_COLUMNS
    }
    hooks = (
        (
            ~cols.get_column("_hook_same")
            | may_hold_secrets(cols.get_column("_hook_test"))
            | may_hold_secrets(cols.get_column("webhook_events"))
        )
        .arg_true()
        .to_list()
    )
    values = {n: cols.get_column(n).to_list() for n in (*TOP_JSON_COLUMNS, *_HOOK_COLUMNS)}
    raw_hooks = raw.get_column("v").struct.field("webhook")
    failed: set[int] = set()
    for name, rows in redo.items():
        texts = values[name]
        for i in rows:
            try:
                texts[i] = _json(orjson.loads(texts[i]), name)
            except (RecordError, orjson.JSONDecodeError, ValueError):
                failed.add(i)
    for i in hooks:
        text = raw_hooks[i]
        drift: dict[str, str] = {}
        try:
            again = webhook_columns(None if text is None else orjson.loads(text), drift)
        except (RecordError, orjson.JSONDecodeError, ValueError):
            failed.add(i)
            continue
        if drift:
            failed.add(i)
        for col in _HOOK_COLUMNS:
            values[col][i] = again[col]
    frame = pl.DataFrame(
        [
            pl.Series(n, values[n], dtype=BATCH_SCHEMA[n])
            for n in (*TOP_JSON_COLUMNS, *_HOOK_COLUMNS)
        ]
    )
    keep = ~pl.Series(range(raw.height)).is_in(list(failed))
    return raw.filter(keep), frame.filter(keep)
