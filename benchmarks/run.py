"""Benchmark: this pipeline vs dlt vs DuckDB's own JSON reader, fetch throughput, reruns.

    python -m benchmarks.run --sizes 10000,100000,1000000 --repeats 3 --out benchmarks/RESULTS.md
    python -m benchmarks.run --smoke --out /tmp/smoke.md      # tiny, used by the test suite

Each contender runs as its own process on the same JSONL file into a fresh DuckDB file;
wall time and peak RSS (the whole process tree, sampled every 20 ms) are recorded, and
the median of ``--repeats`` runs is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson
import psutil

from pipeline.sample import iter_batches, write_jsonl

HERE = Path(__file__).resolve().parent
PY = sys.executable


@dataclass
class Measure:
    seconds: float
    peak_rss_mb: float


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None) -> Measure:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(ps))
        except psutil.Error:
            pass
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {err[-2000:]}")
    return Measure(elapsed, peak / 2**20)


ISO_SHARE = 0.5  # real-shaped: half the batches carry ISO-8601 timestamps, half Unix


def input_file(n: int, workdir: Path) -> Path:
    path = workdir / f"batches-mixed-{n}.jsonl"
    if not path.exists():
        write_jsonl(path, iter_batches(n, seed=11, iso_share=ISO_SHARE))
    return path


def bench_small_files(n: int, repeats: int, work: Path) -> dict[str, Measure]:
    """The same ``n`` records as ``n`` one-batch .json files and as one JSONL file."""
    folder = work / f"small-{n}"
    one = work / f"small-{n}.jsonl"
    if not folder.exists():
        folder.mkdir()
        objs = list(iter_batches(n, seed=13, iso_share=ISO_SHARE))
        for i, obj in enumerate(objs):
            (folder / f"batch-{i:05d}.json").write_bytes(orjson.dumps(obj))
        write_jsonl(one, objs)
    db = work / "small.duckdb"
    out: dict[str, Measure] = {}
    for name, src in (("one JSONL file", one), (f"{n:,} .json files", folder)):
        runs = []
        for _ in range(repeats):
            fresh(db, work)
            runs.append(measure([PY, "-m", "pipeline", "run", str(src), "--db", str(db), "-q"]))
        out[name] = Measure(
            statistics.median(r.seconds for r in runs),
            statistics.median(r.peak_rss_mb for r in runs),
        )
        print(f"small files: {name:<16} {out[name].seconds:6.2f}s", flush=True)
    fresh(db, work)
    return out


PER_RECORD = "ours, per-record"  # every record per record (BILLING_FAST_PATH=0)


def contenders(src: Path, db: Path, work: Path) -> dict[str, list[str]]:
    ours = [PY, "-m", "pipeline", "run", "--input", str(src), "--db", str(db), "-q"]
    return {
        "ours": ours,
        PER_RECORD: ours,
        "dlt": [PY, str(HERE / "peer_dlt.py"), str(src), str(db), str(work / "dlt")],
        "floor": [PY, str(HERE / "floor_duckdb.py"), str(src), str(db)],
    }


def fresh(db: Path, work: Path) -> None:
    for p in (db, Path(f"{db}.wal")):
        p.unlink(missing_ok=True)
    shutil.rmtree(work / "dlt", ignore_errors=True)
    shutil.rmtree(db.parent / "archive", ignore_errors=True)


def bench_loads(
    sizes: list[int], repeats: int, dlt_max: int, work: Path
) -> dict[int, dict[str, Measure]]:
    results: dict[int, dict[str, Measure]] = {}
    have_dlt = shutil.which("dlt") is not None or _installed("dlt")
    for n in sizes:
        src = input_file(n, work)
        db = work / "bench.duckdb"
        results[n] = {}
        for name, cmd in contenders(src, db, work).items():
            if name == "dlt" and (not have_dlt or n > dlt_max):
                continue
            env = {**os.environ, "BILLING_FAST_PATH": "0" if name == PER_RECORD else "1"}
            runs = []
            for _ in range(repeats):
                fresh(db, work)
                runs.append(measure(cmd, env))
            results[n][name] = Measure(
                statistics.median(r.seconds for r in runs),
                statistics.median(r.peak_rss_mb for r in runs),
            )
            print(
                f"{n:>9,} {name:<16} {results[n][name].seconds:8.2f}s "
                f"{results[n][name].peak_rss_mb:8.0f} MB",
                flush=True,
            )
        fresh(db, work)
    return results


def _installed(name: str) -> bool:
    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


# --------------------------------------------------------------------------- fetch


def bench_fetch(levels: list[int], latency_s: float, work: Path) -> list[tuple[int, int, float]]:
    from pipeline.config import ApiConfig, Secret
    from pipeline.extract.api import Client, fetch_to_archive

    server = subprocess.Popen(
        [PY, str(HERE / "slow_server.py"), str(latency_s * 1000)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
    out = []
    try:
        for conc in levels:
            n = max(100, conc * 15)
            ids = [f"batch_{i:026d}" for i in range(n)]
            api = ApiConfig(base_url=url, token=Secret("bench"), concurrency=conc)

            async def go(api: ApiConfig = api, ids: list[str] = ids) -> float:
                async with Client(api) as client:
                    t = time.perf_counter()
                    await fetch_to_archive(ids, client, work / "fetch.jsonl")
                    return time.perf_counter() - t

            seconds = asyncio.run(go())
            out.append((conc, n, n / seconds))
            print(f"fetch c={conc:<3} {n / seconds:8.1f} batches/s", flush=True)
    finally:
        server.kill()
        server.wait()
    return out


# --------------------------------------------------------------------------- rerun


def changed_snapshots(src: Path, fraction: float) -> Iterator[dict[str, Any]]:
    with src.open("rb") as fh:
        lines = fh.readlines()
    step = max(1, round(1 / fraction))
    for line in lines[::step]:
        obj = orjson.loads(line)
        bill = obj.get("billing") or {}
        obj["billing"] = {
            **bill,
            "cost_nanos": int(bill.get("cost_nanos") or 0) + 1_000,
            "finalized_at": "2026-12-01T00:00:00Z",
        }
        obj["status"] = "completed"
        obj["completed_at"] = obj.get("completed_at") or obj["created_at"]  # Unix or ISO
        yield obj


def bench_incremental(n: int, repeats: int, work: Path) -> dict[str, float]:
    src = input_file(n, work)
    changed = work / f"changed-{n}.jsonl"
    write_jsonl(changed, changed_snapshots(src, 0.01))
    base = work / "inc-base.duckdb"
    fresh(base, work)
    full = measure([PY, "-m", "pipeline", "run", "--input", str(src), "--db", str(base), "-q"])
    times: dict[str, list[float]] = {"changed_only": [], "full_rerun": []}
    for _ in range(repeats):
        for label, inp in (("changed_only", changed), ("full_rerun", src)):
            db = work / "inc.duckdb"
            shutil.copy(base, db)
            times[label].append(
                measure(
                    [PY, "-m", "pipeline", "run", "--input", str(inp), "--db", str(db), "-q"]
                ).seconds
            )
            db.unlink()
    base.unlink()
    return {"full_load": full.seconds, **{k: statistics.median(v) for k, v in times.items()}}


# --------------------------------------------------------------------------- report


def machine() -> list[str]:
    mem = psutil.virtual_memory().total / 2**30
    versions = ", ".join(
        f"{p} {version(p)}"
        for p in ("polars", "duckdb", "pandera", "httpx", "dlt")
        if _installed(p)
    )
    return [
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {versions}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]


def report(
    loads: dict[int, dict[str, Measure]],
    fetch: list[tuple[int, int, float]],
    inc: dict[str, float] | None,
    inc_n: int,
    repeats: int,
    latency_s: float,
    small: dict[str, Measure] | None = None,
) -> str:
    lines = [
        "## Loads (same JSONL, fresh DuckDB file each run)",
        "",
        f"Median of {repeats} runs. Peak RSS is the whole process tree. Input: real-shaped"
        f" batches ({ISO_SHARE:.0%} with ISO-8601 timestamps, the rest Unix seconds; priced"
        " and fallback line shapes). The floor is DuckDB's `read_json` with default options"
        " into the same two tables (no validation, redaction or audit).",
        "",
        "| batches | contender | wall s | batches/s | peak RSS MB | ours/dlt (time) | ours/floor (time) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n, res in loads.items():
        ours = res.get("ours")
        for name, m in res.items():
            vs_dlt = vs_floor = ""
            if name in ("ours", PER_RECORD) and ours:
                if "dlt" in res:
                    vs_dlt = f"{m.seconds / res['dlt'].seconds:.3f} ({res['dlt'].seconds / m.seconds:.1f}x faster)"
                if "floor" in res:
                    vs_floor = f"{m.seconds / res['floor'].seconds:.2f}"
            lines.append(
                f"| {n:,} | {name} | {m.seconds:.2f} | {n / m.seconds:,.0f} | "
                f"{m.peak_rss_mb:,.0f} | {vs_dlt} | {vs_floor} |"
            )
    if small:
        (base_name, base), (many_name, many) = small.items()
        lines += [
            "",
            "## Many small files (the same records)",
            "",
            "| input | wall s | peak RSS MB | vs one file |",
            "|---|---:|---:|---:|",
            f"| {base_name} | {base.seconds:.2f} | {base.peak_rss_mb:,.0f} | 1.00 |",
            f"| {many_name} | {many.seconds:.2f} | {many.peak_rss_mb:,.0f} | "
            f"{many.seconds / base.seconds:.2f} |",
        ]
    lines += [
        "",
        f"## Fetch throughput (loopback server, {latency_s * 1000:.0f} ms per request)",
        "",
        "| concurrency | requests | batches/s | ideal (c / latency) | ratio |",
        "|---:|---:|---:|---:|---:|",
    ]
    for conc, n, rate in fetch:
        ideal = conc / latency_s
        lines.append(f"| {conc} | {n} | {rate:,.1f} | {ideal:,.0f} | {rate / ideal:.2f} |")
    if inc:
        lines += [
            "",
            f"## Incremental night ({inc_n:,} batches loaded, 1% changed)",
            "",
            "| run | wall s | vs full load |",
            "|---|---:|---:|",
            f"| full load (empty database) | {inc['full_load']:.2f} | 1.00 |",
            f"| changed 1% only (what an API night fetches) | {inc['changed_only']:.2f} | "
            f"{inc['changed_only'] / inc['full_load']:.3f} |",
            f"| full input again (1% changed) | {inc['full_rerun']:.2f} | "
            f"{inc['full_rerun'] / inc['full_load']:.2f} |",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--dlt-max",
        type=int,
        default=100_000,
        help="largest size dlt is run at (it is slow: ~500 batches/s)",
    )
    ap.add_argument("--fetch", default="1,16,64")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--incremental", type=int, default=None, help="size for the rerun benchmark")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--small-files", type=int, default=2000, help="one-batch files to compare")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one run: proves it works")
    args = ap.parse_args(argv)
    if args.smoke:
        args.sizes, args.repeats, args.fetch, args.incremental = "200", 1, "1,4", 200
        args.small_files = 50
    sizes = [int(s) for s in args.sizes.split(",") if s]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="billing-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    latency = args.latency_ms / 1000
    loads = bench_loads(sizes, args.repeats, args.dlt_max, work)
    fetch = bench_fetch([int(c) for c in args.fetch.split(",") if c], latency, work)
    inc_n = args.incremental or max(sizes)
    inc = bench_incremental(inc_n, args.repeats, work)
    small = bench_small_files(args.small_files, args.repeats, work) if args.small_files else None
    text = "\n".join(
        [
            "# Benchmark results",
            "",
            *machine(),
            "",
            f"Command: `python -m benchmarks.run {' '.join(argv or sys.argv[1:])}`",
            "",
            report(loads, fetch, inc, inc_n, args.repeats, latency, small),
        ]
    )
    if args.out:
        args.out.write_text(text)
    print(text)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
