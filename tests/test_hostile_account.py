"""Hostile answers of the account routes and hostile notification settings (#28): what
is stored, kept aside and shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline import notify
from pipeline.config import Endpoint
from tests.helpers import query

pytestmark = pytest.mark.timeout(60)


def _meter(**over: Any) -> dict[str, Any]:
    base = {"meter": "input_text_tokens", "unit": "token", "unit_size": 1_000_000,
            "price_per_unit": "2.0", "currency": "USD", "conditions": None}  # fmt: skip
    return {**base, **over}


def test_a_catalogue_of_odd_entries_keeps_each_one_and_counts_the_unreadable(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    deep: Any = {}
    for _ in range(200):
        deep = {"and": deep}
    body = {
        "ok": True,
        "models": [
            {"provider": "openai", "model": "m", "meters": [
                _meter(),
                _meter(price_per_unit="NaN"),
                _meter(price_per_unit="1e400"),
                _meter(price_per_unit="0.0000000000000000001"),  # 19 decimals
                _meter(price_per_unit=None),
                _meter(unit_size=0),
                _meter(unit_size="1000"),
                _meter(conditions=deep),
                _meter(meter="x" * 10_000),
                "not a meter",
            ]},
            {"provider": "sk-live-ABCDEF0123456789abcdef", "model": "m", "meters": "none"},
            None,
        ],
    }  # fmt: skip
    path = tmp_path / "odd.json"
    path.write_bytes(orjson.dumps(body))
    result = run_cli("prices", "--file", path, "--as-of", "2026-11-01", "--db", db)
    assert result.exit_code == 0, result.output
    assert result.output.endswith("without a readable price (kept) -> " + str(db) + "\n")
    assert "prices: snapshot of 9 entries" in result.output
    assert query(db, "select entries, unreadable_entries from catalogue_snapshots") == [(9, 9)]
    assert query(db, "select count(*) from catalogue_prices where unit_price is not null") == [
        (3,)  # the plain one, the deep conditions and the long meter (cut to 200)
    ]
    assert query(
        db, "select max(length(meter)), max(length(conditions)) from catalogue_prices"
    ) == [(200, 500)]


@pytest.mark.parametrize(
    ("credits", "message"),
    [
        ({"credits": {"balance_nanos": "1e400"}}, "credits.balance_nanos must be an integer"),
        ({"credits": {"balance_nanos": str(2**70)}}, "credits.balance_nanos is out of range"),
        ({"credits": {"balance_nanos": True}}, "credits.balance_nanos must be an integer"),
        ([1, 2], "not a GET /v1/credits answer"),
    ],
)
def test_a_hostile_credits_answer_is_one_line_and_writes_nothing(
    run_cli: Any, db: Path, tmp_path: Path, credits: Any, message: str
) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(orjson.dumps(credits))
    result = run_cli("credits", "--file", path, "--db", db)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.splitlines()) == 1
    assert not db.exists()


def test_the_folder_instead_of_the_saved_answer_is_one_line(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    result = run_cli("prices", "--file", tmp_path, "--db", db)
    assert result.exit_code == 2
    assert "is a directory" in result.output or "does not exist or is not a file" in result.output


def test_an_anomaly_is_sent_once_even_after_it_resolves_and_comes_back(db: Path) -> None:
    import duckdb

    from pipeline.load import TABLES_DDL

    con = duckdb.connect(str(db))
    con.execute(TABLES_DDL)
    ep = Endpoint(name="hook", format="json", url_env="X")
    anomaly = notify.Finding(
        key="anomaly:2026-11-20:openai:*:baseline", kind="anomaly", subject="openai",
        text="t", fields={"day": "2026-11-20"},
    )  # fmt: skip
    due = notify.plan(con, [anomaly], [ep])
    assert [d.finding_key for d in due] == [anomaly.key]
    due[0].status, due[0].nights = "sent", 1
    notify.record(con, due, "run-1")
    assert notify.plan(con, [], [ep]) == []  # resolved: nothing owed
    assert notify.plan(con, [anomaly], [ep]) == []  # back again: already sent
    other = Endpoint(name="second", format="slack", url_env="Y")
    assert [d.endpoint.name for d in notify.plan(con, [anomaly], [ep, other])] == ["second"]


def test_a_failure_superseded_by_a_higher_threshold_is_not_resent(db: Path) -> None:
    import datetime as dt

    import duckdb

    from pipeline.load import TABLES_DDL

    con = duckdb.connect(str(db))
    con.execute(TABLES_DDL)
    ep = Endpoint(name="hook", format="json", url_env="X")
    month = dt.date(2026, 11, 1)

    def at(pct: int) -> notify.Finding:
        return notify.Finding(key=f"budget:b:2026-11-01:{pct}", kind="budget_threshold",
                              subject="b", text=f"{pct}", fields={}, period_start=month,
                              threshold_pct=pct)  # fmt: skip

    failed = notify.plan(con, [at(80)], [ep])
    failed[0].status = "failed"
    notify.record(con, failed, "run-1")
    retry = notify.plan(con, [at(80)], [ep])  # still at 80%: tried again
    assert [(d.finding_key, d.retry) for d in retry] == [("budget:b:2026-11-01:80", True)]
    jump = notify.plan(con, [at(100)], [ep])  # now 100%: one message, the 80% is moot
    assert [d.finding_key for d in jump] == ["budget:b:2026-11-01:100"]
