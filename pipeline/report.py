"""Plain-text rendering for the CLI: the run summary and result tables.

Deterministic output (no terminal-width wrapping) so scripts, cron mail and tests all
see the same text.
"""

from __future__ import annotations

import csv
import io
import json
import re
import textwrap
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pipeline.config import NANOS_PER_USD
from pipeline.extract import ROWS_REASON
from pipeline.runner import RunResult


def usd(nanos: int) -> str:
    """Exact dollars from integer nanos: 1234567890123 -> '$1,234.567890123'."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(int(nanos)), NANOS_PER_USD)
    return f"{sign}${whole:,}.{frac:09d}"


def usd_cents(nanos: Any) -> str:
    """Dollars to the cent for people, rounded half up: 1234567890123 -> '$1,234.57'.
    The exact figure stays in tables, exports and JSON (:func:`usd`)."""
    cents = (abs(int(nanos or 0)) + 5_000_000) // 10_000_000
    sign = "-" if int(nanos or 0) < 0 and cents else ""
    return f"{sign}${cents // 100:,}.{cents % 100:02d}"


MAX_NAMES = 20  # names a summary lists before 'and N more' (100,000 new fields: 1.6 MB)


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown if len(names) <= MAX_NAMES else f"{shown} and {len(names) - MAX_NAMES:,} more"


def signed_usd(nanos: int) -> str:
    return ("+" if nanos >= 0 else "") + usd(nanos)


def _listed(header: str, items: list[str], shown: int = 5) -> list[str]:
    """A header line, the first ``shown`` items indented, and how many more there are."""
    lines = [header, *(f"    {item}" for item in items[:shown])]
    if len(items) > shown:
        lines.append(f"    … and {len(items) - shown:,} more")
    return lines


def _split_not_fetched(
    items: Sequence[tuple[str, str]],
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Batches not fetched, and batches loaded whose request rows were not."""
    rows = [(b, r) for b, r in items if r.startswith(ROWS_REASON)]
    return [(b, r) for b, r in items if not r.startswith(ROWS_REASON)], rows


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
    lines.extend(f"  note        {note}" for note in result.notes)
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
    batches, rows = _split_not_fetched(result.not_fetched)
    if batches:
        lines += _listed(
            f"  not fetched {len(batches):,} batch(es) asked for (see fetch_errors;"
            " refetched by the next API run):",
            [f"{batch_id}: {reason}" for batch_id, reason in batches],
        )
    if rows:
        lines += _listed(
            f"  rows missing {len(rows):,} batch(es) loaded without all their request rows"
            " (see fetch_errors; asked again by the next API run):",
            [f"{batch_id}: {reason.removeprefix(ROWS_REASON)}" for batch_id, reason in rows],
        )
    if result.unreadable:
        lines += _listed(
            f"  unreadable  {len(result.unreadable):,} input(s) could not be read"
            " (see rejected_batches):",
            result.unreadable,
        )
    if s.new_fields:
        lines.append(f"  new fields  {_some(s.new_fields)} (first seen; loaded, see schema_drift)")
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


def run_summary_json(result: RunResult, db: str, exit_code: int) -> dict[str, Any]:
    """The run summary as one object for schedulers (--log-format json): counts, money in
    integer nanos (and exact dollar strings), status and the exit code."""
    s = result.stats
    return {
        "run_id": result.run_id,
        "status": result.status,
        "exit_code": exit_code,
        "db": db,
        "source": result.source,
        "duration_s": round(result.duration_s, 3),
        "records_read": result.records_read,
        "batches": {
            "loaded": s.loaded,
            "new": s.new,
            "updated": s.updated,
            "unchanged": s.unchanged,
            "reread": s.reread,
            "stale": s.stale,
            "duplicates": s.duplicates,
        },
        "lines_loaded": s.lines_loaded,
        "rejected": result.rejected,
        "reject_samples": [
            {"source": src, "line": line, "reason": reason}
            for src, line, reason in result.reject_samples
        ],
        "not_found": result.not_found,
        "not_fetched": [{"batch_id": b, "reason": r} for b, r in result.not_fetched],
        "request_rows_not_fetched": [b for b, _ in _split_not_fetched(result.not_fetched)[1]],
        "unreadable": result.unreadable,
        "new_fields": s.new_fields[:MAX_NAMES],
        "new_fields_count": len(s.new_fields),
        "reconciliation_issues": s.reconciliation_issues,
        "focus_corrections": s.corrections,
        "total_cost_nanos": _json_value(s.total_after),
        "total_cost_usd": format(Decimal(s.total_after) / NANOS_PER_USD, ".9f"),
        "cost_delta_nanos": _json_value(s.total_after - s.total_before),
        "incomplete": result.incomplete,
    }


