"""``billing``: the command-line layer. Parses options, calls the runner, prints.

Exit codes: 0 ok; 1 the run failed and nothing was committed; 2 usage or
configuration error; 3 the run committed but the night is incomplete (a batch asked
for could not be fetched, an input could not be read); 130 interrupted (Ctrl-C),
nothing committed. Errors are one line on stderr (``--verbose`` adds the traceback).
Every line printed or logged passes through the redaction rule.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import wraps
from itertools import chain, pairwise
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import click
import duckdb

from pipeline import __version__, runner
from pipeline.config import (
    BASE_URL_ENV,
    CONFIG_ENV,
    DEFAULT_API_DEADLINE_S,
    DEFAULT_BASE_URL,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_KEEP_SNAPSHOTS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    TOKEN_ENV,
    ApiConfig,
    ConfigError,
    FileConfig,
    RunConfig,
    load_config_file,
)
from pipeline.export import ExportRefused
from pipeline.extract import (
    FatalFetchError,
    chunked,
    read_archive,
    read_chunks,
    read_ids_file,
    read_stream,
)
from pipeline.extract.files import (
    SNIFF_BYTES,
    STDIN,
    file_size,
    find_inputs,
    is_duckdb_header,
)
from pipeline.history import HistoryError
from pipeline.load import reader
from pipeline.redaction import redact, register_secret
from pipeline.report import (
    FORMATS,
    json_rows,
    printable,
    run_summary,
    run_summary_json,
    table,
    usd,
    usd_cents,
)
from pipeline.store import (
    ChangedDuringRun,
    LockedError,
    NotABillingDatabase,
    Store,
    check_db_path,
    create_exclusive,
)
from pipeline.transform import KNOWN_STATUSES

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
MAX_LIMIT = 10**9
DEFAULT_DB = "data/billing.duckdb"

log = logging.getLogger("pipeline")

F = TypeVar("F", bound=Callable[..., Any])


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(redact(super().format(record)))


def setup_logging(verbose: bool, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else TextFormatter("%(levelname)s %(message)s")
    )
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False


FAILED_STATUS = {EXIT_FAILED: "failed", EXIT_USAGE: "usage_error", EXIT_INTERRUPTED: "interrupted"}


def fail(message: str, code: int = EXIT_FAILED) -> None:
    """One line on stderr and the exit code; in --log-format json also the summary object
    on stdout, so a scheduler reads every outcome the same way."""
    line = printable(" ".join(redact(message).split()))  # one line, whatever the cause held
    ctx = click.get_current_context(silent=True)
    as_json = ctx is not None and bool(ctx.meta.get("json_summary"))
    _error_line(line, code, as_json)
    if as_json:
        status = FAILED_STATUS.get(code, "failed")
        click.echo(json.dumps({"status": status, "exit_code": code, "error": line}))
    sys.exit(code)


def _error_line(line: str, code: int, as_json: bool) -> None:
    """The error on stderr: ``billing: error: ...``, or with --log-format json one JSON
    log record like every other line there."""
    if not as_json:
        click.echo(f"billing: error: {line}", err=True)
        return
    record = {
        "ts": datetime.now(UTC).isoformat(),
        "level": "error",
        "logger": "pipeline",
        "message": line,
        "exit_code": code,
    }
    click.echo(json.dumps(record), err=True)


def _wants_json_logs(args: Sequence[str]) -> bool:
    """--log-format json among the arguments (read before click could parse them)."""
    args = list(args)
    return "--log-format=json" in args or any(
        a == "--log-format" and nxt == "json" for a, nxt in pairwise(args)
    )


def _unquoted(text: str) -> str:
    """KeyError-style messages come wrapped in quotes: drop them, and only them."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def friendly_errors(fn: F) -> F:
    """One clear line instead of a traceback, with the documented exit codes."""

    writes = fn.__name__ == "run_cmd"
    nothing = "; nothing was committed" if writes else ""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        register_secret(os.environ.get(TOKEN_ENV, "").strip())
        try:
            return fn(*args, **kwargs)
        except (ConfigError, FileNotFoundError, NotABillingDatabase, ExportRefused) as exc:
            fail(_unquoted(str(exc)), EXIT_USAGE)
        except (LockedError, ChangedDuringRun, HistoryError, runner.StrictFailure) as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail(f"interrupted{nothing}", EXIT_INTERRUPTED)
        except duckdb.Error as exc:
            log.debug("database error", exc_info=True)
            fail(f"database error: {str(exc).splitlines()[0]}{nothing}")
        except Exception as exc:
            log.debug("unexpected error", exc_info=True)
            fail(f"{type(exc).__name__}: {exc}{nothing}")

    return wrapper  # type: ignore[return-value]


db_option = click.option(
    "--db",
    "db",
    type=click.Path(path_type=Path),
    default=lambda: os.environ.get("BILLING_DB", DEFAULT_DB),
    show_default=f"$BILLING_DB or {DEFAULT_DB}",
    help="DuckDB database file.",
)


def wait_option(help_text: str) -> Callable[[F], F]:
    """--wait SECONDS: how long a command that writes waits for the writer's lock."""
    return click.option(
        "--wait",
        "wait_s",
        type=click.FloatRange(min=0),
        default=0.0,
        show_default=True,
        metavar="SECONDS",
        help=help_text,
    )


