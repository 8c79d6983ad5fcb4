"""Results history: every finished cell committed to a database the moment it ends, so runs can
be listed and a cell followed across runs (`caskit history`), and `caskit diff` can name a run
by its id.

results.json stays the public contract: the history is derived from the same records (the
`record` column is the cell's result.json, whole). Two backends, one schema (below, as data):

- SQLite, one file in WAL mode: the default, `history.sqlite` beside the run directories
  (`reports/history.sqlite` for runs under `reports/`). WAL lets readers run while one writer
  commits; a busy timeout makes the xdist workers of a run, and other runs on this machine, wait
  their turn instead of failing. WAL needs a local file system (no NFS): a farm shares one
  PostgreSQL server instead.
- PostgreSQL (`postgresql://user@host:port/db`), through psycopg 3, imported only when used
  (`pip install 'caskit[postgres]'`).

Every write is one transaction (a cell, or a run's row), so a controller killed mid-matrix
leaves the history with every cell that ended and nothing half-written. Writes are upserts
keyed by (run, cell): committing the same record twice (a worker, then the controller's final
pass) is harmless.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit

from .errors import CaskitError, ConfigError
from .results import planned_records, reports_dir

SCHEMA_VERSION = 3
# Columns added after version 1, with the version that added them: ALTER TABLE brings older
# databases up to date (both engines add a NULL column without rewriting the table).
ADDED_COLUMNS = ((2, "runs", "planned", "TEXT"), (3, "runs", "shard", "TEXT"))
DEFAULT_NAME = "history.sqlite"
BUSY_TIMEOUT_S = 60.0  # a commit is milliseconds; a minute covers a busy farm controller's burst


def _wal(conn: sqlite3.Connection) -> str:
    """Switch a new file to WAL. Several processes opening a new history at once (xdist workers)
    race for the exclusive lock that takes, and SQLite answers "database is locked" at once
    instead of waiting on the busy timeout (measured: 1 of 4 threads, on a loaded machine): it
    is retried until the timeout. No event says the lock is free, so the retry backs off."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
# A constant key for PostgreSQL's advisory lock around schema creation: two controllers creating
# the tables at once would otherwise race in CREATE TABLE IF NOT EXISTS (a unique violation in
# pg_type, a known PostgreSQL behaviour).
PG_SCHEMA_LOCK = 0x636B6869  # "ckhi"

# The schema as data: table -> columns (name, type and constraint) and table constraints. Only
# types both engines read the same way: TEXT, INTEGER, DOUBLE PRECISION (SQLite's REAL affinity).
# Times are ISO 8601 UTC text, as in results.json: they sort as text. "end" is a reserved word
# in PostgreSQL, so the run's times are started/ended.
TABLES: dict[str, tuple[tuple[str, ...], ...]] = {
    "caskit_meta": (
        ("key", "TEXT PRIMARY KEY"),
        ("value", "TEXT NOT NULL"),
    ),
    "runs": (
        ("id", "TEXT PRIMARY KEY"),
        ("started", "TEXT"),
        ("ended", "TEXT"),  # NULL: the run never finished (killed), or is still running
        ("caskit_version", "TEXT"),
        ("git_sha", "TEXT"),
        ("matrices", "TEXT"),  # names, comma-separated
        ("hosts", "TEXT"),  # JSON: per host its KVM mode, arch, CPU, error and QEMU builds' versions
        ("controller", "TEXT"),
        ("out", "TEXT"),  # the run directory on the controller
        ("cells_planned", "INTEGER"),
        ("resumed_from", "TEXT"),  # the run this one resumed (its unfinished cells ran here)
        # JSON: the planned cell ids in order, so a run read back from the history knows the
        # cells that never reported ("not run") as its results.json does.
        ("planned", "TEXT"),
        # JSON {"index", "of", "plan": [every cell id of the whole plan], "plan_specs"} for a run of one shard
        # (caskit run --shard K/N): `caskit report --run-id` finds its sibling shards by it.
        ("shard", "TEXT"),
    ),
    "cells": (
        ("run_id", "TEXT NOT NULL REFERENCES runs(id)"),
        ("cell_id", "TEXT NOT NULL"),
        ("verdict", "TEXT NOT NULL"),
        ("reason", "TEXT"),
        ("expected_mode", "TEXT"),
        ("expected_rule", "TEXT"),
        ("observed_mode", "TEXT"),
        ("duration_s", "DOUBLE PRECISION"),
        ("started", "TEXT"),
        ("kit", "TEXT"),  # the guest kit's content key
        ("qemu_version", "TEXT"),
        ("attempts", "INTEGER"),  # 1, or more with --rerun-failures
        ("ran_in", "TEXT"),  # the run that executed it: a resumed run keeps cells of the one it resumes
        ("record", "TEXT NOT NULL"),  # the cell's result.json
        ("PRIMARY KEY", "(run_id, cell_id)"),
    ),
}
INDEXES = (
    ("cells_by_cell", "cells", ("cell_id", "run_id")),
    ("runs_by_started", "runs", ("started",)),
)
CELL_COLUMNS = tuple(c for c, _ in TABLES["cells"] if c != "PRIMARY KEY")
RUN_COLUMNS = tuple(c for c, _ in TABLES["runs"])


