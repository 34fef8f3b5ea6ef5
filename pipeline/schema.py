"""The column spec: one declaration per loaded column, from which every consumer is derived.

For each column: its name, where it comes from in the gateway's object (a dotted path,
or ``None`` when derived), its kind (which fixes its polars type while staged, its polars
type once typed, and its DuckDB type), its rules, and one line of documentation. From
it come the staging and typed polars schemas (``transform``), the pandera contracts (and
the reason each rule gives when it fails), the DuckDB tables and their migrations
(``load``), the row builders the normaliser fills **by name**, the normaliser's readers
(generated per kind from the source paths), the known keys of each object (any other is
announced as drift), the column-wise fast path's reads and ``docs/columns.md``.

Adding a field is one line here: a ``C(name, kind, source)`` in BATCH, LINE or REQUEST,
for a key of an object the spec already reads (the batch, ``request_counts``,
``billing``, its ``pricing_breakdown``, ``usage``, a pricing line, a request row). A
field in a new object is one more line in CONTAINERS. Then regenerate the docs
(``python -m pipeline.schema > docs/columns.md``); ``tests/test_schema.py`` adds five
fields this way and checks that every consumer follows.

``python -m pipeline.schema`` prints the column reference (``docs/columns.md``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandera.polars as pa
import polars as pl

DECIMAL = pl.Decimal(38, 9)
TIMESTAMP = pl.Datetime("us", "UTC")
PolarsType = pl.DataType | type[pl.DataType]


@dataclass(frozen=True)
class Kind:
    staged: PolarsType  # what the normaliser hands over
    typed: PolarsType  # what the contract checks and the loader stores
    duckdb: str
    doc: str


KINDS: dict[str, Kind] = {
    "id": Kind(pl.String, pl.String, "varchar", "identifier text"),
    "text": Kind(pl.String, pl.String, "varchar", "text"),
    "timestamp": Kind(pl.Int64, TIMESTAMP, "timestamptz", "UTC time (Unix seconds or ISO-8601)"),
    "count": Kind(pl.Int64, pl.Int64, "bigint", "integer count"),
    "nanos": Kind(pl.Int64, pl.Int64, "bigint", "money, integer nano-USD"),
    "usd_text": Kind(pl.String, DECIMAL, "decimal(38, 9)", "money, exact dollars"),
    "usd_float": Kind(pl.Float64, pl.Float64, "double", "dollars as the API's float (display)"),
    "number": Kind(pl.Float64, pl.Float64, "double", "quantity"),
    "index": Kind(pl.Int32, pl.Int32, "integer", "position"),
    "rank": Kind(pl.Int8, pl.Int8, "tinyint", "small ordinal"),
    "flag": Kind(pl.Boolean, pl.Boolean, "boolean", "true/false"),
    "json": Kind(pl.String, pl.String, "json", "JSON text (credentials redacted)"),
    "text_list": Kind(pl.String, pl.List(pl.String), "varchar[]", "list of text"),
}


@dataclass(frozen=True)
class Rule:
    """A contract rule: the pandera check and the reason a quarantined record gets."""

    check: Callable[[], pa.Check]
    reason: str  # str.format(column=..., value=...)


RULES: dict[str, Rule] = {
    "non_negative": Rule(
        lambda: pa.Check.ge(0, name="non_negative", error="non_negative"),
        "{column} must be >= 0, got {value}",
    ),
    "not_empty": Rule(
        lambda: pa.Check.str_matches(r"^\S+$", name="not_empty", error="not_empty"),
        "{column} is missing or empty",
    ),
    # an id is a key people type, join on and print: no NUL or other control character
    "no_controls": Rule(
        lambda: pa.Check.str_matches(
            r"^[^\x00-\x1f\x7f-\x9f]*$", name="no_controls", error="no_controls"
        ),
        "{column} holds a control character (NUL, ESC, ...): {value!r}",
    ),
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    source: str | None  # dotted path in the object; None: derived by the pipeline
    doc: str = ""
    rules: tuple[str, ...] = ()
    required: bool = False  # never null

    @property
    def staged(self) -> PolarsType:
        return KINDS[self.kind].staged

    @property
    def typed(self) -> PolarsType:
        return KINDS[self.kind].typed

    @property
    def duckdb(self) -> str:
        return KINDS[self.kind].duckdb


def C(
    name: str,
    kind: str,
    source: str | None = "",
    doc: str = "",
    *rules: str,
    required: bool = False,
) -> Column:
    """A column; ``source`` defaults to the column's own name at the top level."""
    return Column(name, kind, name if source == "" else source, doc, rules, required)


