"""`billing report`: one self-contained HTML page (no network needed to open it) with the
period's exact total, charts drawn as inline SVG, and the exact figures beside them."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import duckdb

from pipeline import __version__, finance
from pipeline.finance import Period, Rows
from pipeline.report import to_csv, usd, usd_cents

# marks a page `billing report` wrote (read back before replacing an existing --out)
GENERATOR_MARK = b'<meta name="generator" content="billing report">'
NEUTRAL = "#6B7A8F"  # bars that are not one provider's (tags)


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key.endswith("_nanos") and isinstance(value, int):
        return usd(value)
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


MAX_HTML_ROWS = 200  # rows a table shows; the rest are counted and in its CSV
MAX_CSV_ROWS = 20_000  # rows a table's CSV link holds (a data: URL inside the page)
TOTALLED = ("batches", "requests", "lines")  # counts summed in a total row, with *_nanos


def _summed(rows: Rows, keys: Sequence[str], label: str) -> dict[str, Any]:
    """One row summing ``rows``' money (``*_nanos``) and count columns exactly, ``label``
    in the first column, every other column empty."""
    out: dict[str, Any] = dict.fromkeys(keys)
    out[keys[0]] = label
    for key in keys[1:]:
        if key.endswith("_nanos") or key in TOTALLED:
            values = [r[key] for r in rows if isinstance(r.get(key), int)]
            out[key] = sum(values) if values else None
    return out


def with_total(rows: Rows, label: str = "total") -> Rows:
    """The rows and one total row: every money (``*_nanos``) and count column summed, the
    label in the first column. The sums are exact integers."""
    if not rows:
        return rows
    total = _summed(rows, [k for k in rows[0] if k != "_total"], label)
    total["_total"] = True  # styled as the total row; not a column
    return [*rows, total]


def csv_href(rows: Rows, cols: Sequence[str]) -> str:
    """The table's exact figures as a CSV data: URL (a download that needs no network):
    each money column as integer nanos and as exact dollars, cells neutralised against
    spreadsheet formulas (pipeline.report.to_csv)."""
    header: list[str] = []
    for c in cols:
        header += [c, c.removesuffix("_nanos") + "_usd"] if c.endswith("_nanos") else [c]
    out = []
    for r in rows:
        line: list[Any] = []
        for c in cols:
            v = r.get(c)
            line.append(v)
            if c.endswith("_nanos"):
                line.append(None if v is None else format(Decimal(int(v)) / 10**9, "f"))
        out.append(line)
    return "data:text/csv;charset=utf-8," + quote(to_csv(header, out) + "\n")


def table(
    rows: Rows,
    columns: Sequence[str] | None = None,
    empty: str = "none",
    csv_name: str | None = None,
) -> str:
    """An HTML table of exact figures; with ``csv_name``, a link that downloads them. At
    most MAX_HTML_ROWS rows are shown (and MAX_CSV_ROWS downloadable), saying so."""
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    cols = list(columns or rows[0].keys())
    link = ""
    if csv_name:
        exported = rows[:MAX_CSV_ROWS]
        count = (
            f"{len(rows):,} rows"
            if len(rows) == len(exported)
            else f"the first {len(exported):,} of {len(rows):,} rows: billing sql for all"
        )
        link = (
            f'<a class="csv" download="{esc(csv_name)}.csv" '
            f'href="{esc(csv_href(exported, cols))}">download CSV ({count})</a>'
        )
    if len(rows) > MAX_HTML_ROWS:
        tail = [rows[-1]] if rows[-1].get("_total") else []
        hidden = len(rows) - MAX_HTML_ROWS - len(tail)
        rows = [
            *rows[:MAX_HTML_ROWS],
            {cols[0]: f"… {hidden:,} more rows (in the CSV)"},
            *tail,
        ]
    head = "".join(f"<th>{esc(c.replace('_nanos', ' (USD)'))}</th>" for c in cols)
    body = "".join(
        ('<tr class="sum">' if r.get("_total") else "<tr>")
        + "".join(
            f'<td class="{"num" if isinstance(r.get(c), int | float | Decimal) else ""}">'
            f"{esc(_cell(c, r.get(c)))}</td>"
            for c in cols
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{link}"


TOP_PROVIDERS = 8  # providers drawn and tabled by name each day; the rest as '(others)'
OTHERS = "(others)"


def lump_providers(rows: Rows, keep: int = TOP_PROVIDERS) -> Rows:
    """Daily rows with every provider past the ``keep`` largest of the period summed into
    one '(others)' provider per day: 50,000 providers made a 50,000-column table and ran
    the report out of memory. Sums are unchanged."""
    spend = {k[0]: v for k, v in _sum_by(rows, ("provider",)).items()}
    if len(spend) <= keep + 1:
        return rows
    kept = set(sorted(spend, key=lambda k: (-spend[k], k))[:keep])
    out: dict[tuple[Any, str], int] = {}
    for r in rows:
        name = str(r["provider"]) if str(r["provider"]) in kept else OTHERS
        out[(r["day"], name)] = out.get((r["day"], name), 0) + int(r["cost_nanos"] or 0)
    return [{"day": d, "provider": n, "cost_nanos": v} for (d, n), v in out.items()]


def _pivot(rows: Rows) -> Rows:
    """Daily rows × provider columns, with the day's total."""
    providers = sorted({str(r["provider"]) for r in rows}, key=lambda k: (k == OTHERS, k))
    days: dict[Any, dict[str, Any]] = {}
    for r in rows:
        day = days.setdefault(
            r["day"], {"day": r["day"], **{f"{p}_nanos": 0 for p in providers}, "total_nanos": 0}
        )
        day[f"{r['provider']}_nanos"] += int(r["cost_nanos"] or 0)
        day["total_nanos"] += int(r["cost_nanos"] or 0)
    return list(days.values())


