"""Against a loopback gateway that behaves like the real one (docs/gateway-api.md): every
GET of a finished batch re-runs finalization, statuses pass through unmapped, request rows
come in limit/offset pages with no has_more, and the list route has no cursor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.gateway import TOKEN, Gateway, serve
from tests.helpers import batch, query, scalar

ENV = {"PHASEO_API_KEY": TOKEN}


def ids_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


def nightly(run_cli: Any, gw: Gateway, db: Path, tmp_path: Path, ids: list[str], *args: str) -> Any:
    return run_cli(
        "run",
        "--base-url",
        gw.url,
        "--db",
        db,
        "--ids-file",
        ids_file(tmp_path, ids),
        "--timeout",
        "2",
        *args,
        env=ENV,
    )


def rows_for(b: dict[str, Any], models: list[str]) -> list[dict[str, Any]]:
    """Request rows whose costs add up to the batch's bill, one model per row in turn."""
    n = len(models)
    cost = b["billing"]["cost_nanos"]
    costs = [cost // n] * n
    costs[-1] += cost - sum(costs)
    return [
        {
            "id": f"breq_{i:05d}",
            "custom_id": f"t{i}",
            "request_index": i,
            "model": m,
            "status": "completed",
            "response_status": 200,
            "cost_nanos": c,
            "usage": {"input_tokens": 10, "output_tokens": 2},
            "created_at": "2026-11-01T00:00:00Z",
        }
        for i, (m, c) in enumerate(zip(models, costs, strict=True))
    ]


def test_two_nightly_runs_keep_the_capture_and_count_the_money_once(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    captured = batch(
        1,
        usage={
            "requests": 2,
            "input_tokens": 100000,
            "output_tokens": 2000,
            "total_tokens": 102000,
            "cost_nanos": 300000000,
            "cost_usd": 0.3,
            "currency": "USD",
        },
    )
    gw = Gateway(batches={captured["id"]: captured}, refinalize=True)
    with serve(gw):
        first = nightly(run_cli, gw, db, tmp_path, [captured["id"]])
        second = nightly(run_cli, gw, db, tmp_path, [captured["id"]])
        third = nightly(run_cli, gw, db, tmp_path, [captured["id"]])
    for result in (first, second, third):
        assert result.exit_code == 0, result.output
    assert gw.gets[captured["id"]] == 3  # the gateway re-billed it on every GET
    assert query(
        db,
        "select charged, captured, billing_reason, billing_reason_base, billing_reason_detail,"
        " capture_reason, billing_finalized_at::varchar, cost_nanos from batches",
    ) == [
        (
            True,
            True,
            "charged:captured",
            "charged",
            "captured",
            "charged:captured",
            "2026-11-02 03:04:05+00",
            300_000_000,
        )
    ]
    assert query(db, "select change, cost_delta_nanos from batch_history") == [("new", 300_000_000)]
    assert query(
        db, "select cost_delta_nanos, batches_reread from load_runs order by started_at"
    ) == [(300_000_000, 0), (0, 1), (0, 1)]
    assert "re-read     1 captured bills read again (same money: not a change)" in second.output
    assert "(+$0.000000000 this run)" in third.output
    assert query(
        db,
        "select usage_requests, usage_input_tokens, usage_output_tokens, usage_total_tokens,"
        " usage_cost_nanos, usage_currency from batches",
    ) == [(2, 100000, 2000, 102000, 300_000_000, "USD")]
    assert scalar(db, "select count(*) from billing_reconciliation") == 0


def test_a_restated_bill_is_a_restatement_even_on_an_already_billed_read(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    b = batch(1)
    gw = Gateway(batches={b["id"]: b}, refinalize=True)
    with serve(gw):
        assert nightly(run_cli, gw, db, tmp_path, [b["id"]]).exit_code == 0
        restated = batch(1, cost_nanos=350_000_000)
        restated["billing"]["pricing_breakdown"]["total_nanos"] = 350_000_000
        gw.batches[b["id"]] = restated
        result = nightly(run_cli, gw, db, tmp_path, [b["id"]])
    assert result.exit_code == 0, result.output
    assert query(db, "select change, cost_delta_nanos from batch_history order by recorded_at") == [
        ("new", 300_000_000),
        ("restated", 50_000_000),
    ]
    assert query(
        db, "select cost_nanos, captured, capture_reason, billing_reason from batches"
    ) == [(350_000_000, True, "charged:captured", "already_billed")]


def test_open_statuses_load_with_their_lifecycle_group_and_are_announced_once(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    unknown = batch(
        1, status="submission_unknown", billing=None, pricing_lines=[], completed_at=None
    )
    provider = batch(
        2, status="batch_state_running", billing=None, pricing_lines=[], completed_at=None
    )
    labelled = batch(3, status="ended", lifecycle_status="completed")
    gw = Gateway(batches={b["id"]: b for b in (unknown, provider, labelled)}, refinalize=True)
    with serve(gw):
        first = nightly(run_cli, gw, db, tmp_path, list(gw.batches))
        second = nightly(run_cli, gw, db, tmp_path, [])  # the two pending ones are refetched
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert query(db, "select status, lifecycle_group, is_final from batches order by id") == [
        ("submission_unknown", "pending", False),
        ("batch_state_running", "pending", False),
        ("ended", "terminal", True),
    ]
    assert query(db, "select field from schema_drift order by 1") == [
        ("status=batch_state_running",),
        ("status=ended",),
    ]
    assert "status=batch_state_running" in first.output and "status=" not in second.output
    assert query(db, "select status, batches from batch_outcomes order by status") == [
        ("batch_state_running", 1),
        ("ended", 1),
        ("submission_unknown", 1),
    ]


def test_request_rows_are_paged_fetched_once_refetched_on_restatement_and_give_spend_by_model(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    big = batch(1, cost_nanos=2_500_000_001)
    big["billing"]["pricing_breakdown"]["total_nanos"] = 2_500_000_001
    small = batch(2, provider="anthropic")
    running = batch(3, status="in_progress", billing=None, pricing_lines=[], completed_at=None)
    gw = Gateway(
        batches={b["id"]: b for b in (big, small, running)},
        refinalize=True,
        rows={
            big["id"]: rows_for(
                big, ["gpt-5", "gpt-5-mini", "gpt-5-mini"] * 833 + ["gpt-5"]
            ),  # 2,500 rows
            small["id"]: rows_for(small, ["claude-sonnet-4-5", "claude-haiku-4-5"])[
                :1
            ],  # a row short
        },
    )
    with serve(gw):
        first = nightly(run_cli, gw, db, tmp_path, list(gw.batches))
        pages = [p for p, _ in gw.requests if p.endswith("/requests")]
        second = nightly(run_cli, gw, db, tmp_path, list(gw.batches))
        again = [p for p, _ in gw.requests if p.endswith("/requests")]
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    # 1,000 + 1,000 + 500 rows; one row, then an empty page (a lower cap is not mistaken for the end)
    assert sorted(pages) == sorted(
        [f"/v1/batches/{big['id']}/requests"] * 3 + [f"/v1/batches/{small['id']}/requests"] * 2
    )
    assert again == pages  # fetched once; the running batch has none to fetch yet
    assert query(
        db, "select batch_id, count(*), sum(cost_nanos) from batch_requests group by 1 order by 1"
    ) == [(big["id"], 2500, 2_500_000_001), (small["id"], 1, 150_000_000)]
    assert query(
        db,
        "select provider, model, attribution, requests, cost_nanos from spend_by_model"
        " order by provider, model",
    ) == [
        ("anthropic", "claude-sonnet-4-5", "requests", 1, 150_000_000),
        ("anthropic", "unattributed", "unattributed", 0, 150_000_000),
        ("openai", "gpt-5", "requests", 834, 834 * 1_000_000 + 1),
        ("openai", "gpt-5-mini", "requests", 1666, 1666 * 1_000_000),
    ]
    assert scalar(db, "select sum(cost_nanos) from spend_by_model") == scalar(
        db, "select sum(cost_nanos) from batches"
    )
    # a restated bill: its rows are fetched again and replace the old ones
    restated = batch(2, provider="anthropic", cost_nanos=400_000_000)
    restated["billing"]["pricing_breakdown"]["total_nanos"] = 400_000_000
    gw.batches[small["id"]] = restated
    gw.rows[small["id"]] = rows_for(restated, ["claude-haiku-4-5", "claude-haiku-4-5"])
    with serve(gw):
        third = nightly(run_cli, gw, db, tmp_path, [small["id"]])
    assert third.exit_code == 0, third.output
    assert query(
        db,
        "select model, count(*), sum(cost_nanos) from batch_requests where batch_id = $1 group by 1",
        [small["id"]],
    ) == [("claude-haiku-4-5", 2, 400_000_000)]


def test_a_gateway_that_caps_the_page_size_lower_is_still_read_to_the_end(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    b = batch(1)
    gw = Gateway(
        batches={b["id"]: b},
        refinalize=True,
        rows={b["id"]: rows_for(b, ["gpt-5"] * 250)},
        row_cap=100,
    )
    with serve(gw):
        result = nightly(run_cli, gw, db, tmp_path, [b["id"]])
    assert result.exit_code == 0, result.output
    assert query(db, "select count(*), sum(cost_nanos) from batch_requests") == [(250, 300_000_000)]
    assert sum(1 for p, _ in gw.requests if p.endswith("/requests")) == 3  # 100, 100, 50


def test_request_rows_that_cannot_be_fetched_make_the_night_incomplete_and_are_retried(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    b = batch(1)
    gw = Gateway(batches={b["id"]: b}, refinalize=True, rows={b["id"]: rows_for(b, ["gpt-5"])})
    from tests.gateway import Reply

    gw.scripts[f"/v1/batches/{b['id']}/requests"] = [Reply(500, "boom")] * 2
    with serve(gw):
        first = nightly(run_cli, gw, db, tmp_path, [b["id"]], "--retries", "1")
        second = nightly(run_cli, gw, db, tmp_path, [], "--retries", "1")
    assert first.exit_code == 3, first.output
    # said as what it is: the batch loaded, its rows did not
    assert "not fetched" not in first.output
    assert (
        "  rows missing 1 batch(es) loaded without all their request rows (see fetch_errors;"
        " asked again by the next API run):"
    ) in first.output
    assert f"{b['id']}: gave up after 2 attempts: HTTP 500" in first.output
    assert query(db, "select kind, reason from fetch_errors") == [
        ("requests", "request rows: gave up after 2 attempts: HTTP 500")
    ]
    assert second.exit_code == 0, second.output
    assert query(db, "select model, cost_nanos from batch_requests") == [("gpt-5", 300_000_000)]
    assert (
        scalar(db, "select cost_nanos from batches") == 300_000_000
    )  # the bill itself loaded at once


def test_list_validates_status_filters_and_warns_when_the_page_is_full(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    typo = run_cli("run", "--list", "--status", "complete", "--db", db, env=ENV)
    assert typo.exit_code == 2
    assert typo.output.startswith(
        "billing: error: --status 'complete' is not a status the gateway filters on "
        "(it would silently list every batch); choose from: submitting, "
    )
    many = {b["id"]: b for b in (batch(i, cost_nanos=i) for i in range(1, 131))}
    gw = Gateway(batches=many, refinalize=True)
    with serve(gw):
        result = run_cli(
            "run", "--list", "--status", "completed", "--base-url", gw.url, "--db", db, env=ENV
        )
    assert result.exit_code == 0, result.output
    assert scalar(db, "select count(*) from batches") == 100
    assert "the gateway lists only the 100 most recently updated batches" in result.output


def test_request_rows_from_files_a_requests_array_or_a_sibling_file(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    import orjson

    from tests.helpers import write_jsonl

    a, b, c = batch(1), batch(2, provider="anthropic"), batch(3, provider="mistral")
    a["requests"] = rows_for(a, ["gpt-5", "gpt-5-mini"])
    write_jsonl(tmp_path / "batches.jsonl", [a, b, c])
    write_jsonl(
        tmp_path / "batches.requests.jsonl",
        [{"batch_id": b["id"], **r} for r in rows_for(b, ["claude-haiku-4-5"])]
        + [{"batch_id": b["id"], "id": "bad", "cost_nanos": -1}],
    )
    (tmp_path / "mistral.requests.json").write_bytes(
        orjson.dumps(
            {"object": "list", "batch_id": c["id"], "data": rows_for(c, ["mistral-large"] * 3)}
        )
    )
    result = run_cli("run", "--input", tmp_path, "--db", db)
    assert result.exit_code == 0, result.output
    assert query(
        db,
        "select provider, model, attribution, requests, cost_nanos from spend_by_model"
        " order by provider, model",
    ) == [
        ("anthropic", "claude-haiku-4-5", "requests", 1, 300_000_000),
        ("mistral", "mistral-large", "requests", 3, 300_000_000),
        ("openai", "gpt-5", "requests", 1, 150_000_000),
        ("openai", "gpt-5-mini", "requests", 1, 150_000_000),
    ]
    assert query(db, "select batch_id, reason from rejected_batches") == [
        (b["id"], "requests[0].cost_nanos must be >= 0, got -1")
    ]


def test_a_batch_first_seen_already_billed_counts_as_captured_once(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    b = batch(1)
    gw = Gateway(
        batches={b["id"]: b}, refinalize=True, gets={b["id"]: 1}
    )  # someone else's GET captured it
    with serve(gw):
        first = nightly(run_cli, gw, db, tmp_path, [b["id"]])
        second = nightly(run_cli, gw, db, tmp_path, [b["id"]])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert query(db, "select charged, captured, billing_reason, cost_nanos from batches") == [
        (False, True, "already_billed", 300_000_000)
    ]
    assert query(db, "select change from batch_history") == [("new",)]
    assert query(db, "select cost_delta_nanos from load_runs order by started_at") == [
        (300_000_000,),
        (0,),
    ]


def test_batches_loaded_from_files_are_not_asked_for_request_rows(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    from tests.helpers import write_jsonl

    folder = tmp_path / "old-archive-2026"  # a path that merely mentions "archive"
    folder.mkdir()
    assert (
        run_cli("run", "--input", write_jsonl(folder / "b.jsonl", [batch(1)]), "--db", db).exit_code
        == 0
    )
    gw = Gateway(batches={}, refinalize=True)
    with serve(gw):
        result = nightly(run_cli, gw, db, tmp_path, [])
    assert result.exit_code == 0, result.output
    assert [path for path, _ in gw.requests] == ["/v1/credits"]  # the wallet; no batch route


def test_request_rows_that_are_not_a_list_say_so_once(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """The reason read 'request rows: request rows: not a list object'."""
    from tests.gateway import Reply

    b = batch(1)
    gw = Gateway(batches={b["id"]: b}, refinalize=True)
    gw.scripts[f"/v1/batches/{b['id']}/requests"] = [Reply(200, {"object": "list", "data": "x"})]
    with serve(gw):
        result = nightly(run_cli, gw, db, tmp_path, [b["id"]], "--retries", "1")
    assert result.exit_code == 3, result.output
    assert query(db, "select reason from fetch_errors") == [("request rows: not a list object",)]