TIMESTAMP_FIELDS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "updated_at",
)
STRING_FIELDS = (
    "object",
    "endpoint",
    "input_file_id",
    "completion_window",
    "status",
    "lifecycle_status",
    "output_file_id",
    "error_file_id",
    "request_id",
    "provider",
    "session_id",
    "native_batch_id",
    "polling_url",
    "cancel_url",
    "results_url",
)
JSON_FIELDS = ("metadata", "errors", "usage")
USAGE_INT_FIELDS = ("requests", "input_tokens", "output_tokens", "total_tokens")
BREAKDOWN = "billing.pricing_breakdown"

# What the normaliser produces for one batch (the order is only the frame's column order).
BATCH: tuple[Column, ...] = (
    C("id", "id", "id", "the gateway's batch id", "not_empty", "no_controls", required=True),
    *(C(name, "text", doc=f"`{name}` as sent") for name in STRING_FIELDS),
    *(C(name, "timestamp", doc=f"`{name}`") for name in TIMESTAMP_FIELDS),
    C("request_counts_total", "count", "request_counts.total", "", "non_negative"),
    C("request_counts_completed", "count", "request_counts.completed", "", "non_negative"),
    C("request_counts_failed", "count", "request_counts.failed", "", "non_negative"),
    *(C(name, "json", doc=f"`{name}` object") for name in JSON_FIELDS),
    C("webhook_url", "text", "webhook.url"),
    C("webhook_events", "text_list", "webhook.events"),
    C("webhook_endpoint_id", "text", "webhook.endpoint_id"),
    C("webhook_has_secret", "flag", "webhook.has_secret", "a secret is set (never stored)"),
    C("webhook", "json", "webhook", "the webhook object without its secret"),
    C("has_billing", "flag", None, "the object has a billing object"),
    C("billed", "flag", "billing.billed"),
    C("charged", "flag", "billing.charged"),
    C("billing_reason", "text", "billing.reason"),
    C("cost_nanos", "nanos", "billing.cost_nanos", "the bill", "non_negative"),
    C("api_cost_usd", "usd_float", "billing.cost_usd", "the API's float dollars (display)"),
    C("billing_finalized_at", "timestamp", "billing.finalized_at"),
    C("breakdown_total_nanos", "nanos", f"{BREAKDOWN}.total_nanos", "", "non_negative"),
    C("breakdown_total_usd", "usd_text", f"{BREAKDOWN}.total_usd_str"),
    C("breakdown_total_cents", "count", f"{BREAKDOWN}.total_cents", "floored cents"),
    C("breakdown_completed_requests", "count", f"{BREAKDOWN}.completed_requests"),
    C("breakdown_failed_requests", "count", f"{BREAKDOWN}.failed_requests"),
    C("breakdown_total_requests", "count", f"{BREAKDOWN}.total_requests"),
    C("pricing_line_count", "index", None, "pricing lines in the object"),
    C("extra", "json", None, "unknown fields, kept (schema drift)"),
    *(C(f"usage_{name}", "count", f"usage.{name}", f"`usage.{name}`") for name in USAGE_INT_FIELDS),
    C("usage_cost_nanos", "nanos", "usage.cost_nanos", "", "non_negative"),
    C("usage_cost_usd", "usd_float", "usage.cost_usd"),
    C("usage_currency", "text", "usage.currency"),
)

