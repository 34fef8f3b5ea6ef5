"""Column-wise fast path: flatten the well-typed batch objects of a chunk in bulk.

A record takes this path when msgspec's strict decoder reads it into the spec's shape,
generated from ``pipeline/schema.py``: every value has exactly the JSON type its kind
expects (a string where text is read, an integer where a count or nano-USD amount is, a
string or integer for a timestamp...), no object carries a key the spec does not know,
and nothing is spelt in a way the two JSON readers read apart (a number of 19 digits or
more, an exponent of three digits: :data:`_SCREEN`). The values are then read column by
column, by the normaliser's own readers (``transform._READ``, the same code per kind),
and the JSON, ``usage`` and ``webhook`` columns by the normaliser's own functions.

Any record the decoder refuses, any value a reader would give a reason for, any note of
drift, is handed back to the per-record normaliser (:func:`pipeline.transform.
normalize_batch`), which keeps its exact reasons and drift notes. Both paths give
identical rows: ``tests/test_fastpath.py`` checks it on generated and hostile records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import orjson
import polars as pl
from msgspec.structs import astuple

from pipeline import schema
from pipeline.transform import (
    _FILL_OBJECTS,
    _INT64_MIN,
    _READ,
    BATCH_SCHEMA,
    INT64_MAX,
    KNOWN_LINE,
    KNOWN_TOP_LEVEL,
    LINE_COLUMNS,
    LINE_SCHEMA,
    READ_SCOPE,
    REC,
    TOP_JSON_COLUMNS,
    TS_MAX_S,
    RecordError,
    _json,
    may_hold_secrets,
    new_status,
    to_micros,
    webhook_columns,
)

# Numbers the two JSON readers read apart (orjson turns an integer beyond 64 bits into a
# float, msgspec keeps it whole) or may round apart (three-digit exponents): left to the
# per-record path. A match inside a string only costs that record the fast path.
_SCREEN = r"[:\[,]\s*-?([0-9]{19}|[0-9.]+[eE][+-]?[0-9]{3})"

# --------------------------------------------------------------------------- the shape
# The decoder's types by kind: the one JSON type the normaliser reads without a rule.
_INT64 = Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=INT64_MAX)]
_TYPES: dict[str, Any] = {
    "id": str,
    "text": str,
    "timestamp": int | str,
    "count": _INT64,
    "nanos": _INT64,
    "usd_text": str,
    "usd_float": float,  # an integer is read as a float, as the normaliser does
    "number": float,
    "flag": bool,
}
_UNSET = msgspec.UNSET
# The line keys whose presence picks the line's shape, as ``transform._line`` tells it:
# the fallback shape has no line_nanos but total_nanos or units (absent told from null).
_SHAPE_KEYS = ("line_nanos", "total_nanos", "units")
_JSON_SOURCES = {c.source for c in schema.BATCH if c.kind == "json" and c.source}


def _struct(
    name: str, fields: Sequence[tuple[str, Any]], *, strict: bool, required: Sequence[str] = ()
) -> Any:
    """A Struct of optional fields but ``required`` (neither absent nor null); ``strict``:
    an unknown key refuses the record."""
    return msgspec.defstruct(
        name,
        [(k, t) for k, t in fields if k in required]
        + [(k, t | None, None) for k, t in fields if k not in required],
        forbid_unknown_fields=strict,
    )


_STRUCT_OF: dict[str, Any] = {}  # the objects read into Structs, by path ("": the batch)


def _object(path: str) -> Any:
    """The Struct of one object of the spec (``""``: the batch), its child objects
    nested. An object also stored whole as JSON, or read by rules of its own, is left
    as it is (``Any``) for the normaliser's functions."""
    fields: list[tuple[str, Any]] = []
    for key in sorted(schema.keys_of(path)):
        child = f"{path}.{key}" if path else key
        if child in _JSON_SOURCES or schema.CONTAINERS.get(child) == "own":
            fields.append((key, Any))
        elif child in schema.CONTAINERS:
            fields.append((key, _object(child)))
        else:
            (col,) = (c for c in schema.BATCH if c.source == child)
            fields.append((key, _TYPES[col.kind]))
    if not path:
        fields.append(("pricing_lines", list[_LINE]))  # type: ignore[valid-type]
    # money objects announce their unknown keys (drift: per record); lenient ones don't
    strict = not path or schema.CONTAINERS[path] == "money"
    required = [c.source.rpartition(".")[2] for c in schema.under(path) if c.required and c.source]
    struct = _struct(path.replace(".", "_") or "Batch", fields, strict=strict, required=required)
    _STRUCT_OF[path] = struct
    return struct


