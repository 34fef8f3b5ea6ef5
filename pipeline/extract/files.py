"""Read batch objects from ``.json`` / ``.jsonl`` files as a stream of raw records.

Nothing is dropped here, and nothing is skipped silently: a line that does not parse,
is not UTF-8 or is over the size limit becomes a :class:`RawRecord` with ``error`` set,
and a file or folder that cannot be read becomes one with ``unreadable`` set, so the
runner can quarantine it with its location and say the night is incomplete.

Limits (documented in the README): one record (a JSONL line, an item of a JSON array, or
a whole ``.json`` file holding one object) is at most :data:`MAX_RECORD_BYTES`; a
``.json`` file is at most :data:`MAX_JSON_FILE_BYTES` (use JSONL beyond that). A
quarantined record keeps at most :data:`MAX_RAW_KEPT` characters of its raw text.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import orjson

SUFFIXES = (".json", ".jsonl", ".ndjson")
# request rows (GET /batches/{id}/requests) saved beside batch files
REQUEST_FILE_SUFFIXES = (".requests.json", ".requests.jsonl", ".requests.ndjson")
MAX_RECORD_BYTES = 8 * 1024 * 1024
MAX_JSON_FILE_BYTES = 256 * 1024 * 1024
MAX_RAW_KEPT = 64 * 1024
MAX_JSON_VALUES = 8_000_000  # values of one JSON document (parsed whole): about 100 MiB of batches
SMALL_FILE_BYTES = 1024 * 1024  # JSONL files below this are read whole, many to a chunk
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One input record before transformation.

    ``line`` is the 1-based line of a JSONL file, or the 1-based item number in a JSON
    array (1 for a file holding one object; 0 for a whole file that could not be read).
    ``obj`` is the parsed value, or ``None`` with ``error`` saying why it could not be
    parsed; ``unreadable`` marks input that could not be read at all (the night is
    incomplete).
    """

    source: str
    line: int
    text: str
    obj: Any = None
    error: str | None = None
    pending: bool = False  # text not parsed yet (parsed later, in a worker)
    unreadable: bool = False
    kind: str = "batch"  # or "requests": request rows of one batch

    def parsed(self) -> RawRecord:
        return _parse(self.source, self.line, self.text) if self.pending else self


def kept_text(text: str) -> str:
    """The raw text a quarantined record keeps: all of it up to MAX_RAW_KEPT characters."""
    if len(text) <= MAX_RAW_KEPT:
        return text
    return text[:MAX_RAW_KEPT] + f"… [truncated: {len(text):,} characters in all]"


def unreadable(source: str, why: str) -> RawRecord:
    return RawRecord(source, 0, "", None, f"cannot read: {why}", unreadable=True)


