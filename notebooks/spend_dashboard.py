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
    import polars as pl

    from pipeline import finance
    from pipeline.report import usd

    db_path = Path(os.environ.get("BILLING_DB", "data/billing.duckdb"))
    mo.stop(
        not db_path.exists(),
        mo.md(f"**No database at `{db_path}`.** Run `make demo` (or `billing run`) first."),
    )

    def frame(query, *args, whole=False):
        """One of the finance queries (`pipeline.finance`, shared with `billing report`)
        over the whole data, as a polars frame. Money stays integer nanos; charts get a
        float copy (``cost_usd_plot``) for drawing only, never for totals.

        One short read-only connection per query: an open dashboard never holds the file,
        and each refresh reads the snapshot the nightly job last published."""
        con = duckdb.connect(str(db_path), read_only=True)
        try:
            con.execute("set TimeZone = 'UTC'")
            rows = query(con, finance.whole(con), *args) if whole else query(con, *args)
        finally:
            con.close()
        df = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
        if "cost_nanos" in df.columns:
            df = df.with_columns(
                (pl.col("cost_nanos").cast(pl.Float64) / 1e9).alias("cost_usd_plot")
            )
        return df

    # one colour per provider, the same as in `billing report` (finance.provider_colors)
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        colors = finance.provider_colors(con)
    finally:
        con.close()
    provider_color = alt.Color(
        "provider:N", scale=alt.Scale(domain=list(colors), range=list(colors.values()))
    )
    return alt, db_path, finance, frame, mo, provider_color, usd


@app.cell
def _(db_path, finance, frame, mo, usd):
    totals = frame(lambda con, p: [finance.totals(con, p)], whole=True).row(0, named=True)
    mismatches = sum(row["batches"] for row in frame(finance.reconciliation).iter_rows(named=True))
    mo.md(
        f"""
        # LLM gateway spend

        `{db_path}` · {totals["batches"]:,} batches ·
        **{usd(totals["cost_nanos"])}** billed (exact, nano-USD:
        {totals["cost_nanos"]:,}) · reconciliation mismatches: **{mismatches}**
        """
    )
    return (totals,)


@app.cell
def _(alt, finance, frame, provider_color):
    daily = frame(finance.spend_over_time, whole=True)
    spend_over_time = (
        alt.Chart(daily.select("day", "provider", "cost_usd_plot"))
        .mark_area()
        .encode(
            x=alt.X("day:T", title="day (UTC)"),
            y=alt.Y("sum(cost_usd_plot):Q", title="spend (USD)", stack=True),
            color=provider_color,
            tooltip=["day:T", "provider:N", "cost_usd_plot:Q"],
        )
        .properties(title="Spend over time by provider", width=640, height=260)
    )
    spend_over_time
    return daily, spend_over_time


@app.cell
def _(alt, finance, frame, pl):
    sessions = (
        frame(finance.top_sessions, 10, whole=True).filter(
            ~pl.col("session_id").eq_missing("(others)")
        )  # the chart: the ten alone
    ).with_columns(
        pl.concat_str(
            [pl.col("session_id").fill_null("(none)"), pl.col("provider").fill_null("?")],
            separator=" · ",
        ).alias("session")
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
def _(alt, finance, frame, provider_color):
    models = frame(finance.spend_by_model, whole=True)
    model_mix = (
        alt.Chart(models.select("model", "provider", "cost_usd_plot"))
        .mark_bar()
        .encode(
            x=alt.X("sum(cost_usd_plot):Q", title="spend (USD)"),
            y=alt.Y("model:N", sort="-x"),
            color=provider_color,
            tooltip=["model:N", "provider:N", "cost_usd_plot:Q"],
        )
        .properties(
            title="Model mix (request rows where the gateway gave them)", width=640, height=220
        )
    )
    model_mix
    return model_mix, models


@app.cell
def _(alt, finance, frame, mo, pl):
    checks = frame(finance.reconciliation)
    if checks.is_empty():
        checks = pl.DataFrame({"check_name": ["all checks pass"], "batches": [0]})
    reconciliation = (
        alt.Chart(checks)
        .mark_bar()
        .encode(
            x=alt.X("batches:Q", title="batches failing"),
            y=alt.Y("check_name:N", title=None),
        )
        .properties(title="Reconciliation status", width=640, height=120)
    )
    runs = frame(finance.recent_runs, 5)
    mo.vstack([reconciliation, mo.md("Recent loads"), mo.ui.table(runs, selection=None)])
    return checks, reconciliation, runs


if __name__ == "__main__":
    app.run()
