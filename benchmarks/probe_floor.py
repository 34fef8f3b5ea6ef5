"""What "within 2x of the floor" leaves for everything else: the floor against DuckDB
writing *our* tables with no check at all, and the cost of the reads exact typing needs.

    python -m benchmarks.probe_floor INPUT.jsonl [--repeats 5]

Each step runs as its own process into a fresh DuckDB file (wall time, median of
``--repeats``), all on the same input and in the same run, so only the ratios count:

* ``floor``: ``benchmarks/floor_duckdb.py`` (the table in RESULTS.md).
* ``our tables, no checks``: DuckDB's typed ``read_json`` straight into the ``batches``
  and ``pricing_lines`` tables as ``pipeline.load`` declares them (every column of the
  spec, ``pipeline/schema.py``), values cast by kind; no validation, no redaction, no
  history, no FOCUS books, no derived columns. A lower bound for any design that writes
  our tables.
* the reads a column-wise path needs on top, each timed alone in-process: the raw
  lines, every leaf as its JSON text (telling ``"5"`` from ``5``), the text-equals-
  DuckDB's-own-text screen (whitespace, NaN, trailing commas, odd number spellings),
  and the key lists (repeated and unknown keys).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from pipeline import schema
from pipeline.load import BATCH_TABLE
from pipeline.transform import TERMINAL_STATUSES

HERE = Path(__file__).resolve().parent

_TYPED = {  # how DuckDB's reader types each kind's leaf (timestamps: both spellings)
    "id": "VARCHAR",
    "text": "VARCHAR",
    "timestamp": "VARCHAR",
    "count": "BIGINT",
    "nanos": "BIGINT",
    "usd_text": "VARCHAR",
    "usd_float": "DOUBLE",
    "number": "DOUBLE",
    "flag": "BOOLEAN",
    "json": "JSON",
    "text_list": "VARCHAR[]",
}


def _nest(paths: dict[str, str]) -> dict[str, Any]:
    """{'billing.cost_nanos': 'BIGINT'} -> {'billing': {'cost_nanos': 'BIGINT'}}"""
    tree: dict[str, Any] = {}
    for path, leaf in paths.items():
        *parents, last = path.split(".")
        node: Any = tree
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(node, dict):  # else: a field of an object read whole (as JSON)
            node[last] = leaf
    return tree


def _ddl_type(v: Any) -> str:
    if isinstance(v, dict):
        return "STRUCT(" + ", ".join(f'"{k}" {_ddl_type(x)}' for k, x in v.items()) + ")"
    if isinstance(v, list):
        return _ddl_type(v[0]) + "[]"
    return str(v)


def _columns_arg(tree: dict[str, Any]) -> str:
    return "{" + ", ".join(f"'{k}': '{_ddl_type(v)}'" for k, v in tree.items()) + "}"


def _value(col: schema.Column, ref: str) -> str:
    if col.kind == "timestamp":
        return f"coalesce(try_cast({ref} as timestamptz), to_timestamp(try_cast({ref} as double)))"
    if col.kind == "usd_text":
        return f"try_cast({ref} as decimal(38, 9))"
    return ref


_NOT_NULL = ("is_terminal", "is_final")
_TERMINAL = f"status in {TERMINAL_STATUSES}"  # what the two not-null flags get
_LINE_DERIVED = {"batch_id": "id", "line_index": "i - 1"}


def _typed_read() -> tuple[str, str, str]:
    """(read_json columns, batches select list, lines select list), from the spec."""
    batch = {c.source: _TYPED[c.kind] for c in schema.BATCH if c.source}
    prefix = f"{schema.LINES}."
    line = {c.source.removeprefix(prefix): _TYPED[c.kind] for c in schema.LINE if c.source}
    line.update(  # the gateway's other line shape: the same kinds under other keys
        {
            schema.LINE_FALLBACK[c.name]: _TYPED[c.kind]
            for c in schema.LINE
            if c.name in schema.LINE_FALLBACK
        }
    )
    tree = _nest(batch)
    # the JSON columns read whole win over reading their fields apart (both are read)
    tree["pricing_lines"] = [line]
    sources = {c.name: c.source for c in schema.BATCH if c.source}
    batches = []
    for col in BATCH_TABLE:
        src = sources.get(col.name)
        if src is None:
            batches.append(f"{_TERMINAL if col.name in _NOT_NULL else 'null'} as {col.name}")
            continue
        ref = ".".join(f'"{p}"' for p in src.split("."))
        parent = src.split(".")[0]
        if isinstance(tree.get(parent), str) and "." in src:  # field of a JSON-read object
            ref = f"({parent}->>'$.{src.split('.', 1)[1]}')"
        batches.append(f"{_value(col, ref)} as {col.name}")
    lines = []
    for col in schema.LINE:
        if col.source is None:
            lines.append(f"{_LINE_DERIVED.get(col.name, 'null')} as {col.name}")
            continue
        ref = "l." + col.source.removeprefix(prefix)
        if col.name in schema.LINE_FALLBACK:
            ref = f"coalesce({ref}, l.{schema.LINE_FALLBACK[col.name]})"
        lines.append(f"{_value(col, ref)} as {col.name}")
    return _columns_arg(tree), ", ".join(batches), ", ".join(lines)


def our_tables(src: str, db: str) -> None:
    """DuckDB's typed read into our two tables, nothing else."""
    from pipeline import history
    from pipeline.load import TABLES_DDL  # the tables as the loader declares them

    columns, batches, lines = _typed_read()
    con = duckdb.connect(db)
    con.execute("begin")
    con.execute(TABLES_DDL)
    history.create_views(con, None)  # (the rows go into the head's tables, as ours)
    read = f"create temp table raw as select * from read_json($1, columns = {columns})"  # noqa: S608
    insert_batches = f"insert into hot.batches ({', '.join(c.name for c in BATCH_TABLE)}) select {batches} from raw"  # noqa: S608 - from the spec
    insert_lines = (
        f"insert into hot.pricing_lines ({', '.join(c.name for c in schema.LINE)}) select {lines}"  # noqa: S608 - from the spec
        " from (select id, unnest(pricing_lines) as l,"
        " generate_subscripts(pricing_lines, 1) as i from raw)"
    )
    con.execute(read, [src])
    con.execute(insert_batches)
    con.execute(insert_lines)
    con.execute("commit")
    con.close()


