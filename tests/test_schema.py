"""The column spec drives every consumer: a test fails when any disagrees with it."""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline import schema, transform
from pipeline.work import process_chunk
from tests.helpers import REPO, batch, query, write_jsonl

BATCH_TABLE = (*schema.BATCH, *schema.DERIVED)


def _raw(objs: list[dict[str, Any]]) -> list[Any]:
    import orjson

    from pipeline.extract.files import RawRecord

    return [
        RawRecord("t.jsonl", i + 1, orjson.dumps(o).decode(), pending=True)
        for i, o in enumerate(objs)
    ]


def test_the_frames_have_exactly_the_spec_columns_and_types() -> None:
    out = process_chunk(_raw([batch(1), batch(2)]), 0)
    assert out.batches is not None and out.lines is not None
    for col in BATCH_TABLE:
        assert out.batches.schema[col.name] == col.typed, col.name
    for col in schema.LINE:
        assert out.lines.schema[col.name] == col.typed, col.name
    assert transform.BATCH_SCHEMA == {c.name: c.staged for c in schema.BATCH}
    assert transform.LINE_SCHEMA == {c.name: c.staged for c in schema.LINE}
    assert transform.REQUEST_SCHEMA == {c.name: c.staged for c in schema.REQUEST}


def test_the_contracts_cover_every_spec_column_with_its_rules() -> None:
    contract = transform.BatchesSchema.columns
    assert list(contract) == [c.name for c in BATCH_TABLE]
    for col in BATCH_TABLE:
        assert contract[col.name].nullable is not col.required, col.name
        assert [c.name for c in contract[col.name].checks] == list(col.rules), col.name
    assert list(transform.LinesSchema.columns) == [c.name for c in schema.LINE]


