"""The column-wise fast path and the per-record normaliser give identical rows.

Every chunk is flattened twice, once with the fast path (``fast=True``, the default) and
once with the per-record path only, and everything the chunk turns into is compared:
batch and line frames, quarantined records with their reasons, drift notes, request rows.
The records are generated (real-shaped batches, each with odd values put at random paths
or odd spellings of its text) and taken from the hostile battery.
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from pipeline import fastpath, sample
from pipeline.extract.files import RawRecord, _decode
from pipeline.redaction import register_secret
from pipeline.work import ChunkOut, process_chunk
from tests.helpers import SAMPLE, billing, query

BASE = [
    *sample.iter_batches(30, seed=5, iso_share=0.5),
    *sample.gateway_snapshots(list(sample.iter_batches(60, seed=6))),
]

ODD_VALUES: list[Any] = [
    None, "", " ", " x ", "x", "123", "-1", "0.5", 0, 1, -1, 7, 1.0, 1.5, -0.0, 0.1,
    2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**11, 10**11 - 1, 1e300, 1e-7,
    True, False, [], {}, [1], ["a"], [None], {"a": 1}, {"": None}, [{"a": [{}]}],
    "2026-11-27T03:21:36Z", "2026-11-27T03:21:36.000Z", "2026-11-27T03:21:36+05:30",
    "2026-11-27T03:21:36.123456-08:00", "2026-11-27T03:21:36", "2026-02-30T00:00:00Z",
    "2026-11-27 03:21:36", "2026-11-27T03:21:36.1234567Z", "0000-01-01T00:00:00Z",
    "2026-11-27T23:59:60Z", "2026-11-27T24:00:00Z", " 2026-11-27T03:21:36Z", "2026-11-27",
    "1792563781", "1792563781.5", 1792563781, 1792563781.5, "0.200000000", "-0.2",
    "1.1234567891", "12345678901234567890123456789.1", "00.5", "1e3", "+1",
    "sk-LEAKLEAKLEAKLEAK1234", "whsec_LEAKLEAK", "Bearer LEAKtoken", "password=LEAK",
    {"token": "sk-LEAKLEAKLEAK"}, {"api_key": 5}, {"has_secret": True}, ["whsec_LEAK"],
    "é", "\u0000", "\u202e", "\U0001f600", "\\", '"', "a\nb", "NaN", "null", "true",
    "completed", "in_progress", "cancelling", "weird_status", "charged:captured",
    "already_billed", "batch_X", "  batch_X  ", "batch\u00a0X", "\x1fbatch",
    "https://user:LEAKpass@hooks.example.com/x", "\u0663.\u0665", "1.5\n", "0", " 1792563781 ",
    "1970-01-01T00:00:00Z", "-0.000000001", "99999999999999999999999999999.999999999",
]  # fmt: skip

TEXT_SPELLINGS = ("compact", "spaced", "ascii", "duplicate_id", "trailing_comma", "nan")


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and list position in a record (where an odd value can go)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((*prefix, i))
            out.extend(_paths(v, (*prefix, i)))
    return out


def _put(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def _spell(obj: Any, how: str) -> str:
    if how == "spaced":
        return json.dumps(obj, separators=(", ", ": "))
    if how == "ascii":
        return json.dumps(obj, ensure_ascii=True)
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    if how == "duplicate_id" and text.startswith('{"id"'):
        return '{"id":"batch_DUPLICATE",' + text[1:]
    if how == "trailing_comma":
        return text[:-1] + ",}"
    if how == "nan" and '"quantity":' in text:
        return text.replace('"quantity":', '"quantity":NaN,"q2":', 1)
    return text


def _record(rng: random.Random, mutations: int, how: str) -> str:
    obj = copy.deepcopy(rng.choice(BASE))
    for _ in range(mutations):
        paths = _paths(obj)
        value = rng.choice(ODD_VALUES)
        if rng.random() < 0.15:  # a new key somewhere
            path = (*rng.choice([(), ("billing",), ("usage",), ("webhook",)]), "x_new")
            try:
                _put(obj, path, value)
            except (KeyError, TypeError):
                pass
        elif paths:
            _put(obj, rng.choice(paths), copy.deepcopy(value))
    return _spell(obj, how)


def _chunk(texts: list[str], source: str = "in.jsonl") -> list[RawRecord]:
    out = []
    for n, text in enumerate(texts, start=1):
        rec = _decode(source, n, text.encode())
        if rec is not None:
            out.append(rec)
    return out


def _same(fast: ChunkOut, slow: ChunkOut) -> None:
    for name in ("batches", "lines", "requests"):
        a, b = getattr(fast, name), getattr(slow, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert_frame_equal(a, b)
    assert fast.rejects == slow.rejects
    assert fast.drift == slow.drift
    assert fast.request_sets == slow.request_sets
    assert fast.records == slow.records


def both(texts: list[str]) -> tuple[ChunkOut, ChunkOut]:
    chunk = _chunk(texts)
    return process_chunk(chunk, 0, fast=True), process_chunk(chunk, 0, fast=False)


# 60 chunks of up to 30 records: about the records of 150 chunks of up to 12 (the suite
# once ran), at 40% of the cost: each chunk pays its validation once per path
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 30),
    mutations=st.integers(0, 3),
    how=st.sampled_from(TEXT_SPELLINGS),
)
def test_both_paths_agree_on_generated_records(
    seed: int, size: int, mutations: int, how: str
) -> None:
    rng = random.Random(seed)
    texts = [_record(rng, rng.choice([0, mutations]), how) for _ in range(size)]
    _same(*both(texts))


def test_both_paths_agree_on_the_sample_and_the_gateways_shapes() -> None:
    texts = [
        line
        for path in sorted(SAMPLE.glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    assert len(texts) > 100
    fast, slow = both(texts)
    _same(fast, slow)
    assert fast.batches is not None and fast.batches.height > 100


HOSTILE_LINES = [
    '{"a":1e400}',
    '{"id":"b1","billing":{"cost_nanos":1e400}}',
    '{"id":"b1","metadata":{"x":NaN}}',
    '{"id":"b1","metadata":{"x":[1,]}}',
    '{"id":"b1","pricing_lines":[{"line_nanos":5,}]}',
    '{"id":"b1","billing":{"cost_nanos":99999999999999999999}}',
    '{"id":"b1","billing":{"cost_nanos":9223372036854775808}}',
    '{"id":"b1","billing":{"cost_nanos":"5"}}',
    '{"id":"b1","billing":{"cost_nanos":5.0}}',
    '{"id":"b1","billing":{"cost_nanos":-5}}',
    '{"id":"b1","billing":"charged"}',
    '{"id":"b1","billing":[1,2]}',
    '{"id":"b1","billing":{},"pricing_lines":{}}',
    '{"id":"b1","pricing_lines":[1,{}]}',
    '{"id":"b1","pricing_lines":[{},{"units":3}]}',
    '{"id":"b1","request_counts":"7"}',
    '{"id":"b1","request_counts":{"total":1,"total":2}}',
    '{"id":"b1","billing":{"cost_nanos":1,"cost_nanos":2}}',
    '{"id":"b1","id":"b2"}',
    '{"id":"b1","metadata":{"k":1,"k":2}}',
    '{"id":"b1","created_at":"2026-11-27T03:21:36Z","created_at":5}',
    '{"id":"\\u0062\\u0031","status":"\\u0063ompleted"}',
    '{"id":"b1","session_id":"a\\"b","provider":"x\\\\y"}',
    '{"id":" b1 "}',
    '{"id":""}',
    '{"id":null}',
    '{"id":7}',
    '{"id":"b1","webhook":{"url":"https://h","secret":"whsec_LEAK","events":["whsec_LEAK"]}}',
    '{"id":"b1","webhook":{"url":"https://u:LEAKpass@h/x"}}',
    '{"id":"b1","webhook":{"url":5}}',
    '{"id":"b1","webhook":"https://h"}',
    '{"id":"b1","webhook":{"has_secret":"yes","secret":""}}',
    '{"id":"b1","webhook":{}}',
    '{"id":"b1","usage":{"cost_nanos":"1"}}',
    '{"id":"b1","usage":[]}',
    '{"id":"b1","metadata":{"password":"LEAK","token":"sk-LEAKLEAKLEAKLEAK"}}',
    '{"id":"b1","errors":{"message":"Bearer LEAKLEAKLEAK"}}',
    '{"id":"b1","metadata":' + '{"a":' * 300 + "1" + "}" * 300 + "}",
    '{"id":"b1","created_at":1e3}',
    '{"id":"b1","created_at":"1792563781"}',
    '{"id":"b1","created_at":-1}',
    '{"id":"b1","created_at":""}',
    '{"id":"b1","billing":{"finalized_at":"2026-13-01T00:00:00Z"}}',
    '{"id":"b1","pricing_lines":[{"quantity":1E2,"line_nanos":5}]}',
    '{"id":"b1","pricing_lines":[{"quantity":12345678901234567890,"line_nanos":5}]}',
    '{"id":"b1","requests":[{"id":"r1","cost_nanos":5}]}',
    '{"id":"b1","x_unknown":{"secret":"LEAK"}}',
    '{"body":{},"fetched_at":1}',
    '{"error":{"type":"not_found"}}',
    "[1,2]",
    '"batch"',
    "null",
    "{bad",
    '{"id":"b1"} trailing',
    '{"id":"b1","status":"submission_unknown","lifecycle_status":"pending"}',
    '{"id":"b1","status":"provider_weird"}',
    '{"id":"b1","object":"batch","object":"list"}',
    '{"id":"b1","metadata":{"é":"\\u0000"},"session_id":"\\u202e"}',
    '{"id":"b1","metadata":{"x":"\\ud83d\\ude00"}}',
    '{"id":"b1","metadata":{"x":"\\ud800"}}',
    '{"id":"b1","metadata":{"x":1.5e-320}}',
    '{"id":"b1","metadata":{"x":-0.0,"y":-0}}',
    # where two JSON readers could part: escaped keys, number spellings, odd containers
    '{"i\\u0064":"b1","billing":{"cost\\u005fnanos":5}}',
    '{"id":"b1","metadata":{"x":123456789012345678,"y":1234567890123456789}}',
    '{"id":"b1","metadata":{"x":0.30000000000000004,"y":1e22,"z":1E-7,"w":2.5e+10}}',
    '{"id":"b1","pricing_lines":[{"quantity":0.1,"billable_units":1e2,"unit_size":-0.0,"line_nanos":5}]}',
    '{"id":"b1","billing":{"cost_usd":123456789012345678,"cost_nanos":-9223372036854775808}}',
    '{"id":"b1","billing":{"cost_nanos":9223372036854775807},"request_counts":{"total":-1}}',
    '{"id":"b1","created_at":99999999999,"expires_at":100000000000,"failed_at":-1}',
    '{"id":"b1","created_at":"2026-11-27T03:21:36.5+00:00","expires_at":"2026-11-27t03:21:36z"}',
    '{"id":"b1","billing":{"pricing_breakdown":{"total_usd_str":" 1.5 "}}}',
    '{"id":"b1","billing":{"pricing_breakdown":{"total_usd_str":"1.5x"}}}',
    '{"id":"b1","pricing_lines":[{"line_cost_usd":"N/A","line_nanos":5}]}',
    '{"id":"b1","pricing_lines":[{"line_nanos":null,"units":null}]}',
    '{"id":"b1","pricing_lines":[{"total_nanos":null,"line_nanos":5,"units":2}]}',
    '{"id":"b1","pricing_lines":null,"billing":null,"request_counts":null,"usage":null}',
    '{"id":"b1","usage":{"requests":1,"x_new":{"secret":"LEAK"}}}',
    '{"id":"b1","webhook":{"url":"https://h","format":"json","events":[]}}',
    '\ufeff{"id":"b1"}',
    ' {"id":"b1"} ',
    '{"id":"b1","metadata":"\\ud83d\\ude00\\u00e9\\/"}',
    '{"id":"b1","metadata":' + "[" * 5000 + "]" * 5000 + "}",
    '{"id":"b1","errors":{"data":[' + ",".join(['{"code":"x"}'] * 3000) + "]}}",
    '{"id":"b1","metadata":{' + ",".join(f'"k{i}":{i}' for i in range(5000)) + "}}",
    '{"id":"b1","session_id":"' + "s" * 200_000 + '"}',
    # the column-wise readers: dollars told by a regex, timestamps by polars
    '{"id":"b1","billing":{"pricing_breakdown":{"total_usd_str":"\\u0663.\\u0665"}}}',
    '{"id":"b1","billing":{"pricing_breakdown":{"total_usd_str":"1.5\\n"}}}',
    '{"id":"b1","pricing_lines":[{"unit_price_usd":"123456789012345678901234567890","line_nanos":1}]}',
    '{"id":"b1","pricing_lines":[{"unit_price_usd":"0.1234567891","line_cost_usd":".5","line_nanos":1}]}',
    '{"id":"b1","pricing_lines":[{"unit_price_usd":"-0","line_cost_usd":"1.","line_nanos":1}]}',
    '{"id":"b1","created_at":"1970-01-01T00:00:00Z","in_progress_at":0,"expires_at":"0"}',
    '{"id":"b1","created_at":"","completed_at":" ","finalizing_at":"\\u0031792563781"}',
    '{"id":"b1","created_at":"2026-11-27T03:21:36.1234567Z","completed_at":"2026-11-27T03:21:36-00:00"}',
]


@pytest.mark.parametrize("line", HOSTILE_LINES)
def test_both_paths_agree_on_hostile_records(line: str) -> None:
    good = orjson.dumps(BASE[0]).decode()
    _same(*both([good, line, good]))


def test_both_paths_agree_with_a_registered_secret() -> None:
    register_secret("tok-registered-LEAK-123")
    obj = dict(
        BASE[1], session_id="tok-registered-LEAK-123", metadata={"k": "tok-registered-LEAK-123"}
    )
    _same(*both([orjson.dumps(obj).decode()]))


def test_the_fast_path_takes_the_common_records() -> None:
    """Real-shaped batches (both timestamp spellings, both line shapes, the gateway's
    webhook and re-billed shapes) all go column-wise: the per-record path is the
    exception, not a silent default. Batches carrying their request rows take it."""
    common = [o for o in BASE if "requests" not in o]
    texts = [orjson.dumps(o).decode() for o in BASE]
    taken = fastpath.flatten(list(range(len(texts))), texts)
    assert len(common) > 40
    assert taken.taken == {i for i, o in enumerate(BASE) if "requests" not in o}
    assert taken.batches.height == len(common)
    assert taken.lines.height == sum(len(o.get("pricing_lines") or []) for o in common)


def test_a_chunk_whose_every_record_has_a_refused_value_goes_per_record() -> None:
    """A value the readers refuse (here a dollar amount in words) sends only its own
    record per record, found value by value, with the per-record reasons."""
    texts = []
    for i, base in enumerate(BASE[:40]):
        obj = copy.deepcopy(base)
        for line in obj.get("pricing_lines") or []:
            for key in ("line_cost_usd", "total_usd_str"):
                if key in line and i % 2 == 0:
                    line[key] = "N/A"
        texts.append(orjson.dumps(obj).decode())
    fast, slow = both(texts)
    _same(fast, slow)
    refused = {i for i, t in enumerate(texts) if '"N/A"' in t}
    assert len(refused) > 10
    taken = fastpath.flatten(list(range(len(texts))), texts).taken
    assert taken == {i for i, o in enumerate(BASE[:40]) if "requests" not in o} - refused
    assert {r[1] for r in fast.rejects} == {i + 1 for i in refused}


def test_a_chunk_of_only_odd_records_still_flattens() -> None:
    fast, slow = both(["{bad", "[1]", '{"id":7}'])
    _same(fast, slow)
    assert fast.batches is None and len(fast.rejects) == 3


def test_empty_frames_have_the_staged_schema() -> None:
    empty = fastpath.flatten([], [])
    assert empty.taken == set()
    assert empty.batches.schema == pl.Schema({"_rec": pl.Int64, **fastpath.BATCH_SCHEMA})


def test_a_whole_run_with_the_fast_path_stores_the_same_database(tmp_path: Path) -> None:
    """End to end through the CLI, in worker processes: the sample set (its odd records
    too) loaded with BILLING_FAST_PATH=1 and without gives the same rows in every table
    a run fills from the input."""
    stored = {}
    for flag in ("0", "1"):
        db = tmp_path / f"fast-{flag}.duckdb"
        env = {**os.environ, "BILLING_FAST_PATH": flag}
        args = ("run", SAMPLE, "--db", db, "-q", "--workers", "2", "--chunk-size", "50")
        done = subprocess.run(billing(*args), env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        stored[flag] = {
            table: query(db, f"select * exclude ({skip}) from {table} order by all")
            for table, skip in (
                ("batches", "first_run_id, run_id, loaded_at"),
                ("pricing_lines", "run_id, loaded_at"),
                ("rejected_batches", "run_id, rejected_at, last_run_id"),
                ("schema_drift", "first_run_id, first_seen_at"),
                ("charge_ledger", "run_id, recorded_at"),
            )
        }
    assert stored["0"]["batches"] and stored["0"]["rejected_batches"]
    for table, rows in stored["0"].items():
        assert stored["1"][table] == rows, table