def _leaves_structure() -> str:
    """Every leaf the spec reads, as its JSON text (``json_transform``'s structure)."""
    tree: dict[str, Any] = _nest(
        {c.source: "JSON" for c in schema.BATCH if c.source and c.source != "requests"}
    )
    line = {c.source.rpartition(".")[2]: "JSON" for c in schema.LINE if c.source}
    line.update(dict.fromkeys(schema.LINE_FALLBACK.values(), "JSON"))
    tree["pricing_lines"] = [line]
    return json.dumps(tree)


def reads(src: str) -> dict[str, float]:
    """The reads a column-wise exact path needs, each alone (in-process, all threads)."""
    con = duckdb.connect()
    out: dict[str, float] = {}

    def timed(name: str, sql: str, params: list[str] | None = None) -> None:
        started = time.perf_counter()
        con.execute(sql, params)
        out[name] = time.perf_counter() - started

    timed(
        "raw lines (read_ndjson_objects)",
        "create temp table t as select json as t from read_ndjson_objects($1)",
        [src],
    )
    leaves = _columns_arg(json.loads(_leaves_structure()))
    timed(
        "every leaf as its JSON text (read_json)",
        f"create temp table v as select * from read_json($1, columns = {leaves})",  # noqa: S608
        [src],
    )
    timed(
        "screen: text is DuckDB's own text",
        "create temp table s as select json(t)::varchar = t as same from t",
    )
    timed(
        "key lists (repeated, unknown keys)",
        "create temp table k as select json_keys(t, ['$', '$.billing', '$.request_counts',"
        " '$.billing.pricing_breakdown', '$.metadata', '$.usage', '$.webhook']) as k,"
        " json_keys(t, '$.pricing_lines[*]') as lk from t",
    )
    out["chained: the reads and checks of an exact path in DuckDB SQL, nothing written"] = (
        exact_sql_path(con, src)
    )
    con.close()
    return out