def test_the_database_tables_have_every_spec_column_with_its_type(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    import duckdb

    data = write_jsonl(tmp_path / "a.jsonl", [batch(1)])
    assert run_cli("run", data, "--db", db, "-q").exit_code == 0
    con = duckdb.connect()
    for table, cols in (
        ("batches", BATCH_TABLE),
        ("pricing_lines", schema.LINE),
        ("batch_requests", schema.REQUEST),
    ):
        sql = "select column_name, data_type from duckdb_columns() where table_name = $1"
        types = dict(query(db, sql, [table]))
        for col in cols:
            canonical = con.execute(f"select typeof(null::{col.duckdb})").fetchone()
            assert canonical is not None
            assert types[col.name] == canonical[0], (table, col.name)


def test_an_older_database_gains_a_new_spec_column_on_its_next_run(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    import duckdb

    data = write_jsonl(tmp_path / "a.jsonl", [batch(1)])
    assert run_cli("run", data, "--db", db, "-q").exit_code == 0
    con = duckdb.connect(str(db))
    con.execute("alter table hot.batches drop column usage_currency")  # as if made before it
    con.close()
    assert run_cli("run", data, "--db", db, "-q").exit_code == 0
    assert query(db, "select count(usage_currency), count(*) from batches") == [(0, 1)]


def test_rows_go_by_name_whatever_the_spec_order() -> None:
    cols = list(schema.BATCH)
    shuffled = cols[:]
    random.Random(3).shuffle(shuffled)
    row = {c.name: f"value of {c.name}" for c in cols}
    built = schema.row_builder(shuffled)(row)
    assert built == tuple(f"value of {c.name}" for c in shuffled)
    with pytest.raises(KeyError, match="does not match the column spec: not in the spec: typo"):
        schema.row_builder(cols)({**row, "typo": 1})
    short = dict(row)
    short.pop("cost_nanos")
    with pytest.raises(KeyError, match="does not match the column spec: not filled: cost_nanos"):
        schema.row_builder(cols)(short)


def test_request_counts_land_in_their_own_columns(run_cli: Any, db: Path, tmp_path: Path) -> None:
    obj = batch(1, request_counts={"total": 7, "completed": 5, "failed": 2})
    assert run_cli("run", write_jsonl(tmp_path / "a.jsonl", [obj]), "--db", db, "-q").exit_code == 0
    assert query(
        db,
        "select request_counts_total, request_counts_completed, request_counts_failed from batches",
    ) == [(7, 5, 2)]


def test_every_sourced_column_comes_from_its_path(run_cli: Any, db: Path, tmp_path: Path) -> None:
    """A value placed at each spec column's source path arrives in that column."""
    obj = copy.deepcopy(batch(1))
    obj["usage"] = {"requests": 11, "input_tokens": 12, "output_tokens": 13, "total_tokens": 14,
                    "cost_nanos": 15, "cost_usd": 1.5e-8, "currency": "USD"}  # fmt: skip
    obj["billing"]["pricing_breakdown"].update(completed_requests=21, failed_requests=22,
                                               total_requests=43)  # fmt: skip
    assert run_cli("run", write_jsonl(tmp_path / "a.jsonl", [obj]), "--db", db, "-q").exit_code == 0
    got = dict(
        zip(
            [c.name for c in schema.BATCH],
            query(db, f"select {', '.join(c.name for c in schema.BATCH)} from batches")[0],
            strict=True,
        )
    )
    for col in schema.BATCH:
        if col.source is None or col.kind in ("json", "timestamp", "text_list", "usd_text", "flag"):
            continue
        node: Any = obj
        for part in col.source.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            assert got[col.name] == node, col.name


def test_the_column_reference_is_generated_from_the_spec() -> None:
    assert (REPO / "docs" / "columns.md").read_text() == schema.markdown(), (
        "docs/columns.md is stale: run `python -m pipeline.schema > docs/columns.md`"
    )


def test_a_rule_failure_gives_the_rules_own_words(run_cli: Any, db: Path, tmp_path: Path) -> None:
    bad = batch(1, request_counts={"total": -1, "completed": 0, "failed": 0})
    result = run_cli("run", write_jsonl(tmp_path / "a.jsonl", [bad]), "--db", db)
    assert result.exit_code == 0
    assert query(db, "select reason from rejected_batches") == [
        ("request_counts_total must be >= 0, got -1",)
    ]


# Five fields a reviewer adds to the spec, and nothing else: under billing, at the top
# level, under usage, under the breakdown and in the webhook, of four kinds, one with a rule.
_SPEC_PLUS = """
import sys
from pipeline import schema as s
s.BATCH = (
    *s.BATCH,
    s.C("billing_currency", "text", "billing.currency", "the bill's currency"),
    s.C("priority", "count", "", "scheduling priority"),
    s.C("usage_cached_tokens", "count", "usage.cached_tokens"),
    s.C("breakdown_tax_nanos", "nanos", "billing.pricing_breakdown.tax_nanos", "", "non_negative"),
    s.C("webhook_format", "text", "webhook.format"),
)
if sys.argv[1:] == ["docs"]:
    print(s.markdown())
elif sys.argv[1] == "fast":  # how many records of a file the fast path takes whole
    from pipeline import fastpath
    texts = open(sys.argv[2]).read().splitlines()
    print(len(fastpath.flatten(range(len(texts)), texts).taken))
else:
    from pipeline.cli import cli
    cli(sys.argv[1:], prog_name="billing")
"""


@pytest.mark.parametrize("fast_path", ["0", "1"])
def test_a_field_added_to_the_spec_alone_is_read_checked_redacted_and_loaded(
    tmp_path: Path, fast_path: str
) -> None:
    """ "A reviewer can add a field in one place": one spec line per field, and the
    normaliser, the fast path, the contracts, the table and the docs all follow."""
    script = tmp_path / "spec_plus.py"
    script.write_text(_SPEC_PLUS)

    def plus(obj: dict[str, Any], **fields: Any) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["billing"]["currency"] = fields.get("currency", "USD")
        obj["priority"] = fields.get("priority", 3)
        obj["usage"] = {"requests": 2, "cached_tokens": fields.get("cached", 40)}
        obj["billing"]["pricing_breakdown"]["tax_nanos"] = fields.get("tax", 7)
        obj["webhook"] = {"url": "https://hooks.example.com/b", "format": "json"}
        return obj

    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            plus(batch(1)),
            plus(batch(2), currency="sk-proj-SPECPLUSsecret1234567890abcdef"),
            plus(batch(3), priority="high"),
            plus(batch(4), tax=-5),
        ],
    )
    db = tmp_path / "plus.duckdb"
    env = {**os.environ, "BILLING_FAST_PATH": fast_path}
    done = subprocess.run(
        [sys.executable, script, "run", src, "--db", db, "--workers", "1", "-q"],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert query(
        db,
        "select column_name, data_type from information_schema.columns where table_name ="
        " 'batches' and table_schema = 'main' and column_name in ('billing_currency', 'priority', 'usage_cached_tokens',"
        " 'breakdown_tax_nanos', 'webhook_format') order by column_name",
    ) == [
        ("billing_currency", "VARCHAR"),
        ("breakdown_tax_nanos", "BIGINT"),
        ("priority", "BIGINT"),
        ("usage_cached_tokens", "BIGINT"),
        ("webhook_format", "VARCHAR"),
    ]
    assert query(
        db,
        "select id[-1:], billing_currency, priority, usage_cached_tokens, breakdown_tax_nanos,"
        " webhook_format, extra from batches order by id",
    ) == [("1", "USD", 3, 40, 7, "json", None), ("2", "[REDACTED]", 3, 40, 7, "json", None)]
    assert query(db, "select batch_id[-1:], reason from rejected_batches order by batch_id") == [
        ("3", "priority must be an integer, got str 'high'"),
        ("4", "breakdown_tax_nanos must be >= 0, got -5"),
    ]
    assert query(db, "select field from schema_drift") == []
    assert "SPECPLUS" not in db.read_bytes().decode("latin-1")
    docs = subprocess.run(
        [sys.executable, script, "docs"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    assert "| `billing_currency` | text | varchar | `billing.currency` |  | the bill" in docs
    taken = subprocess.run(
        [sys.executable, script, "fast", src], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    # all but the text in a count column (its reason is the normaliser's); the negative
    # tax is well typed, and the contract both paths meet rejects it
    assert taken == "3\n"