def top_rows(rows: Rows, keep: int, label: str = OTHERS) -> Rows:
    """The first ``keep`` rows and one row summing the rest (money and counts), labelled
    in the first column: a table of 50,000 providers stays readable and still sums."""
    if len(rows) <= keep + 1:
        return rows
    rest = rows[keep:]
    return [*rows[:keep], _summed(rest, list(rows[0]), f"{label} ({len(rest):,})")]


def _sum_by(rows: Rows, keys: tuple[str, ...]) -> dict[tuple[Any, ...], int]:
    """cost_nanos summed per key (one bar per model, whatever the attribution)."""
    out: dict[tuple[Any, ...], int] = {}
    for r in rows:
        key = tuple(str(r[k]) for k in keys)
        out[key] = out.get(key, 0) + int(r["cost_nanos"] or 0)
    return out


def stacked_bars(rows: Rows, p: Period, title: str, palette: dict[str, str]) -> str:
    """Daily spend stacked by provider."""
    last = max((r["day"] for r in rows), default=p.start)
    days = [
        p.start + timedelta(days=i) for i in range((min(p.end, last + timedelta(1)) - p.start).days)
    ]
    providers = sorted({str(r["provider"]) for r in rows})
    colors = {k: palette.get(k, NEUTRAL) for k in providers}
    by_day: dict[date, dict[str, int]] = {}
    for r in rows:
        by_day.setdefault(r["day"], {})[str(r["provider"])] = int(r["cost_nanos"] or 0)
    top = max((sum(v for v in d.values() if v > 0) for d in by_day.values()), default=0) or 1
    width, height, left, bottom = 760, 260, 70, 30
    step = (width - left - 10) / max(len(days), 1)
    parts = []
    for i, day in enumerate(days):
        y: float = height - bottom
        for prov in providers:
            value = by_day.get(day, {}).get(prov, 0)
            if value <= 0:
                continue
            h = (height - bottom - 10) * value / top
            y -= h
            parts.append(
                f'<rect x="{left + i * step + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{colors[prov]}"><title>{esc(day)} {esc(prov)}: '
                f"{esc(usd(value))}</title></rect>"
            )
    axis = (
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
        'stroke="#888"/>'
        f'<text x="{left - 6}" y="16" text-anchor="end" class="tick">{esc(usd_cents(top))}</text>'
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" class="tick">$0</text>'
    )
    if days:
        axis += (
            f'<text x="{left}" y="{height - 8}" class="tick">{esc(days[0])}</text>'
            f'<text x="{width - 10}" y="{height - 8}" text-anchor="end" class="tick">'
            f"{esc(days[-1])}</text>"
        )
    legend = "".join(
        f'<span class="key"><i style="background:{c}"></i>{esc(k)}</span>'
        for k, c in colors.items()
    )
    return _figure(title, width, height, axis + "".join(parts), legend)


