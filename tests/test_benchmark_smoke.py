"""The benchmark runs end to end at a tiny size (no timing is asserted: it must not rot)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


@pytest.mark.benchmark
def test_benchmark_smoke_run_writes_its_report(tmp_path: Path) -> None:
    pytest.importorskip("psutil")
    from benchmarks.run import main

    out = tmp_path / "RESULTS.md"
    assert main(["--smoke", "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    text = out.read_text()
    assert "| 200 | ours |" in text and "| 200 | floor |" in text
    assert "## Fetch throughput (loopback server, 20 ms per request)" in text
    assert "| 4 | 100 |" in text
    assert "## Incremental night (200 batches loaded, 1% changed)" in text
    assert "| 50 .json files |" in text and "| one JSONL file |" in text


@pytest.mark.benchmark
def test_the_floor_probe_writes_what_ours_writes_and_reports_every_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The probe's "our tables, no checks" is only a bound if it writes our tables whole."""
    import duckdb

    from benchmarks.probe_floor import main, our_tables
    from pipeline.sample import iter_batches, write_jsonl
    from tests.helpers import billing

    src = tmp_path / "in.jsonl"
    write_jsonl(src, iter_batches(300, seed=5, iso_share=0.5))
    subprocess.run(billing("run", src, "--db", tmp_path / "ours.duckdb", "-q"), check=True)
    our_tables(str(src), str(tmp_path / "probe.duckdb"))
    totals = (
        "select (select count(*) from batches), (select sum(cost_nanos) from batches),"
        " (select count(created_at) from batches), (select count(billing_finalized_at)"
        " from batches), (select count(*) from pricing_lines),"
        " (select sum(line_nanos) from pricing_lines), (select count(quantity) from pricing_lines)"
    )
    found = []
    for name in ("ours", "probe"):
        with duckdb.connect(str(tmp_path / f"{name}.duckdb"), read_only=True) as con:
            found.append(con.execute(totals).fetchone())
    assert found[0] == found[1]
    assert found[0] is not None and found[0][0] == 300

    main([str(src), "--repeats", "1"])
    steps = [line.split(" | ")[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert steps == [
        "| floor",
        "| our tables, no checks",
        "| ours",
        "| read alone: raw lines (read_ndjson_objects)",
        "| read alone: every leaf as its JSON text (read_json)",
        "| read alone: screen: text is DuckDB's own text",
        "| read alone: key lists (repeated, unknown keys)",
        "| read alone: chained: the reads and checks of an exact path in DuckDB SQL, nothing"
        " written",
    ]


@pytest.mark.benchmark
def test_the_probes_exact_sql_path_reads_every_record_and_line(tmp_path: Path) -> None:
    """Its time is a bound only if it really reads and checks every record and line."""
    import duckdb

    from benchmarks.probe_floor import exact_sql_path
    from pipeline.sample import iter_batches, write_jsonl

    src = tmp_path / "in.jsonl"
    batches = list(iter_batches(300, seed=5, iso_share=0.5))
    write_jsonl(src, batches)
    con = duckdb.connect()
    assert exact_sql_path(con, str(src)) > 0
    assert con.execute("select count(*), count(*) filter (where ok) from ok").fetchone() == (
        300,
        300,
    )
    lines = sum(len(b.get("pricing_lines") or []) for b in batches)
    assert con.execute("select count(*) from lines").fetchone() == (lines,)


@pytest.mark.benchmark
def test_the_growth_benchmark_writes_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("psutil")
    from benchmarks.growth import main

    # the built history keeps 100 settled batches in its head, the rest in Parquet
    monkeypatch.setenv("BILLING_HISTORY_KEEP_BATCHES", "100")
    monkeypatch.setenv("BILLING_HISTORY_MIN_BATCHES", "1")

    out = tmp_path / "growth.md"
    args = ["--sizes", "0,300", "--night", "40", "--repeats", "1", "--workdir", str(tmp_path),
            "--requests-on", "300", "--requests-per-batch", "2"]  # fmt: skip
    assert main([*args, "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 0 |") or
            line.startswith("| 300 |")]  # fmt: skip
    assert len(rows) == 2
    assert rows[0].split("|")[5].strip() == "1.00x"  # the empty history against itself
    assert (tmp_path / "history-300.duckdb").exists()  # kept for the next invocation
    assert list((tmp_path / "history-300.history" / "batches").rglob("*.parquet"))
    assert "| 300 + 600 request rows |" in out.read_text()
    requests = tmp_path / "history-300-requests-2.history" / "batch_requests"
    assert list(requests.rglob("*.parquet"))  # moved with their batches
