"""The SQL a night runs over its own rows: the FOCUS books of new and changed batches and
the night's reconciliation, built from the views' one definition in ``sql/`` applied to
the rows the run wrote (never the whole history; see :func:`night_scope`)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path


def sql_dir() -> Path:
    """Installed copy (``pipeline/sql``) or the source tree's top-level ``sql/``."""
    packaged = Path(str(resources.files("pipeline"))) / "sql"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "sql"


# The FOCUS books (charge_ledger) are append-only, and every "as billed" figure (spend
# views, report, budgets, FOCUS) reads them. A charge is booked as first reported: its
# charge period is the usage date (stg_batches.used_at), its billing period the charge
# date (charged_at). When a batch's bill changes later (a restatement), the difference
# per charge key is booked as a 'Correction' row: same charge period as the original,
# billing period the time of the new bill (the restated answer's billing.finalized_at,
# never before the original's). Rows once booked are never rewritten, so a closed month
# stays closed, and the ledger sums to the current bill per batch and key. {scope} names
# the batches to compare: this run's updated ones.
# A batch never booked before (new to the database, or every batch the first time a
# database gets its books) is booked line by line as it stands: no comparison needed.
LEDGER_NEW_SQL = """
insert into hot.charge_ledger by name
    select
        l.batch_id, l.charge_kind, l.provider, l.model, l.dimension, l.unit_size,
        l.unit_price_usd, l.pricing_plan, l.service_tier, l.quantity, l.billable_units,
        l.charge_nanos, l.used_at as charge_period_at, l.charged_at as billing_period_at,
        null as charge_class, l.billing_reason, l.charged,
        $run_id as run_id, $now as recorded_at
    from int_charge_lines as l
    {where}
"""

LEDGER_SQL = """
{night_scope};

create or replace temp table ledger_delta as
with now_lines as (
    select batch_id, charge_kind, provider, model, dimension, unit_size, unit_price_usd,
        pricing_plan, service_tier,
        sum(quantity) as quantity, sum(billable_units) as billable_units,
        sum(charge_nanos) as charge_nanos
    from ({scoped_charge_lines})
    group by all
),

booked as (
    select * from hot.charge_ledger where batch_id in (select batch_id from ledger_scope)
),

first_booked as (
    select batch_id, min(charge_period_at) as charge_period_at,
        min(billing_period_at) as billing_period_at
    from booked group by batch_id
),

moves as (
    select batch_id, charge_kind, provider, model, dimension, unit_size, unit_price_usd,
        pricing_plan, service_tier, quantity, billable_units, charge_nanos
    from now_lines
    union all
    select batch_id, charge_kind, provider, model, dimension, unit_size, unit_price_usd,
        pricing_plan, service_tier, -quantity, -billable_units, -charge_nanos
    from booked
),

deltas as (
    select batch_id, charge_kind, provider, model, dimension, unit_size, unit_price_usd,
        pricing_plan, service_tier,
        sum(quantity) as quantity, sum(billable_units) as billable_units,
        sum(charge_nanos)::bigint as charge_nanos
    from moves
    group by all
    having sum(charge_nanos) <> 0 or coalesce(sum(quantity), 0) <> 0
)

select d.*,
    coalesce(f.charge_period_at, s.used_at) as charge_period_at,
    case
        when f.batch_id is null then s.charged_at
        else greatest(coalesce(s.billing_finalized_at, $now), f.billing_period_at)
    end as billing_period_at,
    case when f.batch_id is not null then 'Correction' end as charge_class,
    s.billing_reason, s.charged
from deltas as d
left join first_booked as f on f.batch_id = d.batch_id
left join scope_stg_batches as s on s.batch_id = d.batch_id;

insert into hot.charge_ledger by name
    select *, $run_id as run_id, $now as recorded_at from ledger_delta
"""


def ledger_sql(scope: str) -> str:
    return LEDGER_SQL.replace("{night_scope}", night_scope("ledger", scope, "scope")).replace(
        "{scoped_charge_lines}", scoped_charge_lines()
    )


