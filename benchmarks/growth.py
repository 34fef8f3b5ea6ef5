"""Benchmark of growth: the same small night loaded on databases of growing history.

    python -m benchmarks.growth --sizes 0,1000000,5000000 --night 2000 --repeats 3 \\
        --requests-on 1000000 --workdir /tmp/growth --out /tmp/growth.md

Each history size is built once (``billing run`` of the deterministic sample with that
many batches, which also moves the settled batches into the Parquet history beside it,
pipeline/history.py; kept in ``--workdir`` for the next invocation). Each measurement
copies the built database file (the head) to a fresh file, not measured, which reads the
built history files as any copy does; then runs ``billing run NIGHT`` on it as its own
process and records its wall time, its peak RSS (the process tree, sampled every 20 ms)
and the bytes it wrote (``write_bytes`` of the process and the children it waited for,
from ``wait4``'s rusage: page-cache writes included, before any flush). Medians of
``--repeats`` runs. ``--requests-on N`` adds a history of N batches with
``--requests-per-batch`` (10) request rows each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psutil

from benchmarks.run import machine, tree_rss

PY = sys.executable


@dataclass
class Night:
    seconds: float
    peak_rss_mb: float
    written_mb: float
    db_mb: float
    history_mb: float = 0.0


def history_mb(db: Path | None) -> float:
    """The size of a database's Parquet history (pipeline.history.folder_of)."""
    if db is None:
        return 0.0
    folder = db.parent / f"{db.stem}.history"
    return sum(p.stat().st_size for p in folder.rglob("*.parquet")) / 2**20


def measure_night(cmd: list[str]) -> tuple[float, float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            peak = max(peak, tree_rss(ps))
        except psutil.Error:
            pass
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"{cmd[:4]} failed ({code}): {err[-2000:]}")
    return elapsed, peak / 2**20, usage.ru_oublock * 512 / 2**20


def _sample(n: int, work: Path) -> Path:
    data = work / f"history-{n}"
    if not (data / "batches-2026-11.jsonl").exists():  # (kept when a build was stopped)
        subprocess.run(
            [PY, "-m", "pipeline", "sample", "--out", str(data), "--batches", str(n), "-q"],
            check=True,
        )
    return data


def _run(src: Path, db: Path, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [PY, "-m", "pipeline", "run", str(src), "--db", str(db), "-q", "--keep-snapshots", "0"],
        check=True,
        env={**os.environ, **(env or {})},
    )
    shutil.rmtree(db.parent / "snapshots", ignore_errors=True)


def history(n: int, work: Path) -> Path | None:
    """The database holding ``n`` batches (built once; None for an empty history)."""
    if n == 0:
        return None
    db = work / f"history-{n}.duckdb"
    if not db.exists():
        _run(_sample(n, work), db)
    return db


def history_with_requests(n: int, per: int, work: Path) -> Path:
    """``n`` batches with ``per`` request rows each (added by SQL while every row is still
    in the head; the next run, of an empty input, moves them into the history with their
    batches, as any night would)."""
    db = work / f"history-{n}-requests-{per}.duckdb"
    if db.exists():
        return db
    _run(_sample(n, work), db, {"BILLING_HISTORY_KEEP_BATCHES": str(10**12)})
    con = duckdb.connect(str(db))
    con.execute(
        "insert into hot.batch_requests by name select b.id as batch_id,"
        " b.id || '-r' || r.range as request_id, 'c' || r.range as custom_id,"
        " r.range as request_index, b.provider, 'model-x' as model, 'POST' as method,"
        " '/v1/chat/completions' as endpoint, 'completed' as status, 200 as response_status,"
        " (coalesce(b.cost_nanos, 0) // $1)::bigint as cost_nanos, 100 as input_tokens,"
        " 10 as output_tokens, 110 as total_tokens, b.created_at, b.created_at as updated_at,"
        " b.completed_at, b.run_id, b.loaded_at from hot.batches b, range($1) r",
        [per],
    )
    con.execute("checkpoint")
    con.close()
    empty = work / "empty.jsonl"
    empty.write_text("")
    _run(empty, db)
    return db


def night_input(n: int, work: Path) -> Path:
    folder = work / f"night-{n}"
    if not folder.exists():  # another seed: new batch ids, the same shapes
        subprocess.run(
            [PY, "-m", "pipeline", "sample", "--out", str(folder), "--batches", str(n),
             "--seed", "99", "-q"],
            check=True,
        )  # fmt: skip
    return folder


def bench(
    cases: list[tuple[str, Path | None]], night: int, repeats: int, work: Path
) -> dict[str, Night]:
    src = night_input(night, work)
    out: dict[str, Night] = {}
    for label, base in cases:
        runs = []
        for _ in range(repeats):
            run_dir = work / "run"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir()
            db = run_dir / "billing.duckdb"
            if base is not None:
                shutil.copyfile(base, db)
            cmd = [PY, "-m", "pipeline", "run", str(src), "--db", str(db), "-q"]
            seconds, rss, written = measure_night(cmd)
            runs.append(Night(seconds, rss, written, db.stat().st_size / 2**20))
        out[label] = r = Night(
            statistics.median(r.seconds for r in runs),
            statistics.median(r.peak_rss_mb for r in runs),
            statistics.median(r.written_mb for r in runs),
            statistics.median(r.db_mb for r in runs),
            history_mb(base),
        )
        print(
            f"{label:>30}: {r.seconds:6.2f}s {r.peak_rss_mb:7.0f} MB RSS"
            f" {r.written_mb:8.0f} MB written (db {r.db_mb:,.0f} MB"
            f" + history {r.history_mb:,.0f} MB)",
            flush=True,
        )
        shutil.rmtree(work / "run", ignore_errors=True)
    return out


def report(results: dict[str, Night], night: int, repeats: int) -> str:
    empty = results.get("0")
    lines = [
        f"A night of {night:,} new batches (`billing run` of a folder of JSONL) on a database"
        f" already holding N batches; median of {repeats} runs, each on a fresh copy of the"
        " database.",
        "",
        "| history (batches) | database file (head) | Parquet history | night time | vs empty"
        " | peak RSS | written by the night |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        ratio = f"{r.seconds / empty.seconds:.2f}x" if empty else "-"
        lines.append(
            f"| {label} | {r.db_mb:,.0f} MB | {r.history_mb:,.0f} MB | {r.seconds:.2f} s |"
            f" {ratio} | {r.peak_rss_mb:,.0f} MB | {r.written_mb:,.0f} MB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0,1000000,5000000")
    ap.add_argument("--night", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--requests-on", type=int, default=0, help="also this many batches with request rows"
    )
    ap.add_argument("--requests-per-batch", type=int, default=10)
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="billing-growth-"))
    work.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, Path | None]] = [
        (f"{n:,}", history(n, work)) for n in (int(s) for s in args.sizes.split(",") if s)
    ]
    if args.requests_on:
        n, per = args.requests_on, args.requests_per_batch
        label = f"{n:,} + {n * per:,} request rows"
        cases.append((label, history_with_requests(n, per, work)))
    for n in {int(s) for s in args.sizes.split(",") if s} | {args.requests_on or 0}:
        shutil.rmtree(work / f"history-{n}", ignore_errors=True)  # the built inputs
    results = bench(cases, args.night, args.repeats, work)
    text = "\n".join(
        [
            "## Growth: a small night on a growing history",
            "",
            *machine(),
            "",
            f"Command: `python -m benchmarks.growth {' '.join(argv or sys.argv[1:])}`",
            "",
            report(results, args.night, args.repeats),
        ]
    )
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
