"""Heavier consumers: Spark reading the Parquet export, and the notebook run headless."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, SAMPLE, query, scalar


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from click.testing import CliRunner

    from pipeline.cli import cli

    db = tmp_path_factory.mktemp("sample") / "billing.duckdb"
    result = CliRunner().invoke(cli, ["run", "--input", str(SAMPLE), "--db", str(db), "-q"])
    assert result.exit_code == 0, result.output
    return db


@pytest.mark.spark
def test_spark_reads_the_export_with_the_same_totals(sample_db: Path, tmp_path: Path) -> None:
    pyspark = pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime")
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from pipeline.export import export_parquet
    from pipeline.load import reader

    with reader(sample_db) as con:
        export_parquet(con, tmp_path / "lake")
    expected_total = scalar(sample_db, "select sum(cost_nanos) from batches")
    expected_by_provider = dict(
        query(sample_db, "select provider, sum(cost_nanos) from batches group by 1")
    )
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("billing-export-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "1")  # one core, tiny data: no 200 tasks
        .config("spark.default.parallelism", "1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        # a short-lived JVM: the quick compiler only and one GC thread (less CPU for the
        # other tests on a 2-core machine; the answers are the same)
        .config(
            "spark.driver.extraJavaOptions",
            "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:CICompilerCount=1",
        )
        .getOrCreate()
    )
    try:
        assert spark.version == pyspark.__version__  # the session is the installed pyspark
        batches = spark.read.parquet(str(tmp_path / "lake" / "batches"))
        # one Spark job per dataset (each job costs seconds on one core): per provider
        # counts and sums, the totals added up here in exact integers
        rows = (
            batches.groupBy("provider")
            .agg(F.count("*").alias("n"), F.sum("cost_nanos").alias("s"))
            .collect()
        )
        assert sum(r["n"] for r in rows) == 324
        assert sum(r["s"] for r in rows) == expected_total
        assert {r["provider"]: r["s"] for r in rows} == expected_by_provider
        focus = spark.read.parquet(str(tmp_path / "lake" / "focus_charges"))
        billed, nanos = focus.agg(F.sum("BilledCost"), F.sum("x_CostNanos")).collect()[0]
        assert str(billed) == "690.661169561"
        assert nanos == expected_total
        assert set(batches.columns) >= {"month", "provider", "cost_nanos", "billing_finalized_at"}
    finally:
        spark.stop()


def test_notebook_runs_headless_and_builds_its_charts(sample_db: Path, monkeypatch: Any) -> None:
    pytest.importorskip("marimo")
    pytest.importorskip("altair")
    monkeypatch.setenv("BILLING_DB", str(sample_db))
    monkeypatch.syspath_prepend(str(REPO / "notebooks"))
    from spend_dashboard import app

    _, defs = app.run()
    charts = {
        name: defs[name].to_dict()
        for name in ("spend_over_time", "top_sessions", "model_mix", "reconciliation")
    }
    assert {n: c["mark"]["type"] for n, c in charts.items()} == {
        "spend_over_time": "area",
        "top_sessions": "bar",
        "model_mix": "bar",
        "reconciliation": "bar",
    }
    assert defs["daily"].height > 0 and defs["sessions"].height == 10 and defs["models"].height > 0
    assert defs["totals"]["cost_nanos"] == 690_661_169_561
    assert defs["checks"].rows() == [("all checks pass", 0)]
    # the report's colour for each provider (one palette, pipeline.finance.provider_colors)
    scale = charts["spend_over_time"]["encoding"]["color"]["scale"]
    assert charts["model_mix"]["encoding"]["color"]["scale"] == scale
    assert dict(zip(scale["domain"], scale["range"], strict=True)) == {
        "anthropic": "#4C78A8",
        "google-vertex": "#F58518",
        "groq": "#54A24B",
        "mistral": "#E45756",
        "openai": "#72B7B2",
    }


def test_notebook_exports_to_html_with_four_charts(sample_db: Path, tmp_path: Path) -> None:
    marimo = shutil.which("marimo") or str(Path(sys.executable).parent / "marimo")
    if not Path(marimo).exists():
        pytest.skip("marimo not installed")
    out = tmp_path / "dashboard.html"
    proc = subprocess.run(
        [
            marimo,
            "-y",
            "export",
            "html",
            str(REPO / "notebooks" / "spend_dashboard.py"),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BILLING_DB": str(sample_db)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Failed" not in proc.stderr
    page = out.read_text()
    assert page.count("vega-lite/v") >= 4
    # the offline story the README tells: this export needs the network (its front end
    # comes from a CDN); the report is the page that opens offline
    assert 'src="https://cdn.jsdelivr.net/npm/@marimo-team/frontend@' in page
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "it loads marimo's front end from a CDN (`cdn.jsdelivr.net`)" in readme
    assert "use `billing report`: everything inline, nothing fetched" in readme


def test_an_open_notebook_never_blocks_the_nightly_run_and_shows_it_next_refresh(
    tmp_path: Path, monkeypatch: Any
) -> None:
    pytest.importorskip("marimo")
    from tests.helpers import batch, write_jsonl

    db = tmp_path / "billing.duckdb"
    first = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--input", str(SAMPLE), "--db", str(db), "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    monkeypatch.setenv("BILLING_DB", str(db))
    monkeypatch.syspath_prepend(str(REPO / "notebooks"))
    from spend_dashboard import app

    _, defs = app.run()  # the dashboard is open (its module and app stay alive)
    assert defs["totals"]["cost_nanos"] == 690_661_169_561
    extra = write_jsonl(tmp_path / "extra.jsonl", [batch(999, cost_nanos=1)])
    run = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--input", str(extra), "--db", str(db), "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    _, defs = app.run()  # a refresh reads the newly published snapshot
    assert defs["totals"]["cost_nanos"] == 690_661_169_562
