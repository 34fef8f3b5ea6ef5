"""Transform stage: flatten gateway batch objects into two polars frames.

``normalize_batch`` turns one parsed object into a tuple of column values plus its
pricing lines (raising :class:`RecordError` with a reason in words when a value cannot
be represented); ``build_frames`` turns many of those into typed frames, column-wise.
The pandera schemas at the bottom are the contract these frames must meet before load.

Money is integer nano-USD (``Int64``) end to end; dollar strings from the API become
``Decimal(38, 9)`` and are never derived from, or summed as, floats.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl

from pipeline import schema
from pipeline.redaction import (
    MAYBE_PATTERN,
    may_hold_secret,
    redact,
    redact_obj,
    registered_secrets,
)
from pipeline.schema import TIMESTAMP_FIELDS

INT64_MAX = 2**63 - 1
REC = "_rec"  # a row's record position in its chunk, on every frame of this stage

# Statuses are an OPEN set (the gateway passes provider statuses through): these are the
# ones documented; any other value is loaded as it is and announced once as drift.
KNOWN_STATUSES = (
    "submitting",
    "submission_unknown",
    "validating",
    "queued",
    "pending",
    "in_progress",
    "processing",
    "running",
    "finalizing",
    "cancelling",
    "completed",
    "failed",
    "expired",
    "cancelled",
)
_KNOWN_STATUS_SET = frozenset(KNOWN_STATUSES)
TERMINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
RUNNING_STATUSES = ("in_progress", "processing", "running")
# The gateway's lifecycle_status: terminal statuses as themselves; in_progress and
# processing -> running; everything else (validating, finalizing, cancelling,
# submission_unknown, an unmapped provider status...) -> pending.
_LIFECYCLE_GROUP = {
    **{s: "terminal" for s in TERMINAL_STATUSES},
    "running": "running",
    "pending": "pending",
}


def lifecycle_group(status: Any, lifecycle_status: Any = None) -> str | None:
    """One batch's group (pending / running / terminal): what :func:`with_derived_columns`
    computes column-wise, for a single parsed object (the API extractor's finality test)."""
    given = _LIFECYCLE_GROUP.get(lifecycle_status) if isinstance(lifecycle_status, str) else None
    if given is not None or not isinstance(status, str):
        return given
    if status in TERMINAL_STATUSES:
        return "terminal"
    return "running" if status in RUNNING_STATUSES else "pending"


_STATUS_RANK = {
    "submitting": 0,
    "submission_unknown": 0,
    "validating": 0,
    "queued": 0,
    "pending": 0,
    "in_progress": 1,
    "processing": 1,
    "running": 1,
    "finalizing": 2,
    "cancelling": 2,
    "completed": 3,
    "failed": 3,
    "expired": 3,
    "cancelled": 3,
}
# The keys the spec reads (pipeline/schema.py); any other key of these objects is
# announced as drift and kept in ``extra``.
KNOWN_TOP_LEVEL = schema.keys_of("") | {
    "pricing_lines",
    "requests",  # per-request rows carried by a file input (GET /batches/{id}/requests)
}
KNOWN_BILLING = schema.keys_of("billing")
KNOWN_BREAKDOWN = schema.keys_of(schema.BREAKDOWN)
KNOWN_LINE = schema.keys_of(schema.LINES, schema.LINE) | set(schema.LINE_FALLBACK.values())
# The objects the normaliser opens, parents first: (path, parent, key, mode), and those
# whose unknown keys are announced, with the keys they are known to have.
_OBJECTS = tuple(
    (path, schema.parent(path), path.rpartition(".")[2], mode)
    for path, mode in schema.CONTAINERS.items()
    if mode != "own"
)
_ANNOUNCED = tuple((path, schema.keys_of(path)) for path, _, _, m in _OBJECTS if m == "money")

_DECIMAL = re.compile(r"^-?\d{1,29}(\.\d{1,9})?$")


class RecordError(ValueError):
    """A record that cannot be represented; the message is the quarantine reason."""


@dataclass
class Normalized:
    """One batch object, flattened: ``batch`` matches BATCH_COLUMNS, ``lines`` LINE_COLUMNS,
    ``requests`` REQUEST_COLUMNS (None: the object carried no request rows)."""

    batch: tuple[Any, ...]
    lines: list[tuple[Any, ...]]
    drift: dict[str, str] = field(default_factory=dict)  # field path -> note
    requests: list[tuple[Any, ...]] | None = None
    request_errors: list[tuple[str, str]] = field(default_factory=list)  # (reason, raw JSON)


# --------------------------------------------------------------------------- scalars


def _json(value: Any, path: str) -> str | None:
    """JSON text of a value, credentials redacted (see :mod:`pipeline.redaction`)."""
    if value is None:
        return None
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:  # nested deeper than orjson writes (254 levels)
        raise RecordError(f"{path} cannot be stored: {exc}") from None
    if may_hold_secret(text):
        text = orjson.dumps(redact_obj(value)).decode()
    return text


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _repr(value: Any) -> str:
    """A scalar for a reason in words: clipped, never a secret."""
    text = repr(value)
    return redact(text if len(text) <= 80 else text[:77] + "...")


def _show(value: Any) -> str:
    """A value with its type for a reason in words: never a container's contents."""
    if isinstance(value, dict | list):
        return f"{_type_name(value)} of {len(value)} item{'s' if len(value) != 1 else ''}"
    return f"{_type_name(value)} {_repr(value)}"


def to_int(path: str, value: Any) -> int | None:
    """An exact integer, or None. Floats only when integral and exactly representable."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise RecordError(f"{path} must be an integer, got boolean {value!r}")
    if isinstance(value, int):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise RecordError(f"{path} {value} is out of the 64-bit integer range")
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) <= 2**53:
            return int(value)
        raise RecordError(f"{path} must be an integer, got {value!r}")
    raise RecordError(f"{path} must be an integer, got {_show(value)}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# The timestamps a billing record may hold: from the Unix epoch to 2200-01-01 (exclusive).
# Anything else (the year 9999, the year 1) is kept aside with its reason: a view that
# dates money by it would span millennia (spend_anomalies fills every day between).
TS_MAX_S = 7_258_118_400


def to_micros(path: str, value: Any) -> int | None:
    """Unix seconds (int, float or digit string) or ISO-8601 text -> UTC microseconds,
    from 1970 to 2199."""
    if value is None:
        return None
    if type(value) is int and 0 <= value < TS_MAX_S:  # the common case, before the rules
        return value * 1_000_000
    if value == "":
        return None
    if isinstance(value, bool):
        raise RecordError(f"{path} is not a timestamp: {value!r}")
    if isinstance(value, str):
        text = value.strip()
        number: float | int | None = None
        if not (len(text) >= 10 and text[4] == "-"):  # not ISO-8601: perhaps a number
            try:
                number = float(text) if "." in text else int(text)
            except ValueError:
                pass
        if number is None:
            try:
                dt = datetime.fromisoformat(text)
            except ValueError:
                raise RecordError(
                    f"{path} {_repr(value)} is not a Unix time or an ISO-8601 timestamp"
                ) from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            micros = (dt - _EPOCH) // _MICRO
            if not 0 <= micros < TS_MAX_S * 1_000_000:
                raise RecordError(f"{path} {_repr(value)} is outside the years 1970 to 2199")
            return micros
        value = number
    if isinstance(value, int):
        if not 0 <= value < TS_MAX_S:
            raise RecordError(f"{path} {value} is out of range for Unix seconds (1970 to 2199)")
        return value * 1_000_000
    if isinstance(value, float):
        if not (math.isfinite(value) and 0 <= value < TS_MAX_S):
            raise RecordError(f"{path} {value!r} is out of range for Unix seconds (1970 to 2199)")
        return round(value * 1_000_000)
    raise RecordError(f"{path} is not a timestamp: {_type_name(value)}")


_MICRO = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def _decimal_text(path: str, value: Any) -> str | None:
    """A dollar amount as exact decimal text (cast to Decimal(38, 9) column-wise later)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RecordError(f"{path} must be a decimal amount, got {_show(value)}")
    if isinstance(value, int):
        return str(value)
    text = format(value, ".9f") if isinstance(value, float) else str(value).strip()
    if _DECIMAL.match(text):
        return text
    raise RecordError(f"{path} must be a decimal amount like '0.200000000', got {_show(value)}")


def _str(value: Any, path: str, drift: dict[str, str]) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    drift[path] = f"expected string, got {_type_name(value)}"
    return _json(value, path)


def _bool(value: Any, path: str, drift: dict[str, str]) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    drift[path] = f"expected boolean, got {_type_name(value)}"
    return None


def _number(value: Any, path: str, drift: dict[str, str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    drift[path] = f"expected number, got {_type_name(value)}"
    return None


def _money_dict(value: Any, path: str) -> dict[str, Any]:
    """An object that carries money: any other type would lose the bill, so it is a reject."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise RecordError(f"{path} must be an object or null, got {_show(value)}")


def _dict(value: Any, path: str, drift: dict[str, str]) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if value is not None:
        drift[path] = f"expected object, got {_type_name(value)}"
    return {}


# Readers by kind, generated from the spec: each column a line of straight code, the
# common case (the value already has its type) inline and first; the full rules above,
# with the field's path for a reason in words, only for a value that needs them.
_INT64_MIN = -INT64_MAX - 1
_READ = {  # kind -> expression of the value ``v`` (``{P}``: the field's path, as code)
    "text": "v if v is None or type(v) is str else _str(v, {P}, drift)",
    "count": "v if v is None or (type(v) is int and _LO <= v <= _HI) else to_int({P}, v)",
    "number": "v if type(v) is float else float(v) if type(v) is int else _number(v, {P}, drift)",
    "usd_text": "v if type(v) is str and _DEC(v) else _decimal_text({P}, v)",
    "flag": "v if v is None or type(v) is bool else _bool(v, {P}, drift)",
    "timestamp": "None if v is None else v * 1000000 if type(v) is int and 0 <= v < _TS_MAX"
    " else to_micros({P}, v)",
    "json": "None if v is None else _json(v, {P})",
}
_READ.update(id=_READ["text"], nanos=_READ["count"], usd_float=_READ["number"])
READ_SCOPE: dict[str, Any] = {  # the names the _READ expressions use
    "_str": _str, "to_int": to_int, "_number": _number, "_decimal_text": _decimal_text,
    "_bool": _bool, "to_micros": to_micros, "_json": _json, "_DEC": _DECIMAL.fullmatch,
    "_LO": _INT64_MIN, "_HI": INT64_MAX, "_TS_MAX": TS_MAX_S,
}  # fmt: skip
Fill = Callable[[dict[str, Any], Mapping[str, Any], str, dict[str, str]], None]


def _filler(reads: Sequence[tuple[str, str, str]], prefix: str | None) -> Fill:
    """``fill(row, obj, prefix, drift)``: ``row[column]`` from ``obj[key]`` for each
    (column, key, kind) of ``reads``. ``prefix`` is the object's path in reasons: fixed
    here when given, else the ``prefix`` argument (a pricing line's index)."""
    body = ["    get = obj.get"]
    for name, key, kind in reads:
        if prefix is None:
            path = f"prefix + {'.' + key!r}"
        else:
            path = repr(f"{prefix}.{key}" if prefix else key)
        body.append(f"    v = get({key!r})")
        body.append(f"    row[{name!r}] = {_READ[kind].format(P=path)}")
    scope = dict(READ_SCOPE)
    # generated from the spec's own names (no outside input), like schema.row_builder
    exec("def fill(row, obj, prefix, drift):\n" + "\n".join(body or ["    pass"]), scope)
    fill: Fill = scope["fill"]  # type: ignore[assignment]
    return fill


def _reads(
    columns: Sequence[schema.Column], keys: Mapping[str, str] | None = None
) -> list[tuple[str, str, str]]:
    """(column, key, kind) of sourced columns; ``keys`` names other keys to read."""
    return [
        (c.name, (keys or {}).get(c.name, c.source.rpartition(".")[2]), c.kind)
        for c in columns
        if c.source
    ]


def _text_columns(columns: Sequence[schema.Column]) -> tuple[str, ...]:
    """The free-text columns of a spec: redacted column-wise after the normaliser."""
    return tuple(c.name for c in columns if c.kind in ("id", "text"))


# Every column the spec sources from a key is read by its kind's reader, object by
# object: a field added to the spec is read without a line of code here. The id, the
# webhook's columns (rules of their own) and the JSON columns are read apart.
_TOP = schema.under("")
_HOOK_OWN = ("webhook_events", "webhook_has_secret")
_FILL_TOP = _filler(_reads([c for c in _TOP if c.name != "id" and c.kind != "json"]), "")
TOP_JSON_COLUMNS = tuple(
    c.name for c in _TOP if c.kind == "json" and schema.CONTAINERS.get(c.source or "") != "own"
)
_FILL_TOP_JSON = _filler(_reads([c for c in _TOP if c.name in TOP_JSON_COLUMNS]), "")
_FILL_OBJECTS = {
    path: _filler(_reads(schema.under(path)), path)
    for path, mode in schema.CONTAINERS.items()
    if mode != "own"
}
_FILL_HOOK = _filler(  # the webhook's fields but the two with rules of their own (below)
    _reads([c for c in schema.under("webhook") if c.name not in _HOOK_OWN]), "webhook"
)
_LINE_FIELDS = schema.under(schema.LINES, schema.LINE)
_FILL_LINE = {  # by shape: "priced", or the gateway's fallback shape (other money keys)
    "priced": _filler(_reads(_LINE_FIELDS), None),
    "fallback": _filler(_reads(_LINE_FIELDS, schema.LINE_FALLBACK), None),
}

# --------------------------------------------------------------------------- columns

BATCH_SCHEMA = schema.staged_schema(schema.BATCH)
BATCH_COLUMNS = tuple(BATCH_SCHEMA)

LINE_SCHEMA = schema.staged_schema(schema.LINE)
LINE_COLUMNS = tuple(LINE_SCHEMA)
# rows are filled by name and put in frame order by builders generated from the spec
BATCH_ROW = schema.row_builder(schema.BATCH)
LINE_ROW = schema.row_builder(schema.LINE)
REQUEST_ROW = schema.row_builder(schema.REQUEST)
_BATCH_TYPING = schema.typing_exprs(schema.BATCH)
_LINE_TYPING = schema.typing_exprs(schema.LINE)
_REQUEST_TYPING = schema.typing_exprs(schema.REQUEST)


def _line(batch_id: str, i: int, raw: Any, drift: dict[str, str]) -> tuple[Any, ...]:
    path = f"pricing_lines[{i}]"
    if type(raw) is not dict:
        raise RecordError(f"{path} must be an object, got {_type_name(raw)}")
    fallback = "line_nanos" not in raw and ("total_nanos" in raw or "units" in raw)
    shape = "fallback" if fallback else "priced"
    row: dict[str, Any] = {"batch_id": batch_id, "line_index": i, "line_shape": shape}
    _FILL_LINE[shape](row, raw, path, drift)
    extra = {k: v for k, v in raw.items() if k not in KNOWN_LINE}
    for k in extra:
        drift.setdefault(f"{path}.{k}", "new field")
    row["extra"] = _json(extra, f"{path} extra fields") if extra else None
    return LINE_ROW(row)


def webhook_columns(value: Any, drift: dict[str, str]) -> dict[str, Any]:
    """The ``webhook_*`` columns of one batch: the object kept without its secret."""
    hook = _dict(value, "webhook", drift)
    events = hook.get("events")
    if events is not None and not (
        isinstance(events, list) and all(isinstance(e, str) for e in events)
    ):
        drift["webhook.events"] = f"expected list of strings, got {_type_name(events)}"
        events = None
    elif events and may_hold_secret(str(events)):
        events = [redact(e) for e in events]
    has_secret = hook.get("has_secret")
    if not isinstance(has_secret, bool):
        has_secret = bool(hook.get("secret")) if hook else None
    hook_kept = {k: v for k, v in hook.items() if k != "secret"}
    row = {
        "webhook_events": orjson.dumps(events).decode() if events is not None else None,
        "webhook_has_secret": has_secret,
        "webhook": _hook_json(hook_kept) if hook else None,
    }
    _FILL_HOOK(row, hook, "webhook", drift)  # its other fields, by kind (url, endpoint_id...)
    return row


# A webhook's has_secret flag in its JSON text: left out of the secret test (see below).
HAS_SECRET_FLAG = r'"has_secret":(?:true|false)'
_HAS_SECRET = re.compile(HAS_SECRET_FLAG)


def _hook_json(kept: dict[str, Any]) -> str | None:
    """:func:`_json` of a webhook without its secret. Its ``has_secret`` flag, a key that
    names a credential, flags every webhook for the full rule, which never changes a
    boolean: the test reads the text without it (same result, no walk of the object)."""
    try:
        text = orjson.dumps(kept).decode()
    except orjson.JSONEncodeError:
        return _json(kept, "webhook")  # raises with the reason
    return text if not may_hold_secret(_HAS_SECRET.sub("", text)) else _json(kept, "webhook")


def new_status(status: str | None) -> tuple[str, str] | None:
    """(drift path, note) for a status outside the documented set (loaded as it is)."""
    if status is None or status in _KNOWN_STATUS_SET:
        return None
    return f"status={status[:100]}", "new status value (loaded as it is)"


def normalize_batch(obj: Any) -> Normalized:
    """Flatten one batch object. Raises RecordError when it cannot be represented."""
    if not isinstance(obj, dict):
        raise RecordError(f"not a batch object: got a JSON {_type_name(obj)}")
    if "body" in obj and "fetched_at" in obj and "id" not in obj:
        raise RecordError(
            "an API response archive line, not a batch object: load archives with --replay"
        )
    if "error" in obj and "id" not in obj:
        err = obj["error"]
        kind = err.get("type") if isinstance(err, dict) else err
        raise RecordError(f"not a batch object: an API error body ({kind})")
    drift: dict[str, str] = {}
    raw_id = obj.get("id")
    if raw_id is None:
        raise RecordError("id is missing")
    if not isinstance(raw_id, str):
        raise RecordError(f"id must be a string, got {_show(raw_id)}")
    batch_id = raw_id.strip()

    row: dict[str, Any] = {"id": batch_id}
    _FILL_TOP(row, obj, "", drift)
    objects: dict[str, dict[str, Any]] = {"": obj}
    for path, parent, key, mode in _OBJECTS:
        value = objects[parent].get(key)
        objects[path] = _money_dict(value, path) if mode == "money" else _dict(value, path, drift)
    row.update(webhook_columns(obj.get("webhook"), drift))

    lines_raw = obj.get("pricing_lines")
    if lines_raw is not None and not isinstance(lines_raw, list):
        raise RecordError(f"pricing_lines must be an array or null, got {_show(lines_raw)}")
    lines = [_line(batch_id, i, raw, drift) for i, raw in enumerate(lines_raw or [])]
    requests_raw = obj.get("requests")
    if requests_raw is not None and not isinstance(requests_raw, list):
        raise RecordError(f"requests must be an array or null, got {_show(requests_raw)}")
    requests, request_errors = request_rows(batch_id, requests_raw)

    if (note := new_status(row["status"])) is not None:
        drift[note[0]] = note[1]

    extra: dict[str, Any] = {k: v for k, v in obj.items() if k not in KNOWN_TOP_LEVEL}
    for path, known in _ANNOUNCED:
        extra.update({f"{path}.{k}": v for k, v in objects[path].items() if k not in known})
    for path in extra:
        drift.setdefault(path, "new field")
    for path in list(drift):  # keep the drifted raw value too
        if "." not in path and path in obj:
            extra[path] = obj[path]

    _FILL_TOP_JSON(row, obj, "", drift)
    for path, fill in _FILL_OBJECTS.items():
        fill(row, objects[path], path, drift)
    row.update(
        has_billing=isinstance(obj.get("billing"), dict),
        pricing_line_count=len(lines),
        extra=_json(extra, "extra fields") if extra else None,
    )
    batch = BATCH_ROW(row)
    return Normalized(batch, lines, drift, requests, request_errors)


# --------------------------------------------------------------------------- request rows

# The provider's raw usage object, in the spellings seen: OpenAI, Anthropic, Google.
_TOKENS = {
    "input_tokens": ("input_tokens", "prompt_tokens", "promptTokenCount"),
    "output_tokens": ("output_tokens", "completion_tokens", "candidatesTokenCount"),
    "total_tokens": ("total_tokens", "totalTokenCount"),
}
REQUEST_SCHEMA = schema.staged_schema(schema.REQUEST)
REQUEST_COLUMNS = tuple(REQUEST_SCHEMA)
REQUEST_TEXT_COLUMNS = _text_columns(schema.REQUEST)
# every request column by its kind's reader, but the ids and the token counts (above)
_FILL_REQUEST = _filler(
    _reads([c for c in schema.REQUEST if c.name not in ("batch_id", "request_id", *_TOKENS)]),
    None,
)


def request_row(batch_id: str, raw: Any, path: str) -> tuple[Any, ...]:
    """One row of ``GET /v1/batches/{id}/requests``, flattened (REQUEST_COLUMNS order)."""
    if not isinstance(raw, dict):
        raise RecordError(f"{path} must be an object, got {_show(raw)}")
    own = raw.get("batch_id")
    if own is not None and own != batch_id:
        raise RecordError(f"{path} belongs to batch {_repr(own)}, not {batch_id!r}")
    rid = raw.get("id")
    if rid is None and raw.get("request_index") is not None:
        rid = f"#{raw.get('request_index')}"
    if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid).strip() == "":
        raise RecordError(f"{path}.id is missing")
    drift: dict[str, str] = {}
    usage = raw.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    tokens = [
        next((to_int(f"{path}.usage.{k}", usage[k]) for k in keys if k in usage), None)
        for keys in _TOKENS.values()
    ]
    row: dict[str, Any] = {"batch_id": batch_id, "request_id": str(rid).strip()}
    _FILL_REQUEST(row, raw, path, drift)
    cost = row["cost_nanos"]
    if cost is not None and cost < 0:
        raise RecordError(f"{path}.cost_nanos must be >= 0, got {cost}")
    for name, value in zip(_TOKENS, tokens, strict=True):
        row[name] = value
    return REQUEST_ROW(row)


def request_rows(
    batch_id: str, raw: list[Any] | None, prefix: str = "requests"
) -> tuple[list[tuple[Any, ...]] | None, list[tuple[str, str]]]:
    """A batch's request rows; a row that cannot be represented is set aside with its
    reason and raw JSON, never sinking its batch (its cost shows as unattributed)."""
    if raw is None:
        return None, []
    rows: list[tuple[Any, ...]] = []
    errors: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        try:
            rows.append(request_row(batch_id, item, f"{prefix}[{i}]"))
        except RecordError as exc:
            try:
                text = orjson.dumps(item).decode()
            except orjson.JSONEncodeError:
                text = repr(item)[:1000]
            errors.append((str(exc), text))
    return rows, errors


def request_frame(rows: Sequence[tuple[Any, ...]], recs: Sequence[int]) -> pl.DataFrame:
    return _columns(rows, recs, REQUEST_SCHEMA)


def build_requests(frame: pl.DataFrame, meta: pl.DataFrame) -> pl.DataFrame:
    """Typed request-rows frame: ``_rec`` + REQUEST_COLUMNS, with ``meta``'s ``_seq``."""
    frame = redact_text_columns(frame.sort(REC, "request_index"), REQUEST_TEXT_COLUMNS)
    frame = frame.join(meta.select(REC, "_seq"), on=REC, how="left", maintain_order="left")
    return frame.with_columns(*_REQUEST_TYPING)


# --------------------------------------------------------------------------- frames


def _columns(
    rows: Sequence[tuple[Any, ...]],
    recs: Sequence[int],
    schema: Mapping[str, pl.DataType | type[pl.DataType]],
) -> pl.DataFrame:
    """Rows transposed in C (``zip``) and built column by column: ~35% cheaper than
    polars' row-wise constructor for these ~60 typed columns."""
    columns = zip(*rows, strict=True) if rows else (() for _ in schema)
    return pl.DataFrame(
        [
            pl.Series(REC, recs, dtype=pl.Int64),
            *(pl.Series(n, c, dtype=t) for (n, t), c in zip(schema.items(), columns, strict=True)),
        ]
    )


def batch_frame(rows: Sequence[tuple[Any, ...]], recs: Sequence[int]) -> pl.DataFrame:
    """Normalized batch rows (BATCH_COLUMNS order) tagged with their chunk positions."""
    return _columns(rows, recs, BATCH_SCHEMA)


def line_frame(rows: Sequence[tuple[Any, ...]], recs: Sequence[int]) -> pl.DataFrame:
    """Normalized line rows (LINE_COLUMNS order) tagged with their record's chunk position."""
    return _columns(rows, recs, LINE_SCHEMA)


# Free-text columns, redacted column-wise (JSON columns are redacted as objects in
# normalize_batch): every text column of the spec (see _text_columns).
BATCH_TEXT_COLUMNS = _text_columns(schema.BATCH)
LINE_TEXT_COLUMNS = _text_columns(schema.LINE)


def may_hold_secrets(col: pl.Series) -> pl.Series:
    """:func:`pipeline.redaction.may_hold_secret` over a column: a superset test (false
    only where the value surely holds nothing to redact; false for nulls)."""
    flagged = col.str.contains(MAYBE_PATTERN).fill_null(False)
    for secret in registered_secrets():
        flagged = flagged | col.str.contains(secret, literal=True).fill_null(False)
    return flagged


def redact_text_columns(frame: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Credential-looking values in free-text columns blanked, column-wise: a vectorised
    superset test first, the full rule only on the few values it flags."""
    changed = []
    for name in columns:
        col = frame.get_column(name)
        flagged = may_hold_secrets(col)
        if flagged.any():
            changed.append(
                pl.Series(name, [redact(v) if f else v for v, f in zip(col, flagged, strict=True)])
            )
    return frame.with_columns(changed) if changed else frame


def build_batches(frame: pl.DataFrame, meta: pl.DataFrame) -> pl.DataFrame:
    """Typed batches frame: ``_rec`` + BATCH_COLUMNS, joined to per-record ``meta`` on ``_rec``."""
    frame = redact_text_columns(frame.sort(REC), BATCH_TEXT_COLUMNS)
    # content_hash tells an unchanged re-read from a real update (not a security hash)
    frame = frame.with_columns(content_hash=frame.select(BATCH_COLUMNS).hash_rows(seed=0))
    frame = frame.join(meta, on=REC, how="left", maintain_order="left")
    return with_derived_columns(cast_batches(frame))


def cast_batches(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(*_BATCH_TYPING, pl.col("id").str.strip_chars())


def with_derived_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns computed from others: the lifecycle group (the gateway's own mapping; its
    ``lifecycle_status`` wins when present), finality, the billing reason split into its
    base and its reservation/wallet detail, and the snapshot order used by upserts."""
    status = pl.col("status")
    derived = (
        pl.when(status.is_in(TERMINAL_STATUSES))
        .then(pl.lit("terminal"))
        .when(status.is_in(RUNNING_STATUSES))
        .then(pl.lit("running"))
        .when(status.is_not_null())
        .then(pl.lit("pending"))
    )
    given = pl.col("lifecycle_status").replace_strict(
        _LIFECYCLE_GROUP, default=None, return_dtype=pl.String
    )
    group = pl.coalesce(given, derived)
    terminal = group == "terminal"
    reason = pl.col("billing_reason").str.splitn(":", 2)
    rank = status.replace_strict(_STATUS_RANK, default=None, return_dtype=pl.Int8)
    by_group = group.replace_strict(
        {"pending": 0, "running": 1, "terminal": 3}, default=-1, return_dtype=pl.Int8
    )
    return frame.with_columns(
        lifecycle_group=group,
        is_terminal=terminal.fill_null(False),
        is_final=(terminal & pl.col("billing_finalized_at").is_not_null()).fill_null(False),
        status_rank=pl.coalesce(rank, by_group),
        last_event_at=pl.max_horizontal(*TIMESTAMP_FIELDS),
        billing_reason_base=reason.struct.field("field_0"),
        billing_reason_detail=reason.struct.field("field_1"),
    )


def build_lines(frame: pl.DataFrame, meta: pl.DataFrame) -> pl.DataFrame:
    """Typed pricing-lines frame: ``_rec`` + LINE_COLUMNS, with ``meta``'s ``_seq``."""
    frame = redact_text_columns(frame.sort(REC, "line_index"), LINE_TEXT_COLUMNS)
    frame = frame.join(meta.select(REC, "_seq"), on=REC, how="left", maintain_order="left")
    return frame.with_columns(*_LINE_TYPING)


# --------------------------------------------------------------------------- contract


# The contracts between stages, derived from the column spec (pipeline/schema.py): every
# column's typed dtype and nullability, and its rules (whose failures give the reasons).
BatchesSchema = schema.contract((*schema.BATCH, *schema.DERIVED), "batches")
LinesSchema = schema.contract(schema.LINE, "pricing_lines")
