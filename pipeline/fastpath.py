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
from pipeline.schema import JSON_FIELDS, STRING_FIELDS, TIMESTAMP_FIELDS
from pipeline.transform import (
    BATCH_SCHEMA,
    KNOWN_BILLING,
    KNOWN_BREAKDOWN,
    KNOWN_LINE,
    KNOWN_STATUSES,
    KNOWN_TOP_LEVEL,
    LINE_SCHEMA,
    REC,
    RecordError,
    _json,
    may_hold_secrets,
    usage_columns,
    webhook_columns,
)

# Records whose text holds what DuckDB's JSON reader accepts and orjson's does not (NaN,
# Infinity, trailing commas, numbers beyond a double), or integers beyond 64 bits: left
# to the per-record path. Matches inside strings only cost that record the fast path.
_SCREEN = r"[:\[,]\s*-?(NaN|Infinity|[0-9]{19}|[0-9.]+[eE][+-]?[0-9]{3})|,\s*[\]}]"

_TOP = sorted(KNOWN_TOP_LEVEL - {"requests"})  # request rows take the per-record path
_COUNTS = ("total", "completed", "failed")
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


_SQL = f"""
select {REC},
    try(json_transform(t, '{_structure()}')) as v,
    try(json_keys(t, ['$', {", ".join(f"'$.{c}'" for c in _CONTAINERS[:3])}])) as k,
    try(json_keys(t, '$.pricing_lines[*]')) as lk,
    try(json_type(t, [{", ".join(f"'$.{c}'" for c in _CONTAINERS)}])) as ct
from candidates
"""  # noqa: S608 - built from the spec's constant names

_con: duckdb.DuckDBPyConnection | None = None


def _duckdb() -> duckdb.DuckDBPyConnection:
    global _con  # noqa: PLW0603 - one in-memory connection per (worker) process
    if _con is None:
        _con = duckdb.connect(
            config={
                "threads": 1,
                "memory_limit": "128MB",
                "allocator_flush_threshold": "8MB",
                "allocator_bulk_deallocation_flush_threshold": "8MB",
            }
        )
    return _con


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


def _keys_ok(keys: pl.Expr, known: Sequence[str]) -> pl.Expr:
    """No key repeated and none unknown (null: the object is absent)."""
    unique = keys.list.len() == keys.list.n_unique()
    return keys.is_null() | (unique & keys.list.eval(pl.element().is_in(known)).list.all())


# --------------------------------------------------------------------------- batches


_field = pl.col("v").struct.field


def _batch_paths() -> dict[str, pl.Expr]:
    bill = _field("billing").struct.field
    bd = bill("pricing_breakdown").struct.field
    counts = _field("request_counts").struct.field
    paths = {name: _field(name) for name in ("id", *STRING_FIELDS, *TIMESTAMP_FIELDS)}
    paths.update({f"request_counts_{k}": counts(k) for k in _COUNTS})
    paths.update(
        billed=bill("billed"),
        charged=bill("charged"),
        billing_reason=bill("reason"),
        cost_nanos=bill("cost_nanos"),
        api_cost_usd=bill("cost_usd"),
        billing_finalized_at=bill("finalized_at"),
        breakdown_total_nanos=bd("total_nanos"),
        breakdown_total_usd=bd("total_usd_str"),
        breakdown_total_cents=bd("total_cents"),
        breakdown_completed_requests=bd("completed_requests"),
        breakdown_failed_requests=bd("failed_requests"),
        breakdown_total_requests=bd("total_requests"),
    )
    return paths


_BATCH_OKS, _BATCH_VALUES = _leaves(schema.BATCH, _batch_paths())
_HOOK_COLUMNS = tuple(webhook_columns(None, {}))
_USAGE_COLUMNS = tuple(usage_columns(None, {}))
_PY_COLUMNS = (*JSON_FIELDS, *_HOOK_COLUMNS, *_USAGE_COLUMNS)


def _line_paths() -> dict[str, pl.Expr]:
    line = pl.col("line").struct.field
    fallback = pl.col("fallback")
    paths = {n: line(n) for n in ("dimension", "unit_size", "unit_price_usd", "pricing_plan")}
    paths.update(
        service_tier=line("service_tier"),
        endpoint=line("endpoint"),
        quantity=pl.when(fallback).then(line("units")).otherwise(line("quantity")),
        billable_units=pl.when(fallback).then(line("units")).otherwise(line("billable_units")),
        line_nanos=pl.when(fallback).then(line("total_nanos")).otherwise(line("line_nanos")),
        line_cost_usd=pl.when(fallback)
        .then(line("total_usd_str"))
        .otherwise(line("line_cost_usd")),
    )
    return paths


_LINE_OKS, _LINE_VALUES = _leaves(schema.LINE, _line_paths())