LINE: tuple[Column, ...] = (
    C("batch_id", "id", None, "the batch", "not_empty", required=True),
    C("line_index", "index", None, "position in pricing_lines", "non_negative", required=True),
    C("line_shape", "text", None, "`priced` or `fallback` (units/total_nanos)"),
    C("dimension", "text", "pricing_lines[].dimension"),
    C("quantity", "number", "pricing_lines[].quantity", "(fallback: units)"),
    C("billable_units", "number", "pricing_lines[].billable_units", "(fallback: units)"),
    C("unit_size", "number", "pricing_lines[].unit_size"),
    C("unit_price_usd", "usd_text", "pricing_lines[].unit_price_usd"),
    C("line_cost_usd", "usd_text", "pricing_lines[].line_cost_usd", "(fallback: total_usd_str)"),
    C(
        "line_nanos",
        "nanos",
        "pricing_lines[].line_nanos",
        "(fallback: total_nanos)",
        "non_negative",
    ),
    C("pricing_plan", "text", "pricing_lines[].pricing_plan"),
    C("service_tier", "text", "pricing_lines[].service_tier"),
    C("endpoint", "text", "pricing_lines[].endpoint"),
    C("extra", "json", None, "unknown line fields, kept"),
)

REQUEST_TIMESTAMPS = ("created_at", "updated_at", "completed_at")
REQUEST: tuple[Column, ...] = (
    C("batch_id", "id", "batch_id", "the batch", required=True),
    C("request_id", "id", "id", "(or #request_index)", required=True),
    C("custom_id", "text"),
    C("request_index", "count"),
    C("provider", "text"),
    C("model", "text", doc="the model the provider reported"),
    C("method", "text"),
    C("endpoint", "text"),
    C("status", "text"),
    C("response_status", "count"),
    C("cost_nanos", "nanos", doc="", required=False),
    C("cost_usd", "usd_float"),
    C("input_tokens", "count", "usage.input_tokens", "(or prompt_tokens, promptTokenCount)"),
    C("output_tokens", "count", "usage.output_tokens", "(or completion_tokens, …)"),
    C("total_tokens", "count", "usage.total_tokens", "(or totalTokenCount)"),
    C("usage", "json"),
    C("error", "json", "error_body"),
    C("meta", "json"),
    *(C(name, "timestamp") for name in REQUEST_TIMESTAMPS),
)

# The objects a source path goes through, parents first, and what the normaliser does when
# one is not an object. "money": it carries the bill, so anything else is a reject, and
# its unknown keys are announced as drift (and kept in ``extra``); "lenient": noted as
# drift and read as empty; "own": read by rules of its own (``transform.webhook_columns``).
# A field under one of these is one line in BATCH; a new object is one line here too.
CONTAINERS: dict[str, str] = {
    "request_counts": "lenient",
    "billing": "money",
    BREAKDOWN: "money",
    "usage": "lenient",
    "webhook": "own",
}
# The gateway's other pricing-line shape (units / total_nanos / total_usd_str): where a
# line without ``line_nanos`` but with one of these keys reads its columns from.
LINE_FALLBACK: dict[str, str] = {
    "quantity": "units",
    "billable_units": "units",
    "line_nanos": "total_nanos",
    "line_cost_usd": "total_usd_str",
}
LINES = "pricing_lines[]"


def parent(source: str) -> str:
    """The object a source path reads from: ``billing.cost_nanos`` -> ``billing``; a
    top-level key -> ``""``."""
    return source.rpartition(".")[0]


def under(container: str, columns: Sequence[Column] | None = None) -> tuple[Column, ...]:
    """The columns read from the keys of ``container`` (``""``: the batch object)."""
    return tuple(
        c
        for c in (BATCH if columns is None else columns)
        if c.source and parent(c.source) == container
    )


def keys_of(container: str, columns: Sequence[Column] | None = None) -> frozenset[str]:
    """The keys of ``container`` the spec knows: its fields' and its child objects'."""
    prefix = f"{container}." if container else ""
    return frozenset(
        c.source.removeprefix(prefix).split(".")[0]
        for c in (BATCH if columns is None else columns)
        if c.source and c.source.startswith(prefix)
    )


# Columns the pipeline adds after the normaliser (typed frame and table).
DERIVED: tuple[Column, ...] = (
    C("lifecycle_group", "text", None, "pending / running / terminal (the gateway's mapping)"),
    C("is_terminal", "flag", None, "", required=True),
    C("is_final", "flag", None, "terminal and billing finalized", required=True),
    C("status_rank", "rank", None, "how far the status is"),
    C("last_event_at", "timestamp", None, "the latest lifecycle timestamp"),
    C("billing_reason_base", "text", None, "billing.reason before ':'"),
    C("billing_reason_detail", "text", None, "billing.reason after ':'"),
)


