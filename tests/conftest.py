from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import cli


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A token or config in the developer's shell must not change what a test sees."""
    for name in ("PHASEO_API_KEY", "PHASEO_BASE_URL", "BILLING_DB", "BILLING_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def run_cli() -> Callable[..., Result]:
    def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "billing.duckdb"