def config_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        show_default=f"${CONFIG_ENV}, else what the last run stored",
        help=help_text,
    )


class BillingGroup(click.Group):
    """Click's usage errors ("Error: Invalid value...", with a usage block) in the
    project's one format: ``billing: error: ... (try 'billing CMD --help')``, exit 2."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            # the command as a user types it, whatever the program was called
            where = " ".join(["billing", *(exc.ctx.command_path.split()[1:] if exc.ctx else [])])
            message = " ".join(printable(exc.format_message()).split())
            line = redact(f"{message} (try '{where} --help')")
            as_json = _wants_json_logs(sys.argv[1:] if args is None else args)
            _error_line(line, EXIT_USAGE, as_json)
            if as_json:  # the scheduler's one summary object, as for every other outcome
                click.echo(json.dumps({"status": "usage_error", "exit_code": 2, "error": line}))
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=BillingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="billing")
def cli() -> None:
    """Billing and cost analytics for an LLM gateway's batch API."""


def _bar_enabled(enabled: bool) -> bool:
    return enabled and sys.stderr.isatty()


@contextmanager
def progress_bar(enabled: bool, total: int | None, label: str) -> Iterator[runner.Progress]:
    """Items of a known total (batches fetched, sample batches written): count, rate, ETA."""
    if not _bar_enabled(enabled):
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.speed:>7.0f}/s" if total else ""),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=True, console=_stderr_console()) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def load_progress(enabled: bool, total_bytes: int | None) -> Iterator[runner.LoadProgress]:
    """Loading files: records so far, bytes read of the total, rate and ETA."""
    if not _bar_enabled(enabled):
        yield lambda records, nbytes: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = [
        SpinnerColumn(),
        TextColumn("loading {task.fields[records]:,} records"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=True, console=_stderr_console()) as bar:
        task = bar.add_task("loading", total=total_bytes or None, records=0)
        done = {"records": 0}

        def advance(records: int, nbytes: int) -> None:
            done["records"] += records
            bar.update(task, advance=nbytes, records=done["records"])

        yield advance


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@cli.command("run")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path), metavar="[INPUT]...")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A .json/.jsonl file or a folder of them (repeatable; '-' reads stdin). "
    "Shell globs work: --input data/*.jsonl.",
)
@click.option(
    "--ids-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Fetch these batch ids from the API (one a line, # comments ok).",
)
@click.option(
    "--list",
    "list_all",
    is_flag=True,
    help="Also fetch the batches GET /batches lists (at most the 100 most recently updated).",
)
@click.option(
    "--status", "statuses", multiple=True, help="With --list: only this status (repeatable)."
)
@click.option(
    "--base-url",
    default=None,
    show_default=f"${BASE_URL_ENV} or {DEFAULT_BASE_URL}",
    help="API base URL.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.05),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds per request before it is retried.",
)
@click.option(
    "--api-deadline",
    "api_deadline_s",
    type=click.FloatRange(min=1),
    default=DEFAULT_API_DEADLINE_S,
    show_default=True,
    help="Seconds for the whole API part of the run (fetches and retries); ids not "
    "fetched by then are recorded and the night is incomplete (exit 3).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_RETRIES,
    show_default=True,
    help="Retries per request on 429/5xx/timeouts.",
)
@click.option(
    "--fetch-prices",
    is_flag=True,
    help="With --ids-file/--list: also keep a dated snapshot of the gateway's price "
    "catalogue (GET /v1/pricing/models) for the price checks.",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Load a raw response archive (data/archive/RUN.jsonl) again without refetching.",
)
@db_option
@config_option(
    "A billing.toml: account names, budgets, price list, attribution tags (stored with the "
    "data; what it leaves out keeps what an earlier run stored)."
)
@click.option(
    "--strict", is_flag=True, help="Fail (exit 1, commit nothing) on any reject or mismatch."
)
@wait_option("Wait up to SECONDS for another run to release the database.")
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Records per transform/validate chunk.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    show_default="min(2, CPUs)",
    help="Processes that parse and validate chunks.",
)
@click.option(
    "--keep-snapshots",
    type=click.IntRange(min=0, max=10_000),
    default=DEFAULT_KEEP_SNAPSHOTS,
    show_default=True,
    help="Published states kept in snapshots/ beside the database (0: none).",
)
@click.option(
    "--check",
    "check_after",
    is_flag=True,
    help="After the load, exit 4 if a budget is crossed or 5 on a spend anomaly "
    "(the load is committed either way), as `billing check` does.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging (secrets redacted).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: log lines on stderr as JSON and one JSON summary object on stdout.",
)
@click.pass_context
@friendly_errors
def run_cmd(
    ctx: click.Context,
    paths: tuple[Path, ...],
    inputs: tuple[Path, ...],
    ids_file: Path | None,
    list_all: bool,
    statuses: tuple[str, ...],
    base_url: str | None,
    concurrency: int,
    timeout_s: float,
    api_deadline_s: float,
    retries: int,
    fetch_prices: bool,
    replay: tuple[Path, ...],
    db: Path,
    config_path: Path | None,
    strict: bool,
    wait_s: float,
    chunk_size: int,
    workers: int | None,
    keep_snapshots: int,
    check_after: bool,
    quiet: bool,
    verbose: bool,
    log_format: str,
) -> None:
    """Load batch objects into DuckDB in one transaction, then print a summary.

    From files (INPUT or --input: files, folders, '-' for stdin), from the gateway API
    (--ids-file, --list), or from a raw response archive of an earlier API run (--replay).

    \b
    Examples:
      billing run data/sample                        # a folder of .json/.jsonl files
      billing run data/sample/*.jsonl --db b.duckdb  # shell globs
      gzip -dc night.jsonl.gz | billing run -        # stdin
      PHASEO_API_KEY=... billing run --list          # the API
      billing run data/sample --log-format json -q   # one JSON summary for a scheduler

    Exit codes: 0 loaded, 1 failed (nothing committed), 2 usage error, 3 committed but
    incomplete (batches not fetched or inputs unreadable), 4 budget crossed and 5 spend
    anomaly (with --check only; committed), 130 interrupted.
    """
    ctx.meta["json_summary"] = log_format == "json"
    setup_logging(verbose, log_format)
    inputs = (*inputs, *paths)
    modes = [bool(inputs), bool(ids_file or list_all), bool(replay)]
    if sum(modes) == 0:
        raise ConfigError("nothing to load: pass INPUT files or folders (or --ids-file/--list)")
    if sum(modes) > 1:
        raise ConfigError("choose one of INPUT/--input, --ids-file/--list, or --replay")
    if statuses and not list_all:
        raise ConfigError("--status goes with --list")
    if fetch_prices and not modes[1]:
        raise ConfigError(
            "--fetch-prices goes with --ids-file/--list (offline: `billing prices --file`)"
        )
    for status in statuses:
        if status not in KNOWN_STATUSES:
            raise ConfigError(
                f"--status {status!r} is not a status the gateway filters on (it would silently "
                f"list every batch); choose from: {', '.join(KNOWN_STATUSES)}"
            )
    stdin = [p for p in inputs if str(p) == "-"]
    if stdin and len(inputs) > 1:
        raise ConfigError("stdin (-) is the only input of its run: pass files separately")
    check_db_path(db)  # a folder, pipe, device, path under a file, :memory:: one line
    file_cfg = load_config_file(config_path)
    cfg = RunConfig(
        db_path=db,
        settings=file_cfg if file_cfg.path is not None else None,
        strict=strict,
        chunk_size=chunk_size,
        wait_for_lock_s=wait_s,
        keep_snapshots=keep_snapshots,
    )
    if workers is not None:
        cfg = replace(cfg, workers=workers)
    api = (
        ApiConfig.from_env(base_url, concurrency, timeout_s, retries, api_deadline_s)
        if modes[1]
        else None
    )
    ids = read_ids_file(ids_file) if ids_file else []
    if inputs and not stdin:
        try:
            found = find_inputs(inputs)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    new_db = not db.exists()
    Store(db).folder.mkdir(parents=True, exist_ok=True)  # beside the real file (--db a link)
    show = not quiet
    with runner.interruptible():
        if api is not None:
            try:
                result = runner.execute_api(
                    cfg,
                    api,
                    ids=ids,
                    list_all=list_all,
                    statuses=statuses,
                    fetch_prices=fetch_prices,
                    progress=lambda total, label: progress_bar(show, total, label),
                )
            except FatalFetchError as exc:
                fail(str(exc))
        elif replay:
            records = (r for path in replay for r in read_archive(path))
            source = ", ".join(str(p) for p in replay)
            total = sum(file_size(p) for p in replay)
            with load_progress(show, total) as advance:
                result = runner.execute(
                    chunked(records, cfg.chunk_size), cfg, source, progress=advance
                )
        elif stdin:
            stream: BinaryIO = sys.stdin.buffer
            with load_progress(show, None) as advance:
                result = runner.execute(
                    chunked(read_stream(stream), cfg.chunk_size), cfg, STDIN, progress=advance
                )
        else:
            source = ", ".join(str(p) for p in inputs)
            problems = [found.problems] if found.problems else []
            chunks = chain(problems, read_chunks(found.paths, cfg.chunk_size))
            total = sum(file_size(p) for p in found.paths)
            with load_progress(show, total) as advance:
                result = runner.execute(chunks, cfg, source, progress=advance)
    log.info("run finished", extra={"fields": {"run_id": result.run_id, "status": result.status}})
    from pipeline import finance

    checked = finance.CheckResult()
    if check_after or log_format == "json" or not quiet:  # else nothing would show it
        with reader(db) as con:
            checked = finance.check(con)
    code = EXIT_INCOMPLETE if result.incomplete else EXIT_OK
    if check_after and not code:
        code = checked.exit_code
    outcome = (
        send_notifications(db, checked, file_cfg, True, False, wait_s) if check_after else None
    )
    if log_format == "json":
        summary = run_summary_json(result, str(db), code)
        summary["new_database"] = new_db
        summary["budgets"] = json_rows(checked.budgets)
        summary["anomalies"] = json_rows(checked.anomalies)
        summary["wallet"] = json_rows([checked.wallet])[0] if checked.wallet else None
        summary["runway"] = json_rows(checked.runway)
        summary["notifications"] = outcome.json() if outcome else []
        summary["notes"] = result.notes
        click.echo(redact(json.dumps(summary)))
    elif not quiet:
        where = f"{db} (a new database)" if new_db else str(db)
        text = run_summary(result, where) + check_summary(checked)
        text += outcome.summary() if outcome else ""
        click.echo(printable(redact(text)))
    if code:
        sys.exit(code)


