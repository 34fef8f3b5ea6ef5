"""Deterministic generator of realistic gateway batch objects (sample data, benchmarks).

``billing sample --out data/sample`` writes the bundled sample set; the benchmarks call
:func:`iter_batches` for any size. Same seed, same bytes.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

# provider -> [(model, input price, output price)] in nano-USD per 1M tokens
PRICE_CARD: dict[str, list[tuple[str, int, int]]] = {
    "openai": [("gpt-5-mini", 125_000_000, 1_000_000_000), ("gpt-5", 625_000_000, 5_000_000_000)],
    "anthropic": [
        ("claude-sonnet-4-5", 1_500_000_000, 7_500_000_000),
        ("claude-haiku-4-5", 500_000_000, 2_500_000_000),
    ],
    "google-vertex": [("gemini-2.5-pro", 625_000_000, 5_000_000_000)],
    "mistral": [("mistral-large", 1_000_000_000, 3_000_000_000)],
    "groq": [("llama-4-maverick", 100_000_000, 300_000_000)],
}
STATUS_MIX = [
    ("completed", 70),
    ("failed", 8),
    ("expired", 5),
    ("cancelled", 5),
    ("in_progress", 6),
    ("validating", 3),
    ("finalizing", 3),
]
START = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
SPAN_S = 58 * 86_400
UNIT = 1_000_000


def batch_id(rng: random.Random) -> str:
    return "batch_" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=26))


def _usd(nanos: int) -> str:
    whole, frac = divmod(nanos, 10**9)
    return f"{whole}.{frac:09d}"


def _priced_line(dimension: str, quantity: int, price_nanos: int) -> dict[str, Any]:
    nanos = quantity * price_nanos // UNIT
    return {
        "dimension": dimension,
        "quantity": quantity,
        "billable_units": quantity / UNIT,
        "unit_size": UNIT,
        "unit_price_usd": _usd(price_nanos),
        "line_cost_usd": _usd(nanos),
        "line_nanos": nanos,
        "pricing_plan": "batch",
        "service_tier": "batch",
    }


def make_batch(
    rng: random.Random, sessions: list[str], *, iso_times: bool = False
) -> dict[str, Any]:
    provider = rng.choice(list(PRICE_CARD))
    model, p_in, p_out = rng.choice(PRICE_CARD[provider])
    status = rng.choices([s for s, _ in STATUS_MIX], [w for _, w in STATUS_MIX])[0]
    created = START + rng.randrange(SPAN_S)
    total = rng.randint(1, 2_000)
    failed = 0 if status == "completed" and rng.random() < 0.8 else rng.randint(0, total)
    done = total - failed if status in ("completed", "failed") else rng.randint(0, total - failed)
    t = created
    stamps: dict[str, int | None] = {"created_at": created}
    for name in ("in_progress_at", "finalizing_at"):
        t += rng.randint(5, 3_600)
        stamps[name] = t if status not in ("validating",) else None
    end_field = {
        "completed": "completed_at",
        "failed": "failed_at",
        "expired": "expired_at",
        "cancelled": "cancelled_at",
    }.get(status)
    if end_field:
        t += rng.randint(5, 7_200)
        stamps[end_field] = t
    stamps["expires_at"] = created + 86_400
    obj: dict[str, Any] = {
        "id": batch_id(rng),
        "object": "batch",
        "endpoint": rng.choice(["/v1/responses", "/v1/chat/completions", "/v1/embeddings"]),
        "errors": None,
        "input_file_id": "file-" + "".join(rng.choices(string.ascii_letters, k=12)),
        "completion_window": "24h",
        "status": status,
        "output_file_id": None,
        "error_file_id": None,
        **stamps,
        "request_counts": {"total": total, "completed": done, "failed": failed},
        "metadata": {
            "team": rng.choice(["search", "support", "research", "growth"]),
            "model": model,
        },
        "request_id": "req_" + "".join(rng.choices(string.hexdigits.lower(), k=16)),
        "provider": provider,
        "session_id": rng.choice(sessions),
    }
    if failed:
        obj["errors"] = {
            "object": "list",
            "data": [{"code": "invalid_request", "message": "bad line", "param": None, "line": 1}],
        }
    if rng.random() < 0.5:
        obj["webhook"] = {
            "url": "https://hooks.example.com/batches",
            "events": ["batch.completed"],
            "secret": "whsec_" + "".join(rng.choices(string.ascii_letters, k=24)),
        }
    elif rng.random() < 0.5:
        obj["webhook"] = {
            "endpoint_id": "wh_" + "".join(rng.choices(string.digits, k=8)),
            "url": "https://hooks.example.com/v2",
            "events": ["batch.completed"],
            "has_secret": True,
            "delivery": {"status": "delivered"},
            "attempts": [],
        }
    terminal = end_field is not None
    lines: list[dict[str, Any]] = []
    if terminal and done:
        if rng.random() < 0.15:  # fallback shape: only a total is known
            nanos = done * rng.choice([50_000, 150_000, 1_000_000])
            lines.append(
                {
                    "dimension": "batch_requests",
                    "pricing_plan": "batch",
                    "service_tier": "batch",
                    "endpoint": obj["endpoint"],
                    "units": done,
                    "total_nanos": nanos,
                    "total_usd_str": _usd(nanos),
                }
            )
        else:
            tokens_in = done * rng.randint(200, 4_000)
            tokens_out = done * rng.randint(50, 1_500)
            lines.append(_priced_line("input_text_tokens", tokens_in, p_in))
            lines.append(_priced_line("output_text_tokens", tokens_out, p_out))
            if rng.random() < 0.3:
                lines.append(_priced_line("cached_read_text_tokens", tokens_in // 4, p_in // 10))
    obj["pricing_lines"] = lines
    if terminal and rng.random() < 0.92:
        cost = sum(int(line.get("line_nanos", line.get("total_nanos", 0))) for line in lines)
        fin = t + rng.randint(1, 600)
        obj["billing"] = {
            "billed": cost > 0,
            "charged": cost > 0,
            "reason": "charged:captured" if cost else "zero_cost",
            "cost_nanos": cost,
            "cost_usd": cost / 1e9,
            "finalized_at": datetime.fromtimestamp(fin, UTC).isoformat().replace("+00:00", ".000Z"),
            "pricing_breakdown": {
                "total_nanos": cost,
                "total_usd_str": _usd(cost),
                "total_cents": cost // 10_000_000,
                "completed_requests": done,
                "failed_requests": failed,
                "total_requests": total,
            },
        }
    if "billing" in obj:
        obj["usage"] = _usage(obj, lines)
    if iso_times:
        for key, value in list(obj.items()):
            if key.endswith("_at") and isinstance(value, int):
                obj[key] = datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
    return obj


def _usage(obj: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The gateway's usage object after pricing (its own random stream: the rest of the
    batch stays byte for byte what it was)."""
    tokens = {line["dimension"]: int(line.get("quantity", 0)) for line in lines}
    inp = tokens.get("input_text_tokens", 0) + tokens.get("cached_read_text_tokens", 0)
    out = tokens.get("output_text_tokens", 0)
    cost = obj["billing"]["cost_nanos"]
    return {
        "requests": obj["request_counts"]["completed"],
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": inp + out,
        "cost_nanos": cost,
        "cost_usd": cost / 1e9,
        "currency": "USD",
    }


