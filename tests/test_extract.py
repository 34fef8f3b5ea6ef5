from pathlib import Path

import pytest

from pipeline.extract import LineSlice, files, iter_paths, read_chunks, read_records
from tests.helpers import batch, write_jsonl


def test_jsonl_records_carry_source_and_line(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", [batch(1), b"", b"{not json", batch(2)])
    recs = [r.parsed() for r in read_records([f])]  # JSONL text is parsed later, in workers
    assert [(r.line, r.error is None) for r in recs] == [(1, True), (3, False), (4, True)]
    assert recs[1].text == "{not json"
    assert recs[1].error is not None and recs[1].error.startswith("invalid JSON")
    assert recs[2].obj["id"] == "batch_00000000000000000000000002"


@pytest.mark.parametrize("size", [1, 2, 3, 100])
def test_jsonl_slices_read_by_workers_give_the_same_records(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(
        b'{"id":"a"}\n\n  \r\n{not json\r\n{"id":"\xc3\xa9"}\n{"id":"last"}'
    )  # no final newline
    small = [r for c in read_chunks([f], size) for r in c]  # a small file: read here
    monkeypatch.setattr(files, "SMALL_FILE_BYTES", 0)  # a large one: sliced for the workers
    chunks = list(read_chunks([f], size))
    assert all(isinstance(c, LineSlice) for c in chunks)
    assert [c.lines for c in chunks if isinstance(c, LineSlice)] == [
        min(size, 6 - at) for at in range(0, 6, size)
    ]
    from_slices = [r for c in chunks if isinstance(c, LineSlice) for r in c.records()]
    assert from_slices == list(read_records([f])) == small
    assert [(r.line, r.text) for r in from_slices] == [
        (1, '{"id":"a"}'),
        (4, "{not json"),
        (5, '{"id":"é"}'),
        (6, '{"id":"last"}'),
    ]


def test_json_file_holding_object_list_or_list_response(tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text('{"id": "batch_X"}')
    (tmp_path / "many.json").write_text('[{"id": "a"}, {"id": "b"}]')
    (tmp_path / "page.json").write_text(
        '{"object": "list", "data": [{"id": "c"}], "has_more": false}'
    )
    recs = list(read_records(iter_paths([tmp_path])))
    assert [(Path(r.source).name, r.line, r.parsed().obj["id"]) for r in recs] == [
        ("many.json", 1, "a"),
        ("many.json", 2, "b"),
        ("one.json", 1, "batch_X"),
        ("page.json", 1, "c"),
    ]


def test_missing_input_and_empty_folder_are_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="input not found"):
        iter_paths([tmp_path / "nope.jsonl"])
    with pytest.raises(FileNotFoundError, match=r"no \.json or \.jsonl files"):
        iter_paths([tmp_path])


def _reference_lines(data: bytes, limit: int, kept: int) -> list[tuple[bytes, int, int]]:
    """What ``files.iter_lines`` gives, the slow obvious way."""
    out = []
    parts = data.split(b"\n")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if last and not part:
            break
        size = len(part) + (0 if last else 1)
        if len(part) > limit:
            out.append((part[:kept], size, len(part)))
        else:
            out.append((part if last else part + b"\n", size, len(part)))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_lines_are_cut_alike_whatever_the_block_and_line_sizes(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Lines shorter than, at and over the record limit, across block edges, with and
    without a final newline, and bytes already read (stdin's first line)."""
    import io
    import random

    rng = random.Random(seed)
    monkeypatch.setattr(files, "MAX_RECORD_BYTES", 20)
    monkeypatch.setattr(files, "MAX_RAW_KEPT", 5)
    monkeypatch.setattr(files, "_BLOCK", rng.choice([1, 3, 7, 16, 64]))
    lines = [
        b"x" * rng.choice([0, 1, 5, 19, 20, 21, 22, 40, 100]) for _ in range(rng.randint(0, 12))
    ]
    data = b"\n".join(lines) + rng.choice([b"", b"\n"])
    split = rng.randint(0, len(data))
    got = list(files.iter_lines(io.BytesIO(data[split:]), data[:split] or None))
    assert got == _reference_lines(data, 20, 5)


def test_a_file_cut_short_after_it_was_scanned_is_unreadable_not_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process truncates (or rewrites shorter) an input between the scan and the
    worker's read: the slice says so instead of handing over fewer records."""
    f = write_jsonl(tmp_path / "a.jsonl", [batch(n) for n in range(1, 11)])
    monkeypatch.setattr(files, "SMALL_FILE_BYTES", 0)
    first, second = list(read_chunks([f], 5))
    assert isinstance(first, LineSlice) and isinstance(second, LineSlice)
    with f.open("r+b") as fh:
        fh.truncate(second.start + 10)
    assert len(first.records()) == 5  # untouched bytes still read
    (rec,) = second.records()
    assert rec.unreadable and rec.line == 0
    assert rec.error == (
        f"cannot read: the file changed while it was read (lines 6-10 were bytes "
        f"{second.start}-{second.end}, now it ends at byte {second.start + 10}): load it again"
    )
