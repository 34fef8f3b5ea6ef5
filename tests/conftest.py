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
    def invoke(
        *args: str | Path, env: dict[str, str] | None = None, data: bytes | str | None = None
    ) -> Result:
        return CliRunner().invoke(
            cli, [str(a) for a in args], input=data, env=env, catch_exceptions=False
        )

    return invoke


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "billing.duckdb"


@pytest.fixture(scope="session")
def _sample_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample loaded once per test worker (a real `billing run`)."""
    from tests.helpers import SAMPLE

    path = tmp_path_factory.mktemp("sample-template") / "billing.duckdb"
    result = CliRunner().invoke(cli, ["run", str(SAMPLE), "--db", str(path), "-q"])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def sample_loaded(db: Path, _sample_template: Path) -> Path:
    """``db`` holding the sample as `billing run data/sample` leaves it: a copy of the
    worker's one load (tests that only read it need not pay for a load each)."""
    import shutil

    shutil.copyfile(_sample_template, db)
    return db


# The suite's longest tests (seconds each, see `pytest --durations`): run first, so that
# with two workers (make test: pytest -n auto) neither is left running one of them alone
# at the end while the other worker idles.
_LONGEST = (
    "test_any_order_of_runs_gives_the_final_snapshots_totals",
    "test_spark_reads_the_export_with_the_same_totals",
    "test_both_paths_agree_on_generated_records",
    "test_sample_export_passes_the_official_focus_validator",
    "test_kill_9_mid_load_commits_nothing",
    "test_kill_9_on_a_first_run_leaves_no_half_made_database",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(_LONGEST)}
    items.sort(key=lambda item: rank.get(item.originalname, len(rank)))


def _peak_rss_mib() -> tuple[int, int]:
    import resource

    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024,
    )


@pytest.fixture(autouse=True)
def _hostile_cases_stay_under_1_gib(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every case of the hostile battery (tests/test_hostile*.py) holds its peak RSS under
    1 GiB, in the test process and in the processes it waits for. A peak that rose during
    the case is that case's own, so it is checked; one set earlier is another test's."""
    if not request.module.__name__.rsplit(".", 1)[-1].startswith("test_hostile"):
        yield
        return
    before = _peak_rss_mib()
    yield
    after = _peak_rss_mib()
    for was, now, where in zip(before, after, ("the test process", "a child process"), strict=True):
        if now > was:
            assert now < 1024, f"peak RSS {now} MiB in {where}: over the battery's 1 GiB"
