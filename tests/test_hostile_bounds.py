"""Hostile inputs, round 2: a bound on everything read (stdin, replays, ids files, pipes,
request-row pages, the API part of a run, `billing sql` results) and odd line endings.
Each case asserts what was loaded, kept aside and shown, and the exit code."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipeline.extract import api as api_module
from pipeline.extract import files as files_module
from tests.gateway import TOKEN, Gateway, Reply, serve
from tests.helpers import batch, billing, query, scalar, write_jsonl

# the hostile battery: every case ends within 60 s (and under 1 GiB: tests/conftest.py)
pytestmark = pytest.mark.timeout(60)

ENV = {"PHASEO_API_KEY": TOKEN}


def _ids(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


def test_stdin_from_dev_zero_stops_with_one_line_and_exit_3(db: Path) -> None:
    """`billing run - < /dev/zero` read for ever (45 s and counting): now one line with no
    end stops the reading after 1 GiB, and the night says it is incomplete."""
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run(
            billing("run", "-", "--db", db),
            stdin=zero,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 3, proc.stderr
    assert (
        "<stdin>:0: cannot read: line 1: a line of more than 1,024 MiB with no end:"
        " stopped reading here (the records after it were not read)"
    ) in proc.stdout
    assert scalar(db, "select count(*) from batches") == 0
    assert scalar(db, "select count(*) from rejected_batches") == 1


def test_an_endless_line_after_good_records_keeps_them_and_says_what_was_not_read(
    run_cli: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "MAX_LINE_SKIP", 32 * 1024 * 1024)
    good = b"".join(json.dumps(batch(i)).encode() + b"\n" for i in (1, 2))
    data = good + b"x" * (40 * 1024 * 1024)  # no newline: 'endless' past the 32 MiB bound
    result = run_cli("run", "-", "--db", db, data=data)
    assert result.exit_code == 3, result.output
    assert scalar(db, "select count(*) from batches") == 2
    assert "line 3: a line of more than 32 MiB with no end: stopped reading here" in result.output
    # the same from a file: the records before it load, the rest is named as not read
    path = tmp_path / "night.jsonl"
    more = b"".join(json.dumps(batch(i)).encode() + b"\n" for i in (3, 4))
    path.write_bytes(more + b"y" * (40 * 1024 * 1024))
    result = run_cli("run", path, "--db", db)
    assert result.exit_code == 3, result.output
    assert scalar(db, "select count(*) from batches") == 4


def test_a_replay_of_dev_zero_or_a_huge_line_is_bounded(
    run_cli: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--replay /dev/zero` took 18 GB: archive lines are read a block at a time."""
    monkeypatch.setattr(api_module, "MAX_ARCHIVE_LINE_BYTES", 1024 * 1024)
    monkeypatch.setattr(files_module, "MAX_LINE_SKIP", 16 * 1024 * 1024)
    rss = psutil.Process().memory_info().rss
    zero = run_cli("run", "--replay", "/dev/zero", "--db", db)
    assert zero.exit_code == 3, zero.output
    assert "cannot read: a line of more than 16 MiB with no end" in zero.output
    good = {"batch_id": batch(1)["id"], "kind": "batch", "status": 200,
            "body": json.dumps(batch(1))}  # fmt: skip
    archive = tmp_path / "fetch.jsonl"
    archive.write_bytes(b"A" * (3 * 1024 * 1024) + b"\n" + json.dumps(good).encode() + b"\n")
    huge = run_cli("run", "--replay", archive, "--db", db)
    assert huge.exit_code == 0, huge.output
    assert scalar(db, "select count(*) from batches") == 1
    assert query(db, "select reason from rejected_batches where source = $1", [str(archive)]) == [
        ("archive line is 3,145,728 bytes, over 1 MiB",)
    ]
    assert psutil.Process().memory_info().rss - rss < 300 * 1024 * 1024