def send_notifications(
    db: Path, checked: Any, file_cfg: FileConfig, enabled: bool, dry_run: bool, wait_s: float
) -> Any:
    """Post the check's new findings to the config's [notify] endpoints (pipeline.notify)."""
    from pipeline import notify

    cfg = file_cfg.notify
    if cfg is None or not cfg.endpoints or not (enabled or dry_run):
        if dry_run:
            raise ConfigError("--dry-run: the config file has no [[notify.endpoint]] to send to")
        return notify.Outcome()
    return notify.notify(db, checked, cfg, dry_run=dry_run, wait_s=wait_s)


def check_summary(checked: Any) -> str:
    """Budget and anomaly lines for the run summary (nothing when neither has news): each
    crossed or warned budget by name, its spend against the limit, by how much and since
    when."""

    lines = []
    if checked.budgets:
        crossed, warn = checked.crossed, checked.warnings
        where = f" in {checked.period.label}" if checked.period else ""
        lines.append(
            f"  budgets     {len(crossed)} crossed, {len(warn)} at 80% or more"
            f" of {len(checked.budgets)} budget periods{where} (see view budget_status)"
        )
        lines += [
            _budget_line("CROSSED", b, f"over by {usd_cents(b['overage_nanos'])}"
                         f" since {b['crossed_on']}")
            for b in crossed[:10]
        ] + [
            _budget_line("WARNING", b, f"{usd_cents(b['remaining_nanos'])} left,"
                         f" at 80% since {b['warning_since']}")
            for b in warn[:10]
        ]  # fmt: skip
    lines.extend(f"  scope       {note}" for note in checked.notes)
    if checked.wallet:
        lines.append(wallet_line(checked.wallet))
    for r in checked.runway_crossed:
        lines.append(
            f"    CROSSED runway budget {r['budget_name']}: {r['runway_days']} days left"
            f" ({r['rate_basis']} rate), under {r['min_days']}"
        )
    if checked.anomalies:
        lines.append(f"  anomalies   {len(checked.anomalies)} (see view spend_anomalies)")
        for a in checked.anomalies[:5]:
            lines.append(f"    {a['day']} {_anomaly_scope(a)}: {a['explanation']}")
    return "".join("\n" + line for line in lines)