def _os_error(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


# --------------------------------------------------------------------------- finding files


@dataclass
class Inputs:
    """The files to read, and what could not be read or was not a file (never skipped
    silently: each becomes an ``unreadable`` record)."""

    paths: list[Path]
    problems: list[RawRecord]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def iter_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """The input files (see :func:`find_inputs`); raises if any could not be read."""
    found = find_inputs(inputs)
    if found.problems:
        raise FileNotFoundError(str(found.problems[0].error))
    return found.paths


def find_inputs(inputs: Iterable[str | Path]) -> Inputs:
    """Expand files and folders (recursively, sorted, following links once) into files.

    The same file named twice, or by two spellings of its path, is read once. A folder
    entry with a JSON suffix that is not a readable regular file (a broken link, a
    FIFO, a folder named ``x.json``), and a folder that cannot be listed, are problems.
    An input that does not exist, a file without a JSON suffix and a folder without
    JSON files are usage errors (raised as ``FileNotFoundError``/``ValueError``).
    """
    paths: list[Path] = []
    problems: list[RawRecord] = []
    seen: set[tuple[int, int]] = set()

    def add(path: Path) -> None:
        ident = _identity(path)
        if ident is not None and ident in seen:
            return
        if ident is not None:
            seen.add(ident)
        paths.append(path)

    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            _refuse_system_folder(p)
            found = list(_walk(p))
            if not found:
                raise FileNotFoundError(f"no .json or .jsonl files in folder {p}")
            for path, problem in found:
                if problem is not None:
                    problems.append(unreadable(str(path), problem))
                else:
                    add(path)
        elif p.is_file():
            if p.suffix.lower() not in SUFFIXES:
                raise ValueError(
                    f"{p} is not a .json, .jsonl or .ndjson file (pass batch files or folders)"
                )
            add(p)
        elif p.exists() or p.is_symlink():
            if p.suffix.lower() in SUFFIXES:
                problems.append(unreadable(str(p), _not_regular(p)))
            else:
                raise ValueError(f"{p} is not a file or folder that can be read")
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return Inputs(paths, problems)


# Folders no batch export lives in, whose walk would read the whole machine (or never end:
# /proc, /sys and /dev are views of the kernel, not files).
_KERNEL_FOLDERS = ("/proc", "/sys", "/dev")  # refused with everything inside them
_SYSTEM_FOLDERS = ("/", *_KERNEL_FOLDERS, "/run", "/boot", "/etc", "/usr", "/var", "/lib")


def _refuse_system_folder(folder: Path) -> None:
    real = os.path.realpath(folder)
    inside = any(real.startswith(k + os.sep) for k in _KERNEL_FOLDERS)
    if real in _SYSTEM_FOLDERS or inside:
        raise ValueError(
            f"refusing to read every JSON file under {folder} (a system folder"
            f"{'' if real == str(folder) else f', {real}'}): name the folder that holds the"
            " batch files"
        )


def _not_regular(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"{_os_error(exc)} (a broken link?)" if path.is_symlink() else _os_error(exc)
    if stat.S_ISDIR(mode):
        return "a folder with a file suffix"
    if stat.S_ISFIFO(mode):
        return "a named pipe, not a regular file"
    return "not a regular file"


def _walk(top: Path) -> Iterator[tuple[Path, str | None]]:
    """(file, None) for every JSON file under ``top``, (path, why) for what cannot be read."""
    errors: list[OSError] = []
    visited: set[str] = set()
    found: list[tuple[Path, str | None]] = []
    for folder, dirs, files in os.walk(top, onerror=errors.append, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a link loop: each folder once
            dirs[:] = []
            continue
        visited.add(real)
        dirs.sort()
        for name in files + [d for d in dirs if d.lower().endswith(SUFFIXES)]:
            if not name.lower().endswith(SUFFIXES):
                continue
            path = Path(folder, name)
            if path.is_file():
                found.append((path, None if os.access(path, os.R_OK) else "permission denied"))
            else:
                found.append((path, _not_regular(path)))
        # links to folders that are gone show up as files that are not files
    for exc in errors:
        found.append((Path(exc.filename or top), f"cannot list folder: {_os_error(exc)}"))
    yield from sorted(found, key=lambda item: str(item[0]))


# --------------------------------------------------------------------------- records


def _parse(source: str, line: int, text: str) -> RawRecord:
    try:
        return RawRecord(source, line, text, orjson.loads(text))
    except orjson.JSONDecodeError as exc:
        return RawRecord(source, line, kept_text(text), None, f"invalid JSON: {exc}")


def _decode(source: str, line: int, raw: bytes) -> RawRecord | None:
    """One JSONL line as a pending record, or a quarantined one (not UTF-8, too large)."""
    if raw.startswith(_BOM):
        raw = raw[3:]
    raw = raw.strip()
    if not raw:
        return None
    if len(raw) > MAX_RECORD_BYTES:
        return _oversize(source, line, raw[:MAX_RAW_KEPT], len(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RawRecord(
            source,
            line,
            kept_text(raw.decode("utf-8", errors="backslashreplace")),
            None,
            _not_utf8(raw, exc, "record"),
        )
    return RawRecord(source, line, text, pending=True)


def _not_utf8(raw: bytes, exc: UnicodeDecodeError, what: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text (it starts with a UTF-16 byte order mark): save the file as UTF-8"
    return f"invalid UTF-8 at byte {exc.start + 1} of the {what}: {exc.reason}"


def _oversize(source: str, line: int, head: bytes, size: int) -> RawRecord:
    text = head.decode("utf-8", errors="backslashreplace")
    return RawRecord(
        source,
        line,
        text[:MAX_RAW_KEPT] + f"… [truncated: {size:,} bytes in all]",
        None,
        f"record is {size:,} bytes, over the {MAX_RECORD_BYTES // 1024 // 1024} MiB limit",
    )


def _jsonl_records(source: str, first_line: int, lines: Iterable[bytes]) -> Iterator[RawRecord]:
    for n, raw in enumerate(lines, start=first_line):
        rec = _decode(source, n, raw)
        if rec is not None:
            yield rec


_BLOCK = 4 * 1024 * 1024


class EndlessLine(Exception):
    """A line with no end in sight (``/dev/zero`` on stdin, a stream that never sends a
    newline): reading stops after MAX_LINE_SKIP bytes of it."""

    def __init__(self, size: int) -> None:
        super().__init__(
            f"a line of more than {size // 2**20:,} MiB with no end: stopped reading here"
            " (the records after it were not read)"
        )


MAX_LINE_SKIP = 1024 * 1024 * 1024  # an oversize line is skipped to its end, up to this


def iter_lines(
    fh: Any, first: bytes | None = None, limit: int | None = None
) -> Iterator[tuple[bytes, int, int]]:
    """(line, bytes with its newline, bytes of the record) for each line, never holding
    more than ``limit`` bytes of one line: an oversize line yields only its head, and a
    line past MAX_LINE_SKIP raises :class:`EndlessLine`. ``first``: bytes already read
    from the start of ``fh``. Reads in blocks (a line costs a ``find``, not a
    ``readline`` call). Old Mac line endings (CR alone, no LF in the first block) are
    read as newlines: a CR cannot occur raw inside a JSON value."""
    limit = MAX_RECORD_BYTES if limit is None else limit
    buf = first or b""
    cr = cr_only(buf)
    if cr:
        buf = buf.replace(b"\r", b"\n")
    while True:
        i = 0
        while (nl := buf.find(b"\n", i)) >= 0:
            record = nl - i
            if record > limit:
                yield buf[i : i + MAX_RAW_KEPT], record + 1, record
            else:
                yield buf[i : nl + 1], record + 1, record
            i = nl + 1
        rest = buf[i:]
        if len(rest) > limit:  # a line too long so far: skip to its end
            head, size = rest[:MAX_RAW_KEPT], len(rest)
            while True:
                block = fh.read(_BLOCK)
                if cr:
                    block = block.replace(b"\r", b"\n")
                if not block:
                    yield head, size, size
                    return
                nl = block.find(b"\n")
                if nl >= 0:
                    size += nl + 1
                    yield head, size, size - 1
                    buf = block[nl + 1 :]
                    break
                size += len(block)
                if size > MAX_LINE_SKIP:
                    raise EndlessLine(MAX_LINE_SKIP)
            continue
        block = fh.read(_BLOCK)
        if cr:
            block = block.replace(b"\r", b"\n")
        if not block:
            if rest:
                yield rest, len(rest), len(rest)
            return
        buf = rest + block


SNIFF_CR = 64 * 1024  # where CR-only line endings are recognised


def cr_only(head: bytes) -> bool:
    """Lines ended by CR alone (old Mac files): a CR and no LF in the first 64 KiB."""
    return b"\n" not in head[:SNIFF_CR] and b"\r" in head[:SNIFF_CR]


@dataclass(frozen=True, slots=True)
class LineSlice:
    """``lines`` whole lines of a JSONL file, bytes ``start`` to ``end``: a chunk that a
    worker reads itself, so the records never pass through the main process."""

    source: str
    start: int
    end: int
    first_line: int
    lines: int
    cr_only: bool = False  # the file ends its lines with CR alone

    def records(self) -> list[RawRecord]:
        try:
            with open(self.source, "rb") as fh:
                fh.seek(self.start)
                data = fh.read(self.end - self.start)
        except OSError as exc:
            return [unreadable(self.source, _os_error(exc))]
        if len(data) != self.end - self.start:  # cut short since it was scanned
            return [
                unreadable(
                    self.source,
                    f"the file changed while it was read (lines {self.first_line}-"
                    f"{self.first_line + self.lines - 1} were bytes {self.start}-{self.end},"
                    f" now it ends at byte {self.start + len(data)}): load it again",
                )
            ]
        if self.cr_only:
            data = data.replace(b"\r", b"\n")
        parts = data.split(b"\n")
        if data.endswith(b"\n"):
            parts.pop()
        return list(_jsonl_records(self.source, self.first_line, parts))


Chunk = list[RawRecord] | LineSlice


# Files that are not JSON text at all, told by their first bytes (no JSON text starts
# with these): one reason for the file, not a reject for every "line" of its bytes.
_BINARY = (
    (b"\x1f\x8b", "gzip-compressed data, not JSON text: decompress it first (gunzip)"),
    (b"PK\x03\x04", "a zip archive, not JSON text: unzip it first"),
    (b"BZh", "bzip2-compressed data, not JSON text: decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed data, not JSON text: decompress it first (unxz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data, not JSON text: decompress it first (unzstd)"),
    (b"PAR1", "a Parquet file, not JSON text"),
    (b"SQLite format 3\x00", "an SQLite database, not JSON text"),
)
SNIFF_BYTES = 16


def binary_format(head: bytes) -> str | None:
    """Why a file starting with ``head`` (its first SNIFF_BYTES or more) is no JSON text
    (None: it may be)."""
    for magic, why in _BINARY:
        if head.startswith(magic):
            return why
    if is_duckdb_header(head):
        return "a DuckDB database, not JSON text (pass it as --db)"
    return None


def is_duckdb_header(head: bytes) -> bool:
    """A DuckDB file's first 16 bytes: an 8-byte checksum (any bytes, '{' or a newline
    included), "DUCK", then the storage version as a little-endian integer (NUL bytes no
    JSON text holds)."""
    return head[8:12] == b"DUCK" and b"\x00" in head[12:16]


def _read_jsonl(path: Path) -> Iterator[RawRecord]:
    source = str(path)
    try:
        with path.open("rb") as fh:
            first = fh.read(SNIFF_CR)  # enough to tell CR-only line endings
            why = binary_format(first)
            if why is not None:
                yield unreadable(source, why)
                return
            yield from _jsonl_stream(source, fh, first)
    except OSError as exc:
        yield unreadable(source, _os_error(exc))


def _jsonl_stream(source: str, fh: Any, first: bytes | None = None) -> Iterator[RawRecord]:
    """One record a line; an oversize line is quarantined with its head only."""
    n = 0
    try:
        for n, (raw, _, size) in enumerate(iter_lines(fh, first), start=1):
            if size > MAX_RECORD_BYTES:
                yield _oversize(source, n, raw, size)
            elif (rec := _decode(source, n, raw)) is not None:
                yield rec
    except EndlessLine as exc:
        yield unreadable(source, f"line {n + 1}: {exc}")


def _jsonl_slices(path: Path, size: int) -> Iterator[Chunk]:
    """Byte slices of ``size`` lines; an oversize line is cut out as its own record."""
    source, start, first, n, pos = str(path), 0, 1, 0, 0
    try:
        with path.open("rb") as fh:
            head = fh.read(SNIFF_CR)
            why = binary_format(head)
            if why is not None:
                yield [unreadable(source, why)]
                return
            cr = cr_only(head)
            for raw, length, record_bytes in iter_lines(fh, head):
                if record_bytes > MAX_RECORD_BYTES:
                    if n:
                        yield LineSlice(source, start, pos, first, n, cr)
                    yield [_oversize(source, first + n, raw, record_bytes)]
                    pos += length
                    start, first, n = pos, first + n + 1, 0
                    continue
                pos += length
                n += 1
                if n == size:
                    yield LineSlice(source, start, pos, first, n, cr)
                    start, first, n = pos, first + n, 0
    except OSError as exc:
        yield [unreadable(source, _os_error(exc))]
        return
    except EndlessLine as exc:
        if n:
            yield LineSlice(source, start, pos, first, n, cr)
        yield [unreadable(source, f"line {first + n}: {exc}")]
        return
    if n:
        yield LineSlice(source, start, pos, first, n, cr)


def chunked(records: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk


def file_size(path: Path) -> int:
    """Bytes in ``path``, 0 when it cannot be read (its read reports why)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_chunks(paths: Iterable[Path], size: int) -> Iterator[Chunk]:
    """Chunks of about ``size`` records. Large JSONL files go as byte slices (read by the
    worker that transforms them); small files and JSON files are read here and packed
    many to a chunk, so a thousand one-batch files cost about what one file does."""
    pending: list[RawRecord] = []
    for path in paths:
        if path.suffix.lower() != ".json" and file_size(path) > SMALL_FILE_BYTES:
            yield from chunked(pending, size)
            pending = []
            yield from _jsonl_slices(path, size)
            continue
        for rec in read_records([path]):
            pending.append(rec)
            if len(pending) >= size:
                yield pending
                pending = []
    if pending:
        yield pending


def _read_json(path: Path) -> Iterator[RawRecord]:
    source = str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_JSON_FILE_BYTES + 1)
    except OSError as exc:
        yield unreadable(source, _os_error(exc))
        return
    why = binary_format(data)
    if why is not None:
        yield unreadable(source, why)
        return
    if len(data) > MAX_JSON_FILE_BYTES:
        yield _document_too_large(source, data, "a .json file", "write it as JSONL")
        return
    yield from _json_records(source, data)


def _document_too_large(source: str, data: bytes, what: str, advice: str) -> RawRecord:
    return RawRecord(
        source,
        0,
        data[:MAX_RAW_KEPT].decode("utf-8", errors="backslashreplace") + "… [truncated]",
        None,
        f"{what} over {MAX_JSON_FILE_BYTES // 1024 // 1024} MiB: {advice} (one batch a line)",
        unreadable=True,
    )


def _item_text(item: Any) -> str | None:
    """One element of a JSON array as JSON text again: orjson stops at 255 levels of
    nesting (a TypeError), the standard library goes deeper; None past both."""
    try:
        return orjson.dumps(item).decode()
    except TypeError:
        try:
            return json.dumps(item, ensure_ascii=False)
        except (RecursionError, ValueError, TypeError):
            return None


def _json_records(source: str, data: bytes) -> Iterator[RawRecord]:
    """The records of one JSON document: an object, an array, or a saved list response.
    A document is parsed whole, so one of more than MAX_JSON_VALUES values (counted by
    their separators and brackets, before parsing) is refused: 10 million ``{}`` in a
    30 MB file took 910 MB to parse."""
    if data.startswith(_BOM):
        data = data[3:]
    if not data.strip():
        return
    values = data.count(b",") + data.count(b"{") + data.count(b"[")
    if values > MAX_JSON_VALUES:
        yield RawRecord(
            source,
            0,
            data[:MAX_RAW_KEPT].decode("utf-8", errors="backslashreplace") + "… [truncated]",
            None,
            f"a JSON document of about {values:,} values, over the {MAX_JSON_VALUES:,} read"
            " whole: write it as JSONL (one batch a line)",
            unreadable=True,
        )
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield RawRecord(
            source,
            1,
            kept_text(data.decode("utf-8", errors="backslashreplace")),
            None,
            _not_utf8(data, exc, "file"),
        )
        return
    whole = _parse(source, 1, text)
    obj = whole.obj
    if whole.error is not None:
        yield whole
        return
    # A saved list response ({"object": "list", "data": [...]}) or a bare array. A saved
    # request list names its batch once: each row is given it.
    if isinstance(obj, dict) and obj.get("object") == "list" and isinstance(obj.get("data"), list):
        owner = obj.get("batch_id")
        obj = obj["data"]
        if isinstance(owner, str):
            obj = [{"batch_id": owner, **r} if isinstance(r, dict) else r for r in obj]
    single = not isinstance(obj, list)
    for i, item in enumerate([obj] if single else obj, start=1):
        item_text = text if single else _item_text(item)
        if item_text is None:
            yield RawRecord(
                source, i, kept_text(repr(item)), None, "nested too deeply to keep as JSON text"
            )
        elif len(item_text) > MAX_RECORD_BYTES:
            yield _oversize(source, i, item_text[:MAX_RAW_KEPT].encode(), len(item_text))
        else:
            yield RawRecord(source, i, item_text.strip(), pending=True)


STDIN = "<stdin>"


def _is_value(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def read_stream(fh: BinaryIO, source: str = STDIN) -> Iterator[RawRecord]:
    """Records from a byte stream (``--input -``): JSONL, one record a line, unless the
    stream starts with ``[`` or the whole stream is one JSON value (a pretty-printed
    object or list response). A first line that is not JSON does not decide it: when the
    next line is a whole value, or the whole stream is not one, it is JSONL whose first
    record is bad (quarantined; every other record read). JSONL streams through with
    flat memory; only an undecided stream is held, up to MAX_JSON_FILE_BYTES."""
    first = fh.readline(MAX_RECORD_BYTES + 1)
    why = binary_format(first)
    if why is not None:
        yield unreadable(source, why)
        return
    if cr_only(first):  # CR-only line endings: one record a CR (_lines reads them so)
        yield from _jsonl_stream(source, fh, first)
        return
    head = (first[3:] if first.startswith(_BOM) else first).strip()
    oversize = len(first) > MAX_RECORD_BYTES
    document = head.startswith(b"[")
    if head and not document and not oversize and not _is_value(head):
        second = fh.readline(MAX_RECORD_BYTES + 1)
        data = first + second
        if not (second.strip() and _is_value(second.strip())):
            data += fh.read(MAX_JSON_FILE_BYTES + 1 - len(data))
            if len(data) <= MAX_JSON_FILE_BYTES and _is_value(data.removeprefix(_BOM)):
                yield from _json_records(source, data)
                return
        yield from _jsonl_stream(source, fh, data)
        return
    if document:
        data = first + fh.read(MAX_JSON_FILE_BYTES + 1 - len(first))
        if len(data) > MAX_JSON_FILE_BYTES:
            yield _document_too_large(source, data, "a JSON document on stdin", "send JSONL")
            return
        yield from _json_records(source, data)
        return
    yield from _jsonl_stream(source, fh, first)


def read_records(paths: Iterable[Path]) -> Iterator[RawRecord]:
    """Stream raw records from every file, in order; memory stays flat for JSONL."""
    for path in paths:
        if path.suffix.lower() == ".json":
            yield from _read_json(path)
        else:
            yield from _read_jsonl(path)