def _line_struct() -> Any:
    """A pricing line in either shape: every key it may carry, typed by its column."""
    by_column = {c.name: c.kind for c in schema.LINE}
    kinds = {c.source.rpartition(".")[2]: c.kind for c in schema.LINE if c.source}
    kinds.update({key: by_column[col] for col, key in schema.LINE_FALLBACK.items()})
    assert set(kinds) == KNOWN_LINE, "every known line key has a kind"
    fields = [
        (k, _TYPES[kind] | None | msgspec.UnsetType, _UNSET)
        if k in _SHAPE_KEYS
        else (k, _TYPES[kind] | None, None)
        for k, kind in kinds.items()
    ]
    return msgspec.defstruct("Line", fields, forbid_unknown_fields=True)


_LINE = _line_struct()
_BATCH = _object("")
_DECODER = msgspec.json.Decoder(_BATCH)
assert set(_BATCH.__struct_fields__) == KNOWN_TOP_LEVEL - {"requests"}  # rows: per record

# --------------------------------------------------------------------------- the readers
# The decoder's values are taken whole, object by object (``msgspec.structs.astuple``,
# transposed in C), then read column by column. For the kinds below the decoder's strict
# type is exactly what the normaliser's reader returns (a str, a bool, a float, an int in
# 64 bits, or null); every other kind goes through the normaliser's own expression
# (``transform._READ``), value by value, and a value it gives a reason for (or notes
# drift for) marks its record for the per-record path. Two kinds are read column-wise
# first: timestamps (:func:`_timestamp_column`) and the kinds of :data:`_ACCEPT`.
_AS_DECODED = frozenset({"id", "text", "count", "nanos", "usd_float", "number", "flag"})
_REFUSED = (RecordError, ValueError, TypeError, OverflowError)
ValueRead = Callable[[Any, str, dict[str, str]], Any]


def _value_read(template: str) -> ValueRead:
    """``read(v, path, drift)``: one kind's reader for one value."""
    scope = dict(READ_SCOPE)
    # the normaliser's own expression (transform._READ), from the spec (no outside input)
    exec(f"def read(v, P, drift):\n    return {template.format(P='P')}", scope)
    fn: ValueRead = scope["read"]
    return fn


_VALUE_READ = {kind: _value_read(t) for kind, t in _READ.items() if kind not in _AS_DECODED}

# Text the reader of a kind returns as it is, told column-wise: a match here implies its
# expression's first branch (for usd_text ``type(v) is str and _DEC(v)``: ASCII digits
# are digits to ``\d`` too). A value that does not match is read by the reader itself.
_ACCEPT = {"usd_text": r"^-?[0-9]{1,29}(\.[0-9]{1,9})?$"}


def _kind_read(kind: str, values: Sequence[Any], path: str, refused: set[int]) -> Any:
    """A column of one kind read; positions of the values its reader refuses (or notes
    drift for) added to ``refused``."""
    if kind in _AS_DECODED or values.count(None) == len(values):
        return values
    if kind == "timestamp":
        return _timestamp_column(values, path, refused)
    read, out = _VALUE_READ[kind], list(values)
    todo: Sequence[int] = range(len(values))
    if kind in _ACCEPT:
        text = pl.Series(values, dtype=pl.String)
        todo = (~text.str.contains(_ACCEPT[kind]) & text.is_not_null()).arg_true().to_list()
    drift: dict[str, str] = {}
    for i in todo:
        try:
            out[i] = read(values[i], path, drift)
        except _REFUSED:
            out[i] = None
            refused.add(i)
        if drift:
            refused.add(i)
            drift.clear()
    return out


