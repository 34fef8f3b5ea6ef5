"""Validate stage: check frames against their pandera contracts, split off bad records.

Every row is tagged with ``_rec`` (the record's position in its chunk). A failed check on
a batch row, or on any of its pricing lines, quarantines the whole record with a reason
in words; the rest of the chunk goes on.
"""

from __future__ import annotations

from collections import defaultdict

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from pipeline import schema
from pipeline.transform import REC, BatchesSchema, LinesSchema


def _reason(column: str | None, check: str | None, value: object) -> str:
    """The rule's own words (pipeline/schema.py RULES), keyed by the check's name."""
    return schema.reason(check, column, value)


def failures(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> dict[int, list[str]]:
    """Map each failing row's ``_rec`` to its reasons. Schema-level errors are raised."""
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
    except SchemaError as exc:  # pragma: no cover - a non-lazy path
        raise RuntimeError(f"{schema.name} contract broken: {exc}") from exc
    else:
        return {}
    rows = cases.filter(pl.col("index").is_not_null())
    if rows.height < cases.height:  # a column/dtype problem: a bug, not bad data
        problems = cases.filter(pl.col("index").is_null()).select("column", "check").rows()
        raise RuntimeError(f"{schema.name} contract broken: {problems}")
    recs = frame.get_column(REC)
    out: dict[int, list[str]] = defaultdict(list)
    for column, check, value, index in rows.select(
        "column", "check", "failure_case", "index"
    ).iter_rows():
        reason = _reason(column, check, value)
        rec = int(recs[int(index)])
        if reason not in out[rec]:
            out[rec].append(reason)
    return dict(out)


def split_valid(
    batches: pl.DataFrame, lines: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, dict[int, str]]:
    """Return (valid batches, valid lines, {_rec: reason}) for the rejected records."""
    bad: dict[int, list[str]] = failures(BatchesSchema, batches)
    for rec, reasons in failures(LinesSchema, lines).items():
        bad.setdefault(rec, []).extend(f"pricing line: {r}" for r in reasons)
    if not bad:
        return batches, lines, {}
    keep = ~pl.col(REC).is_in(list(bad))
    return (
        batches.filter(keep),
        lines.filter(keep),
        {rec: "; ".join(reasons) for rec, reasons in bad.items()},
    )