def wallet_line(w: dict[str, Any]) -> str:
    """'  wallet      $80.00 available ($100.00 balance, $20.00 held ...), runway ...'."""

    def days(value: Any) -> str:
        return "no end (no spend)" if value is None else f"{value} days"

    return (
        f"  wallet      {usd_cents(w['available_nanos'])} available"
        f" ({usd_cents(w['balance_nanos'])} balance, {usd_cents(w['reserved_nanos'])} held"
        f" for running batches) as of {w['recorded_at']:%Y-%m-%d %H:%M} UTC; runway"
        f" {days(w['runway_7d_days'])} at the 7-day rate, {days(w['runway_30d_days'])} at"
        " the 30-day rate (see view wallet_runway)"
    )


FINDING_COLUMNS = (
    "kind", "name", "period", "period_start", "scope", "status", "spend_nanos", "limit_nanos",
    "used_pct", "overage_nanos", "since", "explanation",
)  # fmt: skip


def check_findings(checked: Any) -> tuple[Sequence[str], list[tuple[Any, ...]]]:
    """`billing check`'s budgets and anomalies as one table (``--format csv|markdown``):
    one row per budget period checked and per anomaly, exact nanos."""
    rows = [
        ("budget", b["budget_name"], b["period"], b["period_start"], b["scope"], b["status"],
         b["spend_nanos"], b["limit_nanos"], b["used_pct"], b["overage_nanos"],
         b["crossed_on"] or b["warning_since"], None)
        for b in checked.budgets
    ] + [
        ("anomaly", a["rule"], "day", a["day"], _anomaly_scope(a), a["level"],
         a["cost_nanos"], None, None, None, a["day"], a["explanation"])
        for a in checked.anomalies
    ] + [
        ("runway", r["budget_name"], "reading", r["recorded_at"], "wallet", r["status"],
         r["available_nanos"], None, None, None, r["recorded_at"],
         f"{r['runway_days']} days left at the {r['rate_basis']} rate (minimum {r['min_days']})")
        for r in checked.runway
    ]  # fmt: skip
    return FINDING_COLUMNS, rows