class HistoryError(CaskitError):
    """The history database cannot be opened or written."""


def schema_sql() -> list[str]:
    """The DDL for both engines (pure)."""
    out = []
    for table, cols in TABLES.items():
        body = ", ".join(f"{name} {decl}" if name != "PRIMARY KEY" else f"PRIMARY KEY {decl}" for name, decl in cols)
        out.append(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
    out += [f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({', '.join(cols)})" for name, table, cols in INDEXES]
    return out


def _upsert_sql(table: str, cols: tuple[str, ...], key: tuple[str, ...], keep: tuple[str, ...] = ()) -> str:
    """INSERT ... ON CONFLICT DO UPDATE, understood by SQLite (3.24+) and PostgreSQL alike.
    Columns in `keep` are updated only where the new value is not NULL (a minimal row never
    erases what a fuller one wrote)."""
    sets = ", ".join(f"{c} = COALESCE(excluded.{c}, {table}.{c})" if c in keep else f"{c} = excluded.{c}"
                     for c in cols if c not in key)
    return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")


# --- URLs -------------------------------------------------------------------------------------

def default_url(out: Path) -> str:
    """History beside the run directories: runs kept side by side share one history
    (reports/<run-id> -> reports/history.sqlite)."""
    return f"sqlite://{(Path(out).resolve().parent / DEFAULT_NAME)}"


def resolve_url(given: str | None, out: Path | None = None) -> str | None:
    """--db, else $CASKIT_DB, else the default beside `out` (or under reports/). None: `off`."""
    url = given or os.environ.get("CASKIT_DB") or ""
    if url.strip().lower() in ("off", "none"):
        return None
    if url:
        return url
    if out is None:
        return f"sqlite://{reports_dir().resolve() / DEFAULT_NAME}"
    return default_url(out)


def parse_url(url: str) -> tuple[str, str]:
    """(engine, target): ("sqlite", path) or ("postgresql", the URL). A bare path is SQLite."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql", url
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:"):]
        # sqlite:///abs/path (an empty authority, as in file:///) or sqlite:relative/path
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise ConfigError("--db", None, f"{url!r} names no file")
        return "sqlite", unquote(path)
    if "://" in url:
        raise ConfigError("--db", None, f"{redact(url)!r}: unknown database; use sqlite:///PATH or postgresql://...")
    return "sqlite", url


def redact(url: str) -> str:
    """The URL without its password, for messages and run.json."""
    try:
        u = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if u.password is None:
        return url
    netloc = f"{u.username}:***@{u.hostname}" + (f":{u.port}" if u.port else "")
    return u._replace(netloc=netloc).geturl()


# --- connections -------------------------------------------------------------------------------

@dataclass
class Db:
    """An open history: one connection, in autocommit mode except inside `transaction()`."""

    url: str
    engine: str
    conn: Any

    def _sql(self, sql: str) -> str:
        # Every statement is written with ? placeholders; psycopg wants %s (and there is no
        # literal % or ? in our SQL).
        return sql.replace("?", "%s") if self.engine == "postgresql" else sql

    def execute(self, sql: str, params: Iterable = ()) -> Any:
        cur = self.conn.cursor()
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        return list(self.execute(sql, params).fetchall())

    def transaction(self):
        return _Transaction(self)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Db":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Transaction:
    """One write transaction. Both connections are in autocommit mode outside of these, so a
    read never leaves a transaction open. SQLite: BEGIN IMMEDIATE takes the write lock up front
    (waiting up to the busy timeout), so two writers never both read and then deadlock
    upgrading. PostgreSQL: psycopg's own transaction block."""

    def __init__(self, db: Db):
        self.db = db
        self._pg = None

    def __enter__(self) -> Db:
        if self.db.engine == "sqlite":
            self.db.conn.execute("BEGIN IMMEDIATE")
        else:
            self._pg = self.db.conn.transaction()
            self._pg.__enter__()
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pg is not None:
            self._pg.__exit__(exc_type, exc, tb)
        elif exc_type is None:
            self.db.conn.execute("COMMIT")
        else:
            self.db.conn.execute("ROLLBACK")


def connect(url: str) -> Db:
    """Open (and create or check the schema of) the history at `url`."""
    engine, target = parse_url(url)
    try:
        if engine == "sqlite":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            # WAL is a property of the file: set once, every later connection finds it.
            mode = _wal(conn)
            if str(mode).lower() != "wal":
                raise HistoryError(f"{target}: SQLite refused WAL mode (journal_mode is {mode})")
        else:
            try:
                import psycopg
            except ImportError as e:
                raise HistoryError("a PostgreSQL history needs psycopg 3: pip install 'caskit[postgres]'") from e
            conn = psycopg.connect(target, connect_timeout=15, autocommit=True)
    except (sqlite3.Error, OSError) as e:
        raise HistoryError(f"cannot open the history {redact(url)}: {e}") from e
    except HistoryError:
        raise
    except Exception as e:  # psycopg.Error and its kin: the server's or the network's word
        raise HistoryError(f"cannot open the history {redact(url)}: {e}") from e
    db = Db(url, engine, conn)
    try:
        _ensure_schema(db)
    except HistoryError:
        db.close()
        raise
    except Exception as e:
        db.close()
        raise HistoryError(f"history {redact(url)}: cannot create its tables: {e}") from e
    return db


def _stored_version(db: Db) -> int | None:
    """The schema version the database holds; None before its tables exist."""
    try:
        rows = db.query("SELECT value FROM caskit_meta WHERE key = ?", ("schema_version",))
    except Exception:  # no such table (sqlite3.OperationalError, psycopg's UndefinedTable)
        return None
    return int(rows[0][0]) if rows else None


def _has_schema(db: Db) -> bool:
    """Whether the version table exists, asked without an error (an error inside a PostgreSQL
    transaction aborts it)."""
    if db.engine == "postgresql":
        return bool(db.query("SELECT to_regclass('caskit_meta') IS NOT NULL")[0][0])
    return bool(db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'caskit_meta'"))


def _ensure_schema(db: Db) -> None:
    # DDL only while the schema is missing: even CREATE INDEX IF NOT EXISTS takes a table lock in
    # PostgreSQL before it finds the index there, and that deadlocks against writers committing
    # cells. The tables and the version row appear in one transaction, so a version row means
    # the whole schema is there.
    version = _stored_version(db)
    if version is None:
        with db.transaction():
            if db.engine == "postgresql":
                db.execute("SELECT pg_advisory_xact_lock(?)", (PG_SCHEMA_LOCK,))
            # Another process may have made it while we waited for the lock: then it is already
            # taking writes, and our DDL would deadlock against them.
            if not _has_schema(db):
                for stmt in schema_sql():
                    db.execute(stmt)
                db.execute("INSERT INTO caskit_meta (key, value) VALUES (?, ?)", ("schema_version", str(SCHEMA_VERSION)))
        version = _stored_version(db)
    if version is not None and version < SCHEMA_VERSION:
        with db.transaction():
            if db.engine == "postgresql":
                db.execute("SELECT pg_advisory_xact_lock(?)", (PG_SCHEMA_LOCK,))
            if (_stored_version(db) or 0) < SCHEMA_VERSION:
                for added_in, table, col, decl in ADDED_COLUMNS:
                    if version < added_in:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")
                db.execute("UPDATE caskit_meta SET value = ? WHERE key = ?", (str(SCHEMA_VERSION), "schema_version"))
        version = _stored_version(db)
    if version is not None and version > SCHEMA_VERSION:
        raise HistoryError(f"history {redact(db.url)} has schema version {version}, newer than this "
                           f"caskit's {SCHEMA_VERSION}: upgrade caskit")


# --- rows from records (pure) --------------------------------------------------------------------

def hosts_summary(hosts: dict) -> dict:
    """Per host what matters when comparing runs: KVM mode, arch, CPU, QEMU builds, error."""
    out = {}
    for name, f in (hosts or {}).items():
        f = f or {}
        out[name] = {"kvm_mode": f.get("kvm_mode"), "arch": f.get("arch"), "cpu": f.get("cpu"),
                     "qemu": {b.get("name"): b.get("version") for b in f.get("qemu", ()) if isinstance(b, dict)},
                     **({"error": f["error"]} if f.get("error") else {})}
    return out


def run_row(run: dict, out: Path | str | None = None) -> dict:
    return {
        "id": run["id"],
        "started": run.get("start"),
        "ended": run.get("end"),
        "caskit_version": run.get("caskit_version"),
        "git_sha": run.get("git_sha"),
        "matrices": ",".join(m.get("name", "?") if isinstance(m, dict) else str(m) for m in run.get("matrices", ())),
        "hosts": json.dumps(hosts_summary(run.get("hosts", {})), sort_keys=True),
        "controller": run.get("controller"),
        "out": str(out) if out is not None else None,
        "cells_planned": len(run["cell_order"]) if run.get("cell_order") is not None else None,
        "resumed_from": run.get("resumed_from"),
        "planned": json.dumps(run["cell_order"]) if run.get("cell_order") is not None else None,
        # With plan_specs: a merge from the history alone places every cell, run or not.
        "shard": json.dumps({k: run["shard"].get(k) for k in ("index", "of", "plan", "plan_specs")})
        if run.get("shard") else None,
    }


def cell_row(run_id: str, record: dict) -> dict:
    exp, obs = record.get("expected") or {}, record.get("observed") or {}
    return {
        "run_id": run_id,
        "cell_id": record["id"],
        "verdict": record.get("verdict", "ERROR"),
        "reason": record.get("reason"),
        "expected_mode": exp.get("mode"),
        "expected_rule": exp.get("rule"),
        "observed_mode": obs.get("mode"),
        "duration_s": record.get("duration_s"),
        "started": record.get("started"),
        "kit": record.get("kit"),
        "qemu_version": record.get("qemu_version"),
        "attempts": len(record.get("attempts") or ()) or 1,
        "ran_in": record.get("run_id") or run_id,
        "record": json.dumps(record, sort_keys=True, default=str),
    }


# --- writes ----------------------------------------------------------------------------------------

def _transient(e: Exception) -> bool:
    """A write another writer got in the way of: worth trying again (PostgreSQL picks a deadlock
    victim; SQLite gives up after its busy timeout)."""
    name = type(e).__name__
    return name in ("DeadlockDetected", "SerializationFailure") or (
        isinstance(e, sqlite3.OperationalError) and "locked" in str(e))


def _write(db: Db, fn, tries: int = 3) -> None:
    """`fn(db)` in one transaction, retried when it lost to another writer."""
    for i in range(tries):
        try:
            with db.transaction():
                fn(db)
            return
        except Exception as e:
            if i == tries - 1 or not _transient(e):
                raise


def _put_run(db: Db, row: dict) -> None:
    # Everything but the id may be NULL in a minimal row: never let it erase a fuller one.
    keep = tuple(c for c in RUN_COLUMNS if c != "id")
    db.execute(_upsert_sql("runs", RUN_COLUMNS, ("id",), keep), [row.get(c) for c in RUN_COLUMNS])


def record_run(db: Db, run: dict, out: Path | str | None = None) -> None:
    row = run_row(run, out)
    _write(db, lambda d: _put_run(d, row))


def end_run(db: Db, run_id: str, ended: str) -> None:
    _write(db, lambda d: _put_run(d, {"id": run_id, "ended": ended}))


def _put_cell(db: Db, row: dict) -> None:
    db.execute(_upsert_sql("cells", CELL_COLUMNS, ("run_id", "cell_id")), [row[c] for c in CELL_COLUMNS])


def commit_cell(db: Db, run_id: str, record: dict) -> None:
    """One cell, in one transaction. The run's row is made if missing (a run whose start could
    not be recorded still keeps its cells). Every writer takes the run's row first, so two
    writers of one run queue there instead of deadlocking over cells."""
    row = cell_row(run_id, record)

    def put(d: Db) -> None:
        _put_run(d, {"id": run_id})
        _put_cell(d, row)
    _write(db, put)


def commit_results(db: Db, results: dict, out: Path | str | None = None) -> int:
    """A whole results.json (a run's end, or an older run imported): the run and every cell."""
    run = results["run"]
    rows = [cell_row(run["id"], rec) for rec in results["cells"]]

    def put(d: Db) -> None:
        _put_run(d, run_row(run, out))
        for row in rows:
            _put_cell(d, row)
    _write(db, put)
    return len(rows)


# --- reads -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSummary:
    id: str
    started: str | None
    ended: str | None
    caskit_version: str | None
    git_sha: str | None
    matrices: str | None
    cells_planned: int | None
    resumed_from: str | None
    counts: dict[str, int]


def list_runs(db: Db, limit: int = 20) -> list[RunSummary]:
    """Newest first, with their verdict counts."""
    runs = db.query("SELECT id, started, ended, caskit_version, git_sha, matrices, cells_planned, resumed_from "
                    "FROM runs ORDER BY started DESC, id DESC LIMIT ?", (limit,))
    if not runs:
        return []
    ids = [r[0] for r in runs]
    counts: dict[str, dict[str, int]] = {i: {} for i in ids}
    marks = ", ".join("?" for _ in ids)
    for run_id, verdict, n in db.query(f"SELECT run_id, verdict, COUNT(*) FROM cells WHERE run_id IN ({marks}) "
                                       "GROUP BY run_id, verdict", ids):
        counts[run_id][verdict] = int(n)
    return [RunSummary(*r, counts=counts[r[0]]) for r in runs]


@dataclass(frozen=True)
class CellAt:
    run_id: str
    run_started: str | None
    verdict: str
    observed_mode: str | None
    expected_mode: str | None
    duration_s: float | None
    attempts: int
    qemu_version: str | None
    kit: str | None
    ran_in: str | None
    reason: str | None


def cell_history(db: Db, cell_id: str, limit: int = 50) -> list[CellAt]:
    """A cell's verdicts and timings across runs, newest first."""
    rows = db.query("SELECT c.run_id, r.started, c.verdict, c.observed_mode, c.expected_mode, c.duration_s, "
                    "c.attempts, c.qemu_version, c.kit, c.ran_in, c.reason FROM cells c JOIN runs r ON r.id = c.run_id "
                    "WHERE c.cell_id = ? ORDER BY r.started DESC, c.run_id DESC LIMIT ?", (cell_id, limit))
    return [CellAt(*r) for r in rows]


def cells_like(db: Db, prefix: str, limit: int = 20) -> list[str]:
    """Cell ids starting with `prefix` (a mistyped or shortened id gets suggestions)."""
    # LIKE's `_` matches any one character: a prefix with underscores may match a little more.
    return [r[0] for r in db.query("SELECT DISTINCT cell_id FROM cells WHERE cell_id LIKE ? ORDER BY cell_id LIMIT ?",
                                   (prefix + "%", limit))]


def flaky_cells(db: Db, runs: int = 30) -> list[tuple[str, int, int]]:
    """Cells that were FLAKY in any of the last `runs` runs: (cell id, FLAKY count, runs seen), most
    often flaky first. A farm pages on consistent failures only and watches this list."""
    recent = [r[0] for r in db.query("SELECT id FROM runs ORDER BY started DESC, id DESC LIMIT ?", (runs,))]
    if not recent:
        return []
    marks = ", ".join("?" for _ in recent)
    rows = db.query(f"SELECT cell_id, SUM(CASE WHEN verdict = 'FLAKY' THEN 1 ELSE 0 END), COUNT(*) FROM cells "
                    f"WHERE run_id IN ({marks}) GROUP BY cell_id", recent)
    return sorted(((c, int(f), int(n)) for c, f, n in rows if f), key=lambda x: (-x[1], x[0]))


def run_results(db: Db, run_id: str) -> dict | None:
    """A run as results.json has it (run row and cell records), for `caskit diff RUN_ID ...`."""
    run = db.query(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE id = ?", (run_id,))
    if not run:
        return None
    r = dict(zip(RUN_COLUMNS, run[0]))
    cells = [json.loads(x[0]) for x in db.query("SELECT record FROM cells WHERE run_id = ? ORDER BY cell_id", (run_id,))]
    planned = json.loads(r["planned"]) if r.get("planned") else None
    run_ = {"id": r["id"], "start": r["started"], "end": r["ended"], "caskit_version": r["caskit_version"],
            "git_sha": r["git_sha"], "matrices": [{"name": m} for m in (r["matrices"] or "").split(",") if m],
            "hosts_summary": json.loads(r["hosts"] or "{}"), "from_history": redact(db.url)}
    if planned is not None:
        run_["cell_order"] = planned
    if r.get("shard"):
        run_["shard"] = json.loads(r["shard"])
    run_["out"] = r["out"]
    # The same view as the run directory's: every planned cell, "not run" where none reported.
    return {"run": run_, "cells": planned_records(planned, cells)}


def sibling_shards(db: Db, shard: dict) -> list[dict]:
    """The runs of every shard of `shard`'s plan (the same plan, split the same N ways), one per
    shard index: the latest started, so a shard resumed after it was killed counts by its
    resumed run, which holds every cell of it. Results as run_results() gives them."""
    latest: dict[int, tuple[str, str]] = {}
    for rid, started, sh in db.query("SELECT id, started, shard FROM runs WHERE shard IS NOT NULL"):
        s = json.loads(sh)
        if (s.get("of"), s.get("plan")) != (shard["of"], shard["plan"]):
            continue
        k = int(s["index"])
        if k not in latest or (started or "") > latest[k][0]:
            latest[k] = (started or "", rid)
    return [res for _, (_, rid) in sorted(latest.items()) if (res := run_results(db, rid)) is not None]


def exists(url: str) -> bool:
    """Whether there is a history to read at `url` (a SQLite file not yet made is none; a server
    is asked when connecting)."""
    engine, target = parse_url(url)
    return engine != "sqlite" or Path(target).exists()


def load_run_results(run_id: str, url: str | None = None) -> dict | None:
    """A run by its id from the history (--db URL, else $CASKIT_DB, else reports/history.sqlite);
    None when the history is off, absent, or has no such run."""
    url = resolve_url(url)
    if url is None or not exists(url):
        return None
    with connect(url) as db:
        return run_results(db, run_id)


# --- text (pure) ---------------------------------------------------------------------------------

VERDICT_ORDER = ("PASS", "FLAKY", "XFAIL", "SKIP", "FAIL", "ERROR")


def format_runs(runs: list[RunSummary]) -> str:
    if not runs:
        return "no runs in the history"
    lines = [f"{'run':<22} {'started':<20} {'ended':<20} {'cells':>5}  verdicts"]
    for r in runs:
        total = sum(r.counts.values())
        cells = f"{total}" + (f"/{r.cells_planned}" if r.cells_planned and r.cells_planned != total else "")
        counts = ", ".join(f"{v} {r.counts[v]}" for v in VERDICT_ORDER if r.counts.get(v)) or "-"
        counts += "".join(f", {v} {n}" for v, n in sorted(r.counts.items()) if v not in VERDICT_ORDER)
        extra = []
        if r.matrices:
            extra.append(r.matrices)
        if r.resumed_from:
            extra.append(f"resumed {r.resumed_from}")
        if r.git_sha:
            extra.append(r.git_sha[:10])
        lines.append(f"{r.id:<22} {r.started or '-':<20} {r.ended or 'unfinished':<20} {cells:>5}  {counts}"
                     + (f"  [{'; '.join(extra)}]" if extra else ""))
    return "\n".join(lines)


def format_cell(cell_id: str, rows: list[CellAt]) -> str:
    if not rows:
        return f"{cell_id}: not in the history"
    lines = [cell_id, f"{'run':<22} {'started':<20} {'verdict':<6} {'mode':<5} {'s':>7} {'tries':>5}  qemu / kit / reason"]
    for r in rows:
        d = f"{r.duration_s:.1f}" if r.duration_s is not None else "-"
        ran = f" (ran in {r.ran_in})" if r.ran_in and r.ran_in != r.run_id else ""
        lines.append(f"{r.run_id:<22} {r.run_started or '-':<20} {r.verdict:<6} {r.observed_mode or '-':<5} {d:>7} "
                     f"{r.attempts:>5}  {r.qemu_version or '-'} / {r.kit or '-'} / {(r.reason or '')[:100]}{ran}")
    durations = [r.duration_s for r in rows if r.duration_s is not None]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    lines.append(f"{len(rows)} run(s): " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items()))
                 + (f"; duration min {min(durations):.1f} s, max {max(durations):.1f} s" if durations else ""))
    return "\n".join(lines)