def staged_schema(columns: Sequence[Column]) -> dict[str, PolarsType]:
    return {c.name: c.staged for c in columns}


def contract(
    columns: Sequence[Column], name: str, extra: Mapping[str, pa.Column] | None = None
) -> pa.DataFrameSchema:
    """The pandera contract of the typed frame: every column's type, nullability and rules."""
    return pa.DataFrameSchema(
        {
            **{
                c.name: pa.Column(
                    c.typed, [RULES[r].check() for r in c.rules], nullable=not c.required
                )
                for c in columns
            },
            **(extra or {}),
        },
        name=name,
        strict=False,
        description=f"Contract of the {name} frame handed to the loader (pipeline/schema.py).",
    )


def reason(check: str | None, column: str | None, value: object) -> str:
    """The words a quarantined record gets for a failed rule."""
    rule = RULES.get(check or "")
    if rule is not None:
        return rule.reason.format(column=column, value=value)
    if check == "not_nullable":
        return f"{column} is missing or empty"
    return f"{column} failed {check} (got {value!r})"


def row_builder(columns: Sequence[Column]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function turning a row given **by name** into the frame's column order (generated
    once: a missing or misspelt name fails at once, whatever the order)."""
    body = ", ".join(f"row[{c.name!r}]" for c in columns)
    known = frozenset(c.name for c in columns)

    def unknown_names(row: Mapping[str, Any]) -> tuple[Any, ...]:
        missing, unknown = sorted(known - set(row)), sorted(set(row) - known)
        raise KeyError(
            "a row does not match the column spec:"
            + (f" not filled: {', '.join(missing)}" if missing else "")
            + (f" not in the spec: {', '.join(unknown)}" if unknown else "")
        )

    # generated from the spec (no outside input): one tuple display, as fast as by hand
    fn: Callable[[Mapping[str, Any]], tuple[Any, ...]] = eval(
        f"lambda row: ({body},) if len(row) == {len(columns)} else unknown(row)",
        {"unknown": unknown_names},
    )
    return fn


def typing_exprs(columns: Sequence[Column]) -> list[pl.Expr]:
    """Staged to typed: micros to timestamps, exact dollar text to DECIMAL(38, 9), JSON
    lists to lists (column-wise; values were checked by the normaliser)."""
    exprs = []
    for c in columns:
        if c.kind == "timestamp":
            exprs.append(pl.col(c.name).cast(TIMESTAMP))
        elif c.kind == "usd_text":
            exprs.append(pl.col(c.name).cast(DECIMAL, strict=False))
        elif c.kind == "text_list":
            exprs.append(pl.col(c.name).str.json_decode(pl.List(pl.String)))
        elif c.staged != c.typed:  # pragma: no cover - a new kind needs its conversion here
            raise TypeError(f"no conversion for kind {c.kind}")
    return exprs


def ddl_columns(columns: Sequence[Column]) -> str:
    return ", ".join(f"{c.name} {c.duckdb}{' not null' if c.required else ''}" for c in columns)


def add_columns(table: str, columns: Sequence[Column]) -> str:
    """Migrations: every spec column added to an existing table if it is not there yet."""
    return "\n".join(
        f"alter table {table} add column if not exists {c.name} {c.duckdb};" for c in columns
    )


def markdown() -> str:
    out = [
        "# Columns",
        "",
        "Generated from `pipeline/schema.py` by `python -m pipeline.schema`; a test keeps",
        "it in step. Kinds: "
        + "; ".join(f"`{k}` {v.doc} ({v.duckdb})" for k, v in KINDS.items())
        + ".",
    ]
    for title, cols in (
        ("batches", (*BATCH, *DERIVED)),
        ("pricing_lines", LINE),
        ("batch_requests", REQUEST),
    ):
        out += [
            "",
            f"## `{title}`",
            "",
            "| column | kind | DuckDB | from | rules | notes |",
            "|---|---|---|---|---|---|",
        ]
        for c in cols:
            rules = ", ".join([*c.rules, *(["not null"] if c.required else [])])
            source = f"`{c.source}`" if c.source else "derived"
            out.append(f"| `{c.name}` | {c.kind} | {c.duckdb} | {source} | {rules} | {c.doc} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
