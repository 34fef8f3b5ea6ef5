"""The hostile-input battery: odd encodings, huge and deep values, credentials in every
spelling, HTTP bodies that never end, options pointed at the wrong place, Ctrl-C and
kill -9. Every case asserts what was loaded, what was kept aside (with which reason)
and what the user was shown. Grow it with every bug."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psutil
import pytest

from pipeline.extract import read_chunks
from pipeline.extract.files import MAX_RAW_KEPT, find_inputs
from tests.gateway import TOKEN, Gateway, Reply, serve
from tests.helpers import SAMPLE, batch, billing, query, scalar, start_big_run, write_jsonl

# the hostile battery: every case ends within 60 s (and under 1 GiB: tests/conftest.py)
pytestmark = pytest.mark.timeout(60)

ENV = {"PHASEO_API_KEY": TOKEN}


def everything_stored(db: Path) -> str:
    """Every value of every table and view of the database, as one text."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [
            r[0]
            for r in con.execute(
                "select table_name from duckdb_tables() union all select view_name from duckdb_views()"
                " where not internal"
            ).fetchall()
        ]
        return "\n".join(str(con.execute(f'select * from "{n}"').fetchall()) for n in names)
    finally:
        con.close()


def all_files_text(folder: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace")
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in (".jsonl", ".json", ".txt", ".log")
    )


def rejects(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "select line, reason from rejected_batches order by source, line")


# --------------------------------------------------------------------------- encodings, sizes


def test_a_utf8_bom_is_stripped_from_jsonl_and_json_files(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    (tmp_path / "a.jsonl").write_bytes(
        b"\xef\xbb\xbf" + orjson.dumps(batch(1)) + b"\n" + orjson.dumps(batch(2))
    )
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf" + orjson.dumps(batch(3)))
    result = run_cli("run", "--input", tmp_path, "--db", db)
    assert result.exit_code == 0, result.output
    assert scalar(db, "select count(*) from batches") == 3
    assert rejects(db) == []
    assert "rejected    0" in result.output


def test_invalid_utf8_is_rejected_not_replaced(run_cli: Any, db: Path, tmp_path: Path) -> None:
    bad = orjson.dumps(batch(2)).replace(b"batch_000", b"batch_\xff\xfe0", 1)
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1), bad, batch(3)])
    result = run_cli("run", "--input", f, "--db", db)
    assert result.exit_code == 0, result.output
    assert query(db, "select id from batches order by id") == [(batch(1)["id"],), (batch(3)["id"],)]
    assert scalar(db, "select count(*) from batches where id like '%\ufffd%'") == 0
    [(line, reason, raw)] = query(db, "select line, reason, raw_text from rejected_batches")
    assert (line, reason) == (2, "invalid UTF-8 at byte 14 of the record: invalid start byte")
    assert "batch_\\xff\\xfe0" in raw  # the raw bytes stay visible
    assert "in.jsonl:2: invalid UTF-8 at byte 14" in result.output


@pytest.mark.parametrize(
    ("depth", "reason"),
    [
        (300, "metadata cannot be stored: Recursion limit reached"),
        (2000, "invalid JSON: depth limit exceeded"),
    ],
)
def test_deeply_nested_values_quarantine_one_record_not_the_night(
    run_cli: Any, db: Path, tmp_path: Path, depth: int, reason: str
) -> None:
    deep = b'{"a":' * depth + b"1" + b"}" * depth
    record = orjson.dumps(batch(2)).replace(b'"metadata":{"team":"search"}', b'"metadata":' + deep)
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1), record, batch(3)])
    result = run_cli("run", "--input", f, "--db", db)
    assert result.exit_code == 0, result.output
    assert scalar(db, "select count(*) from batches") == 2
    [(line, got)] = rejects(db)
    assert line == 2 and got.startswith(reason), got


def test_an_oversize_record_and_an_endless_garbage_line_are_rejected_with_their_size(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    big = batch(2, metadata={"blob": "x" * (9 * 1024 * 1024)})
    f = tmp_path / "in.jsonl"
    with f.open("wb") as fh:
        fh.write(
            orjson.dumps(batch(1))
            + b"\n"
            + orjson.dumps(big)
            + b"\n"
            + orjson.dumps(batch(3))
            + b"\n"
        )
        fh.write(b"garbage" * (2 * 1024 * 1024))  # 14 MB, no newline at the end
    result = run_cli("run", "--input", f, "--db", db, "--workers", "2", "--chunk-size", "1")
    assert result.exit_code == 0, result.output
    assert scalar(db, "select count(*) from batches") == 2
    got = query(db, "select line, reason, length(raw_text) from rejected_batches order by line")
    assert [(line, reason) for line, reason, _ in got] == [
        (2, f"record is {len(orjson.dumps(big)):,} bytes, over the 8 MiB limit"),
        (4, "record is 14,680,064 bytes, over the 8 MiB limit"),
    ]
    assert all(length <= MAX_RAW_KEPT + 60 for _, _, length in got)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("billing", "charged", "billing must be an object or null, got str 'charged'"),
        ("billing", [1, 2], "billing must be an object or null, got list of 2 items"),
        (
            "pricing_lines",
            {"dimension": "x"},
            "pricing_lines must be an array or null, got dict of 1 item",
        ),
        (
            "cost_nanos",
            "2**64",
            "billing.cost_nanos must be an integer, got 1.8446744073709552e+19",
        ),
        (
            "cost_nanos",
            {"token": "sk-LEAKLEAKLEAK"},
            "billing.cost_nanos must be an integer, got dict of 1 item",
        ),
        ("id", ["batch_X"], "id must be a string, got list of 1 item"),
    ],
)
def test_money_in_the_wrong_shape_is_rejected_never_loaded_as_unbilled(
    run_cli: Any, db: Path, tmp_path: Path, field: str, value: Any, reason: str
) -> None:
    record = batch(2)
    if field == "pricing_breakdown":
        record["billing"]["pricing_breakdown"] = value
    else:
        record = batch(2, **{field: value})
    text = orjson.dumps(record).replace(b'"2**64"', str(2**64).encode())  # beyond 64 bits
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1), text])
    result = run_cli("run", "--input", f, "--db", db)
    assert result.exit_code == 0, result.output
    assert query(db, "select id from batches") == [(batch(1)["id"],)]
    assert rejects(db) == [(2, reason)]
    assert "LEAK" not in result.output and "LEAK" not in everything_stored(db)


