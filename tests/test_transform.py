from typing import Any

import polars as pl
import pytest

from pipeline.transform import (
    BATCH_COLUMNS,
    LINE_COLUMNS,
    RecordError,
    batch_frame,
    build_batches,
    build_lines,
    line_frame,
    normalize_batch,
    to_int,
    to_micros,
    webhook_columns,
)
from tests.helpers import batch


def frames(*objs: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    norms = [normalize_batch(o) for o in objs]
    meta = pl.DataFrame({"_rec": range(len(norms)), "_seq": range(1, len(norms) + 1)})
    b = build_batches(batch_frame([n.batch for n in norms], range(len(norms))), meta)
    rows = [ln for n in norms for ln in n.lines]
    recs = [i for i, n in enumerate(norms) for _ in n.lines]
    return b, build_lines(line_frame(rows, recs), meta)


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        (1793491200, 1793491200_000000),
        (1793491200.5, 1793491200_500000),
        ("1793491200", 1793491200_000000),
        ("2026-11-01T00:00:00Z", 1793491200_000000),
        ("2026-11-01T00:00:00.000Z", 1793491200_000000),
        ("2026-11-01T01:00:00+01:00", 1793491200_000000),
        ("2026-11-01T00:00:00", 1793491200_000000),  # naive ISO is read as UTC
        (None, None),
    ],
)
def test_timestamps_accept_unix_seconds_and_iso(value: Any, micros: int | None) -> None:
    assert to_micros("created_at", value) == micros


@pytest.mark.parametrize("value", ["yesterday", "2026-13-45", True, {"a": 1}, -5])
def test_unparseable_timestamps_are_record_errors(value: Any) -> None:
    with pytest.raises(RecordError, match="created_at"):
        to_micros("created_at", value)


def test_integers_are_exact_and_strict() -> None:
    assert to_int("x", 9007199254740993) == 9007199254740993
    assert to_int("x", 5.0) == 5
    for bad in (12.5, "12", True, 2**63):
        with pytest.raises(RecordError):
            to_int("x", bad)


def test_both_pricing_line_shapes_map_to_the_same_columns() -> None:
    _, lines = frames(batch(1))
    assert lines.drop("_rec").columns[: len(LINE_COLUMNS)] == list(LINE_COLUMNS)
    got = lines.select(
        "line_index",
        "line_shape",
        "dimension",
        "quantity",
        "billable_units",
        "unit_size",
        "unit_price_usd",
        "line_cost_usd",
        "line_nanos",
        "endpoint",
    ).rows()
    from decimal import Decimal

    assert got == [
        (
            0,
            "priced",
            "input_text_tokens",
            100000.0,
            0.1,
            1000000.0,
            Decimal("2.000000000"),
            Decimal("0.200000000"),
            200000000,
            None,
        ),
        (
            1,
            "fallback",
            "batch_requests",
            2.0,
            2.0,
            None,
            None,
            Decimal("0.100000000"),
            100000000,
            "/v1/responses",
        ),
    ]
    assert lines.schema["line_nanos"] == pl.Int64
    assert lines.schema["line_cost_usd"] == pl.Decimal(38, 9)


def test_webhook_secret_is_never_kept_and_unknown_keys_are() -> None:
    obj = batch(1, brand_new_field={"x": 1})
    obj["pricing_lines"][0]["surprise"] = 7
    obj["billing"]["new_billing_field"] = "v"
    b, lines = frames(obj)
    row = b.row(0, named=True)
    assert "whsec" not in str(b.rows()) and row["webhook_has_secret"] is True
    assert row["webhook_url"] == "https://hooks.example.com/x"
    assert row["webhook_events"] == ["batch.completed"]
    assert row["extra"] == '{"brand_new_field":{"x":1},"billing.new_billing_field":"v"}'
    assert lines["extra"][0] == '{"surprise":7}'
    assert b.drop("_rec").columns[: len(BATCH_COLUMNS)] == list(BATCH_COLUMNS)


