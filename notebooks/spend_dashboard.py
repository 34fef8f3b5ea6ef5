"""Spend dashboard (marimo notebook): `marimo edit notebooks/spend_dashboard.py`.

Reads the SQL views of the billing database ($BILLING_DB, default data/billing.duckdb;
`make demo` builds it from the sample). Plain Python: it diffs cleanly, is linted like the
rest of the code, and the test suite runs it headless with `app.run()`.
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium")


@app.cell
def _():
    import os
    from pathlib import Path

    import altair as alt
    import duckdb
    import marimo as mo

    db_path = Path(os.environ.get("BILLING_DB", "data/billing.duckdb"))
    mo.stop(
        not db_path.exists(),
        mo.md(f"**No database at `{db_path}`.** Run `make demo` (or `billing run`) first."),
    )

    def frame(sql):
        """A view as a polars frame. Dollars are DECIMAL(38,9); charts get a float copy
        (``cost_usd_plot``) for drawing only, never for totals.

        One short read-only connection per query: an open dashboard never holds the file,
        and each refresh reads the snapshot the nightly job last published."""
        con = duckdb.connect(str(db_path), read_only=True)
        try:
            con.execute("set TimeZone = 'UTC'")
            return con.sql(sql).pl()
        finally:
            con.close()

    return alt, db_path, frame, mo


@app.cell
def _(db_path, frame, mo):
    totals = frame(
        "select count(*) as batches, coalesce(sum(cost_nanos), 0) as cost_nanos,"
        " nanos_to_usd(coalesce(sum(cost_nanos), 0)) as cost_usd,"
        " (select count(*) from billing_reconciliation) as mismatches,"
        " (select max(finished_at) from load_runs) as last_run"
        " from batches"
    ).row(0, named=True)
    mo.md(
        f"""
        # LLM gateway spend

        `{db_path}` · {totals["batches"]:,} batches · **${totals["cost_usd"]:,}** billed
        (exact: {totals["cost_nanos"]:,} nano-USD) · reconciliation mismatches:
        **{totals["mismatches"]}** · last load {totals["last_run"]}
        """
    )
    return (totals,)


@app.cell
def _(alt, frame):
    daily = frame(
        "select day, provider, cost_nanos, cost_usd::double as cost_usd_plot"
        " from spend_by_provider order by day, provider"
    )
    spend_over_time = (
        alt.Chart(daily.select("day", "provider", "cost_usd_plot"))
        .mark_area()
        .encode(
            x=alt.X("day:T", title="day (UTC)"),
            y=alt.Y("sum(cost_usd_plot):Q", title="spend (USD)", stack=True),
            color=alt.Color("provider:N"),
            tooltip=["day:T", "provider:N", "cost_usd_plot:Q"],
        )
        .properties(title="Spend over time by provider", width=640, height=260)
    )
    spend_over_time
    return daily, spend_over_time


@app.cell
def _(alt, frame):
    sessions = frame(
        "select coalesce(session_id, '(none)') || ' · ' || coalesce(provider, '?') as session,"
        " cost_nanos, cost_usd::double as cost_usd_plot, batches"
        " from spend_by_session where cost_rank <= 10 order by cost_nanos desc"
    )
    top_sessions = (
        alt.Chart(sessions.select("session", "batches", "cost_usd_plot"))
        .mark_bar()
        .encode(
            x=alt.X("cost_usd_plot:Q", title="spend (USD)"),
            y=alt.Y("session:N", sort="-x", title=None),
            tooltip=["session:N", "batches:Q", "cost_usd_plot:Q"],
        )
        .properties(title="Top 10 sessions by spend", width=640, height=260)
    )
    top_sessions
    return sessions, top_sessions


@app.cell
def _(alt, frame):
    models = frame(
        "select model, attribution, sum(cost_nanos) as cost_nanos,"
        " (nanos_to_usd(sum(cost_nanos)))::double as cost_usd_plot"
        " from spend_by_model group by all order by cost_nanos desc"
    )
    model_mix = (
        alt.Chart(models.select("model", "attribution", "cost_usd_plot"))
        .mark_bar()
        .encode(
            x=alt.X("sum(cost_usd_plot):Q", title="spend (USD)"),
            y=alt.Y("model:N", sort="-x"),
            color=alt.Color("attribution:N"),
            tooltip=["model:N", "attribution:N", "cost_usd_plot:Q"],
        )
        .properties(
            title="Model mix (request rows where the gateway gave them)", width=640, height=220
        )
    )
    model_mix
    return model_mix, models


@app.cell
def _(alt, frame, mo):
    checks = frame(
        "select check_name, count(*) as batches from billing_reconciliation group by all"
        " union all select 'all checks pass', 0 where not exists"
        " (select 1 from billing_reconciliation) order by batches desc"
    )
    reconciliation = (
        alt.Chart(checks)
        .mark_bar()
        .encode(
            x=alt.X("batches:Q", title="batches failing"),
            y=alt.Y("check_name:N", title=None),
        )
        .properties(title="Reconciliation status", width=640, height=120)
    )
    runs = frame(
        "select run_id, status, records_read, batches_loaded, rejected,"
        " reconciliation_issues, cost_delta_nanos from load_runs order by started_at desc limit 5"
    )
    mo.vstack([reconciliation, mo.md("Recent loads"), mo.ui.table(runs, selection=None)])
    return checks, reconciliation, runs


if __name__ == "__main__":
    app.run()
