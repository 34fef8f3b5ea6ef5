"""`billing run` end to end through the CLI runner, asserting exact outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import SAMPLE, batch, query, scalar, write_jsonl

BIG = 9_007_199_254_740_993  # 2**53 + 1: not representable as a float


def sample_truth() -> dict[str, Any]:
    """Expected figures computed straight from the sample files with Python ints."""
    latest: dict[str, dict[str, Any]] = {}
    bad = 0
    for path in sorted(SAMPLE.iterdir()):
        if path.suffix == ".json":
            items = orjson.loads(path.read_bytes())["data"]
        else:
            items = []
            for line in path.read_bytes().splitlines():
                try:
                    items.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    bad += 1
        for obj in items:
            latest[obj["id"]] = obj
    return {"latest": latest, "bad_json": bad}


def test_sample_run_loads_exact_totals_and_is_idempotent(run_cli: Any, db: Path) -> None:
    result = run_cli("run", "--input", SAMPLE, "--db", db)
    assert result.exit_code == 0, result.output
    truth = sample_truth()["latest"]
    good = {
        k: v
        for k, v in truth.items()
        if k.startswith("batch_")
        and k[6:12] not in ("NEGATI", "BADTIM", "BILLIN", "FLOATN", "TRUNCA")
    }
    expected_cost = sum((o.get("billing") or {}).get("cost_nanos", 0) for o in good.values())
    expected_lines = sum(len(o["pricing_lines"]) for o in good.values())
    by_provider: dict[str, int] = {}
    for o in good.values():
        cost = (o.get("billing") or {}).get("cost_nanos", 0)
        by_provider[o["provider"]] = by_provider.get(o["provider"], 0) + cost

    assert scalar(db, "select count(*) from batches") == len(good) == 324
    assert scalar(db, "select count(*) from pricing_lines") == expected_lines
    assert scalar(db, "select sum(cost_nanos) from batches") == expected_cost
    assert scalar(db, "select count(*) from rejected_batches") == 6
    assert (
        dict(query(db, "select provider, sum(cost_nanos) from spend_by_provider group by 1"))
        == by_provider
    )
    assert (
        f"loaded      324 batches (324 new, 0 updated, 0 unchanged), {expected_lines} pricing lines"
        in result.output
    )
    assert "rejected    6 (see table rejected_batches)" in result.output
    # 3 repeated lines, and 18 second GETs of captured bills (charged=false, already_billed)
    assert "duplicates  21 repeated batch ids in the input, counted once" in result.output
    assert (
        scalar(
            db, "select count(*) from batches where captured and billing_reason = 'already_billed'"
        )
        == 0
    )

    again = run_cli("run", "--input", SAMPLE, "--db", db)
    assert again.exit_code == 0
    assert "(0 new, 0 updated, 324 unchanged)" in again.output
    assert "(+$0.000000000 this run)" in again.output
    assert scalar(db, "select sum(cost_nanos) from batches") == expected_cost
    assert scalar(db, "select count(*) from pricing_lines") == expected_lines
    assert scalar(db, "select count(*) from rejected_batches") == 6
    assert scalar(db, "select sum(times_seen) from rejected_batches") == 12
    assert query(db, "select count(*), sum(cost_delta_nanos) from load_runs") == [
        (2, expected_cost)
    ]


def test_no_webhook_secret_anywhere_in_the_database_file(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    broken = b'{"id": "batch_BROKEN", "webhook": {"secret": "whsec_TOPSECRET", "url": "u"'
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1), broken])
    assert run_cli("run", "--input", f, "--db", db).exit_code == 0
    for path in tmp_path.glob("billing.duckdb*"):
        assert b"TOPSECRET" not in path.read_bytes()
    raw = scalar(db, "select raw_text from rejected_batches")
    assert raw == '{"id": "batch_BROKEN", "webhook": {"secret": "[REDACTED]", "url": "u"'
    assert "TOPSECRET" not in str(query(db, "select * from batches"))


def test_cost_beyond_float_precision_sums_exactly(run_cli: Any, db: Path, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "big.jsonl", [batch(1, cost_nanos=BIG), batch(2, cost_nanos=BIG)])
    assert run_cli("run", "--input", f, "--db", db).exit_code == 0
    assert scalar(db, "select sum(cost_nanos) from batches") == 2 * BIG
    assert scalar(db, "select cost_nanos from spend_by_provider") == 2 * BIG
    assert str(scalar(db, "select cost_usd from spend_by_provider")) == "18014398.509481986"
    assert scalar(db, "select typeof(cost_usd) from spend_by_session limit 1") == "DECIMAL(38,9)"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"status": "completed"}, "id is missing"),
        ({"id": "", "status": "completed"}, "id is missing or empty"),
        ({"id": "   "}, "id is missing or empty"),
        (batch(9, cost_nanos=-1), "cost_nanos must be >= 0, got -1"),
        (batch(9, cost_nanos=1.5), "billing.cost_nanos must be an integer, got 1.5"),
        (batch(9, cost_nanos="100"), "billing.cost_nanos must be an integer, got str '100'"),
        (batch(9, billing="charged"), "billing must be an object or null, got str 'charged'"),
        (
            batch(9, created_at="not-a-date"),
            "created_at 'not-a-date' is not a Unix time or an ISO-8601 timestamp",
        ),
        (
            batch(9, pricing_lines=[{"dimension": "x", "line_nanos": -3}]),
            "pricing line: line_nanos must be >= 0, got -3",
        ),
        (
            batch(9, pricing_lines=[{"dimension": "x", "line_nanos": 2.5}]),
            "pricing_lines[0].line_nanos must be an integer, got 2.5",
        ),
        (batch(9, pricing_lines=["oops"]), "pricing_lines[0] must be an object, got str"),
        ([1, 2], "not a batch object: got a JSON list"),
    ],
)
def test_each_validation_rule_quarantines_with_a_reason(
    run_cli: Any, db: Path, tmp_path: Path, record: Any, reason: str
) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1), record, batch(2)])
    result = run_cli("run", "--input", f, "--db", db)
    assert result.exit_code == 0, result.output
    assert "rejected    1 (see table rejected_batches)" in result.output
    assert query(db, "select source, line, reason from rejected_batches") == [(str(f), 2, reason)]
    raw = orjson.dumps(record).decode().replace("whsec_TOPSECRET", "[REDACTED]")
    assert scalar(db, "select raw_text from rejected_batches") == raw
    assert scalar(db, "select count(*) from batches") == 2  # the rest of the run went on
    assert scalar(db, "select run_id from rejected_batches") == scalar(
        db, "select run_id from load_runs"
    )


def test_strict_turns_rejects_into_a_failed_run_that_commits_nothing(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1), b"{oops"])
    result = run_cli("run", "--input", f, "--db", db, "--strict")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "billing: error: --strict: 1 rejected record(s), 0 reconciliation mismatch(es), "
        "0 batch(es) not fetched and 0 unreadable input(s); nothing was committed"
    )
    assert not db.exists()  # a failed first run leaves no file behind
    assert sorted(p.name for p in db.parent.iterdir()) == ["in.jsonl"]  # nor staged chunks


def test_strict_failure_leaves_an_existing_database_unchanged(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [batch(1)])
    assert run_cli("run", "--input", good, "--db", db).exit_code == 0
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [batch(2), b"{oops"])
    assert run_cli("run", "--input", mixed, "--db", db, "--strict").exit_code == 1
    assert query(db, "select id from batches") == [(batch(1)["id"],)]
    assert scalar(db, "select count(*) from load_runs") == 1
    assert scalar(db, "select count(*) from rejected_batches") == 0


def test_same_batch_twice_in_one_input_is_counted_once(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [batch(1), batch(1)])
    b = write_jsonl(tmp_path / "b.jsonl", [batch(1)])
    result = run_cli("run", "--input", a, "--input", b, "--db", db)
    assert "duplicates  2 repeated batch ids in the input, counted once" in result.output
    assert query(db, "select count(*), sum(cost_nanos) from batches") == [(1, 300_000_000)]
    assert scalar(db, "select count(*) from pricing_lines") == 2


def test_usage_errors_exit_2_with_one_line(run_cli: Any, db: Path, tmp_path: Path) -> None:
    missing = run_cli("run", "--input", tmp_path / "nope.jsonl", "--db", db)
    assert missing.exit_code == 2
    assert missing.output == f"billing: error: input not found: {tmp_path / 'nope.jsonl'}\n"
    none = run_cli("run", "--db", db)
    assert none.exit_code == 2
    assert (
        none.output
        == "billing: error: nothing to load: pass INPUT files or folders (or --ids-file/--list)\n"
    )
    assert run_cli("run", "--bogus").exit_code == 2
    assert not db.exists()


def test_database_file_is_owner_only(run_cli: Any, db: Path, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1)])
    assert run_cli("run", "--input", f, "--db", db).exit_code == 0
    assert db.stat().st_mode & 0o777 == 0o600


def test_python_dash_m_works(tmp_path: Path, db: Path) -> None:
    import subprocess
    import sys

    f = write_jsonl(tmp_path / "in.jsonl", [batch(1)])
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--input", str(f), "--db", str(db)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "total cost  $0.300000000 in the database (+$0.300000000 this run)" in proc.stdout


def test_worker_processes_give_the_same_result_as_one(run_cli: Any, tmp_path: Path) -> None:
    items: list[Any] = [batch(i, cost_nanos=i * 1000) for i in range(1, 12)]
    items[4] = b"{broken"
    items[7] = batch(99, billing=[1])
    items.append(batch(3, cost_nanos=3000))  # a repeat, across chunks
    f = write_jsonl(tmp_path / "in.jsonl", items)
    outputs = {}
    for workers in ("1", "2"):
        db = tmp_path / f"w{workers}.duckdb"
        result = run_cli("run", "--input", f, "--db", db, "--chunk-size", "3", "--workers", workers)
        assert result.exit_code == 0, result.output
        outputs[workers] = (
            query(db, "select id, cost_nanos, source_line from batches order by id"),
            query(db, "select line, reason from rejected_batches order by line"),
            query(db, "select count(*) from pricing_lines"),
            result.output.split("\n", 1)[1],
        )
    assert outputs["1"] == outputs["2"]
    assert outputs["1"][1][0][0] == 5 and outputs["1"][1][1] == (
        8,
        "billing must be an object or null, got list of 1 item",
    )
    assert sum(c for _, c, _ in outputs["1"][0]) == sum(
        i * 1000 for i in range(1, 12) if i not in (5, 8)
    )


def test_the_readme_demo_commands_in_the_makefile_run(run_cli: Any, db: Path) -> None:
    """`make demo` is a newcomer's first command: each `billing` line of it must work."""
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    commands = [
        line.strip().removeprefix("$(BIN)/billing").split()
        for line in recipe.splitlines()
        if line.strip().startswith("$(BIN)/billing")
    ]
    assert [c[0] for c in commands] == ["run", "query"]
    outputs = []
    for command in commands:
        args = [str(db) if a == "data/billing.duckdb" else a for a in command]
        result = run_cli(*args)
        assert result.exit_code == 0, (args, result.output)
        outputs.append(result.output)
    assert "total cost  $690.661169561 in the database" in outputs[0]
    assert outputs[1].splitlines()[0].split() == [
        "month",
        "provider",
        "batches",
        "billed_batches",
        "cost_nanos",
        "cost_usd",
    ]


def test_a_new_database_from_the_cached_template_equals_one_built_in_place(
    run_cli: Any, tmp_path: Path
) -> None:
    """New databases start as a copy of an empty one cached per version; where no cache
    folder can be written the views are created in place: the same database either way."""
    path = write_jsonl(tmp_path / "in.jsonl", [batch(1), batch(2, provider="anthropic")])
    cache = tmp_path / "cache"
    (tmp_path / "not-a-folder").write_text("x")
    made = {}
    for name, home in (("cached", cache), ("in_place", tmp_path / "not-a-folder")):
        db = tmp_path / f"{name}.duckdb"
        result = run_cli("run", path, "--db", db, "-q", env={"XDG_CACHE_HOME": str(home)})
        assert result.exit_code == 0, result.output
        made[name] = (
            query(db, "select view_name from duckdb_views() where not internal order by 1"),
            query(db, "select key, value from pipeline_meta where key = 'views_key'"),
            query(db, "select provider, cost_nanos from spend_by_provider order by 1"),
        )
    assert made["cached"] == made["in_place"]
    assert len(made["cached"][0]) > 20
    assert [p.name.startswith("empty-") for p in (cache / "billing").iterdir()] == [True]