def _budget_line(label: str, b: dict[str, Any], tail: str) -> str:
    """'    CROSSED name (2026-11, scope): $4.00 of $3.50 (114.3%), <tail>'."""
    period = f"day {b['period_start']}" if b["period"] == "day" else f"{b['period_start']:%Y-%m}"
    return (
        f"    {label} {b['budget_name']} ({period}, {b['scope']}):"
        f" {usd_cents(b['spend_nanos'])} of {usd_cents(b['limit_nanos'])}"
        f" ({b['used_pct']}%), {tail}"
    )


def _anomaly_scope(a: dict[str, Any]) -> str:
    return a["provider"] if a["model"] == "*" else f"{a['provider']} {a['model']}"


@cli.command("sample")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/sample"),
    show_default=True,
    help="Folder to write the sample files into (new, empty or an earlier sample).",
)
@click.option(
    "--batches",
    type=click.IntRange(min=1, max=10_000_000),
    default=300,
    show_default=True,
    help="How many batch objects to generate.",
)
@click.option(
    "--seed",
    type=int,
    default=7,
    show_default=True,
    help="Random seed: the same seed writes the same bytes.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def sample_cmd(out: Path, batches: int, seed: int, quiet: bool) -> None:
    """Write the deterministic sample data set (same seed, same bytes).

    \b
    Examples:
      billing sample --out /tmp/sample                     # the bundled 300 batches
      billing sample --out /tmp/big --batches 100000       # a larger set to try speed
    """
    from pipeline.sample import write_sample

    try:
        with progress_bar(not quiet, batches, "generating batches") as advance:
            counts = write_sample(out, batches, seed, progress=advance)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    if not quiet:
        for name, n in counts.items():
            click.echo(f"{out / name}: {n} records")


# view name -> the column --since/--until filter on
QUERY_DATES = {
    "spend_by_provider": "day",
    "spend_by_session": "last_activity_at",
    "spend_by_model": "day",
    "spend_by_dimension": "day",
    "spend_by_request_status": "day",
    "batch_outcomes": "day",
    "spend_as_used": "day",
    "spend_unbilled": "day",
    "spend_restatements": "restated_day",
    "billing_reconciliation": None,
    "focus_charges": "ChargePeriodStart",
}
PERIODS = ("day", "week", "month")


# the order a view opens in when nothing else is asked: the latest and largest spend first
DEFAULT_ORDER = {
    "spend_by_provider": "day desc, cost_nanos desc, provider",
    "spend_by_model": "day desc, cost_nanos desc, provider, model",
    "spend_by_dimension": "day desc, cost_nanos desc, provider, model, dimension",
    "spend_by_request_status": "day desc, cost_nanos desc, provider, model",
    "spend_by_session": "cost_rank",
    "batch_outcomes": "day desc, cost_nanos desc, provider, status",
    "spend_as_used": "day desc, cost_nanos desc, provider",
    "spend_unbilled": "day desc, cost_nanos desc, provider",
    "spend_restatements": "restated_day desc, batch_id",
}


def _query_names() -> list[str]:
    from pipeline.load import view_files

    marts = [p.stem for p in view_files() if p.parent.name == "marts"]
    return [m.replace("_", "-") for m in marts]


def _terminal_width() -> int | None:
    """Fit tables to the terminal (or to $COLUMNS when set); piped output stays whole."""
    if "COLUMNS" not in os.environ and not sys.stdout.isatty():
        return None
    return max(shutil.get_terminal_size().columns, 20)


def _print_rows(cur: Any, fmt: str, limit: int | None = None, note: bool = True) -> bool:
    """Print the rows (at most ``limit``); True when there were more."""
    columns = [d[0] for d in cur.description]
    rows = cur.fetchmany(limit + 1) if limit else cur.fetchall()
    more = bool(limit) and len(rows) > (limit or 0)
    rows = rows[:limit] if limit else rows
    if fmt == "table":
        click.echo(table(columns, rows, _terminal_width()))
    else:
        click.echo(FORMATS[fmt](columns, rows))
    if more and fmt == "table" and note:
        click.echo(f"(the first {limit:,} rows: --limit)")
    return more


format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    default="table",
    show_default=True,
    help="table (fitted to the terminal), csv, json, jsonl or markdown. "
    "JSON keeps dollars as exact strings.",
)


def limit_option(default: int | None) -> Callable[[F], F]:
    return click.option(
        "--limit",
        type=click.IntRange(min=1, max=MAX_LIMIT),
        default=default,
        show_default=default is not None,
        help="At most N rows.",
    )


