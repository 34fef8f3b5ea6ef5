"""Billing and cost analytics pipeline for an LLM gateway.

Stages, one module each: :mod:`pipeline.extract` (files, HTTP API),
:mod:`pipeline.transform` (pure frame builders + pandera schemas),
:mod:`pipeline.validate` (split valid rows from quarantined ones),
:mod:`pipeline.load` (DuckDB, one transaction per run). :mod:`pipeline.work` is what
a worker process does with one chunk; :mod:`pipeline.runner` wires the stages;
:mod:`pipeline.cli` is the thin command-line layer.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """``__version__``, looked up on first use (importlib.metadata costs ~30 ms of start-up
    in every worker process, which never asks)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-gateway-billing")
    except PackageNotFoundError:  # running from a source tree without install
        return "0.0.0+local"


def main() -> None:
    """The ``billing`` command (``pipeline.cli`` is imported here, not above): a worker
    process that a run spawns re-imports the script that started it, so this package is
    all it loads, not the CLI with DuckDB and the HTTP client (~95 ms and ~25 MB a
    worker)."""
    from pipeline.cli import main as cli_main

    cli_main()
