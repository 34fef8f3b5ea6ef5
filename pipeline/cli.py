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
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from functools import wraps
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import click
import duckdb

from pipeline import __version__, runner
from pipeline.config import (
    CONFIG_ENV,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_KEEP_SNAPSHOTS,
    TOKEN_ENV,
    ApiConfig,
    ConfigError,
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
)
from pipeline.extract.files import find_inputs
from pipeline.load import LockedError, NotABillingDatabase, reader
from pipeline.redaction import redact, register_secret
from pipeline.report import FORMATS, run_summary
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
        return redact(super().format(record))


def setup_logging(verbose: bool, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else TextFormatter("%(levelname)s %(message)s")
    )
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False


def fail(message: str, code: int = EXIT_FAILED) -> None:
    line = " ".join(redact(message).split())  # one line, whatever the cause held
    click.echo(f"billing: error: {line}", err=True)
    sys.exit(code)


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
            fail(str(exc).strip("'\""), EXIT_USAGE)
        except (LockedError, runner.StrictFailure) as exc:
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="billing")
def cli() -> None:
    """Billing and cost analytics for an LLM gateway's batch API."""


@contextmanager
def progress_bar(enabled: bool, total: int | None, label: str) -> Iterator[runner.Progress]:
    if not enabled or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@cli.command("run")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A .json/.jsonl file or a folder of them (repeatable).",
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
    "--base-url", default=None, help="API base URL [$PHASEO_BASE_URL or https://api.phaseo.app/v1]."
)
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=None, help="Requests in flight [16]."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.05),
    default=None,
    help="Seconds per request before it is retried [30].",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=None,
    help="Retries per request on 429/5xx/timeouts [5].",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Load a raw response archive (data/archive/RUN.jsonl) again without refetching.",
)
@db_option
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help=f"A billing.toml: [account] names for FOCUS [${CONFIG_ENV}; else the stored ones].",
)
@click.option(
    "--strict", is_flag=True, help="Fail (exit 1, commit nothing) on any reject or mismatch."
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="Wait up to SECONDS for another run to release the database.",
)
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
    help="Processes that parse and validate chunks [min(2, CPUs)].",
)
@click.option(
    "--keep-snapshots",
    type=click.IntRange(min=0, max=10_000),
    default=DEFAULT_KEEP_SNAPSHOTS,
    show_default=True,
    help="Published states kept in snapshots/ beside the database (0: none).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging (secrets redacted).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines on stderr as text or JSON.",
)
@friendly_errors
def run_cmd(
    inputs: tuple[Path, ...],
    ids_file: Path | None,
    list_all: bool,
    statuses: tuple[str, ...],
    base_url: str | None,
    concurrency: int | None,
    timeout_s: float | None,
    retries: int | None,
    replay: tuple[Path, ...],
    db: Path,
    config_path: Path | None,
    strict: bool,
    wait_s: float,
    chunk_size: int,
    workers: int | None,
    keep_snapshots: int,
    quiet: bool,
    verbose: bool,
    log_format: str,
) -> None:
    """Load batch objects into DuckDB in one transaction, then print a summary.

    From files (--input), from the gateway API (--ids-file, --list), or from a raw
    response archive of an earlier API run (--replay).
    """
    setup_logging(verbose, log_format)
    modes = [bool(inputs), bool(ids_file or list_all), bool(replay)]
    if sum(modes) == 0:
        raise ConfigError("nothing to load: pass --input FILE_OR_FOLDER (or --ids-file/--list)")
    if sum(modes) > 1:
        raise ConfigError("choose one of --input, --ids-file/--list, or --replay")
    if statuses and not list_all:
        raise ConfigError("--status goes with --list")
    for status in statuses:
        if status not in KNOWN_STATUSES:
            raise ConfigError(
                f"--status {status!r} is not a status the gateway filters on (it would silently "
                f"list every batch); choose from: {', '.join(KNOWN_STATUSES)}"
            )
    if db.exists() and not db.is_file():
        raise ConfigError(f"--db {db} is a folder, not a database file")
    file_cfg = load_config_file(config_path)
    cfg = RunConfig(
        db_path=db,
        account=file_cfg.account if file_cfg.path is not None else None,
        strict=strict,
        chunk_size=chunk_size,
        wait_for_lock_s=wait_s,
        keep_snapshots=keep_snapshots,
    )
    if workers is not None:
        cfg = replace(cfg, workers=workers)
    api = ApiConfig.from_env(base_url, concurrency, timeout_s, retries) if modes[1] else None
    ids = read_ids_file(ids_file) if ids_file else []
    if inputs:
        try:
            found = find_inputs(inputs)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    db.parent.mkdir(parents=True, exist_ok=True)
    with runner.interruptible():
        if api is not None:
            try:
                result = runner.execute_api(
                    cfg,
                    api,
                    ids=ids,
                    list_all=list_all,
                    statuses=statuses,
                    progress=lambda total, label: progress_bar(not quiet, total, label),
                )
            except FatalFetchError as exc:
                fail(str(exc))
        elif replay:
            records = (r for path in replay for r in read_archive(path))
            source = ", ".join(str(p) for p in replay)
            with progress_bar(not quiet, None, "loading records") as advance:
                result = runner.execute(
                    chunked(records, cfg.chunk_size), cfg, source, progress=advance
                )
        else:
            source = ", ".join(str(p) for p in inputs)
            problems = [found.problems] if found.problems else []
            chunks = chain(problems, read_chunks(found.paths, cfg.chunk_size))
            with progress_bar(not quiet, None, "loading records") as advance:
                result = runner.execute(chunks, cfg, source, progress=advance)
    log.info("run finished", extra={"fields": {"run_id": result.run_id, "status": result.status}})
    click.echo(redact(run_summary(result, str(db))))
    if result.incomplete:
        sys.exit(EXIT_INCOMPLETE)