def test_nul_characters_and_odd_unicode_load_as_they_are(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    f = write_jsonl(
        tmp_path / "in.jsonl",
        [batch(1, session_id="s\u0000\u202e\U0001f600", metadata={"k\u0000": "v"})],
    )
    result = run_cli("run", "--input", f, "--db", db)
    assert result.exit_code == 0, result.output
    assert scalar(db, "select session_id from batches") == "s\u0000\u202e\U0001f600"


# --------------------------------------------------------------------------- secrets


SECRET_FIELDS: dict[str, Any] = {
    "webhookSecret": "LEAK01", "clientSecret": "LEAK02", "signingSecret": "LEAK03",
    "bearerToken": "LEAK04", "sessionToken": "LEAK05", "secret_key": "LEAK06",
    "aws_secret_access_key": "LEAK07", "openai_key": "LEAK08", "signing_key": "LEAK09",
    "credentials": {"user": "u", "password": "LEAK10"}, "bearer": ["LEAK11", "LEAK11b"],
    "API-KEY": 987654321012, "note": "Authorization: Bearer LEAK23abc",
    "jwt_like": "eyJhbGciOiJIUzI1NiJ9LEAK.eyJzdWIiOiIxMjM0NTY3ODkwIn0LEAK.sigLEAK",
}  # fmt: skip


def test_credentials_in_every_spelling_reach_no_table_view_archive_export_or_output(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    loud = batch(
        1,
        metadata=SECRET_FIELDS,
        apiKey="LEAK12",
        webhook="whsec_LEAK13",
        session_id="sk-LEAK15abcdef",
        endpoint="https://user:LEAK16@host.example/v1",
        polling_url="https://x.example/poll?token=LEAK17&x=1",
    )
    loud["pricing_lines"][0]["auth"] = "Bearer LEAK18xyz"
    loud["pricing_lines"][1]["dimension"] = "sk-LEAK19abcdef"
    loud["billing"]["client_secret"] = {"nested": ["LEAK24"]}
    text = (
        orjson.dumps(loud).decode().replace('"apiKey"', '"s\\u0065cret_\\u006bey"')
    )  # an escaped key
    bad_json = '{"id": "batch_BROKEN", "password": "LEAK21", "webhook": {"secret": "whsec_LEAK22'
    bad_type = orjson.dumps(batch(3, request_counts={"total": {"secret": "LEAK25"}})).decode()
    bad_money = orjson.dumps(batch(4, cost_nanos={"token": "sk-LEAK20abcdef"})).decode()
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join([text, bad_json, bad_type, bad_money]) + "\n")
    result = run_cli("run", "--input", f, "--db", db, "-v", "--log-format", "json")
    assert result.exit_code == 0, result.output
    assert scalar(db, "select count(*) from batches") == 1
    assert scalar(db, "select count(*) from rejected_batches") == 3
    assert scalar(db, "select cost_nanos from batches") == 300_000_000
    assert scalar(db, "select endpoint from batches") == "https://[REDACTED]@host.example/v1"
    assert (
        scalar(db, "select polling_url from batches")
        == "https://x.example/poll?token=[REDACTED]&x=1"
    )
    assert json.loads(scalar(db, "select metadata from batches"))["credentials"] == "[REDACTED]"
    exported = run_cli("export", "--db", db, "--out", tmp_path / "lake")
    assert exported.exit_code == 0, exported.output
    lake = (
        duckdb.connect()
        .execute(
            f"select * from read_parquet('{tmp_path / 'lake'}/**/*.parquet', union_by_name = true)"
        )
        .fetchall()
    )
    shown = [result.output]
    for name in ("focus-charges", "spend-by-session", "spend-by-model"):
        shown.append(run_cli("query", name, "--db", db, "--format", "json").output)
    shown.append(
        run_cli("sql", "select * from rejected_batches", "--db", db, "--format", "csv").output
    )
    for where in (everything_stored(db), str(lake), *shown, all_files_text(tmp_path / "lake")):
        assert "LEAK" not in where
        assert "987654321012" not in where


def test_a_reject_reason_never_shows_a_secret_held_in_a_value(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    f = write_jsonl(
        tmp_path / "in.jsonl",
        [batch(1, created_at="sk-LEAKLEAKLEAK"), batch(2, created_at={"token": "LEAK"})],
    )
    result = run_cli("run", "--input", f, "--db", db)
    assert rejects(db) == [
        (1, "created_at '[REDACTED]' is not a Unix time or an ISO-8601 timestamp"),
        (2, "created_at is not a timestamp: dict"),
    ]
    assert "LEAK" not in result.output and "LEAK" not in everything_stored(db)


def test_a_night_where_every_record_is_rejected_keeps_each_one_aside_redacted(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """A format change at the gateway: every batch has its bill as text, and carries a
    webhook secret, a key in the metadata and a bearer token in an error message."""
    items = [
        batch(
            n,
            cost_nanos=f"{n}000",
            webhook={"url": "https://u:LEAKpw@h/x", "secret": f"whsec_LEAK{n}"},
            metadata={"api_key": f"sk-LEAKLEAK{n:06d}", "note": "x=1"},
            errors={"message": f"Authorization: Bearer LEAK{n:08d}"},
        )
        for n in range(1, 2501)
    ]
    f = write_jsonl(tmp_path / "in.jsonl", items)
    result = run_cli("run", "--input", f, "--db", db, "--chunk-size", "500")
    assert result.exit_code == 0, result.output  # loaded what it could (nothing), said so
    assert "rejected    2,500" in result.output
    assert query(
        db,
        "select count(*), count(distinct line), min(line), max(line), count(distinct reason)"
        " from rejected_batches",
    ) == [(2500, 2500, 1, 2500, 2500)]
    assert rejects(db)[0] == (1, "billing.cost_nanos must be an integer, got str '1000'")
    assert scalar(db, "select count(*) from batches") == 0
    raw = query(db, "select raw_text from rejected_batches where line = 7")[0][0]
    assert '"cost_nanos":"7000"' in raw and '"note":"x=1"' in raw  # the record, as read
    assert "LEAK" not in everything_stored(db) and "LEAK" not in result.output
    again = run_cli("run", "--input", f, "--db", db, "--chunk-size", "500")
    assert again.exit_code == 0, again.output
    assert query(db, "select count(*), min(times_seen), max(times_seen) from rejected_batches") == [
        (2500, 2, 2)
    ]


# --------------------------------------------------------------------------- wrong folders, wrong files


def test_unreadable_entries_are_reported_and_the_night_is_incomplete(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    data = tmp_path / "in"
    data.mkdir()
    write_jsonl(data / "good.jsonl", [batch(1)])
    (data / "gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")  # a broken link
    os.mkfifo(data / "pipe.jsonl")  # reading it would hang
    (data / "folder.json").mkdir()
    result = run_cli("run", "--input", data, "--db", db)
    assert result.exit_code == 3, result.output
    assert scalar(db, "select count(*) from batches") == 1
    got = query(db, "select source, reason from rejected_batches order by source")
    assert got == [
        (str(data / "folder.json"), "cannot read: a folder with a file suffix"),
        (str(data / "gone.jsonl"), "cannot read: No such file or directory (a broken link?)"),
        (str(data / "pipe.jsonl"), "cannot read: a named pipe, not a regular file"),
    ]
    assert "unreadable  3 input(s) could not be read" in result.output
    assert "INCOMPLETE" in result.output
    assert query(db, "select status, unreadable_inputs from load_runs") == [("incomplete", 3)]


def test_the_same_file_twice_or_by_two_spellings_counts_once(
    run_cli: Any, db: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1), b"{broken"])
    monkeypatch.chdir(tmp_path)
    result = run_cli(
        "run",
        "--input",
        f,
        "--input",
        "in.jsonl",
        "--input",
        "./in.jsonl",
        "--input",
        tmp_path,
        "--db",
        db,
    )
    assert result.exit_code == 0, result.output
    assert "read        2 records" in result.output
    again = run_cli("run", "--input", "./in.jsonl", "--db", db)
    assert again.exit_code == 0, again.output
    assert query(db, "select line, times_seen from rejected_batches") == [(2, 2)]


def test_a_database_path_with_quotes_and_odd_characters_loads_queries_and_exports(
    run_cli: Any, tmp_path: Path
) -> None:
    """The working copy, its staged chunks and the export are named after --db: a quote
    in it must reach DuckDB as text, never end (or extend) a SQL string."""
    folder = tmp_path / 'it\'s é "q" ; drop table batches; --'
    folder.mkdir()
    db = folder / "o'brien's.duckdb"
    f = write_jsonl(tmp_path / "in.jsonl", [batch(n, cost_nanos=n) for n in range(1, 301)])
    result = run_cli("run", "--input", f, "--db", db, "--chunk-size", "100")
    assert result.exit_code == 0, result.output
    assert query(db, "select count(*), sum(cost_nanos) from batches") == [(300, 45150)]
    assert sorted(p.name for p in folder.iterdir()) == ["o'brien's.duckdb", "snapshots"]
    out = folder / "focus'out"
    exported = run_cli("export", "--db", db, "--format", "focus-csv", "--out", out)
    assert exported.exit_code == 0, exported.output
    assert sorted(p.name for p in out.iterdir()) == ["focus_charges", "manifest.json"]
    again = run_cli("run", "--input", f, "--db", db, "--chunk-size", "100")
    assert again.exit_code == 0, again.output
    assert query(db, "select count(*), sum(cost_nanos) from batches") == [(300, 45150)]


def test_compressed_or_binary_files_with_a_json_name_are_one_unreadable_input_each(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """A gzip (or zip, Parquet, DuckDB...) file named .jsonl is not 150 rejects of
    "invalid UTF-8": it is one input that could not be read, with what it is, and the
    night is incomplete; the other files load."""
    import gzip
    import zipfile

    import polars as pl

    good = write_jsonl(tmp_path / "good.jsonl", [batch(1, cost_nanos=7)])
    rows = "".join(json.dumps(batch(n)) + "\n" for n in range(2, 40)).encode()
    (tmp_path / "small.jsonl").write_bytes(gzip.compress(rows))
    (tmp_path / "large.jsonl").write_bytes(b"\x1f\x8b" + os.urandom(1_500_000))  # sliced path
    with zipfile.ZipFile(tmp_path / "zipped.jsonl", "w") as zf:
        zf.writestr("b.jsonl", rows)
    pl.DataFrame({"a": [1]}).write_parquet(tmp_path / "table.json")
    duckdb.connect(str(tmp_path / "other.json")).execute("create table t (i int)").close()
    names = ["large.jsonl", "other.json", "small.jsonl", "table.json", "zipped.jsonl"]
    result = run_cli(
        "run", *(a for n in ["good.jsonl", *names] for a in ("--input", tmp_path / n)), "--db", db
    )
    assert result.exit_code == 3, result.output  # incomplete
    assert query(db, "select id, cost_nanos from batches") == [(batch(1)["id"], 7)]
    assert query(db, "select source, line, reason from rejected_batches order by source") == [
        (str(tmp_path / "large.jsonl"), 0, f"cannot read: {GZIP}"),
        (
            str(tmp_path / "other.json"),
            0,
            "cannot read: a DuckDB database, not JSON text (pass it as --db)",
        ),
        (str(tmp_path / "small.jsonl"), 0, f"cannot read: {GZIP}"),
        (str(tmp_path / "table.json"), 0, "cannot read: a Parquet file, not JSON text"),
        (
            str(tmp_path / "zipped.jsonl"),
            0,
            "cannot read: a zip archive, not JSON text: unzip it first",
        ),
    ]
    assert "unreadable  5 input(s) could not be read" in result.output
    assert "INCOMPLETE" in result.output and str(good) not in result.output.split("unreadable")[1]
    piped = subprocess.run(
        billing("run", "--input", "-", "--db", tmp_path / "piped.duckdb"),
        input=gzip.compress(rows),
        capture_output=True,
        check=False,
    )
    assert piped.returncode == 3, piped.stderr
    assert f"<stdin>:0: cannot read: {GZIP}" in piped.stdout.decode()


GZIP = "gzip-compressed data, not JSON text: decompress it first (gunzip)"


def test_a_database_reached_through_a_symbolic_link_is_updated_where_it_lives(
    run_cli: Any, tmp_path: Path
) -> None:
    """--db is a link to a shared database: the run must update the shared file (not
    replace the link with a private copy nobody else sees), lock it where it lives, and
    a run through the real path must see the same database."""
    shared, project = tmp_path / "shared", tmp_path / "project"
    shared.mkdir()
    project.mkdir()
    real = shared / "billing.duckdb"
    link = project / "billing.duckdb"
    first = write_jsonl(tmp_path / "a.jsonl", [batch(1, cost_nanos=100)])
    assert run_cli("run", "--input", first, "--db", real).exit_code == 0
    link.symlink_to(real)
    second = write_jsonl(tmp_path / "b.jsonl", [batch(2, cost_nanos=20)])
    result = run_cli("run", "--input", second, "--db", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert query(real, "select count(*), sum(cost_nanos) from batches") == [(2, 120)]
    assert sorted(p.name for p in project.iterdir()) == ["billing.duckdb"]  # nothing beside
    assert len(list((shared / "snapshots" / "billing").iterdir())) == 2
    again = run_cli("run", "--input", second, "--db", real)  # the same database
    assert again.exit_code == 0, again.output
    assert query(link, "select count(*), sum(cost_nanos) from batches") == [(2, 120)]
    dangling = project / "new.duckdb"  # a link to a database not made yet: made there
    dangling.symlink_to(shared / "sub" / "new.duckdb")
    made = run_cli("run", "--input", first, "--db", dangling)
    assert made.exit_code == 0, made.output
    assert dangling.is_symlink()
    assert query(shared / "sub" / "new.duckdb", "select sum(cost_nanos) from batches") == [(100,)]


@pytest.mark.parametrize(
    "target", ["db_as_input", "jsonl_as_db", "foreign_duckdb_as_db", "folder_as_db"]
)
def test_options_pointed_at_the_wrong_file_are_refused_and_touch_nothing(
    run_cli: Any, db: Path, tmp_path: Path, target: str
) -> None:
    good = write_jsonl(tmp_path / "in.jsonl", [batch(1)])
    assert run_cli("run", "--input", good, "--db", db).exit_code == 0
    foreign = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(foreign)).execute("create table sales as select 42 as amount").close()
    (tmp_path / "afolder").mkdir()
    args, message = {
        "db_as_input": (
            ("--input", db, "--db", db),
            f"billing: error: {db} is not a .json, .jsonl or .ndjson file (pass batch files or folders)\n",
        ),
        "jsonl_as_db": (
            ("--input", good, "--db", good),
            f"billing: error: {good} is not a DuckDB database (",
        ),
        "foreign_duckdb_as_db": (
            ("--input", good, "--db", foreign),
            f"billing: error: {foreign} is a DuckDB database but not a billing database "
            "(it holds sales); refusing to write into it\n",
        ),
        "folder_as_db": (
            ("--input", good, "--db", tmp_path / "afolder"),
            f"billing: error: --db {tmp_path / 'afolder'} is a folder, not a database file\n",
        ),
    }[target]
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    result = run_cli("run", *args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(message)
    assert result.output.count("\n") == 1
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("folder", ["/", "/proc", "/proc/self", "/etc", "link_to_root"])
def test_a_system_folder_as_input_is_refused_before_any_walk(
    run_cli: Any, db: Path, tmp_path: Path, folder: str
) -> None:
    """`billing run /` would read every JSON file on the machine (and /proc never ends):
    refused at once, by any spelling, with nothing written."""
    if folder == "link_to_root":
        (tmp_path / "everything").symlink_to("/")
        folder = str(tmp_path / "everything")
    result = run_cli("run", folder, "--db", db)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        f"billing: error: refusing to read every JSON file under {folder}"
    )
    assert result.output.endswith(": name the folder that holds the batch files\n")
    assert not db.exists()


def test_export_never_deletes_what_it_does_not_own(run_cli: Any, db: Path, tmp_path: Path) -> None:
    assert (
        run_cli(
            "run", "--input", write_jsonl(tmp_path / "in.jsonl", [batch(1)]), "--db", db
        ).exit_code
        == 0
    )
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    for out in (tmp_path, db.parent, Path(".")):
        result = run_cli("export", "--db", db, "--out", out)
        assert result.exit_code == 2, result.output
        assert "is not empty and is not an earlier billing export" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before and precious.read_text() == "mine"
    lake = tmp_path / "lake"
    assert run_cli("export", "--db", db, "--out", lake).exit_code == 0
    assert (
        run_cli("export", "--db", db, "--out", lake).exit_code == 0
    )  # its own earlier export: replaced
    (lake / "mine.csv").write_text("a,b")
    refused = run_cli("export", "--db", db, "--out", lake)
    assert refused.exit_code == 2
    assert "also holds mine.csv, which the export did not write" in refused.output
    assert (lake / "mine.csv").read_text() == "a,b"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_sample_refuses_a_folder_holding_other_files(run_cli: Any, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    result = run_cli("sample", "--out", tmp_path, "--batches", "5")
    assert result.exit_code == 2
    assert "holds files that are not the sample's (keep.txt)" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_many_small_files_are_packed_into_few_chunks(tmp_path: Path) -> None:
    for i in range(1, 1001):
        (tmp_path / f"b{i:04d}.json").write_bytes(orjson.dumps(batch(i)))
    chunks = list(read_chunks(find_inputs([tmp_path]).paths, 10_000))
    assert [len(c) for c in chunks] == [1000]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- billing sql, odd options


@pytest.mark.parametrize(
    "statement",
    [
        "copy batches to '{tmp}/out.csv'",
        "export database '{tmp}/dump'",
        "attach '{tmp}/other.duckdb' as o (read_only false)",
        "attach '{tmp}/link.duckdb' as l (read_only false)",
        "select * from read_csv('/etc/passwd')",
        "select * from read_text('/etc/hostname')",
        "select * from glob('/root/*')",
        "select * from read_json_auto('{tmp}/in.jsonl')",
        "set enable_external_access = true",
        "install httpfs",
        "load httpfs",
        "pragma database_list",
        "create table t as select 1",
        "delete from batches",
        "select 1; delete from batches",
        "checkpoint",
        "detach billing",
    ],
)
def test_billing_sql_cannot_write_or_read_anything_but_the_database(
    run_cli: Any, db: Path, tmp_path: Path, statement: str
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [batch(1)])
    assert run_cli("run", "--input", src, "--db", db).exit_code == 0
    os.link(db, tmp_path / "link.duckdb")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = run_cli("sql", statement.format(tmp=tmp_path), "--db", db)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("billing: error: ") and result.output.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert scalar(db, "select count(*) from batches") == 1


def test_odd_option_values_get_one_line_not_a_traceback(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    assert (
        run_cli(
            "run", "--input", write_jsonl(tmp_path / "in.jsonl", [batch(1)]), "--db", db
        ).exit_code
        == 0
    )
    empty = run_cli("sql", "", "--db", db)
    assert (empty.exit_code, empty.output) == (
        2,
        "billing: error: no SQL given: pass one query (e.g. select count(*) from batches)\n",
    )
    huge = run_cli("query", "spend-by-provider", "--db", db, "--limit", "99999999999999999999")
    assert huge.exit_code == 2 and "Traceback" not in huge.output
    assert "99999999999999999999 is not in the range 1<=x<=1000000000" in huge.output
    runs = run_cli("runs", "--db", db, "--limit", "-1")
    assert runs.exit_code == 2 and "Traceback" not in runs.output


def test_a_malformed_replay_line_is_quarantined(run_cli: Any, db: Path, tmp_path: Path) -> None:
    archive = tmp_path / "archive.jsonl"
    archive.write_bytes(
        b"\n".join(
            [
                orjson.dumps({"batch_id": "b1", "body": orjson.dumps(batch(1)).decode()}),
                orjson.dumps({"batch_id": "b2", "body": 5}),
                b"not json at all",
                orjson.dumps({"batch_id": "b3", "body": '{"id": "batch_3", "password": "LEAK'}),
                orjson.dumps([1, 2]),
            ]
        )
        + b"\n"
    )
    result = run_cli("run", "--replay", archive, "--db", db)
    assert result.exit_code == 0, result.output
    assert scalar(db, "select count(*) from batches") == 1
    assert [r[1] for r in rejects(db)] == [
        "archive line is not a response envelope",
        "archive line is not a response envelope",
        "response body is not JSON: unexpected end of data: line 1 column 36 (char 35)",
        "archive line is not a response envelope",
    ]
    assert "LEAK" not in everything_stored(db)


# --------------------------------------------------------------------------- Ctrl-C and kill -9


def test_ctrl_c_prints_one_line_commits_nothing_and_exits_130(db: Path, tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "first.jsonl", [batch(1)])
    subprocess.run(
        billing("run", "--input", first, "--db", db, "-q"), check=True, capture_output=True
    )
    before = query(db, "select * from load_runs"), query(db, "select id, cost_nanos from batches")
    proc = start_big_run(tmp_path, db)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    errors = [json.loads(line) for line in err.splitlines() if '"level": "error"' in line]
    # with --log-format json the error is a JSON log record on stderr like every other line
    assert [(e["message"], e["exit_code"]) for e in errors] == [
        ("interrupted; nothing was committed", 130)
    ]
    assert "Traceback" not in err
    # --log-format json: the scheduler still gets its one summary object on stdout
    assert json.loads(out) == {
        "status": "interrupted",
        "exit_code": 130,
        "error": "interrupted; nothing was committed",
    }
    assert (
        query(db, "select * from load_runs"),
        query(db, "select id, cost_nanos from batches"),
    ) == before
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".")
    ]  # no work or lock file left


def test_kill_9_on_a_first_run_leaves_no_half_made_database(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    proc = start_big_run(tmp_path, db)
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    psutil.wait_procs(workers, timeout=15)
    assert not db.exists()
    [staged] = [p for p in tmp_path.iterdir() if p.name.endswith(".work.stage")]
    assert list(staged.glob("*.parquet"))  # the chunks the workers had written
    missing = run_cli("query", "spend-by-provider", "--db", db)
    assert (missing.exit_code, missing.output) == (
        2,
        f"billing: error: database not found: {db} (run `billing run` first)\n",
    )
    done = run_cli("run", "--input", write_jsonl(tmp_path / "one.jsonl", [batch(1)]), "--db", db)
    assert done.exit_code == 0, done.output
    assert scalar(db, "select count(*) from batches") == 1
    assert not [
        p for p in tmp_path.iterdir() if ".work" in p.name
    ]  # the leftovers (working copy, staged chunks) are cleaned


# --------------------------------------------------------------------------- the gateway misbehaving


def ids_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


def api_run(run_cli: Any, gw: Gateway, db: Path, *args: Any, env: dict[str, str] = ENV) -> Any:
    return run_cli(
        "run",
        "--base-url",
        gw.url,
        "--db",
        db,
        "--timeout",
        "0.5",
        "--retries",
        "1",
        *args,
        env=env,
    )


def no_token_anywhere(result: Any, tmp_path: Path) -> None:
    assert TOKEN not in result.output
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("status", [400, 401, 404, 500])
def test_a_body_echoing_the_token_is_never_printed_or_stored(
    run_cli: Any, db: Path, tmp_path: Path, status: int
) -> None:
    echo = Reply(
        status, {"error": "bad", "reason": f"token {TOKEN} / Bearer {TOKEN}", "auth": TOKEN}
    )
    gw = Gateway(
        batches={batch(1)["id"]: batch(1)}, scripts={"/v1/batches/batch_ECHO": [echo, echo]}
    )
    if status == 401:
        gw = Gateway(everything=echo)
    with serve(gw):
        result = api_run(
            run_cli, gw, db, "--ids-file", ids_file(tmp_path, [batch(1)["id"], "batch_ECHO"]), "-v"
        )
    assert result.exit_code == (1 if status == 401 else 3), result.output
    no_token_anywhere(result, tmp_path)
    if status != 401:
        assert "SUPERSECRET" not in everything_stored(db)
        assert query(db, "select batch_id, http_status from fetch_errors") == [
            ("batch_ECHO", status)
        ]


def test_a_token_with_a_newline_and_credentials_in_the_base_url_are_refused_unprinted(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    ids = ids_file(tmp_path, ["batch_X"])
    newline = run_cli(
        "run", "--ids-file", ids, "--db", db, env={"PHASEO_API_KEY": "tokPARTONE\ntokPARTTWO"}
    )
    assert newline.exit_code == 2
    assert newline.output == (
        "billing: error: PHASEO_API_KEY holds spaces, line breaks or control characters "
        "(a stray newline from a file?); fix the variable, the token was not used\n"
    )
    userinfo = run_cli(
        "run",
        "--ids-file",
        ids,
        "--db",
        db,
        "--base-url",
        "https://bob:PWLEAK@api.example/v1",
        env=ENV,
    )
    assert userinfo.exit_code == 2
    assert userinfo.output == (
        "billing: error: base URL must not hold credentials (user:password@): "
        "the token goes in PHASEO_API_KEY\n"
    )
    query_key = run_cli(
        "run",
        "--ids-file",
        ids,
        "--db",
        db,
        "--base-url",
        "https://api.example/v1?api_key=QLEAK",
        env=ENV,
    )
    assert query_key.exit_code == 2 and "QLEAK" not in query_key.output
    assert not db.exists()


def _endless(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = b" " * 65536
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # bounded: stops by itself
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))


def _drip(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    for _ in range(40):  # a byte every 0.1 s: each read is quick, the whole never is
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.1)


_BOMB: list[bytes] = []


def _bomb_body() -> bytes:
    """300 MB of zeros, gzipped to about 300 KB (made once, before the server answers)."""
    if not _BOMB:
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)
        _BOMB.append(
            b"".join(comp.compress(b"\0" * 1024 * 1024) for _ in range(300)) + comp.flush()
        )
    return _BOMB[0]


def _bomb(handler: BaseHTTPRequestHandler) -> None:
    body = _bomb_body()
    handler.send_response(200)
    handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.mark.parametrize(
    ("reply", "kind", "reason"),
    [
        (Reply(raw=_endless), "too_large", "response body over the 8 MiB limit"),
        (Reply(raw=_bomb), "too_large", "response body over the 8 MiB limit"),
        (Reply(raw=_drip), "failed", "gave up after 2 attempts: no whole response within 0.5 s"),
    ],
)
def test_bodies_that_never_end_drip_or_explode_are_bounded_and_recorded(
    run_cli: Any, db: Path, tmp_path: Path, reply: Reply, kind: str, reason: str
) -> None:
    gw = Gateway(
        batches={batch(1)["id"]: batch(1)}, scripts={"/v1/batches/batch_EVIL": [reply, reply]}
    )
    _bomb_body()
    rss = psutil.Process().memory_info().rss
    started = time.monotonic()
    with serve(gw):
        result = api_run(
            run_cli, gw, db, "--ids-file", ids_file(tmp_path, [batch(1)["id"], "batch_EVIL"])
        )
    assert time.monotonic() - started < 15
    assert psutil.Process().memory_info().rss - rss < 200 * 1024 * 1024
    assert result.exit_code == 3, result.output
    assert scalar(db, "select count(*) from batches") == 1
    assert query(db, "select batch_id, kind, reason from fetch_errors") == [
        ("batch_EVIL", kind, reason)
    ]
    assert f"batch_EVIL: {reason}" in result.output


@pytest.mark.parametrize(
    ("reply", "kind", "reason"),
    [
        (
            Reply(200, batch(2)),
            "wrong_body",
            "the gateway answered with batch 'batch_00000000000000000000000002' instead of 'batch_00000000000000000000000001'",
        ),
        (
            Reply(200, {"error": {"type": "invalid_request_error", "message": "provider said no"}}),
            "wrong_body",
            "the gateway answered 200 with an error body (invalid_request_error)",
        ),
        (
            Reply(301, "", {"Location": "https://elsewhere.example/v1/batches/x"}),
            "http_error",
            "HTTP 301 redirect to 'https://elsewhere.example/v1/batches/x' (not followed; check --base-url)",
        ),
        (
            Reply(400, {"error": "bad_request", "reason": "nope"}),
            "http_error",
            "HTTP 400: bad_request: nope",
        ),
        (Reply(503, "down"), "failed", "gave up after 2 attempts: HTTP 503"),
    ],
)
def test_an_id_not_fetched_is_recorded_counted_exit_3_and_refetched_next_night(
    run_cli: Any, db: Path, tmp_path: Path, reply: Reply, kind: str, reason: str
) -> None:
    wanted = batch(1)
    attempts = 2 if reply.status >= 500 else 1  # --retries 1: a transient answer is asked twice
    gw = Gateway(
        batches={wanted["id"]: wanted}, scripts={f"/v1/batches/{wanted['id']}": [reply] * attempts}
    )
    with serve(gw):
        first = api_run(run_cli, gw, db, "--ids-file", ids_file(tmp_path, [wanted["id"]]))
        assert first.exit_code == 3, first.output
        assert scalar(db, "select count(*) from batches") == 0  # nothing else loaded in its place
        assert query(db, "select batch_id, kind, reason from fetch_errors") == [
            (wanted["id"], kind, reason)
        ]
        assert query(db, "select status, not_fetched from load_runs") == [("incomplete", 1)]
        assert "not fetched 1 batch(es) asked for" in first.output
        second = api_run(
            run_cli, gw, db, "--ids-file", ids_file(tmp_path, [])
        )  # the id is not asked again
    assert second.exit_code == 0, second.output
    assert query(db, "select id, cost_nanos from batches") == [(wanted["id"], 300_000_000)]


def test_ids_are_validated_and_url_encoded(run_cli: Any, db: Path, tmp_path: Path) -> None:
    gw = Gateway(batches={batch(1)["id"]: batch(1)})
    with serve(gw):
        result = api_run(
            run_cli,
            gw,
            db,
            "--ids-file",
            ids_file(tmp_path, [batch(1)["id"], "../../admin", "..", "a/b", "x?y=1", "batch:ok.1"]),
        )
    assert result.exit_code == 3, result.output
    paths = [p for p, _ in gw.requests if not p.endswith("/requests") and p != "/v1/credits"]
    assert sorted(paths) == sorted([f"/v1/batches/{batch(1)['id']}", "/v1/batches/batch%3Aok.1"])
    assert query(db, "select batch_id, kind from fetch_errors order by 1") == [
        ("..", "invalid_id"),
        ("../../admin", "invalid_id"),
        ("a/b", "invalid_id"),
        ("batch:ok.1", "not_found"),
        ("x?y=1", "invalid_id"),
    ]


def test_pointing_input_at_the_database_folder_does_not_load_archives_as_batches(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    gw = Gateway(batches={batch(1)["id"]: batch(1)})
    with serve(gw):
        assert (
            api_run(run_cli, gw, db, "--ids-file", ids_file(tmp_path, [batch(1)["id"]])).exit_code
            == 0
        )
    other = tmp_path / "other.duckdb"
    result = run_cli("run", "--input", tmp_path / "archive", "--db", other)
    assert result.exit_code == 0, result.output
    assert scalar(other, "select count(*) from batches") == 0
    assert {r[1] for r in rejects(other)} == {
        "an API response archive line, not a batch object: load archives with --replay"
    }


def test_an_ids_file_with_a_bom_and_bytes_that_are_not_utf8(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"\xef\xbb\xbf" + batch(1)["id"].encode() + b"\nbatch_\xff\xfe\n# a comment\n")
    gw = Gateway(batches={batch(1)["id"]: batch(1)})
    with serve(gw):
        result = api_run(run_cli, gw, db, "--ids-file", ids)
    assert result.exit_code == 3, result.output
    assert scalar(db, "select count(*) from batches") == 1
    assert query(db, "select batch_id, kind from fetch_errors") == [
        ("batch_\\xff\\xfe", "invalid_id")
    ]


def test_a_utf16_file_is_named_as_such_and_loads_nothing_by_guess(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    text = orjson.dumps(batch(1)).decode() + "\n" + orjson.dumps(batch(2)).decode() + "\n"
    (tmp_path / "export.json").write_bytes(orjson.dumps(batch(3)).decode().encode("utf-16"))
    (tmp_path / "windows.jsonl").write_bytes(text.encode("utf-16"))
    result = run_cli("run", "--input", tmp_path, "--db", db)
    assert result.exit_code == 0, result.output
    assert scalar(db, "select count(*) from batches") == 0
    got = query(db, "select source, line, reason from rejected_batches order by source, line")
    assert got[0] == (
        str(tmp_path / "export.json"),
        1,
        "UTF-16 text (it starts with a UTF-16 byte order mark): save the file as UTF-8",
    )
    assert got[1] == (
        str(tmp_path / "windows.jsonl"),
        1,
        "UTF-16 text (it starts with a UTF-16 byte order mark): save the file as UTF-8",
    )
    assert all(
        reason.startswith(("UTF-16", "invalid UTF-8", "invalid JSON")) for _, _, reason in got
    )
    assert "rejected    " in result.output


def test_load_runs_records_the_input_not_the_last_rejected_file(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    data = tmp_path / "in"
    data.mkdir()
    write_jsonl(data / "a.jsonl", [batch(1)])
    write_jsonl(data / "z-bad.jsonl", [b"{broken"])
    result = run_cli("run", "--input", data, "--db", db)
    assert result.exit_code == 0, result.output
    assert query(db, "select source, status, rejected from load_runs") == [
        (str(data), "ok_with_rejects", 1)
    ]


def _hang_up(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"")  # close without a status line


def _brotli(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Encoding", "br")
    handler.send_header("Content-Length", "4")
    handler.end_headers()
    handler.wfile.write(b"\x8b\x00\x80\x03")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            Reply(raw=_hang_up),
            "gave up after 2 attempts: Server disconnected without sending a response.",
        ),
        (
            Reply(raw=_brotli),
            "unsupported Content-Encoding 'br'",
        ),  # not retried: it would not change
        (
            Reply(200, b""),
            "response body is not JSON: Input is a zero-length, empty document: line 1 column 1 (char 0)",
        ),
        (Reply(200, b"null"), "response body is not a batch object"),
    ],
)
def test_answers_that_are_not_http_or_not_json_are_recorded_not_tracebacks(
    run_cli: Any, db: Path, tmp_path: Path, reply: Reply, reason: str
) -> None:
    gw = Gateway(
        batches={batch(1)["id"]: batch(1)}, scripts={"/v1/batches/batch_ODD": [reply, reply]}
    )
    with serve(gw):
        result = api_run(
            run_cli, gw, db, "--ids-file", ids_file(tmp_path, [batch(1)["id"], "batch_ODD"])
        )
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert scalar(db, "select count(*) from batches") == 1
    assert query(db, "select batch_id, reason from fetch_errors") == [("batch_ODD", reason)]


def test_a_huge_unknown_key_is_kept_and_announced_clipped(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1, **{"k" * 100_000: 1})])
    result = run_cli("run", "--input", f, "--db", db)
    assert result.exit_code == 0, result.output
    assert scalar(db, "select max(length(field)) from schema_drift") == 500
    assert len(result.output) < 2_000
    assert scalar(db, "select length(extra) from batches") > 100_000  # the value itself is kept


@pytest.mark.parametrize(
    "command",
    [("runs",), ("query", "spend-by-model"), ("sql", "select 1"), ("export", "--out", "LAKE")],
)
def test_readers_pointed_at_a_database_that_is_not_ours_say_so(
    run_cli: Any, tmp_path: Path, command: tuple[str, ...]
) -> None:
    foreign = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(foreign)).execute("create table sales as select 42 as amount").close()
    args = [str(tmp_path / "lake") if a == "LAKE" else a for a in command]
    result = run_cli(*args, "--db", foreign)
    assert (result.exit_code, result.output) == (
        2,
        f"billing: error: {foreign} is not a billing database (no pipeline_meta table): "
        "pass the file `billing run` writes\n",
    )
    assert not (tmp_path / "lake").exists()


def test_stdin_with_an_oversize_first_line_and_utf16_loses_nothing(
    db: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from pipeline.cli import cli

    huge = b'{"id": "batch_huge", "pad": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    data = huge + b"\n" + orjson.dumps(batch(1)) + b"\n"
    result = CliRunner().invoke(cli, ["run", "-", "--db", str(db)], input=data)
    assert result.exit_code == 0, result.output
    assert query(db, "select id from batches") == [(batch(1)["id"],)]
    ((source, line, reason, raw_len),) = query(
        db, "select source, line, reason, length(raw_text) from rejected_batches"
    )
    assert (source, line) == ("<stdin>", 1)
    assert reason == f"record is {len(huge):,} bytes, over the 8 MiB limit"
    assert raw_len <= 64 * 1024 + 100
    utf16 = "\ufeff".encode("utf-16-le") + orjson.dumps(batch(2)).decode().encode("utf-16-le")
    db2 = tmp_path / "b2.duckdb"
    result = CliRunner().invoke(cli, ["run", "-", "--db", str(db2)], input=b"\xff\xfe" + utf16[2:])
    assert result.exit_code == 0, result.output
    assert query(db2, "select source, reason from rejected_batches") == [
        ("<stdin>", "UTF-16 text (it starts with a UTF-16 byte order mark): save the file as UTF-8")
    ]
    assert scalar(db2, "select count(*) from batches") == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"x = 1\n" * 300_000, "is over 1 MiB: is it the right file?"),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "is not valid TOML"),
        (b"\xff\xfe[\x00a\x00]\x00", "is not valid TOML"),
        (
            b'[account]\nbilling_account_name = "Bearer abcdefghijklmnopqrstuvwxyz012345"\n',
            "looks like a credential",
        ),
        (
            b'[[budget]]\nname = "whsec_abcdefghijklmnopqrstuvwx"\nlimit_usd = "1"\n',
            "looks like a credential",
        ),
    ],
)
def test_a_hostile_config_file_is_refused_with_one_line(
    db: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    from click.testing import CliRunner

    from pipeline.cli import cli

    cfg = tmp_path / "billing.toml"
    cfg.write_bytes(content)
    result = CliRunner().invoke(cli, ["run", str(SAMPLE), "--db", str(db), "--config", str(cfg)])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.splitlines()) == 1
    assert "abcdefghijklmnopqrstuv" not in result.output
    assert not db.exists()