def _timestamp_column(values: Sequence[Any], path: str, refused: set[int]) -> list[Any]:
    """A timestamp column (null, integers or text, as decoded) to UTC microseconds, as
    ``transform.to_micros`` reads it: Unix seconds in range and ISO-8601 text in its
    common spellings column-wise, any other value by ``to_micros`` itself (positions of
    those it refuses added to ``refused``)."""
    text = [v if type(v) is str else None for v in values]
    parsed = _iso_micros(text) if text.count(None) < len(text) else text
    out = [
        (v * 1000000 if 0 <= v < TS_MAX_S else None) if type(v) is int else p
        for v, p in zip(values, parsed, strict=True)
    ]
    for i in [i for i, (v, o) in enumerate(zip(values, out, strict=True)) if o is None]:
        if values[i] is not None:  # odd text, an integer out of range: the rule decides
            try:
                out[i] = to_micros(path, values[i])
            except _REFUSED:
                refused.add(i)
    return out


def _fields(structs: Sequence[Any], struct: Any) -> dict[str, Sequence[Any]]:
    """The fields of ``structs`` (of type ``struct``; None where absent), as columns."""
    names = struct.__struct_fields__
    if not structs:
        return {n: () for n in names}
    nulls = (None,) * len(names)
    rows = [nulls if o is None else astuple(o) for o in structs]
    return dict(zip(names, zip(*rows, strict=True), strict=True))


# the objects read into Structs, parents first (each read from its parent's column)
_STRUCTS = [("", _BATCH), *((p, _STRUCT_OF[p]) for p in schema.CONTAINERS if p in _STRUCT_OF)]
# the batch columns read here: (column, object path, key, kind)
_COLUMN_SOURCES = tuple(
    (c.name, schema.parent(c.source), c.source.rpartition(".")[2], c.kind)
    for c in schema.BATCH
    if c.source and c.name != "id" and c.kind in _TYPES and schema.parent(c.source) in _STRUCT_OF
)


def _read_batch_columns(objs: list[Any], refused: set[int]) -> dict[str, Any]:
    fields = {"": _fields(objs, _BATCH)}
    for path, struct in _STRUCTS[1:]:
        up, _, key = path.rpartition(".")
        fields[path] = _fields(fields[up][key], struct)  # type: ignore[arg-type]
    return {
        name: _kind_read(kind, fields[path][key], f"{path}.{key}" if path else key, refused)
        for name, path, key, kind in _COLUMN_SOURCES
    }


_LINE_KINDS = {c.name: c.kind for c in schema.LINE}
_LINE_SOURCES = tuple(
    (c.name, c.source.rpartition(".")[2], schema.LINE_FALLBACK.get(c.name))
    for c in schema.LINE
    if c.source
)
_LINE_DERIVED = ("batch_id", "line_index", "line_shape", "extra")  # filled below
assert {n for n, _, _ in _LINE_SOURCES} | set(_LINE_DERIVED) == set(LINE_COLUMNS)


def _present(values: Sequence[Any]) -> list[Any]:
    """A shape key's values, absent read as null."""
    return [None if v is _UNSET else v for v in values]


