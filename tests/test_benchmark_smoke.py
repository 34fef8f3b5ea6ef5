"""The benchmark runs end to end at a tiny size (no timing is asserted: it must not rot)."""

from __future__ import annotations

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