# Where each table's rows of the night are: written by this run (its time column is the
# run's $now, so DuckDB skips every older row group by its min/max), plus, for a batch in
# scope the run did not write, its earlier rows (read by id: only when there is such a
# batch, and only for it). All in the head: a batch the night touches that was in the
# history was taken back into it first (pipeline/history.py), so no history file is read.
_WRITTEN = {
    "batches": ("id", "loaded_at", "unwritten"),
    "pricing_lines": ("batch_id", "loaded_at", "unwritten"),
    # request rows may have come before their batch: earlier rows of every batch in scope
    "batch_requests": ("batch_id", "loaded_at", "scope"),
    "charge_ledger": ("batch_id", "recorded_at", "not_new"),
}


def _night_rows(table: str, prefix: str) -> str:
    key, written, older = _WRITTEN[table]
    return (
        f"(select * from hot.{table} where {written} = $now"  # noqa: S608
        f" and {key} in (select batch_id from {prefix}_scope)"
        f" union all select * from hot.{table} where {written} is distinct from $now"
        f" and {key} in (select batch_id from {prefix}_{older})) as {table}"
    )


def _view_body(layer: str, name: str) -> str:
    text = (sql_dir() / layer / f"{name}.sql").read_text()
    return text.split(f"create or replace view {name} as", 1)[1]


def night_scope(prefix: str, scope: str, tables: str) -> str:
    """Temp tables ``{tables}_stg_batches``, ``{tables}_stg_pricing_lines`` (and with
    prefix ``recon``, ``recon_stg_batch_requests``, ``recon_charge_ledger``): the staging
    views (their one definition in sql/staging) over the rows of the batches in
    ``scope`` only, found without reading the history (see :data:`_WRITTEN`)."""
    parts = [
        f"create or replace temp table {prefix}_scope as {scope}",
        f"create or replace temp table {prefix}_unwritten as select batch_id"  # noqa: S608
        f" from {prefix}_scope where batch_id not in"
        " (select id from decisions where action in ('new', 'updated'))",
        f"create or replace temp table {prefix}_not_new as select batch_id"  # noqa: S608
        f" from {prefix}_scope where batch_id not in"
        " (select id from decisions where action = 'new')",
    ]
    views = [("stg_batches", "batches"), ("stg_pricing_lines", "pricing_lines")]
    if prefix == "recon":
        views.append(("stg_batch_requests", "batch_requests"))
    for view, table in views:
        body = re.sub(
            rf"\bfrom {table}\b", f"from {_night_rows(table, prefix)}", _view_body("staging", view)
        )
        parts.append(
            f"create or replace temp table {tables}_{view} as select * from ({body}\n)"  # noqa: S608
        )
    if prefix == "recon":
        parts.append(
            f"create or replace temp table recon_charge_ledger as select * from"  # noqa: S608
            f" {_night_rows('charge_ledger', prefix)}"
        )
    return ";\n".join(parts)


def scoped_charge_lines() -> str:
    """``int_charge_lines`` (sql/intermediate/int_charge_lines.sql, the one definition) over
    the batches in scope only (``scope_stg_*`` temp tables): the view itself would work out
    every batch's lines before a filter on a few could apply."""
    text = (sql_dir() / "intermediate" / "int_charge_lines.sql").read_text()
    body = text.split("create or replace view int_charge_lines as", 1)[1]
    return re.sub(r"\b(stg_batches|stg_pricing_lines)\b", r"scope_\1", body)


RECONCILE_SQL = """
insert into reconciliation_results
    select $run_id, batch_id, check_name, expected_nanos, actual_nanos, detail
    from billing_reconciliation
"""

# The night's reconciliation: the checks of billing_reconciliation (the one definition,
# sql/marts/billing_reconciliation.sql) over the batches the run wrote only, read from
# copies of their rows: the view would check every batch of the history first.
RECONCILE_SCOPE_SQL = """
{night_scope};
insert into reconciliation_results
    select $run_id, batch_id, check_name, expected_nanos, actual_nanos, detail
    from ({scoped_checks})
"""