def _read_line_columns(
    objs: list[Any], ids: list[str], recs: list[int], refused: set[int]
) -> dict[str, Any]:
    """The line columns (``_rec`` too): each read from its key, or in the fallback shape
    from the key ``schema.LINE_FALLBACK`` names, as ``transform._line`` does. The
    records of lines a reader refuses are added to ``refused`` (by record number)."""
    counts = [len(o.pricing_lines) if o.pricing_lines else 0 for o in objs]
    lines = [ln for o in objs if o.pricing_lines for ln in o.pricing_lines]
    fields = _fields(lines, _LINE)
    priced, total, units = (fields[k] for k in _SHAPE_KEYS)
    fb = [
        p is _UNSET and (t is not _UNSET or u is not _UNSET)
        for p, t, u in zip(priced, total, units, strict=True)
    ]
    cols: dict[str, Any] = {
        REC: [r for r, n in zip(recs, counts, strict=True) for _ in range(n)],
        "batch_id": [b for b, n in zip(ids, counts, strict=True) for _ in range(n)],
        "line_index": [i for n in counts for i in range(n)],
        "line_shape": ["fallback" if f else "priced" for f in fb],
        "extra": [None] * len(lines),
    }
    bad_lines: set[int] = set()
    for name, key, fallback in _LINE_SOURCES:
        values = _present(fields[key]) if key in _SHAPE_KEYS else fields[key]
        if fallback is not None:
            other = _present(fields[fallback]) if fallback in _SHAPE_KEYS else fields[fallback]
            values = [o if f else v for v, o, f in zip(values, other, fb, strict=True)]
        cols[name] = _kind_read(_LINE_KINDS[name], values, f"pricing_lines[].{key}", bad_lines)
    refused.update(cols[REC][k] for k in bad_lines)
    return cols


# The objects read by the normaliser's functions, value by value: the JSON columns (and
# ``usage``'s fields, a JSON column and an object of the spec both) and the webhook.
_PER_VALUE_OBJECTS = tuple(p for p in _FILL_OBJECTS if p in _JSON_SOURCES)
_PER_VALUE_COLUMNS = tuple(
    dict.fromkeys(
        [
            *TOP_JSON_COLUMNS,
            *(c.name for p in _PER_VALUE_OBJECTS for c in schema.under(p)),
            *(c.name for c in schema.BATCH if c.source and c.source.split(".")[0] == "webhook"),
        ]
    )
)


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


def _decode(recs: Sequence[int], texts: Sequence[str]) -> tuple[list[int], list[Any]]:
    """The records the strict decoder reads (the others: per record)."""
    screened = pl.Series(texts, dtype=pl.String).str.contains(_SCREEN).to_list()
    taken, objs = [], []
    decode = _DECODER.decode
    for rec, text, odd in zip(recs, texts, screened, strict=True):
        if odd:
            continue
        try:
            obj = decode(text)
        except (msgspec.DecodeError, RecursionError):
            continue
        taken.append(rec)
        objs.append(obj)
    return taken, objs


def _json_column(values: list[Any], name: str, failed: set[int]) -> list[str | None]:
    """:func:`transform._json` over a column: orjson's text, and the full rule (which
    redacts) only where the column-wise secret test flags a value."""
    texts: list[str | None] = []
    for i, value in enumerate(values):
        if value is None:
            texts.append(None)
            continue
        try:
            texts.append(orjson.dumps(value).decode())
        except orjson.JSONEncodeError:  # too deep for orjson: the normaliser's reason
            texts.append(None)
            failed.add(i)
    for i in may_hold_secrets(pl.Series(texts, dtype=pl.String)).arg_true().to_list():
        try:
            texts[i] = _json(values[i], name)
        except RecordError:
            failed.add(i)
    return texts