@cli.command(
    "query",
    # \b keeps click from re-wrapping the list (it would split names at their hyphens)
    epilog="\b\nViews:\n"
    + "\n".join(f"  {n}" for n in _query_names())
    + "\n\nEach is also a SQL view of the same name with underscores (billing sql).",
)
@click.argument("name")
@db_option
@format_option
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="From this UTC date on.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Before this UTC date.")
@click.option(
    "--by",
    "period",
    type=click.Choice(PERIODS),
    default=None,
    help="spend-by-provider: roll up by day, week or month.",
)
@limit_option(None)
@friendly_errors
def query_cmd(
    name: str,
    db: Path,
    fmt: str,
    since: datetime | None,
    until: datetime | None,
    period: str | None,
    limit: int | None,
) -> None:
    """Show a named view, latest and largest spend first. `billing query list` names them.

    \b
    Examples:
      billing query spend-by-provider --by month
      billing query spend-by-session --limit 10 --format csv > top-sessions.csv
      billing query focus-charges --since 2026-11-01 --format jsonl
    """
    names = _query_names()
    if name == "list":
        click.echo("\n".join(names))
        return
    if name not in names:
        raise ConfigError(f"unknown query {name!r}; choose from: {', '.join(names)}")
    view = name.replace("-", "_")
    date_col = QUERY_DATES.get(view)
    where, params = [], []
    if (since or until) and not date_col:
        raise ConfigError(f"{name} has no date column for --since/--until")
    if since:
        where.append(f"{date_col} >= $since")
        params.append(("since", since.date()))
    if until:
        where.append(f"{date_col} < $until")
        params.append(("until", until.date()))
    body = f"select * from {view}"  # noqa: S608 - view name is whitelisted above
    if where:
        body += " where " + " and ".join(where)
    if period:
        if view != "spend_by_provider":
            raise ConfigError("--by works with spend-by-provider only")
        body = (
            f"select {period}, provider, sum(batches)::bigint as batches,"  # noqa: S608
            " sum(billed_batches)::bigint as billed_batches, sum(cost_nanos) as cost_nanos,"
            " nanos_to_usd(sum(cost_nanos)) as cost_usd"
            f" from ({body}) group by all order by {period} desc, cost_nanos desc, provider"
        )
    elif view in DEFAULT_ORDER:
        body += f" order by {DEFAULT_ORDER[view]}"
    with reader(db, sandbox=True) as con:
        _print_rows(con.execute(body, dict(params)), fmt, limit)


@cli.command("sql")
@click.argument("statement", metavar="SQL")
@db_option
@format_option
@limit_option(None)
@friendly_errors
def sql_cmd(statement: str, db: Path, fmt: str, limit: int | None) -> None:
    """Run one read-only query: SQL text, '-' to read it from stdin, or a .sql file.

    Allowed: select, with, describe, show, summarize, explain. The connection is
    read-only and sandboxed: no statement may write, attach, copy, export, install, or
    read any file but the database.

    \b
    Examples:
      billing sql "select provider, sum(cost_usd) from spend_by_provider group by 1"
      billing sql - < monthly.sql
      billing sql queries/monthly.sql --format markdown
    """
    statement = _sql_text(statement)
    if not statement.strip():
        raise ConfigError("no SQL given: pass one query (e.g. select count(*) from batches)")
    with reader(db, sandbox=True) as con:
        try:
            statements = con.extract_statements(statement)
        except duckdb.Error as exc:
            raise ConfigError(f"SQL error: {str(exc).splitlines()[0]}") from None
        if len(statements) != 1:
            raise ConfigError(f"pass exactly one query, got {len(statements)} statements")
        kind = statements[0].type
        if kind not in READ_ONLY_STATEMENTS:
            raise ConfigError(
                f"billing sql runs read-only queries only; got a {kind.name} statement"
            )
        with memory_cap(SQL_MEMORY_BYTES):
            try:
                cur = con.execute(statement)
                if cur.description is None:
                    click.echo("ok")
                    return
                more = _print_rows(cur, fmt, limit or MAX_SQL_ROWS, note=limit is not None)
            except duckdb.OutOfMemoryException:
                raise ConfigError(
                    f"the query needs more than {SQL_MEMORY_BYTES // 2**20:,} MiB of memory"
                    " (billing sql's bound): aggregate, filter or add a limit"
                ) from None
            except duckdb.Error as exc:
                raise ConfigError(f"SQL error: {str(exc).splitlines()[0]}") from None
    if more and limit is None:
        click.echo(
            f"billing: warning: more than {MAX_SQL_ROWS:,} rows: only the first"
            f" {MAX_SQL_ROWS:,} were printed (pass --limit, aggregate, or use billing export)",
            err=True,
        )
        sys.exit(EXIT_INCOMPLETE)


MAX_SQL_BYTES = 1024 * 1024
MAX_SQL_ROWS = 1_000_000  # rows billing sql prints without --limit (more: exit 3)
SQL_MEMORY_BYTES = 768 * 1024**2  # address space a query may add to what the process holds


