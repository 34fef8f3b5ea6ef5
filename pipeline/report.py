"""Plain-text rendering for the CLI: the run summary and result tables.

Deterministic output (no terminal-width wrapping) so scripts, cron mail and tests all
see the same text.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pipeline.runner import RunResult

NANOS_PER_USD = 10**9


def usd(nanos: int) -> str:
    """Exact dollars from integer nanos: 1234567890123 -> '$1,234.567890123'."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(int(nanos)), NANOS_PER_USD)
    return f"{sign}${whole:,}.{frac:09d}"


def signed_usd(nanos: int) -> str:
    return ("+" if nanos >= 0 else "") + usd(nanos)


def _listed(header: str, items: list[str], shown: int = 5) -> list[str]:
    """A header line, the first ``shown`` items indented, and how many more there are."""
    lines = [header, *(f"    {item}" for item in items[:shown])]
    if len(items) > shown:
        lines.append(f"    … and {len(items) - shown:,} more")
    return lines


def run_summary(result: RunResult, db: str) -> str:
    s = result.stats
    lines = [
        f"run {result.run_id}: {result.status} in {result.duration_s:.1f}s -> {db}",
        f"  read        {result.records_read:,} records from {result.source}",
        f"  loaded      {s.loaded:,} batches ({s.new:,} new, {s.updated:,} updated, "
        f"{s.unchanged:,} unchanged), {s.lines_loaded:,} pricing lines "
        f"({s.lines_written:,} written)",
    ]
    if s.reread:
        lines.append(
            f"  re-read     {s.reread:,} captured bills read again (same money: not a change)"
        )
    if s.duplicates:
        lines.append(
            f"  duplicates  {s.duplicates:,} repeated batch ids in the input, counted once"
        )
    if s.corrections:
        lines.append(
            f"  corrections {s.corrections:,} FOCUS correction rows for changed bills"
            " (earlier rows kept; see focus_charges.ChargeClass)"
        )
    if s.stale:
        lines.append(f"  stale       {s.stale:,} older snapshots skipped (the database is newer)")
    lines.append(
        f"  rejected    {result.rejected:,}"
        + (" (see table rejected_batches)" if result.rejected else "")
    )
    for source, line, reason in result.reject_samples:
        lines.append(f"    {source}:{line}: {reason}")
    if result.rejected > len(result.reject_samples):
        lines.append(f"    … and {result.rejected - len(result.reject_samples):,} more")
    if result.not_found:
        shown = ", ".join(result.not_found[:5])
        more = f" and {len(result.not_found) - 5} more" if len(result.not_found) > 5 else ""
        lines.append(f"  not found   {len(result.not_found):,}: {shown}{more} (see fetch_errors)")
    if result.not_fetched:
        lines += _listed(
            f"  not fetched {len(result.not_fetched):,} batch(es) asked for (see fetch_errors;"
            " refetched by the next API run):",
            [f"{batch_id}: {reason}" for batch_id, reason in result.not_fetched],
        )
    if result.unreadable:
        lines += _listed(
            f"  unreadable  {len(result.unreadable):,} input(s) could not be read"
            " (see rejected_batches):",
            result.unreadable,
        )
    if s.new_fields:
        lines.append(
            f"  new fields  {', '.join(s.new_fields)} (first seen; loaded, see schema_drift)"
        )
    lines.append(
        f"  mismatches  {s.reconciliation_issues:,}"
        + (" (see view billing_reconciliation)" if s.reconciliation_issues else "")
    )
    lines.append(
        f"  total cost  {usd(s.total_after)} in the database "
        f"({signed_usd(s.total_after - s.total_before)} this run)"
    )
    if result.incomplete:
        lines.append("  INCOMPLETE  some batches asked for are missing (exit code 3)")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row[i], int | float | Decimal) or row[i] is None for row in rows) and rows
        for i in range(len(columns))
    ]

    def fmt(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if numeric[i] else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    out = [fmt(columns), "  ".join("-" * w for w in widths)]
    out.extend(fmt(r) for r in cells)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def to_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows([_cell(v) for v in row] for row in rows)
    return buf.getvalue().rstrip("\n")


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")  # exact: never a float
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def to_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return json.dumps(
        [{c: _json_value(v) for c, v in zip(columns, row, strict=True)} for row in rows],
        indent=2,
        default=str,
    )


FORMATS = {"table": table, "csv": to_csv, "json": to_json}