@cli.command("sample")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/sample"),
    show_default=True,
    help="Folder to write the sample files into.",
)
@click.option("--batches", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
def sample_cmd(out: Path, batches: int, seed: int) -> None:
    """Write the deterministic sample data set (same seed, same bytes)."""
    from pipeline.sample import write_sample

    try:
        counts = write_sample(out, batches, seed)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
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
    "billing_reconciliation": None,
    "focus_charges": "ChargePeriodStart",
}
PERIODS = ("day", "week", "month")


def _query_names() -> list[str]:
    from pipeline.load import view_files

    marts = [p.stem for p in view_files() if p.parent.name == "marts"]
    return [m.replace("_", "-") for m in marts]


def _print_rows(cur: Any, fmt: str) -> None:
    columns = [d[0] for d in cur.description]
    click.echo(FORMATS[fmt](columns, cur.fetchall()))


@cli.command("query")
@click.argument("name")
@db_option
@click.option(
    "--format", "fmt", type=click.Choice(list(FORMATS)), default="table", show_default=True
)
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="From this UTC date on.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Before this UTC date.")
@click.option(
    "--by",
    "period",
    type=click.Choice(PERIODS),
    default=None,
    help="spend-by-provider: roll up by day, week or month.",
)
@click.option(
    "--limit", type=click.IntRange(min=1, max=MAX_LIMIT), default=None, help="At most N rows."
)
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
    """Run a named view (e.g. spend-by-provider). `billing query list` names them all."""
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
            f" from ({body}) group by all order by {period}, provider"
        )
    if limit:
        body += f" limit {int(limit)}"
    with reader(db, sandbox=True) as con:
        _print_rows(con.execute(body, dict(params)), fmt)


@cli.command("sql")
@click.argument("statement")
@db_option
@click.option(
    "--format", "fmt", type=click.Choice(list(FORMATS)), default="table", show_default=True
)
@friendly_errors
def sql_cmd(statement: str, db: Path, fmt: str) -> None:
    """Run one read-only query (select, with, describe, show, summarize, explain).

    The connection is read-only and sandboxed: no statement may write, attach, copy,
    export, install, or read any file but the database.
    """
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
        try:
            cur = con.execute(statement)
        except duckdb.Error as exc:
            raise ConfigError(f"SQL error: {str(exc).splitlines()[0]}") from None
        if cur.description is None:
            click.echo("ok")
            return
        _print_rows(cur, fmt)


READ_ONLY_STATEMENTS = frozenset(
    (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)
)


@cli.command("runs")
@db_option
@click.option(
    "--format", "fmt", type=click.Choice(list(FORMATS)), default="table", show_default=True
)
@click.option(
    "--limit", type=click.IntRange(min=1, max=MAX_LIMIT), default=20, show_default=True
)
@friendly_errors
def runs_cmd(db: Path, fmt: str, limit: int) -> None:
    """List recent load runs, newest first."""
    with reader(db, sandbox=True) as con:
        cur = con.execute(
            "select run_id, status, started_at, duration_s, records_read, batches_loaded,"
            " batches_new, batches_updated, lines_loaded, rejected, not_found,"
            " reconciliation_issues, cost_delta_nanos,"
            " nanos_to_usd(total_cost_nanos_after) as total_cost_usd,"
            " pipeline_version from load_runs order by started_at desc limit $1",
            [limit],
        )
        _print_rows(cur, fmt)


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
@friendly_errors
def export_cmd(db: Path, fmt: str, out: Path) -> None:
    """Export the tables as Parquet files, or the FOCUS 1.2 dataset for FinOps tools.

    \b
    Examples:
      billing export --out lake/                  # DATASET/month=YYYY-MM/provider=NAME/
      billing export --format focus --out focus/  # focus_charges/billing_period=YYYY-MM/
    """
    from pipeline.export import export_focus, export_parquet
    from pipeline.report import usd

    with reader(db) as con:
        if fmt == "parquet":
            result = export_parquet(con, out)
        else:
            result = export_focus(con, out, "csv" if fmt == "focus-csv" else "parquet")
    for name, rows in result.rows.items():
        click.echo(f"{name}: {rows:,} rows, {usd(result.nanos[name])} -> {out / name}")


def main() -> None:
    cli(prog_name="billing")