def test_a_field_changing_type_is_kept_not_fatal() -> None:
    norm = normalize_batch(batch(1, request_counts="lots", endpoint={"path": "/v1"}))
    assert norm.drift == {
        "endpoint": "expected string, got dict",
        "request_counts": "expected object, got str",
    }
    b, _ = frames(batch(1, request_counts="lots"))
    assert b["request_counts_total"][0] is None
    assert b["extra"][0] == '{"request_counts":"lots"}'


def test_not_a_batch_object() -> None:
    with pytest.raises(RecordError, match="not a batch object: got a JSON list"):
        normalize_batch([1, 2])
    with pytest.raises(RecordError, match=r"API error body \(not_implemented\)"):
        normalize_batch({"error": {"type": "not_implemented"}})
    with pytest.raises(RecordError, match="id is missing"):
        normalize_batch({"status": "completed"})


def test_finality_and_snapshot_columns() -> None:
    final, _ = frames(batch(1))
    running, _ = frames(batch(2, status="in_progress", billing=None))
    assert final.select("is_terminal", "is_final", "status_rank").row(0) == (True, True, 3)
    assert running.select("is_terminal", "is_final", "status_rank", "has_billing").row(0) == (
        False,
        False,
        1,
        False,
    )


def test_usage_token_counters_are_not_mistaken_for_secrets() -> None:
    obj = batch(1, usage={"input_tokens": 10, "output_tokens": 5, "api_key": "sk-x"})
    b, _ = frames(obj)
    assert b["usage"][0] == '{"input_tokens":10,"output_tokens":5,"api_key":"[REDACTED]"}'


def test_one_lifecycle_rule_for_single_objects_and_for_frames() -> None:
    from pipeline.transform import TIMESTAMP_FIELDS, lifecycle_group, with_derived_columns

    cases = [
        ("completed", None),
        ("ended", "completed"),
        ("ended", "odd"),
        ("in_progress", None),
        ("processing", "pending"),
        ("submission_unknown", None),
        ("batch_state_x", None),
        (None, None),
    ]
    frame = with_derived_columns(
        pl.DataFrame(
            {
                "status": [c[0] for c in cases],
                "lifecycle_status": [c[1] for c in cases],
                "billing_finalized_at": [None] * len(cases),
                "billing_reason": [None] * len(cases),
                **{name: [None] * len(cases) for name in TIMESTAMP_FIELDS},
            },
            schema_overrides={
                "billing_finalized_at": pl.Datetime("us", "UTC"),
                "billing_reason": pl.String,
                **{name: pl.Datetime("us", "UTC") for name in TIMESTAMP_FIELDS},
            },
        )
    )
    assert (
        frame["lifecycle_group"].to_list()
        == [lifecycle_group(s, ls) for s, ls in cases]
        == ["terminal", "terminal", "pending", "running", "pending", "pending", "pending", None]
    )


def test_a_webhooks_has_secret_flag_does_not_hide_a_secret_beside_it() -> None:
    """The flag alone takes the short way (nothing to redact); a credential anywhere else
    in the same webhook still gets the full rule."""
    plain = {"endpoint_id": "wh_1", "url": "https://h.example/x", "has_secret": True}
    assert webhook_columns(plain, {})["webhook"] == (
        '{"endpoint_id":"wh_1","url":"https://h.example/x","has_secret":true}'
    )
    leaky = {
        **plain,
        "delivery": {"token": "sk-LEAKLEAKLEAKLEAK1234", "status": "ok"},
        "url": "https://user:LEAKpass@h.example/x",
    }
    out = webhook_columns({**leaky, "secret": "whsec_LEAKLEAK"}, {})
    assert out["webhook_has_secret"] is True
    assert "LEAK" not in out["webhook"], out  # (webhook_url is blanked column-wise later)
    assert '"has_secret":true' in out["webhook"] and '"status":"ok"' in out["webhook"]
