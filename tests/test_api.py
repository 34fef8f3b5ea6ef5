"""The HTTP extractor against a real loopback server with scripted faults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.gateway import NOT_IMPLEMENTED, TOKEN, Gateway, Reply, serve
from tests.helpers import batch, query, scalar, write_jsonl

ENV = {"PHASEO_API_KEY": TOKEN}


def ids_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("# nightly ids\n" + "\n".join(ids) + "\n\n")
    return path


def api_run(run_cli: Any, gw: Gateway, db: Path, *args: Any, env: dict[str, str] = ENV) -> Any:
    return run_cli("run", "--base-url", gw.url, "--db", db, "--timeout", "0.5", *args, env=env)


def no_token_anywhere(result: Any, tmp_path: Path) -> None:
    assert TOKEN not in result.output
    assert TOKEN not in (result.stderr or "")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_faults_are_retried_and_every_batch_loads_exactly(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    batches = {b["id"]: b for b in (batch(i, cost_nanos=100 * i) for i in range(1, 6))}
    ids = list(batches)
    gw = Gateway(
        batches=batches,
        scripts={
            f"/v1/batches/{ids[0]}": [
                Reply(429, {"error": "key_limit_exceeded"}, {"Retry-After": "1"})
            ],
            f"/v1/batches/{ids[1]}": [Reply(503, "unavailable"), Reply(502, "bad gateway")],
            f"/v1/batches/{ids[2]}": [
                Reply(200, batches[ids[2]], delay_s=2.0)
            ],  # hangs past the timeout
            f"/v1/batches/{ids[3]}": [Reply(200, batches[ids[3]], truncate=True)],
        },
    )
    with serve(gw):
        result = api_run(
            run_cli, gw, db, "--ids-file", ids_file(tmp_path, [*ids, "batch_UNKNOWN"]), "-v"
        )
    assert result.exit_code == 3, result.output  # committed, but one id asked for is missing
    assert query(db, "select count(*), sum(cost_nanos) from batches") == [(5, 1500)]
    assert query(db, "select batch_id, http_status, reason, kind from fetch_errors") == [
        (
            "batch_UNKNOWN",
            404,
            "batch not found (not_found: batch_not_found_or_not_owned)",
            "not_found",
        )
    ]
    assert "not found   1: batch_UNKNOWN (see fetch_errors)" in result.output
    per_path = {p: sum(1 for q, _ in gw.requests if q == p) for p, _ in gw.requests}
    assert [per_path[f"/v1/batches/{i}"] for i in ids] == [2, 3, 2, 2, 1]
    assert (
        "(authorization header not logged)" in result.output
    )  # --verbose logs the request, redacted
    no_token_anywhere(result, tmp_path)
    archive = next((tmp_path / "archive").glob("*.jsonl"))
    envelopes = [orjson.loads(line) for line in archive.read_text().splitlines()]
    assert sorted(e.get("kind", "batch") for e in envelopes) == ["batch"] * 5 + ["requests"] * 5
    assert "whsec_TOPSECRET" not in archive.read_text()


def test_a_body_that_is_not_json_or_not_a_batch_is_quarantined(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    gw = Gateway(
        batches={batch(1)["id"]: batch(1)},
        scripts={
            "/v1/batches/batch_HTML": [Reply(200, "<html>maintenance</html>")],
            "/v1/batches/batch_CUT": [Reply(200, '{"id": "batch_CUT", "status": "compl')],
            "/v1/batches/batch_ODD": [Reply(200, {"hello": "world"})],
        },
    )
    with serve(gw):
        result = api_run(
            run_cli,
            gw,
            db,
            "--ids-file",
            ids_file(tmp_path, [batch(1)["id"], "batch_HTML", "batch_CUT", "batch_ODD"]),
        )
    assert result.exit_code == 3, result.output  # three ids asked for are missing
    assert scalar(db, "select count(*) from batches") == 1
    rows = query(db, "select reason, raw_text from rejected_batches order by raw_text")
    assert [r[1] for r in rows] == [
        "<html>maintenance</html>",
        '{"hello":"world"}',
        '{"id": "batch_CUT", "status": "compl',
    ]
    assert rows[0][0].startswith("response body is not JSON")
    assert rows[1][0] == "response body is not a batch object (no id)"
    assert rows[2][0].startswith("response body is not JSON")
    assert query(db, "select batch_id, kind from fetch_errors order by 1") == [
        ("batch_CUT", "wrong_body"),
        ("batch_HTML", "wrong_body"),
        ("batch_ODD", "wrong_body"),
    ]
    assert "not fetched 3 batch(es) asked for" in result.output


def test_501_stops_the_run_and_leaves_the_database_unchanged(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    seed = write_jsonl(
        tmp_path / "seed.jsonl", [batch(1), batch(2, status="in_progress", billing=None)]
    )
    assert run_cli("run", "--input", seed, "--db", db).exit_code == 0
    before = (
        query(db, "select * from load_runs"),
        query(db, "select id, cost_nanos from batches order by id"),
    )
    gw = Gateway(everything=NOT_IMPLEMENTED)
    with serve(gw):
        result = api_run(run_cli, gw, db, "--ids-file", ids_file(tmp_path, ["batch_X", "batch_Y"]))
    assert result.exit_code == 1
    assert result.output == (
        "billing: error: the gateway's batch routes are disabled (501 not_implemented: "
        "feature_temporarily_disabled); nothing was fetched or committed, try again once the "
        "gateway enables them\n"
    )
    assert (
        query(db, "select * from load_runs"),
        query(db, "select id, cost_nanos from batches order by id"),
    ) == before
    assert not (tmp_path / "archive").exists()
    assert len(gw.requests) <= 3  # no retry storm on 501
    no_token_anywhere(result, tmp_path)


def test_501_on_a_fresh_database_creates_nothing(run_cli: Any, db: Path, tmp_path: Path) -> None:
    gw = Gateway(
        everything=Reply(
            501, {"error": {"type": "not_implemented", "reason": "feature_temporarily_disabled"}}
        )
    )
    with serve(gw):
        result = api_run(run_cli, gw, db, "--ids-file", ids_file(tmp_path, ["batch_X"]))
    assert result.exit_code == 1
    assert "batch routes are disabled" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.txt"]


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            Reply(401, {"error": "unauthorised", "reason": "invalid_api_key"}),
            "billing: error: the gateway rejected the API token (401 unauthorised: invalid_api_key); check PHASEO_API_KEY\n",
        ),
        (
            Reply(403, {"error": "forbidden", "reason": "batch_api_feature_flag_disabled"}),
            "billing: error: the API token may not use the batch API (403 forbidden: "
            "batch_api_feature_flag_disabled); ask for the batch feature to be enabled on this key\n",
        ),
    ],
)
def test_401_and_403_stop_at_once_with_the_cause(
    run_cli: Any, db: Path, tmp_path: Path, reply: Reply, message: str
) -> None:
    gw = Gateway(everything=reply)
    with serve(gw):
        result = api_run(run_cli, gw, db, "--ids-file", ids_file(tmp_path, ["batch_X"]))
    assert result.exit_code == 1
    assert result.output == message
    assert not db.exists()
    no_token_anywhere(result, tmp_path)


def test_missing_token_is_a_configuration_error(run_cli: Any, db: Path, tmp_path: Path) -> None:
    result = run_cli(
        "run", "--ids-file", ids_file(tmp_path, ["batch_X"]), "--db", db, env={"PHASEO_API_KEY": ""}
    )
    assert result.exit_code == 2
    assert (
        result.output
        == "billing: error: no API token: set PHASEO_API_KEY to fetch batches from the gateway\n"
    )


def test_list_follows_pagination_and_stops_when_the_cursor_does_not_move(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    items = [batch(i) for i in range(1, 6)]
    pages = [
        {
            "object": "list",
            "data": items[:2],
            "first_id": items[0]["id"],
            "last_id": items[1]["id"],
            "has_more": True,
        },
        {
            "object": "list",
            "data": items[2:4],
            "first_id": items[2]["id"],
            "last_id": items[3]["id"],
            "has_more": True,
        },
        {
            "object": "list",
            "data": items[4:],
            "first_id": items[4]["id"],
            "last_id": items[4]["id"],
            "has_more": False,
        },
    ]
    gw = Gateway(batches={b["id"]: b for b in items}, pages=pages)
    with serve(gw):
        result = api_run(run_cli, gw, db, "--list")
    assert result.exit_code == 0, result.output
    assert scalar(db, "select count(*) from batches") == 5
    assert sum(1 for p, _ in gw.requests if p == "/v1/batches") == 3

    stuck = Gateway(
        batches={b["id"]: b for b in items},
        pages=[
            {"object": "list", "data": items[:2], "last_id": items[1]["id"], "has_more": True},
            {"object": "list", "data": items[:2], "last_id": items[1]["id"], "has_more": True},
        ],
    )
    with serve(stuck):
        result = api_run(run_cli, stuck, tmp_path / "other.duckdb", "--list")
    assert result.exit_code == 0, result.output
    assert sum(1 for p, _ in stuck.requests if p == "/v1/batches") == 2


def test_non_final_batches_are_refetched_until_billing_lands(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    running = batch(1, status="in_progress", billing=None, pricing_lines=[])
    gw = Gateway(batches={running["id"]: running})
    with serve(gw):
        assert (
            api_run(run_cli, gw, db, "--ids-file", ids_file(tmp_path, [running["id"]])).exit_code
            == 0
        )
        assert scalar(db, "select is_final from batches") is False
        gw.batches[running["id"]] = batch(1)  # now completed and billed
        result = api_run(run_cli, gw, db, "--ids-file", ids_file(tmp_path, []))
    assert result.exit_code == 0, result.output
    assert query(db, "select is_final, cost_nanos from batches") == [(True, 300_000_000)]
    assert query(db, "select change, cost_delta_nanos from batch_history order by recorded_at") == [
        ("new", 0),
        ("finalized", 300_000_000),
    ]


def test_an_archive_replays_without_refetching(run_cli: Any, db: Path, tmp_path: Path) -> None:
    items = {b["id"]: b for b in (batch(1), batch(2, cost_nanos=7))}
    gw = Gateway(batches=items)
    with serve(gw):
        assert (
            api_run(run_cli, gw, db, "--ids-file", ids_file(tmp_path, list(items))).exit_code == 0
        )
    archive = next((tmp_path / "archive").glob("*.jsonl"))
    replayed = tmp_path / "replayed.duckdb"
    result = run_cli("run", "--replay", archive, "--db", replayed)
    assert result.exit_code == 0, result.output
    assert query(replayed, "select id, cost_nanos from batches order by id") == query(
        db, "select id, cost_nanos from batches order by id"
    )