def scoped_reconciliation(scope: str) -> str:
    text = (sql_dir() / "marts" / "billing_reconciliation.sql").read_text()
    body = text.split("create or replace view billing_reconciliation as", 1)[1]
    body = re.sub(
        r"\b(from|join)(\s+)(stg_batches|stg_pricing_lines|stg_batch_requests|charge_ledger)\b",
        r"\1\2recon_\3",
        body,
    )
    return RECONCILE_SCOPE_SQL.replace(
        "{night_scope}", night_scope("recon", scope, "recon")
    ).replace("{scoped_checks}", body)


# The books of batches new to the database, from their own rows only (as ledger_sql).
def ledger_new_sql(scope: str) -> str:
    return (
        night_scope("ledger", scope, "scope")
        + ";\n"
        + LEDGER_NEW_SQL.replace(
            "from int_charge_lines as l", f"from ({scoped_charge_lines()}) as l"
        ).replace("{where}", "")
    )


def view_over(layer: str, name: str, sources: dict[str, str]) -> str:
    """The body of view ``name`` (its one definition in ``sql/<layer>``) reading each
    relation of ``sources`` from the replacement it names instead (only where it is read:
    after ``from`` or ``join``)."""
    body = _view_body(layer, name)
    for source, replacement in sources.items():
        body = re.sub(rf"\b(from|join)(\s+){source}\b", rf"\1\2{replacement}", body)
    return body


# The charges of a recent window (a check of recent days and months): every row of the
# batches with an entry in the FOCUS books since the cutoff (a bill first charged then, or
# restated then), found by the books' charge time (appended in time order: DuckDB skips
# older row groups by their min/max), then the views' own definitions over those rows.
RECENT_SQL = """
create or replace temp table recent_batches as
    select distinct batch_id from charge_ledger where billing_period_at >= $cutoff;
create or replace temp table recent_charge_ledger as
    select * from charge_ledger where batch_id in (select batch_id from recent_batches);
create or replace temp table recent_stg_batches as
    select * from ({stg_batches}
    );
create or replace temp table recent_stg_batch_requests as
    select * from ({stg_batch_requests}
    );
create or replace temp table recent_billed_charges as
    select * from ({int_billed_charges}
    );
create or replace temp table recent_model_charges as
    select * from ({int_model_charges}
    );
create or replace temp table recent_batch_tags as
    select * from ({int_batch_tags}
    )
"""


def recent_sql() -> str:
    batches = "(select * from batches where id in (select batch_id from recent_batches)) as batches"
    requests = (
        "(select * from batch_requests where batch_id in (select batch_id from recent_batches))"
        " as batch_requests"
    )
    parts = {
        "stg_batches": view_over("staging", "stg_batches", {"batches": batches}),
        "stg_batch_requests": view_over(
            "staging", "stg_batch_requests", {"batch_requests": requests}
        ),
        "int_billed_charges": view_over(
            "intermediate",
            "int_billed_charges",
            {"charge_ledger": "recent_charge_ledger", "stg_batches": "recent_stg_batches"},
        ),
        "int_model_charges": view_over(
            "intermediate",
            "int_model_charges",
            {
                "int_billed_charges": "recent_billed_charges",
                "stg_batches": "recent_stg_batches",
                "stg_batch_requests": "recent_stg_batch_requests",
            },
        ),
        "int_batch_tags": view_over(
            "intermediate", "int_batch_tags", {"stg_batches": "recent_stg_batches"}
        ),
    }
    sql = RECENT_SQL
    for name, body in parts.items():
        sql = sql.replace("{" + name + "}", body)
    return sql


RECENT_MARTS = {
    "int_model_charges": "recent_model_charges",
    "int_batch_tags": "recent_batch_tags",
}
