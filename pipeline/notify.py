"""Notifications: each new finding of `billing check` posted once to each endpoint.

A finding is a budget threshold reached (each budget's thresholds, e.g. 50/80/100 %, once
per budget and period), a spend anomaly (once: a resolved anomaly is not sent again) or a
wallet runway below a runway budget's minimum (once a month). What was sent, to which
endpoint and when is remembered in the database (table ``notifications``), so the next
night does not repeat it. A delivery that failed is recorded with its cause and tried
again on the next check, until :data:`MAX_NIGHTS` nights have failed.

Delivery: a POST of a Slack-compatible body (``{"text": ...}``) or a plain JSON body with
every field (exact nanos and dollar strings); no redirect is followed; 429, 5xx, timeouts
and connection errors are retried with backoff (``Retry-After`` honoured) within one time
limit for the whole check (``notify.total_timeout_s``), each attempt within
``notify.timeout_s`` for the whole response. URLs and signing secrets come from the config
file or the environment and never reach a body, a log line or a table: an endpoint is known
by its name. This module plans (pure), delivers (the network) and records (the database);
the CLI decides when.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import duckdb
import httpx

from pipeline import __version__
from pipeline.config import Endpoint, NotifyConfig
from pipeline.redaction import redact, register_secret
from pipeline.report import json_rows, usd_cents

log = logging.getLogger(__name__)

MAX_NIGHTS = 7  # a delivery failing this many checks in a row is given up (and shown)
BACKOFF_S = 0.5  # first retry wait; doubles each attempt, at most MAX_BACKOFF_S
MAX_BACKOFF_S = 8.0


@dataclass(frozen=True)
class Finding:
    key: str  # stable across nights: what "already sent" is remembered by
    kind: str  # budget_threshold | anomaly | runway
    subject: str  # the budget's name, or the anomaly's provider and model
    text: str  # the message for people (dollars to the cent)
    fields: dict[str, Any]  # the JSON body's fields (exact nanos, dollar strings)
    period_start: date | None = None
    threshold_pct: int | None = None


@dataclass
class Delivery:
    finding_key: str
    kind: str
    subject: str
    period_start: date | None
    threshold_pct: int | None
    endpoint: Endpoint
    body: str  # the exact JSON posted (no URL, no secret)
    status: str = "pending"  # -> sent | failed | gave_up
    attempts: int = 0  # HTTP attempts, over every night
    nights: int = 0  # checks that tried it
    first_tried_at: datetime | None = None
    sent_at: datetime | None = None
    http_status: int | None = None
    error: str | None = None
    retry: bool = False  # a delivery that failed on an earlier night


def _dollars(nanos: Any) -> Decimal:
    """Exact dollars (the JSON body writes them as '1234.500000000', as json_rows does)."""
    return Decimal(int(nanos or 0)).scaleb(-9)


def _report_pointer(cfg: NotifyConfig, db_name: str) -> str:
    return cfg.report_url or f"billing report --db {db_name}"


def _period_label(period: str, start: date) -> str:
    return f"day {start}" if period == "day" else f"{start:%Y-%m}"


def budget_findings(budgets: Sequence[dict[str, Any]], report: str) -> list[Finding]:
    """One finding per budget period that reached a threshold: the highest reached (a
    night that jumps from 0 to 120% sends one message, for 100%)."""
    out = []
    for b in budgets:
        reached = b.get("thresholds_reached") or []
        if not reached:
            continue
        top = reached[-1]
        pct, since = int(top["pct"]), top["since"]
        over = int(b["overage_nanos"] or 0)
        label = _period_label(b["period"], b["period_start"])
        state = (
            f"over by {usd_cents(over)}"
            if over
            else f"{usd_cents(max(int(b['remaining_nanos']), 0))} left"
        )
        text = (
            f"Budget {b['budget_name']!r} ({label}, {b['scope']}) reached {pct}%:"
            f" {usd_cents(b['spend_nanos'])} of {usd_cents(b['limit_nanos'])}"
            f" ({b['used_pct']}%), {state}; at {pct}% since {since}. Report: {report}"
        )
        fields = {
            "budget": b["budget_name"],
            "period": b["period"],
            "period_start": b["period_start"],
            "scope": b["scope"],
            "threshold_pct": pct,
            "since": since,
            "spend_nanos": int(b["spend_nanos"]),
            "spend_usd": _dollars(b["spend_nanos"]),
            "limit_nanos": int(b["limit_nanos"]),
            "limit_usd": _dollars(b["limit_nanos"]),
            "used_pct": b["used_pct"],
            "overage_nanos": over,
            "overage_usd": _dollars(over),
            "status": b["status"],
            "report": report,
        }
        out.append(
            Finding(
                key=f"budget:{b['budget_name']}:{b['period_start']}:{pct}",
                kind="budget_threshold",
                subject=b["budget_name"],
                text=text,
                fields=fields,
                period_start=b["period_start"],
                threshold_pct=pct,
            )
        )
    return out


def anomaly_findings(anomalies: Sequence[dict[str, Any]], report: str) -> list[Finding]:
    out = []
    for a in anomalies:
        scope = a["provider"] if a["model"] == "*" else f"{a['provider']} {a['model']}"
        out.append(
            Finding(
                key=f"anomaly:{a['day']}:{a['provider']}:{a['model']}:{a['rule']}",
                kind="anomaly",
                subject=scope,
                text=f"Spend anomaly on {a['day']}, {scope}: {a['explanation']} Report: {report}",
                fields={
                    "day": a["day"],
                    "provider": a["provider"],
                    "model": a["model"],
                    "level": a["level"],
                    "rule": a["rule"],
                    "cost_nanos": int(a["cost_nanos"]),
                    "cost_usd": _dollars(a["cost_nanos"]),
                    "baseline_median_nanos": a["baseline_median_nanos"],
                    "explanation": a["explanation"],
                    "report": report,
                },
                period_start=a["day"],
            )
        )
    return out


def runway_findings(runway: Sequence[dict[str, Any]], report: str) -> list[Finding]:
    out = []
    for r in runway:
        if r["status"] != "crossed":
            continue
        month = r["recorded_at"].date().replace(day=1)
        text = (
            f"Wallet runway below {r['min_days']} days (budget {r['budget_name']!r}):"
            f" {r['runway_days']} days left at the {r['rate_basis']} spend rate;"
            f" available {usd_cents(r['available_nanos'])}, held for running batches"
            f" {usd_cents(r['reserved_nanos'])}, balance {usd_cents(r['balance_nanos'])}"
            f" (as of {r['recorded_at']:%Y-%m-%d %H:%M} UTC). Report: {report}"
        )
        out.append(
            Finding(
                key=f"runway:{r['budget_name']}:{month:%Y-%m}",
                kind="runway",
                subject=r["budget_name"],
                text=text,
                fields={**json_rows([r])[0], "report": report},
                period_start=month,
            )
        )
    return out


def findings(checked: Any, cfg: NotifyConfig, db_name: str) -> list[Finding]:
    report = _report_pointer(cfg, db_name)
    return [
        *budget_findings(checked.budgets, report),
        *runway_findings(getattr(checked, "runway", []), report),
        *anomaly_findings(checked.anomalies, report),
    ]


def _body(finding: Finding, endpoint: Endpoint) -> str:
    text = redact(finding.text)
    if endpoint.format == "slack":
        payload: dict[str, Any] = {"text": text}
    else:
        fields = json_rows([finding.fields])[0]
        payload = {"source": "billing", "kind": finding.kind, "finding": finding.key,
                   "text": text, **fields}  # fmt: skip
    return redact(json.dumps(payload, default=str))


def _stored(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cur = con.execute(
        "select finding_key, endpoint, kind, subject, period_start, threshold_pct, status,"
        " attempts, nights, first_tried_at, body from notifications"
    )
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def plan(
    con: duckdb.DuckDBPyConnection, found: Sequence[Finding], endpoints: Sequence[Endpoint]
) -> list[Delivery]:
    """What to send now: each finding not yet sent to an endpoint (a budget threshold
    not below one already sent for the same period), then the earlier failures still
    owed (the same rule: a later, higher threshold sent supersedes a lower one)."""
    stored = _stored(con)
    by_key = {(r["finding_key"], r["endpoint"]): r for r in stored}
    top_sent: dict[tuple[str, Any, str], int] = {}
    for r in stored:
        if r["kind"] == "budget_threshold" and r["status"] == "sent":
            k = (r["subject"], r["period_start"], r["endpoint"])
            top_sent[k] = max(top_sent.get(k, 0), r["threshold_pct"] or 0)
    out: list[Delivery] = []
    planned: set[tuple[str, str]] = set()
    for ep in endpoints:
        for f in found:
            prior = by_key.get((f.key, ep.name))
            if prior is not None and prior["status"] in ("sent", "gave_up"):
                continue
            if f.kind == "budget_threshold" and (f.threshold_pct or 0) <= top_sent.get(
                (f.subject, f.period_start, ep.name), 0
            ):
                continue
            out.append(
                Delivery(
                    f.key, f.kind, f.subject, f.period_start, f.threshold_pct, ep,
                    _body(f, ep),
                    attempts=prior["attempts"] if prior else 0,
                    nights=prior["nights"] if prior else 0,
                    first_tried_at=prior["first_tried_at"] if prior else None,
                    retry=prior is not None,
                )
            )  # fmt: skip
            planned.add((f.key, ep.name))
        planned_budget = {
            (d.subject, d.period_start): d.threshold_pct or 0
            for d in out
            if d.endpoint.name == ep.name and d.kind == "budget_threshold"
        }
        for r in stored:  # failures of earlier nights whose finding is no longer current
            if r["endpoint"] != ep.name or r["status"] != "failed":
                continue
            if (r["finding_key"], ep.name) in planned:
                continue
            if r["kind"] == "budget_threshold":
                period = (r["subject"], r["period_start"])
                if (r["threshold_pct"] or 0) <= max(
                    top_sent.get((*period, ep.name), 0), planned_budget.get(period, 0)
                ):
                    continue  # superseded by a higher threshold
            out.append(
                Delivery(
                    r["finding_key"], r["kind"], r["subject"], r["period_start"],
                    r["threshold_pct"], ep, r["body"], attempts=r["attempts"] or 0,
                    nights=r["nights"] or 0, first_tried_at=r["first_tried_at"], retry=True,
                )
            )  # fmt: skip
    return out


class _Retry(Exception):
    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.wait_s = wait_s


def _url(ep: Endpoint) -> str:
    if ep.url is not None:
        return ep.url.reveal()
    value = os.environ.get(ep.url_env or "", "").strip()
    if not value:
        raise ValueError(f"environment variable {ep.url_env} (url_env) is not set")
    register_secret(value)  # never shown, whatever prints an error
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{ep.url_env} does not hold an http:// or https:// URL")
    return value


def _headers(ep: Endpoint, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": f"billing/{__version__}"}
    if ep.secret_env:
        secret = os.environ.get(ep.secret_env, "")
        if not secret:
            raise ValueError(f"environment variable {ep.secret_env} (secret_env) is not set")
        register_secret(secret)
        stamp = str(int(time.time()))
        digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
        headers["x-billing-timestamp"] = stamp
        headers["x-billing-signature"] = "sha256=" + digest.hexdigest()
    return headers


async def _attempt(
    http: httpx.AsyncClient, d: Delivery, url: str, cfg: NotifyConfig, left: float
) -> None:
    body = d.body.encode()
    request = http.build_request("POST", url, content=body, headers=_headers(d.endpoint, body))
    d.attempts += 1
    limit = min(cfg.timeout_s, left)
    try:
        async with asyncio.timeout(limit):
            resp = await http.send(request, stream=True)
            await resp.aclose()  # the status is the answer; the body is not read
    except TimeoutError:
        if limit < cfg.timeout_s:
            passed = f"the notification time limit ({cfg.total_timeout_s:g} s) passed"
            raise _Retry(passed) from None
        raise _Retry(f"no answer within {cfg.timeout_s:g} s") from None
    except httpx.TransportError as exc:
        raise _Retry(f"connection failed ({type(exc).__name__})") from None
    d.http_status = resp.status_code
    if 200 <= resp.status_code < 300:
        d.status, d.error, d.sent_at = "sent", None, datetime.now(UTC)
        return
    if resp.status_code == 429 or resp.status_code >= 500:
        wait = None
        try:
            wait = max(0.0, float(resp.headers.get("retry-after", "")))
        except ValueError:
            pass
        raise _Retry(f"answered {resp.status_code}", wait)
    if 300 <= resp.status_code < 400:
        d.error = f"answered {resp.status_code} (a redirect): not followed"
    else:
        d.error = f"answered {resp.status_code}"
    d.status = "failed"


async def _deliver_one(
    http: httpx.AsyncClient, d: Delivery, cfg: NotifyConfig, deadline: float
) -> None:
    loop = asyncio.get_running_loop()
    try:
        url = _url(d.endpoint)
        _headers(d.endpoint, b"")  # a missing secret fails before any attempt
    except ValueError as exc:
        d.status, d.error = "failed", str(exc)
        return
    for n in range(cfg.max_retries + 1):
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            await _attempt(http, d, url, cfg, left)
            return
        except _Retry as exc:
            d.status, d.error = "failed", f"{exc} after {n + 1} attempt(s)"
            if n == cfg.max_retries:
                return
            wait = exc.wait_s if exc.wait_s is not None else BACKOFF_S * 2**n
            wait = min(wait, MAX_BACKOFF_S, max(deadline - loop.time(), 0.0))
            await asyncio.sleep(wait)
    if d.status == "pending" or d.error is None:
        d.status, d.error = (
            "failed",
            f"the notification time limit ({cfg.total_timeout_s:g} s) passed",
        )


async def _deliver(
    deliveries: Sequence[Delivery],
    cfg: NotifyConfig,
    transport: httpx.AsyncBaseTransport | None,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.total_timeout_s
    by_endpoint: dict[str, list[Delivery]] = {}
    for d in deliveries:
        by_endpoint.setdefault(d.endpoint.name, []).append(d)

    async def endpoint_queue(queue: list[Delivery]) -> None:
        for d in queue:  # in order: one endpoint gets its messages one at a time
            await _deliver_one(http, d, cfg, deadline)

    async with httpx.AsyncClient(follow_redirects=False, transport=transport) as http:
        try:
            async with asyncio.timeout(cfg.total_timeout_s + 0.5):  # a last resort
                await asyncio.gather(*(endpoint_queue(q) for q in by_endpoint.values()))
        except TimeoutError:
            pass
    for d in deliveries:
        if d.status == "pending":
            d.status = "failed"
            d.error = f"the notification time limit ({cfg.total_timeout_s:g} s) passed"


def deliver(
    deliveries: Sequence[Delivery],
    cfg: NotifyConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """POST every delivery (in place: status, attempts, error), within the time limit."""
    now = datetime.now(UTC)
    for d in deliveries:
        d.nights += 1
        d.first_tried_at = d.first_tried_at or now
    if deliveries:
        asyncio.run(_deliver(deliveries, cfg, transport))
    for d in deliveries:
        if d.error is not None:
            d.error = redact(d.error)[:300]
        if d.status == "failed" and d.nights >= MAX_NIGHTS:
            d.status = "gave_up"
        if d.status != "sent":
            log.warning("notification to %s not sent: %s", d.endpoint.name, d.error)


def record(con: duckdb.DuckDBPyConnection, deliveries: Sequence[Delivery], run_id: str) -> None:
    """Remember each delivery's outcome (one row per finding and endpoint)."""
    now = datetime.now(UTC)
    for d in deliveries:
        con.execute(
            "delete from notifications where finding_key = $1 and endpoint = $2",
            [d.finding_key, d.endpoint.name],
        )
        con.execute(
            "insert into notifications values"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            [
                d.finding_key, d.endpoint.name, d.kind, d.subject, d.period_start,
                d.threshold_pct, d.status, d.attempts, d.nights, d.first_tried_at, now,
                d.sent_at, d.http_status, d.error, d.body, run_id,
            ],
        )  # fmt: skip


