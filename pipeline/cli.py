"""``billing``: the command-line layer. Parses options, calls the runner, prints.

Exit codes: 0 ok; 1 the run failed and nothing was committed; 2 usage or
configuration error. Errors are one line on stderr (``--verbose`` adds the traceback).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
import duckdb

from pipeline import __version__, runner
from pipeline.config import DEFAULT_CHUNK_SIZE, ConfigError, RunConfig
from pipeline.extract import iter_paths, read_records
from pipeline.load import LockedError, reader
from pipeline.report import FORMATS, run_summary

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
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
        return json.dumps(payload, default=str)


def setup_logging(verbose: bool, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter("%(levelname)s %(message)s")
    )
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False


def fail(message: str, code: int = EXIT_FAILED) -> None:
    click.echo(f"billing: error: {message}", err=True)
    sys.exit(code)


def friendly_errors(fn: F) -> F:
    """One clear line instead of a traceback, with the documented exit codes."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, FileNotFoundError) as exc:
            fail(str(exc).strip("'\""), EXIT_USAGE)
        except (LockedError, runner.StrictFailure) as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; nothing was committed")
        except duckdb.Error as exc:
            log.debug("database error", exc_info=True)
            fail(f"database error, nothing was committed: {str(exc).splitlines()[0]}")
        except Exception as exc:
            log.debug("unexpected error", exc_info=True)
            fail(f"{type(exc).__name__}: {exc}; nothing was committed")

    return wrapper  # type: ignore[return-value]


db_option = click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
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

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn()]
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
@db_option
@click.option("--strict", is_flag=True, help="Fail (exit 1, commit nothing) on any reject or mismatch.")
@click.option("--wait", "wait_s", type=float, default=0.0, metavar="SECONDS",
              help="Wait up to SECONDS for another run to release the database.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=DEFAULT_CHUNK_SIZE,
              show_default=True, help="Records per transform/validate chunk.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging (secrets redacted).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines on stderr as text or JSON.")
@friendly_errors
def run_cmd(
    inputs: tuple[Path, ...],
    db: Path,
    strict: bool,
    wait_s: float,
    chunk_size: int,
    quiet: bool,
    verbose: bool,
    log_format: str,
) -> None:
    """Load batch objects into DuckDB in one transaction, then print a summary."""
    setup_logging(verbose, log_format)
    if not inputs:
        raise ConfigError("nothing to load: pass --input FILE_OR_FOLDER")
    paths = iter_paths(inputs)
    db.parent.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(db_path=db, strict=strict, chunk_size=chunk_size, wait_for_lock_s=wait_s)
    source = ", ".join(str(p) for p in inputs)
    with progress_bar(not quiet, None, "loading records") as advance:
        result = runner.execute(read_records(paths), cfg, source, progress=advance)
    log.info("run finished", extra={"fields": {"run_id": result.run_id, "status": result.status}})
    click.echo(run_summary(result, str(db)))


def main() -> None:
    cli(prog_name="billing")
