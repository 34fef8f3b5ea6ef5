"""Read batch objects from ``.json`` / ``.jsonl`` files as a stream of raw records.

Nothing is dropped here: a line that does not parse becomes a :class:`RawRecord`
with ``error`` set, so the runner can quarantine it with its raw text and location.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

SUFFIXES = (".json", ".jsonl", ".ndjson")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One input record before transformation.

    ``line`` is the 1-based line of a JSONL file, or the 1-based item number in a JSON
    array (1 for a file holding one object). ``obj`` is the parsed value, or ``None``
    with ``error`` saying why it could not be parsed.
    """

    source: str
    line: int
    text: str
    obj: Any = None
    error: str | None = None
    pending: bool = False  # text not parsed yet (parsed later, in a worker)

    def parsed(self) -> RawRecord:
        return _parse(self.source, self.line, self.text) if self.pending else self


def iter_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into the list of input files."""
    paths: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no .json or .jsonl files in folder {p}")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return paths


def _parse(source: str, line: int, text: str) -> RawRecord:
    try:
        return RawRecord(source, line, text, orjson.loads(text))
    except orjson.JSONDecodeError as exc:
        return RawRecord(source, line, text, None, f"invalid JSON: {exc}")


def _jsonl_records(source: str, first_line: int, lines: Iterable[bytes]) -> Iterator[RawRecord]:
    for n, raw in enumerate(lines, start=first_line):
        text = raw.decode("utf-8", errors="replace").strip()
        if text:
            yield RawRecord(source, n, text, pending=True)


def _read_jsonl(path: Path) -> Iterator[RawRecord]:
    with path.open("rb") as fh:
        yield from _jsonl_records(str(path), 1, fh)


@dataclass(frozen=True, slots=True)
class LineSlice:
    """``lines`` whole lines of a JSONL file, bytes ``start`` to ``end``: a chunk that a
    worker reads itself, so the records never pass through the main process."""

    source: str
    start: int
    end: int
    first_line: int
    lines: int

    def records(self) -> list[RawRecord]:
        with open(self.source, "rb") as fh:
            fh.seek(self.start)
            data = fh.read(self.end - self.start)
        parts = data.split(b"\n")
        if data.endswith(b"\n"):
            parts.pop()
        return list(_jsonl_records(self.source, self.first_line, parts))


Chunk = list[RawRecord] | LineSlice


def _jsonl_slices(path: Path, size: int) -> Iterator[LineSlice]:
    source, start, first, n, pos = str(path), 0, 1, 0, 0
    with path.open("rb") as fh:
        for raw in fh:
            pos += len(raw)
            n += 1
            if n == size:
                yield LineSlice(source, start, pos, first, n)
                start, first, n = pos, first + n, 0
    if n:
        yield LineSlice(source, start, pos, first, n)


def chunked(records: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk


def read_chunks(paths: Iterable[Path], size: int) -> Iterator[Chunk]:
    """Chunks of about ``size`` records: JSONL files as byte slices (read by the worker
    that transforms them), JSON files as parsed records."""
    for path in paths:
        if path.suffix.lower() == ".json":
            yield from chunked(_read_json(path), size)
        else:
            yield from _jsonl_slices(path, size)


def _read_json(path: Path) -> Iterator[RawRecord]:
    source = str(path)
    text = path.read_bytes().decode("utf-8", errors="replace")
    if not text.strip():
        return
    whole = _parse(source, 1, text.strip())
    obj = whole.obj
    if whole.error is not None:
        yield whole
        return
    # A saved list response ({"object": "list", "data": [...]}) or a bare array.
    if isinstance(obj, dict) and obj.get("object") == "list" and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if isinstance(obj, list):
        for i, item in enumerate(obj, start=1):
            yield RawRecord(source, i, orjson.dumps(item).decode(), item)
    else:
        yield whole


def read_records(paths: Iterable[Path]) -> Iterator[RawRecord]:
    """Stream raw records from every file, in order; memory stays flat for JSONL."""
    for path in paths:
        if path.suffix.lower() == ".json":
            yield from _read_json(path)
        else:
            yield from _read_jsonl(path)