# Characters that act on a terminal instead of showing: C0 controls but newline and tab,
# DEL, C1 controls (ESC sequences, OSC 8 links, title changes, bells) and the bidi
# overrides that reorder what a reader sees (RLO, isolates, marks).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` safe for a terminal: every control character shown escaped ('\\x1b',
    '\\u202e'), newlines and tabs kept. Every human output passes through it."""
    return _CONTROL.sub(_escape_control, text)


def _escape_control(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _cell(value: Any) -> str:
    return printable(_raw_cell(value))


def _raw_cell(value: Any) -> str:
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


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None = None) -> str:
    """An aligned text table; with ``width`` (the terminal's), fitted to it: the widest
    text cells are cut with '…', and columns that still do not fit are left out and
    named in a note (``--format csv/json`` shows everything)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [
        bool(rows)
        and all(isinstance(row[i], int | float | Decimal) or row[i] is None for row in rows)
        for i in range(len(columns))
    ]
    shown = list(range(len(columns)))
    if width is not None:
        widths, shown = _fit(columns, widths, numeric, width)

    def clip(value: str, w: int) -> str:
        return value if len(value) <= w else value[: max(w - 1, 0)] + "…"

    def fmt(values: Sequence[str]) -> str:
        return "  ".join(
            clip(values[i], widths[i]).rjust(widths[i])
            if numeric[i]
            else clip(values[i], widths[i]).ljust(widths[i])
            for i in shown
        ).rstrip()

    out = [fmt(columns), "  ".join("-" * widths[i] for i in shown)]
    out.extend(fmt(r) for r in cells)
    note = f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
    hidden = [columns[i] for i in range(len(columns)) if i not in shown]
    if not hidden:
        out.append(note + ")")
        return "\n".join(out)
    plural = "s" if len(hidden) != 1 else ""
    note += f"; {len(hidden)} more column{plural} not shown: {', '.join(hidden)};"
    note += " use --format csv or json for all)"
    # every left-out column named, the note wrapped to the terminal
    out.extend(textwrap.wrap(note, width or 80, break_on_hyphens=False) or [note])
    return "\n".join(out)


MIN_TEXT_WIDTH = 16  # a text column is never cut below this (or its header): a status stays whole
SHORT_TEXT = 24  # nor is a column this narrow (ids, statuses, timestamps): it is left out whole


def _fit(
    columns: Sequence[str], widths: list[int], numeric: list[bool], width: int
) -> tuple[list[int], list[int]]:
    widths = list(widths)

    def total(idx: list[int]) -> int:
        return sum(widths[i] for i in idx) + 2 * (len(idx) - 1)

    shown = list(range(len(columns)))
    # cut the widest long text columns first (never the first: it names the row; never
    # numbers: a cut figure would mislead; never short ones), never below their floor
    while total(shown) > width:
        text = [
            i
            for i in shown[1:]
            if not numeric[i] and widths[i] > max(SHORT_TEXT, MIN_TEXT_WIDTH, len(columns[i]))
        ]
        if not text:
            break
        widest = max(text, key=lambda i: widths[i])
        floor = max(MIN_TEXT_WIDTH, len(columns[widest]))
        widths[widest] = max(floor, widths[widest] - (total(shown) - width))
    # then leave out trailing columns (the first always stays)
    while total(shown) > width and len(shown) > 1:
        shown.pop()
    return widths, shown


# A text cell a spreadsheet would run as a formula (OWASP, CSV injection) is prefixed with
# a single quote; numbers, dates and decimals are written as they are.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> str:
    text = _cell(value)
    return "'" + text if isinstance(value, str) and text.startswith(_FORMULA_START) else text


def to_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([_csv_cell(c) for c in columns])
    w.writerows([_csv_cell(v) for v in row] for row in rows)
    return buf.getvalue().rstrip("\n")


# JavaScript and jq read every JSON number as a double: an integer past 2^53 (nanos above
# about $9M, a HUGEINT sum) would come back rounded, so it is written as a string.
JSON_SAFE_INT = 2**53


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")  # exact: never a float
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > JSON_SAFE_INT:
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def json_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON-ready objects: exact decimal strings, ISO dates."""
    return [{k: _json_value(v) for k, v in row.items()} for row in rows]


def to_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return json.dumps(
        [{c: _json_value(v) for c, v in zip(columns, row, strict=True)} for row in rows],
        indent=2,
        default=str,
    )


def to_jsonl(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return "\n".join(
        json.dumps({c: _json_value(v) for c, v in zip(columns, row, strict=True)}, default=str)
        for row in rows
    )


def to_markdown(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    numeric = [
        bool(rows)
        and all(isinstance(row[i], int | float | Decimal) or row[i] is None for row in rows)
        for i in range(len(columns))
    ]
    out = [
        "| " + " | ".join(esc(c) for c in columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    out.extend("| " + " | ".join(esc(_cell(v)) for v in row) + " |" for row in rows)
    return "\n".join(out)


FORMATS: dict[str, Callable[[Sequence[str], Sequence[Sequence[Any]]], str]] = {
    "table": table,
    "csv": to_csv,
    "json": to_json,
    "jsonl": to_jsonl,
    "markdown": to_markdown,
}