def _request_rows(obj: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    """Per-request rows (GET /batches/{id}/requests) whose costs add up to the bill."""
    provider = obj["provider"]
    models = [m for m, _, _ in PRICE_CARD[provider]]
    done, failed = obj["request_counts"]["completed"], obj["request_counts"]["failed"]
    cost = obj["billing"]["cost_nanos"]
    shares = [rng.randint(1, 100) for _ in range(done)]
    costs = [cost * s // sum(shares) for s in shares]
    costs[-1] += cost - sum(costs)
    created = datetime.fromtimestamp(obj["created_at"], UTC).isoformat().replace("+00:00", "Z")
    rows = []
    for i in range(done + failed):
        ok = i < done
        rows.append(
            {
                "id": f"breq_{obj['id'][6:]}_{i:04d}",
                "custom_id": f"task-{i}",
                "request_index": i,
                "provider": provider,
                "native_batch_id": None,
                "method": "POST",
                "endpoint": obj["endpoint"],
                "model": rng.choice(models),
                "status": "completed" if ok else "failed",
                "request_body_hash": None,
                "response_status": 200 if ok else 400,
                "response_body": None,
                "error_body": None if ok else {"error": {"message": "invalid request"}},
                "usage": {
                    "input_tokens": rng.randint(100, 3000),
                    "output_tokens": rng.randint(10, 900),
                }
                if ok
                else None,
                "cost_nanos": costs[i] if ok else 0,
                "cost_usd": costs[i] / 1e9 if ok else 0,
                "meta": None,
                "created_at": created,
                "updated_at": created,
                "completed_at": created if ok else None,
            }
        )
    return rows


def gateway_snapshots(objs: list[dict[str, Any]], seed: int = 11) -> list[dict[str, Any]]:
    """What the real gateway adds (docs/gateway-api.md): a second GET of finished batches
    (charged=false, "already_billed", a new finalized_at, the same money), some carrying
    their request rows; the gateway's own statuses; an unmapped provider status."""
    rng = random.Random(seed)
    billed = [o for o in objs if (o.get("billing") or {}).get("charged")]
    out: list[dict[str, Any]] = []
    small = sorted(billed, key=lambda o: (sum(o["request_counts"].values()), o["id"]))
    for i, obj in enumerate(rng.sample(billed, min(12, len(billed)))):
        again = orjson.loads(orjson.dumps(obj))
        again["billing"].update(charged=False, reason="already_billed")
        again["billing"]["finalized_at"] = f"2026-11-28T02:15:0{i % 10}Z"
        out.append(again)
    for obj in small[:6]:
        again = orjson.loads(orjson.dumps(obj))
        again["billing"].update(
            charged=False, reason="already_billed", finalized_at="2026-11-28T02:15:30Z"
        )
        again["requests"] = _request_rows(obj, rng)
        out.append(again)
    names = [f"sess_{i:03d}" for i in range(24)]
    for status, lifecycle in (
        ("submission_unknown", "pending"),
        ("submitting", "pending"),
        ("batch_state_running", None),  # a provider status the gateway passes through
        ("canceling_requested", None),
    ):
        obj = make_batch(rng, names)
        for key in (
            "in_progress_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelled_at",
        ):
            obj.pop(key, None)
        obj.pop("billing", None)
        obj.pop("usage", None)
        obj.update(status=status, pricing_lines=[])
        if lifecycle:
            obj["lifecycle_status"] = lifecycle
        out.append(obj)
    return out


def iter_batches(
    n: int, seed: int = 7, sessions: int = 40, iso_share: float = 0.0
) -> Iterator[dict[str, Any]]:
    """``n`` batches; ``iso_share`` of them with ISO-8601 timestamps instead of Unix
    seconds (the gateway's list pages and webhooks use ISO, GET uses Unix)."""
    rng = random.Random(seed)
    names = [f"sess_{i:03d}" for i in range(sessions)]
    for _ in range(n):
        iso = iso_share > 0 and rng.random() < iso_share
        yield make_batch(rng, names, iso_times=iso)


def write_jsonl(path: Path, objs: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> int:
    n = 0
    with path.open("wb") as fh:
        for obj in objs:
            fh.write(orjson.dumps(obj) + b"\n")
            n += 1
    return n


BAD_LINES = [
    b'{"id": "batch_TRUNCATED0000000000000000000", "status": "completed", "billing": {"cost_n',
    b'{"id": "", "status": "completed"}',
    b'{"id": "batch_NEGATIVECOST00000000000000000", "status": "completed", '
    b'"billing": {"cost_nanos": -5000, "finalized_at": "2026-11-02T00:00:00Z"}}',
    b'{"id": "batch_BADTIMESTAMP00000000000000000", "status": "completed", '
    b'"created_at": "yesterday-ish"}',
    b'{"id": "batch_BILLINGSTRING0000000000000000", "status": "completed", "billing": "charged"}',
    b'{"id": "batch_FLOATNANOS000000000000000000", "status": "completed", '
    b'"billing": {"cost_nanos": 12.5}}',
]


SAMPLE_FILES = (
    "batches-2026-10.jsonl",
    "batches-2026-11.jsonl",
    "gateway-2026-11.jsonl",
    "list-page.json",
    "bad-records.jsonl",
)


def write_sample(
    out: Path, n: int = 300, seed: int = 7, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """The bundled sample set: monthly JSONL, a list page, late snapshots and bad records.

    ``out`` must be new, empty or an earlier sample folder: other files are never touched
    and a folder holding them is refused (ValueError)."""
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out} is not a folder")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in SAMPLE_FILES)
        if foreign:
            raise ValueError(
                f"--out {out} holds files that are not the sample's ({', '.join(foreign[:5])}); "
                "choose a new or empty folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = [f"sess_{i:03d}" for i in range(24)]
    objs = []
    for i in range(n):
        objs.append(make_batch(rng, names))
        if progress is not None and (i + 1) % 100 == 0:
            progress(100)
    if progress is not None and n % 100:
        progress(n % 100)
    november = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
    oct_: list[dict[str, Any]] = []
    nov: list[dict[str, Any]] = []
    for o in objs:  # one pass, in order (a membership test per object was quadratic)
        (oct_ if o["created_at"] < november else nov).append(o)
    counts = {
        "batches-2026-10.jsonl": write_jsonl(out / "batches-2026-10.jsonl", oct_),
        "batches-2026-11.jsonl": write_jsonl(out / "batches-2026-11.jsonl", nov + nov[:3]),
        "gateway-2026-11.jsonl": write_jsonl(out / "gateway-2026-11.jsonl", gateway_snapshots(nov)),
    }
    page = [make_batch(rng, names, iso_times=True) for _ in range(20)]
    (out / "list-page.json").write_bytes(
        orjson.dumps(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"],
                "last_id": page[-1]["id"],
                "has_more": False,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    counts["list-page.json"] = len(page)
    with (out / "bad-records.jsonl").open("wb") as fh:
        fh.write(b"\n".join(BAD_LINES) + b"\n")
    counts["bad-records.jsonl"] = len(BAD_LINES)
    return counts