def _leaf_refs(tree: dict[str, Any], prefix: str = "v") -> list[str]:
    refs = []
    for key, value in tree.items():
        ref = f'{prefix}."{key}"'
        if isinstance(value, dict):
            refs += _leaf_refs(value, ref)
        elif not isinstance(value, list):
            refs.append(ref)
    return refs


def exact_sql_path(con: duckdb.DuckDBPyConnection, src: str) -> float:
    """What a fast path done wholly in DuckDB SQL would run before writing a row: the
    numbered raw lines (for line numbers and quarantine), the screen, every leaf as its
    JSON text with the key lists and container types, a JSON-type check on every leaf and
    the pricing lines unnested. Rules, redaction, the content hash, the JSON columns'
    texts and every write come on top."""
    structure = _leaves_structure()
    tree = json.loads(structure)
    typed = " and ".join(
        f'coalesce(regexp_full_match({ref}::varchar, \'("[^"]*"|-?[0-9]{{1,18}}(\\.[0-9]+)?|true|false|[\\[{{].*)\'),'
        " true)"
        for ref in _leaf_refs(tree)
    )
    steps = [
        "create temp table n as select row_number() over () as ln, json::varchar as t"
        " from read_ndjson_objects($1)",
        "create temp table c as select ln, t from n where starts_with(t, '{')"
        " and not regexp_matches(t, '[:\\[,]\\s*-?(NaN|Infinity|[0-9]{19})|,\\s*[\\]}]')",
        f"create temp table r as select ln, try(json_transform(t, '{structure}')) as v,"  # noqa: S608 - from the spec
        " try(json_keys(t, ['$', '$.request_counts', '$.billing',"
        " '$.billing.pricing_breakdown', '$.usage', '$.webhook'])) as k,"
        " try(json_keys(t, '$.pricing_lines[*]')) as lk,"
        " try(json_type(t, ['$.request_counts', '$.billing', '$.billing.pricing_breakdown',"
        " '$.pricing_lines', '$.usage', '$.webhook'])) as ct from c",
        f"create temp table ok as select ln, {typed}"  # noqa: S608 - from the spec
        " and list_unique(k[1]) = len(k[1]) as ok from r",
        "create temp table lines as select ln, unnest(v.pricing_lines) as l,"
        " generate_subscripts(v.pricing_lines, 1) as i from r",
    ]
    started = time.perf_counter()
    for sql in steps:
        con.execute(sql, [src] if "$1" in sql else None)
    return time.perf_counter() - started


def _wall(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--step", choices=["our-tables"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "our-tables":
        our_tables(args.input, args.db)
        return
    walls: dict[str, list[float]] = {"floor": [], "our tables, no checks": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, cmd in {
                "floor": [sys.executable, str(HERE / "floor_duckdb.py"), args.input],
                "our tables, no checks": [
                    *(sys.executable, "-m", "benchmarks.probe_floor", args.input),
                    *("--step", "our-tables", "--db"),
                ],
                "ours": [sys.executable, "-m", "pipeline", "run", args.input, "-q", "--db"],
            }.items():
                walls[name].append(_wall([*cmd, str(Path(tmp) / f"{i}-{len(name)}.duckdb")]))
    floor = statistics.median(walls["floor"])
    print(f"| step (median of {args.repeats}) | seconds | x floor |")
    print("|---|---:|---:|")
    for name, runs in walls.items():
        median = statistics.median(runs)
        print(f"| {name} | {median:.2f} | {median / floor:.2f} |")
    for name, seconds in reads(args.input).items():
        print(f"| read alone: {name} | {seconds:.2f} | {seconds / floor:.2f} |")


if __name__ == "__main__":
    main()
