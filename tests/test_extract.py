from pathlib import Path

import pytest

from pipeline.extract import iter_paths, read_records, redact
from tests.conftest import batch, write_jsonl


def test_jsonl_records_carry_source_and_line(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", [batch(1), b"", b"{not json", batch(2)])
    recs = [r.parsed() for r in read_records([f])]  # JSONL text is parsed later, in workers
    assert [(r.line, r.error is None) for r in recs] == [(1, True), (3, False), (4, True)]
    assert recs[1].text == "{not json"
    assert recs[1].error is not None and recs[1].error.startswith("invalid JSON")
    assert recs[2].obj["id"] == "batch_00000000000000000000000002"


def test_json_file_holding_object_list_or_list_response(tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text('{"id": "batch_X"}')
    (tmp_path / "many.json").write_text('[{"id": "a"}, {"id": "b"}]')
    (tmp_path / "page.json").write_text(
        '{"object": "list", "data": [{"id": "c"}], "has_more": false}'
    )
    recs = list(read_records(iter_paths([tmp_path])))
    assert [(Path(r.source).name, r.line, r.obj["id"]) for r in recs] == [
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


def test_redact_blanks_secrets_even_in_broken_json() -> None:
    text = '{"webhook": {"secret": "whsec_abc\\"def", "url": "u"}, "api_key": "k", "id": "x'
    out = redact(text)
    assert "whsec" not in out and '"k"' not in out
    assert (
        out == '{"webhook": {"secret": "[REDACTED]", "url": "u"}, "api_key": "[REDACTED]", "id": "x'
    )