def hbars(items: list[tuple[str, int, str]], title: str) -> str:
    """Horizontal bars, largest first: (label, nanos, colour)."""
    items = [(k, v, c) for k, v, c in items if v > 0][:12]
    top = max((v for _, v, _ in items), default=0) or 1
    row_h, left, width = 24, 230, 760
    height = max(row_h * len(items) + 10, 40)
    parts = []
    for i, (label, value, color) in enumerate(items):
        w = (width - left - 120) * value / top
        y = 5 + i * row_h
        parts.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" class="label">'
            f"{esc(label[:34])}</text>"
            f'<rect x="{left}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row_h - 8}" '
            f'fill="{color}"><title>{esc(label)}: {esc(usd(value))}</title>'
            f'</rect><text x="{left + w + 6:.1f}" y="{y + 15}" class="tick">'
            f"{esc(usd_cents(value))}</text>"
        )
    if not items:
        parts.append('<text x="10" y="25" class="tick">no spend in this period</text>')
    return _figure(title, width, height, "".join(parts), "")


def _figure(title: str, width: int, height: int, body: str, legend: str) -> str:
    return (
        f"<figure><figcaption>{esc(title)}</figcaption>"
        f'<svg class="chart" role="img" aria-label="{esc(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">{body}</svg>'
        f'<div class="legend">{legend}</div></figure>'
    )


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1000px;color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin:0}h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid #ddd}
.total{font-size:2.2rem;font-weight:700;margin:.5rem 0}.meta{color:#666}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left}td.num{text-align:right;
font-variant-numeric:tabular-nums}th{background:#f6f6f6}
figure{margin:1rem 0}figcaption{font-weight:600;margin-bottom:.25rem}
.tick,.label{font-size:11px;fill:#444}.legend .key{margin-right:1rem;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-weight:600}
.ok{background:#54A24B}.warn{background:#EECA3B;color:#222}.bad{background:#E45756}
.estimate{font-style:italic;color:#8a5a00}.empty{color:#777}
tbody tr.sum td{font-weight:700;border-top:2px solid #999}td:first-child{white-space:nowrap}
a.csv{display:inline-block;font-size:12px;margin:0 0 1rem}
svg.chart{max-width:100%;height:auto}
table{display:block;max-width:100%;overflow-x:auto}td{overflow-wrap:anywhere}
td.num{white-space:nowrap;overflow-wrap:normal}
@media (max-width:600px){body{margin:1rem auto;padding:0 .5rem}
.total{font-size:1.6rem;overflow-wrap:anywhere}h1{font-size:1.2rem}
table{font-size:11.5px}th,td{padding:3px 5px}}
@media print{@page{size:A4;margin:14mm}body{max-width:none;margin:0;padding:0;font-size:10.5px}
h2{break-after:avoid}figure,tr,.total{break-inside:avoid}table{display:table;overflow:visible}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}#charts-drawn,a.csv{display:none}}
"""

# Marks the page once the browser has laid the charts out: a test (headless Chromium)
# reads data-charts-drawn, the count of charts with a drawn, non-empty box.
SCRIPT = """
document.addEventListener('DOMContentLoaded', function () {
  var drawn = 0;
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var box = svg.getBBox();
    if (box.width > 0 && box.height > 0 && svg.querySelectorAll('rect,text').length) drawn++;
  });
  document.body.setAttribute('data-charts-drawn', String(drawn));
  // nothing wider than the window (read by the tests at 400 px)
  var wide = document.documentElement.scrollWidth > window.innerWidth;
  document.body.setAttribute('data-overflows', wide ? 'yes' : 'no');
  // content cut off where a reader cannot scroll to it (a box wider than itself that
  // does not scroll); a wide table scrolls sideways in its own box instead
  var clipped = 0;
  document.querySelectorAll('body *').forEach(function (el) {
    if (el.closest('svg') || el.scrollWidth <= el.clientWidth + 1) return;
    var o = getComputedStyle(el).overflowX;
    if (o === 'hidden' || o === 'clip') clipped++;
  });
  document.body.setAttribute('data-clipped', String(clipped));
  document.getElementById('charts-drawn').textContent = drawn + ' charts';
});
"""


def _change(now: int, before: int) -> str:
    """' (+14.6%)' against the period before; nothing to compare with: ''."""
    if before <= 0:
        return ""
    return f" ({(now - before) * 100 / before:+.1f}%)"


def price_sentence(summary: Rows) -> str:
    """What the price checks covered, in one sentence that matches them."""
    by = {r["status"]: r for r in summary}
    lines = sum(int(r["lines"]) for r in summary)
    if not lines:
        return "No pricing lines in this period."
    fallback = by.get("not_checkable")
    checked = lines - (int(fallback["lines"]) if fallback else 0)
    off = checked - (int(by["ok"]["lines"]) if "ok" in by else 0)
    parts = [
        f"{checked:,} of {lines:,} pricing lines checked against the gateway's arithmetic"
        + (
            " (and the price list)"
            if any(s in by for s in ("not_in_list", "list_mismatch"))
            else ""
        )
        + (": all agree." if not off else f": {off:,} do not (below).")
    ]
    if fallback:
        parts.append(
            f"{int(fallback['lines']):,} fallback lines ({usd_cents(fallback['line_nanos'])}) carry"
            " a total only and cannot be checked."
        )
    return " ".join(parts)


def catalogue_sentence(coverage: Rows) -> str:
    """How the lines fared against the gateway's dated price catalogue, plainly."""
    by = {r["catalogue_status"]: int(r["lines"]) for r in coverage}
    snapshots = int(coverage[0]["snapshots"]) if coverage else 0
    if not snapshots:
        return (
            "No snapshot of the gateway's price catalogue is stored, so no line is checked"
            " against it (billing prices --fetch, or run --fetch-prices, keeps them)."
        )
    parts = [
        f"Against the gateway's catalogue of each line's charge time ({snapshots:,}"
        f" snapshot(s)): {by.get('match', 0):,} lines match a catalogue price,"
        f" {by.get('price_differs', 0):,} match none of the prices in force and"
        f" {by.get('not_in_catalogue', 0):,} have no catalogue price for their meter."
    ]
    if by.get("no_snapshot"):
        parts.append(
            f"{by['no_snapshot']:,} lines were charged before the first snapshot: no"
            " catalogue covers their date."
        )
    return " ".join(parts)


def _badge(status: str) -> str:
    cls = {"ok": "ok", "warning": "warn", "crossed": "bad"}.get(status, "warn")
    return f'<span class="badge {cls}">{esc(status)}</span>'


def render(con: duckdb.DuckDBPyConnection, p: Period, source: str, now: datetime) -> str:
    total = finance.totals(con, p)
    before = finance.previous(p)
    total_before = finance.totals(con, before)["cost_nanos"]
    through = finance.data_through(con, p)
    over_time = finance.spend_over_time(con, p)
    daily = lump_providers(over_time)
    providers = finance.spend_by_provider(con, p)
    models = finance.spend_by_model(con, p)
    sessions = finance.top_sessions(con, p)
    tags = finance.top_tags(con, p)
    waste = finance.waste(con, p)
    unbilled = finance.unbilled(con, p)
    used = finance.as_used(con, p)
    restated = finance.restatements(con, p)
    recon = finance.reconciliation(con)
    budgets = [b for b in finance.budget_status(con) if p.start <= b["period_start"] < p.end]
    anomalies = [a for a in finance.anomalies(con) if p.start <= a["day"] < p.end]
    forecast = finance.forecast(con, p)
    wallet = finance.wallet(con)
    runway = finance.runway_status(con)
    coverage = finance.catalogue_coverage(con, p)
    prices = finance.price_check_summary(con, p)
    price_problems = finance.price_problems(con, p)

    recon_status = (
        '<span class="badge ok">the bill adds up</span>'
        if not recon
        else f'<span class="badge bad">{sum(r["batches"] for r in recon)} mismatches</span>'
    )
    crossed = [b for b in budgets if b["status"] == "crossed"]
    budget_badge = (
        '<span class="badge bad">' + f"{len(crossed)} crossed</span>"
        if crossed
        else '<span class="badge ok">within budget</span>'
        if budgets
        else '<span class="badge warn">no budgets set</span>'
    )
    budget_rows = "".join(
        f"<tr><td>{esc(b['budget_name'])}</td><td>{esc(b['period'])}</td>"
        f"<td>{esc(b['period_start'])}</td><td>{esc(b['scope'])}</td>"
        f'<td class="num">{esc(usd(b["limit_nanos"]))}</td>'
        f'<td class="num">{esc(usd(b["spend_nanos"]))}</td>'
        f'<td class="num">{esc(b["used_pct"])}%</td><td>{_badge(b["status"])}</td></tr>'
        for b in budgets
    )
    budget_table = (
        "<table><thead><tr><th>budget</th><th>period</th><th>from</th><th>scope</th>"
        "<th>limit</th><th>spend</th><th>used</th><th>status</th></tr></thead>"
        f"<tbody>{budget_rows}</tbody></table>"
        if budgets
        else '<p class="empty">no budgets: add [[budget]] tables to billing.toml</p>'
    )
    waste_total = sum(int(w["waste_nanos"] or 0) for w in waste)
    estimate = any(f["is_estimate"] for f in forecast)
    forecast_title = (
        'Month-end forecast <span class="estimate">(an estimate)</span>'
        if estimate
        else "Month-end (actual)"
    )
    forecast_note = (
        "Billed so far + the month's daily run rate for the days left + what batches that"
        " can still be charged this month will add at their own prices. Not a bill."
        " Batches still open from earlier months or past their expiry are left out"
        " (stale_batches)."
        if estimate
        else "The period's months are over in the data: their actual billed spend."
    )
    reading_note = (
        f"As billed: each batch on its charge date (capture, else end of processing);"
        f" a restated bill's difference where it was restated. The same money as used"
        f" (final bills of batches whose processing ended in the period):"
        f" {usd_cents(used['cost_nanos'])}."
    )
    palette = finance.provider_colors(con)

    def color(provider: Any) -> str:
        return palette.get(str(provider), NEUTRAL)

    charts = [
        stacked_bars(daily, p, "Spend over time by provider (UTC days)", palette),
        hbars(
            [(str(r["provider"]), int(r["cost_nanos"]), color(r["provider"])) for r in providers],
            "Spend by provider",
        ),
        hbars(
            [
                (f"{provider} / {model}", nanos, color(provider))
                for (provider, model), nanos in sorted(
                    _sum_by(models, ("provider", "model")).items(), key=lambda kv: -kv[1]
                )
            ],
            "Spend by model (request rows' model; else metadata.model)",
        ),
        hbars(
            [
                (f"{r['session_id']} ({r['provider']})", int(r["cost_nanos"]), color(r["provider"]))
                for r in sessions
                if r["provider"] is not None or r["session_id"] != "(others)"  # the chart: the top
            ],
            "Top sessions",
        ),
    ]
    tag_keys = sorted({str(r["tag_key"]) for r in tags})
    tag_sections = "".join(
        f"<h3>{esc(key)}</h3>"
        + hbars(
            [
                (str(r["tag_value"]), int(r["cost_nanos"]), NEUTRAL)
                for r in tags
                if r["tag_key"] == key
            ],
            f"Spend by {key} (untagged and the rest shown; sums to the total)",
        )
        + table(
            with_total(
                [
                    {
                        "tag_value": r["tag_value"],
                        "batches": r["batches"],
                        "cost_nanos": r["cost_nanos"],
                    }
                    for r in tags
                    if r["tag_key"] == key
                ]
            ),
            ["tag_value", "batches", "cost_nanos"],
            csv_name=f"spend_by_tag_{key}",
        )
        for key in tag_keys
    )
    data = {
        "period": {"start": str(p.start), "end": str(p.end)},
        "total_cost_nanos": str(total["cost_nanos"]),
        "by_provider": [
            {"provider": r["provider"], "cost_nanos": str(r["cost_nanos"])} for r in providers
        ],
    }
    body = f"""
<h1>LLM gateway spend — {esc(p.label)}</h1>
<p class="meta">{esc(p.start)} to {esc(p.end - timedelta(days=1))} (UTC) ·
<strong id="data-through">data through {esc(through or "no charge yet")}</strong> ·
from {esc(source)} · generated {esc(now.strftime("%Y-%m-%d %H:%M UTC"))} by billing
{esc(__version__)} · <span id="charts-drawn">charts not drawn</span></p>
<div class="total" id="total" title="exact: {esc(usd(total["cost_nanos"]))}">{
        esc(usd_cents(total["cost_nanos"]))
    }</div>
<p class="meta">exact: <span id="total-exact">{esc(usd(total["cost_nanos"]))}</span> ·
<span id="previous">{esc(before.label)}: {esc(usd_cents(total_before))}{
        esc(_change(int(total["cost_nanos"]), int(total_before)))
    }</span></p>
<p class="meta">{total["batches"]:,} batches charged · {total["corrections"]:,} restated
bills booked · reconciliation: {recon_status} · budgets: {budget_badge} ·
anomalies: {len(anomalies)} · waste: {esc(usd_cents(waste_total))} ·
priced but not billed (not spend): <span id="unbilled" title="exact: {
        esc(usd(unbilled["not_billed_nanos"]))
    }">{esc(usd_cents(unbilled["not_billed_nanos"]))}</span></p>
<p class="meta" id="reading">{esc(reading_note)}</p>

<h2>Spend over time</h2>
{charts[0]}
{table(with_total(_pivot(daily)), None, "no spend in this period", "spend_by_day")}

<h2>By provider</h2>
{charts[1]}
{
        table(
            with_total(top_rows(providers, 20)),
            ["provider", "batches", "cost_nanos"],
            csv_name="spend_by_provider",
        )
    }

<h2>By model</h2>
{charts[2]}
<p class="meta">model and counted from: the model the provider reported on each request
row ('requests', counting those rows; what they do not explain is 'unattributed'), else the
batch's metadata.model ('metadata', counting the gateway's request_counts.total), else
'unknown'; 'restatement' moves a restated bill's difference to the day it was restated.</p>
{
        table(
            with_total(models),
            ["provider", "model", "attribution", "requests", "cost_nanos"],
            csv_name="spend_by_model",
        )
    }

<h2>Top sessions</h2>
{charts[3]}
{
        table(
            with_total(sessions),
            ["session_id", "provider", "batches", "cost_nanos"],
            csv_name="top_sessions",
        )
    }

<h2>Top tags</h2>
<p class="meta">Each metadata key on its own: its largest values, untagged spend and the
rest, summing to the period's total.</p>
{tag_sections or '<p class="empty">no tags</p>'}

<h2>What the spend bought</h2>
<p class="meta">The gateway bills only successful responses. Waste is spend that bought
nothing: billed error responses and batches that were cancelled. Batches that failed or
expired part-way delivered what they billed (shown apart, not waste).</p>
{
        table(
            with_total(top_rows(waste, 20)),
            [
                "provider",
                "error_response_nanos",
                "cancelled_batch_nanos",
                "waste_nanos",
                "failed_batch_nanos",
                "expired_batch_nanos",
                "ended_badly_nanos",
            ],
            "no spend on failed, expired or cancelled work",
            "waste",
        )
    }

<h2>Priced but not billed</h2>
<p class="meta">Money the gateway priced but did not bill (billing.billed = false): not
spend, in no total above or in the FOCUS export. Finished batches without a bill:
{unbilled["final_without_bill"]:,}. See the view spend_unbilled.</p>
{
        table(
            with_total(top_rows(unbilled["reasons"], 20)),
            ["reason_base", "reason_detail", "batches", "cost_nanos"],
            "nothing priced and left unbilled",
            "priced_not_billed",
        )
    }

<h2>Restated bills</h2>
<p class="meta">A bill the gateway changed after it was first charged. The first charge
stays in its period; the difference is booked on the day it was restated, as in the
FOCUS export (a Correction). See the view spend_restatements.</p>
{
        table(
            with_total(restated),
            [
                "batch_id",
                "provider",
                "original_day",
                "original_nanos",
                "restated_day",
                "delta_nanos",
                "current_nanos",
            ],
            "no restated bills",
            "restated_bills",
        )
    }

<h2>Budgets</h2>
{budget_table}

<h2>Anomalies</h2>
<p class="meta">A day is unusual when it is far above the median of the days with spend
before it (median and median absolute deviation over 28 days), or 3 times the day before
while there is little history. See the view spend_anomalies.</p>
{
        table(
            anomalies,
            ["day", "level", "provider", "model", "cost_nanos", "explanation"],
            "no anomalies",
            "anomalies",
        )
    }

<h2>{forecast_title}</h2>
<p class="{"estimate" if estimate else "meta"}">{esc(forecast_note)}</p>
{
        table(
            forecast,
            [
                "month",
                "as_of",
                "provider",
                "billed_nanos",
                "projected_rest_nanos",
                "running_batches",
                "running_estimate_nanos",
                "stale_batches",
                "forecast_nanos",
            ],
            "no data",
            "forecast",
        )
    }

<h2>Wallet and runway</h2>
<p class="meta">The latest GET /v1/credits reading (an API run records one each night):
reserved is the money the gateway holds for running batches; runway is the available money
over the billed spend per day of the 7 or 30 days before the reading. See the view
wallet_runway.</p>
{
        table(
            [wallet] if wallet else [],
            [
                "recorded_at",
                "balance_nanos",
                "reserved_nanos",
                "available_nanos",
                "burn_7d_nanos",
                "burn_30d_nanos",
                "runway_7d_days",
                "runway_30d_days",
            ],
            "no wallet reading (an API run, or billing credits --file)",
            "wallet",
        )
    }
{
        table(
            runway,
            ["budget_name", "min_days", "runway_days", "rate_basis", "status"],
            "no runway budget",
            "runway",
        )
        if runway
        else ""
    }

<h2>Price checks</h2>
{
        table(
            with_total(prices),
            ["status", "lines", "line_nanos", "diff_nanos"],
            "no priced lines",
            "price_checks",
        )
    }
<p id="price-sentence">{esc(price_sentence(prices))}</p>
<p id="catalogue-sentence">{esc(catalogue_sentence(coverage))}</p>
{table(price_problems, None, "no line is off", "price_problems")}

<h2>Reconciliation</h2>
{
        table(
            recon,
            None,
            "the bill adds up: every batch's lines, breakdown and usage agree",
            "reconciliation",
        )
    }
"""
    payload = json.dumps(data).replace("</", "<\\/")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"{GENERATOR_MARK.decode()}"
        f"<title>LLM gateway spend — {esc(p.label)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style></head><body>{body}"
        f'<script type="application/json" id="report-data">{payload}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