def flatten(recs: Sequence[int], texts: Sequence[str]) -> Fast:
    """Flatten the records it can of ``texts`` (record ``recs[i]`` of the chunk)."""
    if not texts:
        return _empty()
    frame = pl.DataFrame({REC: recs, "t": texts}, schema={REC: pl.Int64, "t": pl.String})
    candidates = frame.filter(pl.col("t").str.starts_with("{") & ~pl.col("t").str.contains(_SCREEN))
    con = _duckdb()
    con.register("candidates", candidates)
    try:
        raw = con.sql(_SQL).pl()
    finally:
        con.unregister("candidates")
    if raw.height == 0:
        return _empty()
    ct = pl.col("ct")
    k = pl.col("k")
    objects_ok = [
        ct.list.get(i, null_on_oob=True).is_null() | ct.list.get(i).is_in(_OBJECT_OK)
        for i in range(3)
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
        k.list.get(1).is_null() | (k.list.get(1).list.len() == k.list.get(1).list.n_unique()),
        _keys_ok(k.list.get(2), sorted(KNOWN_BILLING)),
        _keys_ok(k.list.get(3), _BREAKDOWN),
        *_BATCH_OKS,
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
    out = _python_columns(raw)
    if out is None:
        return _empty()
    raw, py = out
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


def _hook(value: Any) -> tuple[Any, ...] | None:
    """The webhook columns as :func:`webhook_columns` gives them before redaction (plus
    the events' text it tests for secrets), or None: a value needs a drift note."""
    if value is None:
        return (None, None, None, None, None, None)
    if type(value) is not dict:
        return None
    url, events, endpoint = value.get("url"), value.get("events"), value.get("endpoint_id")
    if not (url is None or type(url) is str) or not (endpoint is None or type(endpoint) is str):
        return None
    if events is not None and not (type(events) is list and all(type(e) is str for e in events)):
        return None
    has_secret = value.get("has_secret")
    if type(has_secret) is not bool:
        has_secret = bool(value.get("secret")) if value else None
    kept = {k: v for k, v in value.items() if k != "secret"}
    return (
        url,
        None if events is None else orjson.dumps(events).decode(),
        endpoint,
        has_secret,
        orjson.dumps(kept).decode() if value else None,
        str(events) if events else None,
    )


def _flags(texts: Sequence[str | None]) -> pl.Series:
    return may_hold_secrets(pl.Series(texts, dtype=pl.String))


def _python_columns(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The small JSON columns. Each value is parsed and written by orjson, as the
    normaliser does; only values a column-wise secret test flags take the normaliser's
    redaction (:func:`pipeline.transform._json`, :func:`webhook_columns`). A record they
    would give a drift note or a reason goes back to the per-record path."""
    loads, dumps = orjson.loads, orjson.dumps
    v = raw.get_column("v").struct
    rows: list[tuple[Any, ...]] = []
    keep = [False] * raw.height
    at: list[int] = []  # row -> position in raw
    for pos, (m, e, u, h) in enumerate(
        zip(
            v.field("metadata").to_list(),
            v.field("errors").to_list(),
            v.field("usage").to_list(),
            v.field("webhook").to_list(),
            strict=True,
        )
    ):
        drift: dict[str, str] = {}
        try:
            values = tuple(None if x is None else loads(x) for x in (m, e, u, h))
            texts = tuple(None if x is None else dumps(x).decode() for x in values[:3])
            usage = usage_columns(values[2], drift)
            hook = _hook(values[3])
        except (RecordError, orjson.JSONDecodeError, orjson.JSONEncodeError, ValueError):
            continue
        if hook is None or drift:
            continue
        keep[pos] = True
        at.append(pos)
        rows.append((*values, *texts, *hook, *usage.values()))
    if not rows:
        return None
    names = ("_m", "_e", "_u", "_h", *JSON_FIELDS, *_HOOK_COLUMNS, "_events", *_USAGE_COLUMNS)
    columns = {n: list(c) for n, c in zip(names, zip(*rows, strict=True), strict=True)}
    # A webhook's has_secret flag alone would flag every webhook: it is never redacted
    # (a flag, not a secret), so the test reads the text without it.
    plain_hooks = [
        None if t is None else t.replace('"has_secret":true', "").replace('"has_secret":false', "")
        for t in columns["webhook"]
    ]
    try:
        for name, value in (("metadata", "_m"), ("errors", "_e"), ("usage", "_u")):
            for i in _flags(columns[name]).arg_true():
                columns[name][i] = _json(columns[value][i], name)
        for i in (_flags(plain_hooks) | _flags(columns["_events"])).arg_true():
            redone = webhook_columns(columns["_h"][i], {})
            for col in _HOOK_COLUMNS:
                columns[col][i] = redone[col]
    except RecordError:  # pragma: no cover - the texts were written once already
        return None
    py = pl.DataFrame([pl.Series(n, columns[n], dtype=BATCH_SCHEMA[n]) for n in _PY_COLUMNS])
    return raw.filter(pl.Series(keep)), py
