"""Shared test helpers (plain functions and constants; fixtures live in conftest)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import orjson

BASE_BATCH: dict[str, Any] = {
    "id": "batch_00000000000000000000000001",
    "object": "batch",
    "endpoint": "/v1/responses",
    "status": "completed",
    "created_at": 1793491200,  # 2026-11-01T00:00:00Z
    "completed_at": 1793494800,
    "request_counts": {"total": 2, "completed": 2, "failed": 0},
    "metadata": {"team": "search"},
    "provider": "openai",
    "session_id": "sess_a",
    "webhook": {
        "url": "https://hooks.example.com/x",
        "secret": "whsec_TOPSECRET",
        "events": ["batch.completed"],
    },
    "pricing_lines": [
        {
            "dimension": "input_text_tokens",
            "quantity": 100000,
            "billable_units": 0.1,
            "unit_size": 1000000,
            "unit_price_usd": "2.000000000",
            "line_cost_usd": "0.200000000",
            "line_nanos": 200000000,
            "pricing_plan": "batch",
            "service_tier": "batch",
        },
        {
            "dimension": "batch_requests",
            "pricing_plan": "batch",
            "service_tier": "batch",
            "endpoint": "/v1/responses",
            "units": 2,
            "total_nanos": 100000000,
            "total_usd_str": "0.100000000",
        },
    ],
    "billing": {
        "billed": True,
        "charged": True,
        "reason": "charged:captured",
        "cost_nanos": 300000000,
        "cost_usd": 0.3,
        "finalized_at": "2026-11-02T03:04:05.000Z",
        "pricing_breakdown": {
            "total_nanos": 300000000,
            "total_usd_str": "0.300000000",
            "total_cents": 30,
            "completed_requests": 2,
            "failed_requests": 0,
            "total_requests": 2,
        },
    },
}


def batch(n: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid batch object with id batch_<26 chars ending in n>; overrides replace keys."""
    obj = copy.deepcopy(BASE_BATCH)
    obj["id"] = f"batch_{n:026d}"
    for key, value in overrides.items():
        if key == "cost_nanos":
            obj["billing"]["cost_nanos"] = value
        else:
            obj[key] = value
    return obj


def rebilled(obj: dict[str, Any], nanos: int, finalized_at: str, **billing: Any) -> dict[str, Any]:
    """A copy of ``obj`` billed ``nanos`` at ``finalized_at``, its breakdown in step
    (``billing`` sets other billing fields, e.g. ``reason``)."""
    out = copy.deepcopy(obj)
    usd = f"{nanos // 10**9}.{nanos % 10**9:09d}"
    out["billing"].update(cost_nanos=nanos, cost_usd=nanos / 1e9, finalized_at=finalized_at)
    out["billing"].update(billing)
    out["billing"]["pricing_breakdown"].update(
        total_nanos=nanos, total_usd_str=usd, total_cents=nanos // 10**7
    )
    return out


def load(run: Callable[..., Any], db: Path, path: Path, items: list[Any], *args: Any) -> Any:
    """Write ``items`` as JSONL at ``path`` and load it into ``db`` (quietly, must succeed)."""
    result = run("run", "--input", write_jsonl(path, items), "--db", db, "-q", *args)
    assert result.exit_code == 0, result.output
    return result


def write_jsonl(path: Path, items: list[Any]) -> Path:
    with path.open("wb") as fh:
        for item in items:
            fh.write((item if isinstance(item, bytes) else orjson.dumps(item)) + b"\n")
    return path


def query(db_path: Path, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def scalar(db_path: Path, sql: str, params: Any = None) -> Any:
    return query(db_path, sql, params)[0][0]


REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"


def billing(*args: str | Path) -> list[str]:
    """The CLI as a subprocess command (``python -m pipeline ...``)."""
    return [sys.executable, "-m", "pipeline", *(str(a) for a in args)]


_BIG: list[Path] = []


def _big_input(write: Callable[..., Any], batches: Callable[..., Any]) -> Path:
    """The 30,000-batch input, written once per test process (1 s each time otherwise)."""
    if not _BIG:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="billing-big-"))
        atexit.register(shutil.rmtree, folder, True)
        write(folder / "big.jsonl", batches(30_000, seed=3))
        _BIG.append(folder / "big.jsonl")
    return _BIG[0]


def start_big_run(tmp_path: Path, db: Path) -> subprocess.Popen[str]:
    """A 30,000-batch run in 1,000-record chunks over two workers, returned once three
    chunks are staged (more to come): the moment to interrupt or kill it."""
    from pipeline.sample import iter_batches
    from pipeline.sample import write_jsonl as write_sample_jsonl

    big = tmp_path / "big.jsonl"
    source = _big_input(write_sample_jsonl, iter_batches)  # written once per test process
    try:
        os.link(source, big)
    except OSError:  # another file system
        import shutil

        shutil.copyfile(source, big)
    proc = subprocess.Popen(
        billing(
            "run",
            "--input",
            big,
            "--db",
            db,
            "--chunk-size",
            "1000",
            "--workers",
            "2",
            "-v",
            "--log-format",
            "json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if json.loads(line).get("chunk") == 3:
            return proc
    raise AssertionError("the run never reached chunk 3")


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit PNG (what headless Chromium's
    --screenshot writes): enough to ask which colours a reader sees, with no image library."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows = zlib.decompress(idat), width * channels, []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(
            bytes(
                line
                if channels == 3
                else b"".join(bytes(line[i : i + 3]) for i in range(0, stride, 4))
            )
        )
        prev = line
    return width, height, rows
