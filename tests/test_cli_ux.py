"""The CLI as a newcomer meets it: JSON summary, quiet, globs, stdin, formats, fitted
tables, help texts, and read commands that never create anything."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from pipeline.cli import cli
from tests.helpers import SAMPLE, batch, query, scalar, write_jsonl

Cli = Callable[..., Result]
SAMPLE_TOTAL = 690661169561


def _stdin(*args: str | Path, data: bytes) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=data, catch_exceptions=False)


def test_json_log_format_prints_one_summary_object_a_scheduler_can_parse(
    run_cli: Cli, db: Path
) -> None:
    result = run_cli("run", SAMPLE, "--db", db, "--log-format", "json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)  # the whole of stdout is one object
    assert summary["status"] == "ok_with_rejects"
    assert summary["exit_code"] == 0
    assert summary["total_cost_nanos"] == SAMPLE_TOTAL
    assert summary["total_cost_usd"] == "690.661169561"
    assert summary["cost_delta_nanos"] == SAMPLE_TOTAL
    assert summary["rejected"] == 6
    assert summary["records_read"] == 351
    assert summary["batches"]["new"] == 324
    assert summary["new_database"] is True
    assert summary["incomplete"] is False
    assert summary["source"] == str(SAMPLE)
    again = json.loads(run_cli("run", SAMPLE, "--db", db, "--log-format", "json", "-q").stdout)
    assert (again["cost_delta_nanos"], again["new_database"]) == (0, False)


def test_json_summary_says_incomplete_and_usage_errors_too(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [batch(1)])
    (folder / "gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    result = run_cli("run", folder, "--db", db, "--log-format", "json")
    assert result.exit_code == 3
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["exit_code"], summary["incomplete"]) == (
        "incomplete",
        3,
        True,
    )
    assert summary["unreadable"] == [str(folder / "gone.jsonl")]
    bad = run_cli("run", "--db", db, "--log-format", "json")
    assert bad.exit_code == 2
    assert json.loads(bad.stdout) == {
        "status": "usage_error",
        "exit_code": 2,
        "error": "nothing to load: pass INPUT files or folders (or --ids-file/--list)",
    }
    # with --log-format json, stderr is JSON too: the error is one log record
    record = json.loads(bad.stderr)
    assert (record["level"], record["exit_code"], record["message"]) == (
        "error",
        2,
        "nothing to load: pass INPUT files or folders (or --ids-file/--list)",
    )
    # and so is a usage error click finds before the command runs
    usage = run_cli("run", SAMPLE, "--db", db, "--log-format", "json", "--limit-typo", "3")
    assert usage.exit_code == 2
    message = "No such option '--limit-typo'. (try 'billing run --help')"
    assert json.loads(usage.stderr)["message"] == message
    assert json.loads(usage.stdout) == {"status": "usage_error", "exit_code": 2, "error": message}
    plain = run_cli("run", SAMPLE, "--db", db, "--limit-typo", "3")
    assert (plain.exit_code, plain.stderr) == (2, f"billing: error: {message}\n")


def test_quiet_prints_nothing_but_errors(run_cli: Cli, db: Path, tmp_path: Path) -> None:
    ok = run_cli("run", SAMPLE, "--db", db, "-q")
    assert (ok.exit_code, ok.output) == (0, "")
    missing = run_cli("run", tmp_path / "nope.jsonl", "--db", db, "-q")
    assert missing.exit_code == 2
    assert missing.output == f"billing: error: input not found: {tmp_path / 'nope.jsonl'}\n"
    for command in (
        ("export", "--db", db, "--out", tmp_path / "lake", "-q"),
        ("export", "--db", db, "--format", "focus", "--out", tmp_path / "focus", "-q"),
        ("report", "--db", db, "--out", tmp_path / "r.html", "-q"),
    ):
        quiet = run_cli(*command)
        assert (quiet.exit_code, quiet.output) == (0, ""), command
    sample = run_cli("sample", "--out", tmp_path / "s", "--batches", "120", "-q")
    assert (sample.exit_code, sample.output) == (0, "")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "bad-records.jsonl",
        "batches-2026-10.jsonl",
        "batches-2026-11.jsonl",
        "gateway-2026-11.jsonl",
        "list-page.json",
    ]


def test_shell_globs_and_several_inputs_load_every_file(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [batch(1)])
    b = write_jsonl(tmp_path / "b.jsonl", [batch(2)])
    c = write_jsonl(tmp_path / "c.jsonl", [batch(3)])
    # what `--input *.jsonl` becomes after the shell: --input a b c
    result = run_cli("run", "--input", a, b, c, "--db", db)
    assert result.exit_code == 0, result.output
    assert scalar(db, "select count(*) from batches") == 3
    assert scalar(db, "select source from load_runs") == f"{a}, {b}, {c}"


def test_load_runs_source_is_the_input_not_the_last_rejected_file(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "night"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [batch(1)])
    write_jsonl(folder / "z-bad.jsonl", [b"{not json"])
    assert run_cli("run", folder, "--db", db, "-q").exit_code == 0
    assert query(db, "select source, rejected from load_runs") == [(str(folder), 1)]


def test_stdin_jsonl_loads_and_names_stdin_in_rejects(db: Path) -> None:
    data = b"\n".join([json.dumps(batch(1)).encode(), b"{broken", json.dumps(batch(2)).encode()])
    result = _stdin("run", "-", "--db", db, data=data)
    assert result.exit_code == 0, result.output
    assert "read        3 records from <stdin>" in result.output
    assert scalar(db, "select count(*) from batches") == 2
    assert query(db, "select source, line from rejected_batches") == [("<stdin>", 2)]
    assert scalar(db, "select source from load_runs") == "<stdin>"


def test_stdin_takes_a_json_document_too(db: Path) -> None:
    doc = json.dumps([batch(1), batch(2)], indent=2).encode()
    result = _stdin("run", "--input", "-", "--db", db, data=doc)
    assert result.exit_code == 0, result.output
    assert scalar(db, "select sum(cost_nanos) from batches") == 600000000


def test_stdin_is_the_only_input_of_its_run(db: Path, tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [batch(1)])
    result = _stdin("run", "-", a, "--db", db, data=b"")
    assert result.exit_code == 2
    assert "stdin (-) is the only input of its run" in result.output
    assert not db.exists()


@pytest.mark.usefixtures("sample_loaded")  # db holds the sample
def test_sql_reads_stdin_or_a_sql_file(run_cli: Cli, db: Path, tmp_path: Path) -> None:
    expected = "total\n690661169561\n"
    text = "select sum(cost_nanos) as total from batches"
    piped = _stdin("sql", "-", "--db", db, "--format", "csv", data=text.encode())
    assert (piped.exit_code, piped.output) == (0, expected)
    f = tmp_path / "total.sql"
    f.write_text("-- the bill\n" + text + ";\n")
    from_file = run_cli("sql", f, "--db", db, "--format", "csv")
    assert (from_file.exit_code, from_file.output) == (0, expected)
    missing = run_cli("sql", tmp_path / "nope.sql", "--db", db)
    assert missing.exit_code == 2
    assert missing.output == f"billing: error: SQL file not found: {tmp_path / 'nope.sql'}\n"


@pytest.mark.usefixtures("sample_loaded")  # db holds the sample
def test_every_format_and_limit(run_cli: Cli, db: Path) -> None:
    sql = "select provider, count(*) as n from batches group by 1 order by 1"
    (a, n_a), (g, n_g) = query(db, sql)[:2]
    md = run_cli("sql", sql, "--db", db, "--format", "markdown", "--limit", "2")
    assert md.output == f"| provider | n |\n|---|---:|\n| {a} | {n_a} |\n| {g} | {n_g} |\n"
    jl = run_cli("sql", sql, "--db", db, "--format", "jsonl", "--limit", "2")
    assert jl.output == f'{{"provider": "{a}", "n": {n_a}}}\n{{"provider": "{g}", "n": {n_g}}}\n'
    tab = run_cli("sql", sql, "--db", db, "--limit", "1")
    assert tab.output == (
        f"provider    n\n---------  --\n{a}  {n_a}\n(1 row)\n(the first 1 rows: --limit)\n"
    )
    runs = run_cli("runs", "--db", db, "--format", "jsonl", "--limit", "1")
    assert len(runs.output.splitlines()) == 1
    assert json.loads(runs.output)["status"] == "ok_with_rejects"


def test_tables_fit_the_terminal_and_say_what_they_left_out(
    run_cli: Cli, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # a test worker's terminal is not ours
    assert run_cli("run", SAMPLE, "--db", db, "-q").exit_code == 0
    result = run_cli("runs", "--db", db, env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[:2] == [
        "run_id                   status           started_at           duration_s",
        "-----------------------  ---------------  -------------------  ----------",
    ]
    assert lines[2].split()[1] == "ok_with_rejects"  # the status whole at 80 columns
    # every column left out is named, the note wrapped to the terminal
    assert " ".join(lines[3:]) == (
        "(1 row; 11 more columns not shown: records_read, batches_loaded, batches_new,"
        " batches_updated, lines_loaded, rejected, not_found, reconciliation_issues,"
        " cost_delta_nanos, total_cost_usd, pipeline_version; use --format csv or json for"
        " all)"
    )
    roomy = run_cli("runs", "--db", db, env={"COLUMNS": "150"}).output.splitlines()
    assert max(len(line) for line in roomy) <= 150
    assert " ".join(roomy[3:]).startswith("(1 row; 6 more columns not shown: rejected, ")
    wide = run_cli("runs", "--db", db)  # piped, no $COLUMNS: the whole table
    assert "pipeline_version" in wide.output.splitlines()[0]


@pytest.mark.usefixtures("sample_loaded")  # db holds the sample
def test_spend_by_provider_opens_on_the_latest_spend(run_cli: Cli, db: Path) -> None:
    rows = json.loads(run_cli("query", "spend-by-provider", "--db", db, "--format", "json").output)
    days = [r["day"] for r in rows]
    assert days == sorted(days, reverse=True)
    first_day = [r for r in rows if r["day"] == days[0]]
    costs = [r["cost_nanos"] for r in first_day]
    assert costs == sorted(costs, reverse=True)
    monthly = json.loads(
        run_cli(
            "query", "spend-by-provider", "--db", db, "--by", "month", "--format", "json"
        ).output
    )
    assert [r["month"] for r in monthly][:1] == ["2026-11-01"]
    assert sum(r["cost_nanos"] for r in monthly) == SAMPLE_TOTAL


@pytest.mark.parametrize(
    "command", [("runs",), ("query", "spend-by-provider"), ("sql", "select 1")]
)
def test_read_commands_never_create_a_mistyped_db(
    run_cli: Cli, tmp_path: Path, command: tuple[str, ...]
) -> None:
    typo = tmp_path / "dta" / "billing.duckdb"
    result = run_cli(*command, "--db", typo)
    assert result.exit_code == 2
    assert result.output == (
        f"billing: error: database not found: {typo} (run `billing run` first)\n"
    )
    assert not (tmp_path / "dta").exists()


def test_export_of_a_mistyped_db_creates_nothing(run_cli: Cli, tmp_path: Path) -> None:
    typo = tmp_path / "dta" / "billing.duckdb"
    result = run_cli("export", "--db", typo, "--out", tmp_path / "lake")
    assert result.exit_code == 2
    assert not (tmp_path / "dta").exists() and not (tmp_path / "lake").exists()


def test_a_new_database_is_named_as_new(run_cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "new" / "b.duckdb"
    first = run_cli("run", write_jsonl(tmp_path / "a.jsonl", [batch(1)]), "--db", db)
    assert first.exit_code == 0
    assert first.output.splitlines()[0].endswith(f"-> {db} (a new database)")
    second = run_cli("run", tmp_path / "a.jsonl", "--db", db)
    assert second.output.splitlines()[0].endswith(f"-> {db}")


def _commands() -> list[click.Command]:
    assert isinstance(cli, click.Group)
    return [cli.commands[name] for name in sorted(cli.commands)]


def test_every_option_has_help_and_shows_its_default_one_way() -> None:
    for command in _commands():
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{command.name} {param.opts[0]} has no help"
                assert "[" not in param.help, f"{command.name} {param.opts[0]}: default in text"


def test_help_has_examples_and_query_help_names_the_views(run_cli: Cli) -> None:
    for name in ("run", "query", "sql", "export", "sample"):
        text = run_cli(name, "--help").output
        assert "Examples:" in text, name
    query_help = " ".join(run_cli("query", "--help").output.split())
    for view in ("spend-by-provider", "spend-by-session", "focus-charges", "spend-by-model"):
        assert view in query_help
    run_help = run_cli("run", "--help").output
    assert "[default: 16; x>=1]" in run_help  # --concurrency, shown by click, not in the text


def test_shell_completion_script_is_available() -> None:
    result = CliRunner().invoke(
        cli, [], prog_name="billing", env={"_BILLING_COMPLETE": "bash_source"}
    )
    assert result.exit_code == 0
    assert "_billing_completion" in result.output
    assert os.environ.get("_BILLING_COMPLETE") is None


def test_the_billing_command_leaves_its_workers_light() -> None:
    """A run's worker processes re-import the script that started them: the ``billing``
    command's target imports neither the CLI nor DuckDB nor the HTTP client (each worker
    would carry ~95 ms and ~25 MB of them), and still runs the CLI."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "billing"]
    assert script.value == "pipeline:main"
    heavy = ("pipeline.cli", "duckdb", "httpx", "polars", "click")
    probe = f"import sys, pipeline; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert loaded.stdout.strip() == "[]", loaded.stderr
    version = subprocess.run(
        [sys.executable, "-c", "import pipeline; pipeline.main()", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.returncode == 0
    assert version.stdout.startswith("billing, version ")


def test_json_money_past_2_to_the_53_is_an_exact_string(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    """JavaScript and jq read JSON numbers as doubles: 2^63 nanos would come back rounded."""
    from tests.helpers import batch, write_jsonl

    big = [batch(n, cost_nanos=2**62, pricing_lines=[]) for n in (1, 2)]
    for b in big:
        b["billing"]["pricing_breakdown"] = None
    path = write_jsonl(tmp_path / "big.jsonl", big)
    run = run_cli("run", path, "--db", db, "-q", "--log-format", "json")
    summary = json.loads(run.output)
    assert summary["total_cost_nanos"] == str(2**63)
    assert summary["total_cost_usd"] == "9223372036.854775808"
    rows = json.loads(run_cli("query", "spend-by-provider", "--db", db, "--format", "json").output)
    assert rows[0]["cost_nanos"] == str(2**63) and rows[0]["cost_usd"] == "9223372036.854775808"
    assert rows[0]["batches"] == 2  # small integers stay numbers


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["run", "--workers", "abc", "data/sample"],
            "billing: error: Invalid value for '--workers': 'abc' is not a valid integer range."
            " (try 'billing run --help')\n",
        ),
        (["nope"], "billing: error: No such command 'nope'. (try 'billing --help')\n"),
        (
            ["check", "--format", "xml"],
            "billing: error: Invalid value for '--format': 'xml' is not one of 'table', 'csv',"
            " 'json', 'jsonl', 'markdown'. (try 'billing check --help')\n",
        ),
    ],
)
def test_usage_errors_have_the_one_error_format(
    run_cli: Cli, args: list[str], expected: str
) -> None:
    """Click's 'Usage: ... Error: Invalid value' block sat beside the project's one line."""
    result = run_cli(*args)
    assert (result.exit_code, result.output) == (2, expected)
    assert run_cli("--help").exit_code == 0 and run_cli("--version").exit_code == 0