@dataclass
class Outcome:
    deliveries: list[Delivery] = field(default_factory=list)
    dry_run: bool = False

    @property
    def sent(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.status == "sent"]

    @property
    def failed(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.status in ("failed", "gave_up", "not_sent")]

    def summary(self) -> str:
        """Lines for the check summary (empty when nothing was due)."""
        if not self.deliveries:
            return ""
        if self.dry_run:
            lines = [f"  notify      {len(self.deliveries)} message(s) would be sent (--dry-run)"]
            for d in self.deliveries:
                lines.append(f"    to {d.endpoint.name} ({d.endpoint.format}): {d.body}")
            return "".join("\n" + line for line in lines)
        lines = [
            f"  notify      {len(self.sent)} sent, {len(self.failed)} failed"
            + (" (tried again at the next check)" if self.failed else "")
        ]
        for d in self.failed:
            again = {"gave_up": "given up", "not_sent": "not tried"}.get(
                d.status, f"night {d.nights}"
            )
            lines.append(f"    NOT SENT to {d.endpoint.name}: {d.finding_key}: {d.error} ({again})")
        return "".join("\n" + line for line in lines)

    def json(self) -> list[dict[str, Any]]:
        return [
            {
                "endpoint": d.endpoint.name,
                "finding_key": d.finding_key,
                "kind": d.kind,
                "status": "would_send" if self.dry_run else d.status,
                "attempts": d.attempts,
                "http_status": d.http_status,
                "error": d.error,
                **({"body": json.loads(d.body)} if self.dry_run else {}),
            }
            for d in self.deliveries
        ]


def notify(
    db_path: Any,
    checked: Any,
    cfg: NotifyConfig,
    *,
    dry_run: bool = False,
    wait_s: float = 0.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Outcome:
    """Plan against the published database; when something is due (and not --dry-run),
    take the writer's lock, plan again on the working copy (another check may have sent
    it meanwhile), deliver, record, publish. A night with nothing due writes nothing."""
    from pipeline.load import Loader, reader
    from pipeline.runner import new_run_id
    from pipeline.store import LockedError

    if not cfg.endpoints:
        return Outcome()
    found = findings(checked, cfg, db_path.name)
    with reader(db_path) as con:
        due = plan(con, found, cfg.endpoints)
    if dry_run or not due:
        return Outcome(due, dry_run=dry_run)
    try:
        ldr = Loader(db_path, new_run_id(), wait_s=wait_s)
    except LockedError as exc:  # a run is writing: nothing sent, so nothing is lost
        for d in due:
            d.status, d.error = "not_sent", f"{exc} (sent at the next check; or --wait)"
        return Outcome(due)
    with ldr:
        due = plan(ldr.con, found, cfg.endpoints)
        deliver(due, cfg, transport=transport)
        record(ldr.con, due, ldr.run_id)
        ldr.commit()
    return Outcome(due)