@contextmanager
def memory_cap(extra: int) -> Iterator[None]:
    """Bound the process's address space to what it holds now plus ``extra`` bytes for the
    length of the block: DuckDB's memory_limit does not bound a query's result (``select
    range(200000000)`` took 12.7 GB), an allocation past the cap fails with
    OutOfMemoryException instead. Linux and macOS; elsewhere a no-op."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/status") as fh:
            held = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration, ValueError):
        yield
        return
    cap = held + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield  # already bounded tighter
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _sql_text(arg: str) -> str:
    """The SQL itself, stdin ('-'), or the text of an existing .sql file."""
    data: bytes
    if arg == "-":
        stream: BinaryIO = sys.stdin.buffer
        data = stream.read(MAX_SQL_BYTES + 1)
    elif arg.lower().endswith(".sql") and "\n" not in arg:
        path = Path(arg)
        if not path.is_file():
            raise ConfigError(f"SQL file not found: {path}")
        with path.open("rb") as fh:
            data = fh.read(MAX_SQL_BYTES + 1)
    else:
        return arg
    if len(data) > MAX_SQL_BYTES:
        raise ConfigError("the SQL is over 1 MiB: pass one query")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("the SQL is not UTF-8 text") from None


READ_ONLY_STATEMENTS = frozenset((duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN))


@cli.command("runs")
@db_option
@format_option
@limit_option(20)
@friendly_errors
def runs_cmd(db: Path, fmt: str, limit: int) -> None:
    """List recent load runs, newest first (all columns: billing sql "select * from load_runs")."""
    with reader(db, sandbox=True) as con:
        # the table shows the start to the second, so the status is never cut at 80 columns
        started = "strftime(started_at, '%Y-%m-%d %H:%M:%S')" if fmt == "table" else "started_at"
        cur = con.execute(
            f"select run_id, status, {started} as started_at, duration_s, records_read,"  # noqa: S608 (a constant)
            " batches_loaded,"
            " batches_new, batches_updated, lines_loaded, rejected, not_found,"
            " reconciliation_issues, cost_delta_nanos,"
            " nanos_to_usd(total_cost_nanos_after) as total_cost_usd,"
            " pipeline_version from load_runs order by started_at desc",
        )
        _print_rows(cur, fmt, limit)


@cli.command("export")
@db_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "focus", "focus-csv"]),
    default="parquet",
    show_default=True,
    help="parquet: batches, pricing_lines and focus_charges as Hive-partitioned Parquet; "
    "focus / focus-csv: the FOCUS 1.2 dataset only, one folder per billing period.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to (re)write: a new or empty one, or an earlier export.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@friendly_errors
def export_cmd(db: Path, fmt: str, out: Path, quiet: bool) -> None:
    """Export the tables as Parquet files, or the FOCUS 1.2 dataset for FinOps tools.

    \b
    Examples:
      billing export --out lake/                  # DATASET/month=YYYY-MM/provider=NAME/
      billing export --format focus --out focus/  # focus_charges/billing_period=YYYY-MM/
    """
    from pipeline.export import export_focus, export_parquet

    with reader(db) as con:
        if fmt == "parquet":
            result = export_parquet(con, out)
        else:
            result = export_focus(con, out, "csv" if fmt == "focus-csv" else "parquet")
    for name, rows in result.rows.items():
        if not quiet:
            click.echo(f"{name}: {rows:,} rows, {usd(result.nanos[name])} -> {out / name}")


FINANCE_VIEWS = (
    "budget_status",
    "wallet_runway_status",
    "spend_anomalies",
    "spend_forecast",
    "price_checks",
    "spend_unbilled",
    "spend_as_used",
    "spend_restatements",
)


def require_views(con: duckdb.DuckDBPyConnection, views: Sequence[str]) -> None:
    """A database written by an older version lacks newer views: say how to upgrade it."""
    found = {
        r[0]
        for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()
    }
    missing = [v for v in views if v not in found]
    if missing:
        raise ConfigError(
            f"this database has no {', '.join(missing)} (written by an older version): "
            "run `billing run` on it once (any input) to add them"
        )


def _read_settings(con: duckdb.DuckDBPyConnection, config_path: Path | None) -> FileConfig:
    """A --config given to a read command applies to this connection only. A database
    written by an older version lacks the finance views: say how to upgrade it."""
    from pipeline.load import store_settings

    require_views(con, FINANCE_VIEWS)

    file_cfg = load_config_file(config_path)
    if file_cfg.path is not None:
        store_settings(con, file_cfg, temp=True)
    return file_cfg


@cli.command("report")
@db_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write.",
)
@click.option(
    "--force", is_flag=True, help="Replace --out even when it is not a report billing wrote."
)
@click.option("--month", help="The month to report, YYYY-MM (default: the latest with spend).")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="From this UTC date on.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Before this UTC date.")
@config_option("A billing.toml whose budgets, prices and tags to use (nothing is written).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@friendly_errors
def report_cmd(
    db: Path,
    out: Path,
    force: bool,
    month: str | None,
    since: datetime | None,
    until: datetime | None,
    config_path: Path | None,
    quiet: bool,
) -> None:
    """Write a spend report: one self-contained HTML file to open or forward.

    The period's exact total, spend over time by provider, by model, top sessions and
    tags, failed/expired/unbilled spend, reconciliation, budgets, anomalies, a month-end
    forecast and price checks: charts with the exact figures beside them. Opens offline.

    \b
    Examples:
      billing report --out november.html --month 2026-11
      billing report --since 2026-11-01 --until 2026-11-15 --out first-half.html
    """
    from pipeline import finance, spend_report

    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a folder: name the HTML file to write")
    with reader(db, sandbox=True) as con:
        _read_settings(con, config_path)
        period = finance.period(
            con, month, since.date() if since else None, until.date() if until else None
        )
        page = spend_report.render(con, period, db.name, datetime.now(UTC))
        total = finance.totals(con, period)["cost_nanos"]
    write_output(out, redact(page).encode("utf-8"), force, spend_report.GENERATOR_MARK)
    if not quiet:
        click.echo(f"{out}: {period.label}, {usd(total)}")


def write_output(out: Path, data: bytes, force: bool, mark: bytes) -> None:
    """Write ``out`` whole or not at all: into a new temporary file beside it (created
    exclusively, never through a link), then renamed over it. An existing ``out`` that
    this command did not write (``mark`` is not in its first 4 KiB: the database, a
    user's file, a link) is refused unless ``force``; a link is then replaced, never
    followed."""
    if out.is_symlink() or out.exists():
        ours = False
        if out.is_file() and not out.is_symlink():
            with out.open("rb") as fh:
                ours = mark in fh.read(4096)
        if not ours and not force:
            what = (
                "a symbolic link"
                if out.is_symlink()
                else "a DuckDB database"
                if _is_duckdb_file(out)
                else "not a file this command wrote"
            )
            raise ConfigError(
                f"--out {out} exists and is {what}: refusing to replace it (pass --force to"
                " replace it, or choose another name)"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    fd = create_exclusive(tmp, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _is_duckdb_file(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return is_duckdb_header(fh.read(SNIFF_BYTES))
    except OSError:
        return False


@cli.command("check")
@db_option
@click.option("--month", help="Check this month, YYYY-MM.")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Check from this UTC date on (to --until, else to today).",
)
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Before this UTC date.")
@config_option(
    "A billing.toml whose budgets, prices and tags to use, and its notify endpoints "
    "(only what was sent is written)."
)
@click.option(
    "--notify/--no-notify",
    default=True,
    show_default=True,
    help="Post each new finding to the config's notify endpoints (when it has some).",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the messages that would be sent; send nothing."
)
@wait_option("Wait up to SECONDS for a run to release the database before recording what was sent.")
@format_option
@friendly_errors
def check_cmd(
    db: Path,
    month: str | None,
    since: datetime | None,
    until: datetime | None,
    config_path: Path | None,
    notify: bool,
    dry_run: bool,
    wait_s: float,
    fmt: str,
) -> None:
    """Check budgets and spend anomalies; the exit code tells a scheduler.

    Spend is as billed (by charge date, restatements where restated), as in the report
    and the FOCUS export. By default: the current UTC month to date, with daily budgets
    and anomalies of yesterday and today only (a day crossed earlier does not alert every
    night). --month, or --since/--until, checks every budget period and day in them.

    With [notify] endpoints in the config file, each new finding is posted once: a
    budget threshold once per budget and period, an anomaly once, a runway alert once a
    month; what was sent is remembered in the database (table notifications), a failed
    delivery is shown and tried again at the next check.

    Exit codes: 0 nothing to report, 4 a budget is crossed (or a runway budget), 5 a
    spend anomaly (and no budget crossed), 2 usage error.

    \b
    Examples:
      billing check                          # after the nightly run
      billing check --month 2026-10          # the month being closed
      billing check --since 2026-11-01 --format json
      billing check --config billing.toml    # try budgets before storing them
      billing check --config billing.toml --dry-run   # the messages, not sent
    """
    from pipeline import finance

    with reader(db, sandbox=True) as con:
        file_cfg = _read_settings(con, config_path)
        period = None
        if month or since or until:
            end = until.date() if until else None
            if since and not end:  # --since alone: to today
                end = finance.today_utc() + timedelta(days=1)
            period = finance.period(con, month, since.date() if since else None, end)
        checked = finance.check(con, period)
    outcome = send_notifications(db, checked, file_cfg, notify, dry_run, wait_s)
    if fmt in ("json", "jsonl"):
        click.echo(
            redact(
                json.dumps(
                    {
                        "exit_code": checked.exit_code,
                        "period": {
                            "start": str(checked.period.start),
                            "end": str(checked.period.end),
                        }
                        if checked.period
                        else None,
                        "budgets": json_rows(checked.budgets),
                        "anomalies": json_rows(checked.anomalies),
                        "wallet": json_rows([checked.wallet])[0] if checked.wallet else None,
                        "runway": json_rows(checked.runway),
                        "notifications": outcome.json(),
                        "notes": checked.notes,
                    }
                )
            )
        )
    elif fmt in ("csv", "markdown"):
        columns, rows = check_findings(checked)
        click.echo(FORMATS[fmt](columns, rows))
    else:
        verdict = {
            0: "ok: no budget crossed, no anomaly"
            + (f" ({len(checked.warnings)} budget(s) at 80% or more)" if checked.warnings else ""),
            finance.EXIT_BUDGET: f"{len(checked.crossed)} budget(s) crossed",
            finance.EXIT_ANOMALY: f"{len(checked.anomalies)} spend anomaly(ies)",
        }[checked.exit_code]
        if checked.runway_crossed and not checked.crossed:
            verdict = f"{len(checked.runway_crossed)} runway budget(s) crossed"
        click.echo(
            printable(redact(f"check: {verdict}{check_summary(checked)}{outcome.summary()}"))
        )
    if checked.exit_code:
        sys.exit(checked.exit_code)


def main() -> None:
    cli(prog_name="billing")


from pipeline import cli_account  # noqa: E402,F401 - registers `prices` and `credits`