def test_an_ids_file_that_never_ends_or_a_pipe_nobody_writes_is_one_line(
    run_cli: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--ids-file /dev/zero` took 21 GB; a FIFO with no writer hung for ever."""
    gw = Gateway(batches={batch(1)["id"]: batch(1)})
    with serve(gw):
        zero = run_cli("run", "--ids-file", "/dev/zero", "--base-url", gw.url, "--db", db, env=ENV)
        assert zero.exit_code == 2, zero.output
        assert (
            zero.output
            == "billing: error: /dev/zero: over 64 MiB of ids: split it into several runs\n"
        )
        fifo = tmp_path / "ids.fifo"
        os.mkfifo(fifo)
        monkeypatch.setattr(api_module, "IDS_FILE_DEADLINE_S", 0.3)
        started = time.monotonic()
        hung = run_cli("run", "--ids-file", fifo, "--base-url", gw.url, "--db", db, env=ENV)
        assert time.monotonic() - started < 10
        assert hung.exit_code == 2, hung.output
        assert hung.output == (
            f"billing: error: {fifo}: nothing finished writing it within 0.3 s (a pipe with no"
            " writer, or one that never closes)\n"
        )
    assert not db.exists()  # nothing fetched, nothing written
    assert gw.requests == []


def test_a_permanent_429_cannot_hold_the_night_past_its_api_deadline(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """24 ids under a permanent 429 took 26 s (1,000 would take ~10 hours): the API part
    of a run now has one deadline; what it did not fetch is recorded, exit 3."""
    ids = [batch(i)["id"] for i in range(1, 25)]
    gw = Gateway(everything=Reply(429, {"error": "rate_limited"}, {"Retry-After": "30"}))
    started = time.monotonic()
    with serve(gw):
        result = run_cli(
            "run", "--ids-file", _ids(tmp_path, ids), "--base-url", gw.url, "--db", db,
            "--retries", "5", "--api-deadline", "1", "--concurrency", "4", env=ENV,
        )  # fmt: skip
    assert time.monotonic() - started < 10
    assert result.exit_code == 3, result.output
    reasons = query(db, "select reason, count(*) from fetch_errors group by 1")
    assert reasons == [
        ("the run's API deadline (1 s, --api-deadline) passed before it was fetched", 24)
    ]
    assert "not fetched 24 batch(es)" in result.output


def test_request_rows_past_their_byte_bound_are_reported_missing_not_held(
    run_cli: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_gateway_fidelity import nightly, rows_for

    b = batch(1)
    monkeypatch.setattr(api_module, "MAX_REQUEST_ROWS_BYTES", 20_000)
    gw = Gateway(
        batches={b["id"]: b}, refinalize=True, rows={b["id"]: rows_for(b, ["gpt-5"] * 300)},
        row_cap=50,
    )  # fmt: skip
    with serve(gw):
        result = nightly(run_cli, gw, db, tmp_path, [b["id"]])
    assert result.exit_code == 3, result.output
    assert scalar(db, "select count(*) from batches") == 1  # the batch itself loaded
    assert query(db, "select reason from fetch_errors") == [
        ("request rows: more than 20,000 bytes of request rows",)
    ]
    assert "rows missing 1 batch(es) loaded without all their request rows" in result.output


def test_billing_sql_results_are_bounded_in_memory_and_rows(
    run_cli: Any, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`billing sql "select range(200000000)"` took 12.7 GB: memory_limit does not bound
    a result. The query now runs under an address-space bound, and a result of more rows
    than it prints is said so (exit 3)."""
    sample_db = db
    assert (
        run_cli("run", write_jsonl(db.parent / "one.jsonl", [batch(1)]), "--db", db).exit_code == 0
    )
    rss = psutil.Process().memory_info().rss
    big = run_cli("sql", "--db", sample_db, "select range(200000000)")
    assert big.exit_code == 2
    assert big.output == (
        "billing: error: the query needs more than 768 MiB of memory (billing sql's bound):"
        " aggregate, filter or add a limit\n"
    )
    assert psutil.Process().memory_info().rss - rss < 900 * 1024 * 1024
    import pipeline.cli as cli_module

    monkeypatch.setattr(cli_module, "MAX_SQL_ROWS", 1000)
    many = run_cli("sql", "--db", sample_db, "select * from range(5000)", "--format", "csv")
    assert many.exit_code == 3
    assert many.stdout.splitlines()[:2] == ["range", "0"]
    assert len(many.stdout.splitlines()) == 1001  # the header and 1,000 rows
    assert many.stderr == (
        "billing: warning: more than 1,000 rows: only the first 1,000 were printed"
        " (pass --limit, aggregate, or use billing export)\n"
    )
    chosen = run_cli("sql", "--db", sample_db, "select * from range(5000)", "--limit", "10")
    assert chosen.exit_code == 0  # a limit the user chose is not a missing result
    after = run_cli("sql", "--db", sample_db, "select count(*) from range(3000000)")
    assert after.exit_code == 0 and "3000000" in after.output.replace(",", "")  # no cap left


@pytest.mark.parametrize("via", ["file", "stdin", "big file"])
def test_cr_only_line_endings_load_every_record(
    run_cli: Any, db: Path, tmp_path: Path, via: str
) -> None:
    """Old Mac line endings (CR alone) rejected every record of the file as one."""
    n = 3000 if via == "big file" else 3  # a big file goes to the workers as byte slices
    data = b"\r".join(json.dumps(batch(i)).encode() for i in range(1, n + 1)) + b"\r"
    path = tmp_path / "mac.jsonl"
    path.write_bytes(data)
    result = (
        run_cli("run", "-", "--db", db, data=data)
        if via == "stdin"
        else run_cli("run", path, "--db", db)
    )
    assert result.exit_code == 0, result.output
    assert scalar(db, "select count(*) from batches") == n
    assert scalar(db, "select count(*) from rejected_batches") == 0


def test_a_nul_inside_an_id_is_kept_aside_not_loaded(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    evil = batch(2)
    evil["id"] = "batch_0000\u00000000000000000000000002"
    path = write_jsonl(tmp_path / "in.jsonl", [batch(1), evil])
    result = run_cli("run", path, "--db", db)
    assert result.exit_code == 0, result.output
    assert query(db, "select id from batches") == [(batch(1)["id"],)]
    reasons = query(db, "select reason from rejected_batches")
    assert len(reasons) == 1 and "control character" in reasons[0][0], reasons
    assert "\x00" not in result.output


# -- floods: many providers, keys, fields ------------------------------------------------


def _flood(path: Path, count: int, **make: Any) -> Path:
    with path.open("w") as fh:
        for i in range(1, count + 1):
            fh.write(json.dumps(batch(i, **{k: f(i) for k, f in make.items()})) + "\n")
    return path


def test_thousands_of_providers_give_a_bounded_report_and_lake(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """50,000 providers: the report ran out of memory (one table column each) and the
    Parquet export ran past 15 minutes (one folder each); a 300-character name failed it."""
    n = 3000
    path = _flood(tmp_path / "many.jsonl", n, provider=lambda i: f"p{i:05d}" + "x" * 300 * (i == 7))
    assert run_cli("run", path, "--db", db, "-q").exit_code == 0
    out = tmp_path / "r.html"
    result = run_cli("report", "--db", db, "--out", out, "--month", "2026-11")
    assert result.exit_code == 0, result.output
    assert result.output == f"{out}: November 2026, $900.000000000\n"
    page = out.read_text()
    day = page.split("<h2>Spend over time</h2>")[1].split("</thead>")[0]
    assert day.count("<th>") == 1 + 8 + 1 + 1  # day, the 8 largest, (others), total
    assert "(others) (USD)" in day
    by_provider = page.split("<h2>By provider</h2>")[1].split("<h2>")[0]
    assert "(others) (2,980)" in by_provider  # the 20 largest, then one row for the rest
    from urllib.parse import unquote

    href = by_provider.split('href="data:text/csv;charset=utf-8,')[1].split('"')[0]
    assert unquote(href).splitlines()[-2:] == [
        '"(others) (2,980)",2980,894000000000,894',
        "total,3000,900000000000,900",
    ]
    lake = tmp_path / "lake"
    exported = run_cli("export", "--db", db, "--out", lake)
    assert exported.exit_code == 0, exported.output
    folders = sorted(p.name for p in (lake / "batches" / "month=2026-11").iterdir())
    assert len(folders) == 65  # the 64 providers with most batches and one '_other'
    assert "provider_key=_other" in folders
    assert all(len(f) < 80 for f in folders)
    import duckdb

    con = duckdb.connect()
    total, providers = con.execute(
        "select sum(cost_nanos), count(distinct provider) from read_parquet($1, hive_partitioning = true)",
        [str(lake / "batches" / "**" / "*.parquet")],
    ).fetchall()[0]
    assert (total, providers) == (900_000_000_000, n)  # every provider's own name kept


def test_thousands_of_metadata_keys_do_not_exhaust_any_reader(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """100 batches of 20,000 metadata keys ran the report, the FOCUS export and check out
    of memory (json_each's rows each carry the whole document)."""
    keys = {f"k{j}": f"v{j}" for j in range(20_000)}
    path = _flood(tmp_path / "keys.jsonl", 10, metadata=lambda i: {**keys, "team": f"t{i % 3}"})
    assert run_cli("run", path, "--db", db, "-q").exit_code == 0
    out = tmp_path / "r.html"
    assert run_cli("report", "--db", db, "--out", out, "--month", "2026-11").exit_code == 0
    page = out.read_text()
    assert page.count("<h3>") == 20  # the 20 keys most batches carry, each its own section
    checked = run_cli("check", "--db", db, "--month", "2026-11")
    assert checked.exit_code == 0, checked.output
    focus = tmp_path / "focus"
    assert run_cli("export", "--db", db, "--format", "focus", "--out", focus).exit_code == 0
    import duckdb

    con = duckdb.connect()
    tags = con.execute(
        "select Tags from read_parquet($1) limit 1",
        [str(focus / "focus_charges" / "**" / "*.parquet")],
    ).fetchall()[0][0]
    assert len(json.loads(tags)) == 20_001  # every key kept in FOCUS Tags


def test_a_key_given_twice_counts_once_and_nulls_are_no_tag(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    path = tmp_path / "twice.jsonl"
    one = json.dumps(batch(1, metadata={"team": "a", "gone": None})).encode()
    two = (
        json.dumps(batch(2))
        .encode()
        .replace(b'"metadata": {', b'"metadata": {"team": "x", "team": "y", ')
    )
    path.write_bytes(one + b"\n" + two + b"\n")
    assert run_cli("run", path, "--db", db, "-q").exit_code == 0
    # a key given twice is read as JSON parsers do (the last value), once
    assert query(db, "select batch_id, tag_key, tag_value from int_batch_tags order by all") == [
        (batch(1)["id"], "gone", None),
        (batch(1)["id"], "team", "a"),
        (batch(2)["id"], "team", "search"),
    ]
    assert query(
        db,
        "select tag_value, sum(cost_nanos) from spend_by_tag where tag_key = 'team' group by 1 order by 1",
    ) == [("a", 300_000_000), ("search", 300_000_000)]


def test_thousands_of_new_fields_make_a_short_summary(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    b = batch(1)
    b.update({f"new_field_{j:06d}": j for j in range(5_000)})  # 100,000 made 1.6 MB
    result = run_cli("run", write_jsonl(tmp_path / "f.jsonl", [b]), "--db", db)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("  new fields"))
    assert line.endswith("new_field_000019 and 4,980 more (first seen; loaded, see schema_drift)")
    assert len(result.output) < 3000
    assert scalar(db, "select count(*) from schema_drift") >= 5_000


def test_focus_csv_cells_are_neutralised_and_every_row_whole(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    import csv

    evil = batch(1, provider='=HYPERLINK("http://x")', session_id="-2+3", metadata={"t": "@x"})
    assert (
        run_cli("run", write_jsonl(tmp_path / "e.jsonl", [evil]), "--db", db, "-q").exit_code == 0
    )
    out = tmp_path / "focus"
    assert run_cli("export", "--db", db, "--format", "focus-csv", "--out", out).exit_code == 0
    (file,) = (out / "focus_charges").glob("*/*.csv")
    rows = list(csv.DictReader(file.open(newline="")))
    assert len(rows) == 2 and all(None not in r for r in rows)  # no row with extra cells
    assert {r["PublisherName"] for r in rows} == {'\'=HYPERLINK("http://x")'}
    assert {r["x_SessionId"] for r in rows} == {"'-2+3"}
    assert {r["BilledCost"] for r in rows} == {"0.100000000", "0.200000000"}  # numbers as they are
    assert all(not v.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for v in r.values())


def test_a_huge_json_array_of_tiny_values_is_refused_before_parsing(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """A JSON document is parsed whole: 10 million `{}` (30 MB) took 910 MB to parse, a
    250 MB one would take gigabytes. It is counted first and refused; JSONL streams."""
    big = tmp_path / "empties.json"
    big.write_bytes(b"[" + b",".join([b"{}"] * 5_000_000) + b"]")
    good = write_jsonl(tmp_path / "good.jsonl", [batch(1)])
    result = run_cli("run", big, good, "--db", db)
    assert result.exit_code == 3, result.output
    assert (
        f"{big}:0: a JSON document of about 10,000,000 values, over the 8,000,000 read whole:"
        " write it as JSONL (one batch a line)"
    ) in result.output
    assert scalar(db, "select count(*) from batches") == 1  # the other input loaded
    assert scalar(db, "select count(*) from rejected_batches") == 1