def test_a_config_path_pointing_at_a_folder_is_refused(db: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pipeline.cli import cli

    result = CliRunner().invoke(
        cli, ["run", str(SAMPLE), "--db", str(db), "--config", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert result.output == (
        f"billing: error: config file {tmp_path} does not exist or is not a file\n"
    )


def test_the_report_escapes_hostile_names_and_shows_no_secret(db: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pipeline.cli import cli

    evil = batch(1, session_id="<script>alert('s')</script>")
    evil["metadata"] = {
        "team": "</script><img src=x onerror=alert(1)>",
        "note": "key sk-proj-abcdefghijklmnopqrstuvwx",
        "model": '"><svg onload=alert(2)>',
    }
    data = write_jsonl(tmp_path / "in.jsonl", [evil])
    assert CliRunner().invoke(cli, ["run", str(data), "--db", str(db), "-q"]).exit_code == 0
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<script>alert" not in page and "<img src=x" not in page and "<svg onload" not in page
    assert "&lt;script&gt;alert(&#x27;s&#x27;)&lt;/script&gt;" in page
    assert "sk-proj-abcdefghijklmnopqrstuvwx" not in page
    assert page.count("<script") == 2  # the data block and the chart check, nothing else


def test_sql_from_stdin_is_capped(db: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pipeline.cli import cli

    data = write_jsonl(tmp_path / "in.jsonl", [batch(1)])
    assert CliRunner().invoke(cli, ["run", str(data), "--db", str(db), "-q"]).exit_code == 0
    huge = b"select 1 -- " + b"x" * (2 * 1024 * 1024)
    result = CliRunner().invoke(cli, ["sql", "-", "--db", str(db)], input=huge)
    assert result.exit_code == 2
    assert result.output == "billing: error: the SQL is over 1 MiB: pass one query\n"


def test_a_worker_still_writing_cannot_keep_the_staged_chunks_alive(tmp_path: Path) -> None:
    """Ctrl-C does not wait for a worker writing its chunk: whatever it writes while the
    run is discarded, no staged file or folder outlives the run."""
    import threading

    from pipeline.load import Loader

    loader = Loader(tmp_path / "b.duckdb", "20261129T000000Z-abcdef")
    stop = threading.Event()

    def worker() -> None:
        i = 0
        while not stop.is_set():
            with contextlib.suppress(OSError):
                (loader.stage_dir / f"{i:06d}.batches.parquet").write_bytes(b"x" * 4096)
            i += 1

    writing = threading.Thread(target=worker)
    writing.start()
    try:
        while not any(loader.stage_dir.iterdir()):
            pass
        loader.rollback()
    finally:
        stop.set()
        writing.join()
    assert not [p for p in tmp_path.iterdir() if ".work" in p.name]


@pytest.mark.parametrize("first", [b"{", b"[", b" ", b"\t", b"\r", b"\n", b"\x31"])
def test_a_duckdb_file_is_told_whatever_its_checksum_starts_with(first: bytes) -> None:
    """DuckDB's header starts with an 8-byte checksum: any byte, '{' or a newline too
    (1 file in ~40 was read as text: 'invalid UTF-8', a flaky test found it). JSON text
    with DUCK at the same place is still text."""
    from pipeline.extract.files import binary_format

    header = first + b"\xfd\xc9\x4b\x50\xf4\xc4\x04" + b"DUCK" + b"C\x00\x00\x00"
    assert binary_format(header) == "a DuckDB database, not JSON text (pass it as --db)"
    assert binary_format(b'{"id": "DUCK_1", "x": 1}'[:16]) is None
    assert binary_format(b'["ab", "DUCK", 12, 3]') is None


@pytest.mark.parametrize(
    "bad_first",
    [b'{"id": "batch_X", "oops"', b"not json at all", b"{", b'{"a": 1}}', b"\xef\xbb\xbf{"],
)
def test_stdin_whose_first_line_is_malformed_keeps_every_other_record(
    tmp_path: Path, bad_first: bytes
) -> None:
    """`gzip -dc night.jsonl.gz | billing run -` with a bad first line read the whole
    stream as one JSON document: one reject, every other record dropped, exit 0."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    db = tmp_path / "b.duckdb"
    good = [orjson.dumps(batch(n, cost_nanos=n)) for n in range(1, 6)]
    data = b"\n".join([bad_first, *good]) + b"\n"
    result = CliRunner().invoke(cli, ["run", "-", "--db", str(db), "-q"], input=data)
    assert result.exit_code == 0, result.output
    assert query(db, "select count(*), sum(cost_nanos) from batches") == [(5, 15)]
    assert query(db, "select line from rejected_batches") == [(1,)]
    # a pretty-printed object, and a pretty-printed list response, are still one document
    pretty = orjson.dumps(batch(9, cost_nanos=9), option=orjson.OPT_INDENT_2)
    listed = orjson.dumps(
        {"object": "list", "data": [batch(8, cost_nanos=8)]}, option=orjson.OPT_INDENT_2
    )
    for doc, n in ((pretty, 9), (listed, 8)):
        out = CliRunner().invoke(cli, ["run", "-", "--db", str(db), "-q"], input=doc)
        assert out.exit_code == 0, out.output
        assert scalar(db, "select cost_nanos from batches where id = $1", [batch(n)["id"]]) == n
    assert scalar(db, "select count(*) from rejected_batches") == 1


def test_a_deep_object_inside_a_json_array_is_kept_aside_not_the_whole_night(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """orjson writes at most 255 levels: a 300-deep metadata inside a `.json` array made
    the whole run fail ("TypeError: Recursion limit reached; nothing was committed")."""
    deep = batch(2)
    deep["metadata"] = {}
    node = deep["metadata"]
    for _ in range(300):
        node["x"] = {}
        node = node["x"]
    path = tmp_path / "night.json"
    path.write_text(json.dumps([batch(1, cost_nanos=5), deep, batch(3, cost_nanos=7)]))
    result = run_cli("run", "--input", path, "--db", db, "-q")
    assert result.exit_code == 0, result.output
    assert query(db, "select id, cost_nanos from batches order by id") == [
        (batch(1)["id"], 5),
        (batch(3)["id"], 7),
    ]
    rows = query(db, "select line, reason, length(raw_text) > 1000 from rejected_batches")
    assert rows == [(2, "metadata cannot be stored: Recursion limit reached", True)]


def _line(n: int, **values: Any) -> dict[str, Any]:
    obj = batch(n)
    obj["pricing_lines"] = [dict(obj["pricing_lines"][0], **values)]
    return obj


def test_one_records_values_never_break_a_view_the_report_check_or_export(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """Values that load but broke every reader ('Conversion Error', 'Overflow', a report
    OverflowError, a check that never ended): each batch is loaded or kept aside with its
    reason, and every view, the report, check and the FOCUS export still answer."""
    counts = batch(7)
    counts["request_counts"] = {"total": 2**63 - 1, "completed": 2**63 - 2, "failed": 1}
    far = batch(8)
    far["billing"]["finalized_at"] = far["completed_at"] = "9999-12-31T23:59:59Z"
    past_int64 = batch(10)
    past_int64["pricing_lines"] = [dict(past_int64["pricing_lines"][0], line_nanos=2**62)] * 3
    items = [
        _line(1, quantity=1e300),
        _line(2, quantity=1e30),
        _line(3, quantity="NaN"),
        _line(4, unit_size="inf"),
        _line(5, unit_size=1e300),
        _line(6, unit_price_usd="12345678901234567890123456789"),
        counts,
        far,
        past_int64,
        batch(9),
    ]
    result = run_cli("run", "--input", write_jsonl(tmp_path / "in.jsonl", items), "--db", db)
    assert result.exit_code == 0, result.output
    assert query(db, "select line, reason from rejected_batches") == [
        (8, "completed_at '9999-12-31T23:59:59Z' is outside the years 1970 to 2199")
    ]
    assert scalar(db, "select count(*) from batches") == 9
    total = 9 * 300_000_000
    assert scalar(db, "select sum(cost_nanos) from spend_by_provider") == total
    assert scalar(db, "select sum(x_CostNanos) from focus_charges") == total
    for name in run_cli("query", "list", "--db", db).output.split():
        shown = run_cli("query", name, "--db", db, "--format", "csv")
        assert shown.exit_code == 0, (name, shown.output)
    assert ("lines_vs_cost",) in query(
        db, "select check_name from billing_reconciliation where batch_id = $1", [batch(10)["id"]]
    )
    report = run_cli("report", "--db", db, "--out", tmp_path / "r.html", "--month", "2026-11")
    assert report.output == f"{tmp_path / 'r.html'}: November 2026, $2.700000000\n"
    assert run_cli("check", "--db", db, "--month", "2026-11").exit_code == 0
    out = run_cli("export", "--db", db, "--format", "focus-csv", "--out", tmp_path / "f")
    assert out.exit_code == 0, out.output


CONTROLS = "\x1b]0;pwned\x07\x1b[2J\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\\u202e\x9b"


def test_control_characters_from_data_never_reach_the_terminal_raw(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """A batch could retitle or clear the terminal, or plant an OSC 8 link, through the
    run summary, query tables, markdown, CSV, sql and errors: every control character is
    shown escaped; CSV text cells that a spreadsheet would run start with a quote."""
    import csv
    import io
    import re

    raw = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
    evil = batch(
        1,
        provider="openai" + CONTROLS,
        session_id='=HYPERLINK("http://x")',
        status="odd" + CONTROLS,  # a new status: named in the summary
    )
    bad_line = b'{"id": "batch_' + CONTROLS.encode() + b'", "oops"'
    path = write_jsonl(tmp_path / "in.jsonl", [evil, bad_line])
    result = run_cli("run", "--input", path, "--db", db)
    assert result.exit_code == 0, result.output
    assert not raw.search(result.output)
    assert "status=odd\\x1b]0;pwned\\x07" in result.output  # shown, escaped
    assert scalar(db, "select provider from batches") == "openai" + CONTROLS  # data kept as is
    for fmt in ("table", "markdown", "csv"):
        shown = run_cli("query", "spend-by-session", "--db", db, "--format", fmt)
        assert shown.exit_code == 0, shown.output
        assert not raw.search(shown.output), fmt
    listed = run_cli("sql", "--db", db, "select provider from batches")
    assert not raw.search(listed.output) and "\\u202e" in listed.output
    as_csv = run_cli("query", "spend-by-session", "--db", db, "--format", "csv").output
    rows = list(csv.reader(io.StringIO(as_csv)))
    assert all(len(r) == len(rows[0]) for r in rows)
    assert rows[1][0] == '\'=HYPERLINK("http://x")'
    error = run_cli("query", "spend-by-" + CONTROLS, "--db", db)
    assert error.exit_code == 2 and not raw.search(error.output)