def _per_value(objs: list[Any]) -> tuple[dict[str, list[Any]], set[int]]:
    """The JSON, usage and webhook columns by the normaliser's functions: (columns,
    positions of the objects one of them gives a reason or a drift note)."""
    failed: set[int] = set()
    cols: dict[str, list[Any]] = {
        name: _json_column([getattr(o, name) for o in objs], name, failed)
        for name in TOP_JSON_COLUMNS
    }
    rest = [n for n in _PER_VALUE_COLUMNS if n not in cols]
    for name in rest:
        cols[name] = [None] * len(objs)
    for i, o in enumerate(objs):
        row: dict[str, Any] = {}
        drift: dict[str, str] = {}
        try:
            for path in _PER_VALUE_OBJECTS:
                value = getattr(o, path)
                if value is not None:
                    if type(value) is not dict:
                        failed.add(i)
                        continue
                    _FILL_OBJECTS[path](row, value, path, drift)
            if o.webhook is not None:
                row.update(webhook_columns(o.webhook, drift))
        except (RecordError, ValueError, TypeError, OverflowError):
            failed.add(i)
            continue
        if drift:
            failed.add(i)
        for name, value in row.items():
            cols[name][i] = value
    return cols, failed


def _read(objs: list[Any], recs: list[int]) -> tuple[dict[str, Any], dict[str, Any], set[int]]:
    """Batch and line columns of ``objs`` (record numbers ``recs``), and the record
    numbers of those a reader refused a value of."""
    refused: set[int] = set()
    cols = _read_batch_columns(objs, refused)
    refused = {recs[i] for i in refused}
    ids = [o.id.strip() for o in objs]
    lines = _read_line_columns(objs, ids, recs, refused)
    cols.update(
        id=ids,
        has_billing=[o.billing is not None for o in objs],
        pricing_line_count=[len(o.pricing_lines or ()) for o in objs],
        extra=[None] * len(objs),
    )
    return cols, lines, refused


_ISO = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$"
)


def _iso_micros(values: list[str | None]) -> list[int | None]:
    """ISO-8601 text in its common spellings to UTC microseconds, column-wise (None:
    anything else, left to ``transform.to_micros``)."""
    text = pl.Series(values, dtype=pl.String)
    common = text.str.contains(_ISO) & ~text.str.starts_with("0000")
    text = text.str.replace(r"Z$", "+00:00")
    text = pl.select(
        pl.when(text.str.contains(r"[+-][0-9]{2}:[0-9]{2}$")).then(text).otherwise(text + "+00:00")
    ).to_series()
    parsed = text.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", time_zone="UTC", strict=False
    ).dt.epoch("us")
    in_range = parsed.is_between(0, TS_MAX_S * 1_000_000, closed="left")
    return pl.select(pl.when(common & in_range).then(parsed)).to_series().to_list()


def flatten(recs: Sequence[int], texts: Sequence[str]) -> Fast:
    """Flatten the records it can of ``texts`` (record ``recs[i]`` of the chunk)."""
    taken, objs = _decode(recs, texts)
    if not objs:
        return _empty()
    cols, line_cols, refused = _read(objs, taken)
    per_value, failed = _per_value(objs)
    cols.update(per_value)
    drop = {i for i, rec in enumerate(taken) if rec in refused} | failed
    recs_kept = taken
    if drop:
        keep = [i for i in range(len(objs)) if i not in drop]
        if not keep:
            return _empty()
        recs_kept = [taken[i] for i in keep]
        cols = {n: [v[i] for i in keep] for n, v in cols.items()}
        kept = set(recs_kept)
        rows = [k for k, r in enumerate(line_cols[REC]) if r in kept]
        line_cols = {n: [v[k] for k in rows] for n, v in line_cols.items()}
    batches = pl.DataFrame(
        [
            pl.Series(REC, recs_kept, dtype=pl.Int64),
            *(pl.Series(n, cols[n], dtype=t) for n, t in BATCH_SCHEMA.items()),
        ]
    )
    lines = pl.DataFrame(
        [
            pl.Series(REC, line_cols[REC], dtype=pl.Int64),
            *(pl.Series(n, line_cols[n], dtype=t) for n, t in LINE_SCHEMA.items()),
        ]
    )
    drift = [
        (r, *note, i)
        for r, s, i in zip(recs_kept, cols["status"], cols["id"], strict=True)
        if (note := new_status(s)) is not None
    ]
    return Fast(set(recs_kept), batches, lines, drift)
