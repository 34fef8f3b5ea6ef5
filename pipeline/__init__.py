"""Billing and cost analytics pipeline for an LLM gateway.

Stages, one module each: :mod:`pipeline.extract` (files, HTTP API),
:mod:`pipeline.transform` (pure frame builders + pandera schemas),
:mod:`pipeline.validate` (split valid rows from quarantined ones),
:mod:`pipeline.load` (DuckDB, one transaction per run). :mod:`pipeline.work` is what
a worker process does with one chunk; :mod:`pipeline.runner` wires the stages;
:mod:`pipeline.cli` is the thin command-line layer.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llm-gateway-billing")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"
