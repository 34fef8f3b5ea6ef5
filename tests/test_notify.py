"""Notifications (#28): each new finding posted once, to a real loopback receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import TOKEN
from tests.helpers import batch, query, rebilled, write_jsonl
from tests.receiver import Answer, Receiver, receive

pytestmark = pytest.mark.timeout(60)

HOOK_SECRET = "hooksecret-T0KEN-in-the-path-77"
SIGNING_SECRET = "signing-secret-XYZZY-42"


def night(n: int, nanos: int, day: int) -> dict[str, Any]:
    """A batch billed ``nanos`` on 2026-11-``day``."""
    at = f"2026-11-{day:02d}T03:04:05.000Z"
    return rebilled(batch(n), nanos, at)


def config(tmp_path: Path, *, fmt: str = "json", extra: str = "", budget: str = "") -> Path:
    path = tmp_path / "billing.toml"
    path.write_text(
        f"""
[[budget]]
name = "team monthly"
limit_usd = "1.00"
thresholds = [80, 100]
{budget}

[notify]
report_url = "https://intranet.example/report.html"
timeout_s = 2
total_timeout_s = 10
{extra}

[[notify.endpoint]]
name = "finance"
url_env = "BILLING_TEST_HOOK"
format = "{fmt}"
secret_env = "BILLING_TEST_SIGNING"
"""
    )
    return path


def env(rx: Receiver) -> dict[str, str]:
    return {
        "BILLING_TEST_HOOK": f"{rx.url}/hooks/{HOOK_SECRET}",
        "BILLING_TEST_SIGNING": SIGNING_SECRET,
        "BILLING_TODAY": "2026-11-20",
    }


def run_night(run_cli: Any, db: Path, tmp_path: Path, cfg: Path, rx: Receiver, items: list[Any],
              n: int) -> Any:  # fmt: skip
    path = write_jsonl(tmp_path / f"night{n}.jsonl", items)
    return run_cli("run", path, "--db", db, "--config", cfg, "--check", env=env(rx))


def test_thresholds_send_once_per_budget_and_period_over_three_nights(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    with receive() as rx:
        first = [night(1, 850_000_000, 10)]  # 85% of $1.00
        result = run_night(run_cli, db, tmp_path, cfg, rx, first, 1)
        assert result.exit_code == 0, result.output
        assert "notify      1 sent, 0 failed" in result.output
        second = [*first, night(2, 300_000_000, 18)]  # $1.15: 115%
        result = run_night(run_cli, db, tmp_path, cfg, rx, second, 2)
        assert result.exit_code == 4, result.output  # crossed
        result = run_night(run_cli, db, tmp_path, cfg, rx, second, 3)  # nothing new
        assert result.exit_code == 4, result.output
        assert "notify" not in result.output
        bodies = rx.bodies()
    assert [(b["threshold_pct"], b["spend_nanos"], b["since"]) for b in bodies] == [
        (80, 850_000_000, "2026-11-10"),
        (100, 1_150_000_000, "2026-11-18"),
    ]
    assert bodies[1]["overage_nanos"] == 150_000_000
    assert bodies[1]["overage_usd"] == "0.150000000"
    assert bodies[1]["limit_usd"] == "1.000000000"
    assert bodies[1]["budget"] == "team monthly"
    assert bodies[1]["report"] == "https://intranet.example/report.html"
    assert bodies[1]["text"] == (
        "Budget 'team monthly' (2026-11, all spend) reached 100%: $1.15 of $1.00 (115.0%),"
        " over by $0.15; at 100% since 2026-11-18. Report: https://intranet.example/report.html"
    )
    rows = query(
        db, "select finding_key, endpoint, status, attempts, nights from notifications order by 1"
    )
    assert rows == [
        ("budget:team monthly:2026-11-01:100", "finance", "sent", 1, 1),
        ("budget:team monthly:2026-11-01:80", "finance", "sent", 1, 1),
    ]


def test_a_jump_past_every_threshold_sends_one_message(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    cfg = config(tmp_path, fmt="slack")
    with receive() as rx:
        result = run_night(run_cli, db, tmp_path, cfg, rx, [night(1, 2_000_000_000, 12)], 1)
        assert result.exit_code == 4, result.output
        assert rx.bodies() == [
            {
                "text": "Budget 'team monthly' (2026-11, all spend) reached 100%: $2.00 of $1.00"
                " (200.0%), over by $1.00; at 100% since 2026-11-12."
                " Report: https://intranet.example/report.html"
            }
        ]


def test_a_receiver_answering_500_then_200_gets_the_message_once(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    with receive(Receiver(script=[Answer(500)])) as rx:
        result = run_night(run_cli, db, tmp_path, cfg, rx, [night(1, 900_000_000, 10)], 1)
        assert result.exit_code == 0, result.output
        assert "notify      1 sent, 0 failed" in result.output
        result = run_cli("check", "--db", db, "--config", cfg, env=env(rx))  # the next night
        assert result.exit_code == 0, result.output
        assert len(rx.posts) == 2  # the 500, then the 200
        assert [b["finding"] for b in rx.bodies()] == ["budget:team monthly:2026-11-01:80"] * 2
    assert query(db, "select status, attempts, http_status, error from notifications") == [
        ("sent", 2, 200, None)
    ]


def test_a_hanging_receiver_does_not_stall_the_night_and_is_tried_again(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    cfg = config(tmp_path, extra="max_retries = 1").read_text()
    cfg = cfg.replace(
        "timeout_s = 2\ntotal_timeout_s = 10", "timeout_s = 0.3\ntotal_timeout_s = 1.5"
    )
    path = tmp_path / "hang.toml"
    path.write_text(cfg)
    with receive(Receiver(script=[Answer(delay_s=50), Answer(delay_s=50)])) as rx:
        result = run_night(run_cli, db, tmp_path, path, rx, [night(1, 900_000_000, 10)], 1)
        assert result.exit_code == 0, result.output  # the load is committed either way
        assert "notify      0 sent, 1 failed (tried again at the next check)" in result.output
        line = next(ln for ln in result.output.splitlines() if "NOT SENT" in ln)
        assert line.startswith("    NOT SENT to finance: budget:team monthly:2026-11-01:80: ")
        assert line.endswith(" (night 1)")
        # the second attempt may be cut short by the check's time limit (1.5 s)
        assert "no answer within 0.3 s" in line or "time limit (1.5 s) passed" in line
        assert query(db, "select count(*) from batches") == [(1,)]
        # the next check: the receiver answers now; the message goes once
        result = run_cli("check", "--db", db, "--config", path, env=env(rx))
        assert "notify      1 sent, 0 failed" in result.output
        result = run_cli("check", "--db", db, "--config", path, env=env(rx))
        assert "notify" not in result.output
        assert len(rx.posts) == 3
    assert query(db, "select status, attempts, nights from notifications") == [("sent", 3, 2)]


def test_no_secret_in_any_body_header_output_or_table(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    with receive(Receiver(script=[Answer(503, headers={"Retry-After": "0"})])) as rx:
        environment = {**env(rx), "PHASEO_API_KEY": TOKEN}
        path = write_jsonl(tmp_path / "n.jsonl", [night(1, 900_000_000, 10)])
        result = run_cli("run", path, "--db", db, "--config", cfg, "--check", "-v", env=environment)
        assert result.exit_code == 0, result.output
        posts = list(rx.posts)
    assert len(posts) == 2
    for secret in (HOOK_SECRET, SIGNING_SECRET, TOKEN):
        assert secret not in result.output
        for _, headers, body in posts:
            assert secret.encode() not in body
            assert secret not in json.dumps(headers)
        dump = query(db, "select * from notifications")
        assert secret not in repr(dump)
    # the receiver can check the signature: HMAC-SHA256 of "{timestamp}.{body}"
    _, headers, body = posts[-1]
    stamp = headers["x-billing-timestamp"]
    expected = hmac.new(SIGNING_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    assert headers["x-billing-signature"] == "sha256=" + expected.hexdigest()


def test_a_redirect_is_not_followed(run_cli: Any, db: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with receive() as rx:
        rx.script.append(Answer(302, headers={"Location": f"{rx.url}/elsewhere"}))
        result = run_night(run_cli, db, tmp_path, cfg, rx, [night(1, 900_000_000, 10)], 1)
        assert "answered 302 (a redirect): not followed" in result.output
        assert [p for p, _, _ in rx.posts] == [f"/hooks/{HOOK_SECRET}"]
    assert query(db, "select status, http_status from notifications") == [("failed", 302)]


def test_dry_run_prints_the_messages_and_sends_or_writes_nothing(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    with receive() as rx:
        path = write_jsonl(tmp_path / "n.jsonl", [night(1, 900_000_000, 10)])
        assert run_cli("run", path, "--db", db, "-q").exit_code == 0
        result = run_cli(
            "check", "--db", db, "--config", cfg, "--dry-run", "--format", "json", env=env(rx)
        )
        assert rx.posts == []
    out = json.loads(result.output)
    assert [
        (n["status"], n["endpoint"], n["body"]["threshold_pct"]) for n in out["notifications"]
    ] == [("would_send", "finance", 80)]
    assert query(db, "select count(*) from notifications") == [(0,)]


def test_an_unset_url_variable_is_a_recorded_failure_not_a_failed_night(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    path = write_jsonl(tmp_path / "n.jsonl", [night(1, 900_000_000, 10)])
    result = run_cli("run", path, "--db", db, "--config", cfg, "--check",
                     env={"BILLING_TODAY": "2026-11-20"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "environment variable BILLING_TEST_HOOK (url_env) is not set" in result.output
    assert query(db, "select count(*) from batches") == [(1,)]


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ('url = "ftp://x"', "url must start with http:// or https://"),
        ('url = "https://h/x"\nurl_env = "X"', "give url_env (an environment variable) or url"),
        ('url_env = "X"\nformat = "teams"', 'format must be "slack" or "json", got \'teams\''),
        ('url_env = "X Y"', "url_env must name an environment variable"),
    ],
)
def test_a_bad_endpoint_is_one_line_without_its_url(
    run_cli: Any, sample_loaded: Path, tmp_path: Path, endpoint: str, message: str
) -> None:
    path = tmp_path / "b.toml"
    path.write_text(f'[notify]\n[[notify.endpoint]]\nname = "e"\n{endpoint}\n')
    result = run_cli("check", "--db", sample_loaded, "--config", path)
    assert result.exit_code == 2
    assert message in result.output
    assert "https://h/x" not in result.output


def test_a_check_while_a_run_writes_sends_nothing_and_the_next_check_does(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    cfg = config(tmp_path)
    path = write_jsonl(tmp_path / "n.jsonl", [night(1, 900_000_000, 10)])
    assert run_cli("run", path, "--db", db, "-q").exit_code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from pipeline.store import Store, WriterLock;"
         " WriterLock(Store(Path(sys.argv[1])), 'RUN-B', 0); print('held', flush=True);"
         " time.sleep(30)", str(db)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    with receive() as rx:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            result = run_cli("check", "--db", db, "--config", cfg, env=env(rx))
        finally:
            holder.kill()
            holder.wait()
        assert result.exit_code == 0, result.output
        assert "notify      0 sent, 1 failed" in result.output
        assert "is being written by another billing run" in result.output
        assert "(not tried)" in result.output
        assert rx.posts == []
        result = run_cli("check", "--db", db, "--config", cfg, env=env(rx))
        assert "notify      1 sent, 0 failed" in result.output
        assert len(rx.posts) == 1


@pytest.mark.parametrize(
    "shape",
    [
        '[[notify]]\nname = "finance"\ntype = "json"\nwebhook_url_env = "BILLING_TEST_HOOK"\n'
        "total_timeout_s = 10\n",
        '[notify]\nname = "finance"\nurl_env = "BILLING_TEST_HOOK"\nformat = "json"\n'
        "total_timeout_s = 10\n",
        '[notify]\ntotal_timeout_s = 10\n[[notify.endpoints]]\nname = "finance"\n'
        'env = "BILLING_TEST_HOOK"\n',
    ],
)
def test_the_other_ways_to_write_an_endpoint_read_as_the_same_endpoint(
    tmp_path: Path, shape: str
) -> None:
    from pipeline.config import Endpoint, NotifyConfig, load_config_file

    cfg = tmp_path / "b.toml"
    cfg.write_text('[[budget]]\nname = "b"\nlimit_usd = "1.00"\nalert_at = [50]\n\n' + shape)
    read = load_config_file(cfg)
    assert read.notify == NotifyConfig(
        endpoints=(Endpoint(name="finance", format="json", url_env="BILLING_TEST_HOOK"),),
        total_timeout_s=10.0,
    )
    assert read.budgets is not None and read.budgets[0].thresholds == (50,)
