"""harness/history.py on both backends: SQLite files, and a real PostgreSQL server the tests start
(tests/pgserver.py; skipped with the reason only where Debian's postgresql package is missing)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from harness import history
from harness.cell import Expected, Observed


from .factories import make_cell


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'h.sqlite'}"
    return request.getfixturevalue("pg").createdb(f"t_{uuid.uuid4().hex[:12]}")


def run(run_id: str, start: str, *, end: str | None = "2026-01-01T01:00:00Z", planned: int = 2, **kw) -> dict:
    return {"id": run_id, "start": start, "end": end, "caskit_version": "0.1.0", "git_sha": "abc123def456",
            "controller": "box", "matrices": [{"name": "quick", "path": "x"}],
            "hosts": {"local": {"kvm_mode": "tcg-only", "arch": "x86_64", "cpu": "Xeon",
                                "qemu": [{"name": "system", "version": "7.2.22"}]}},
            "cell_order": [f"c{i}" for i in range(planned)], **kw}


def cell(verdict: str = "PASS", mode: str | None = "xive", duration: float = 3.0, **axes) -> dict:
    c = make_cell(**axes)
    return {**c.to_dict(), "expected": Expected(mode="xive", rule="r", source="s").to_dict(),
            "observed": Observed(mode=mode).to_dict(), "verdict": verdict, "reason": f"{verdict} because",
            "duration_s": duration, "started": "2026-01-01T00:00:01Z", "kit": "kit1", "qemu_version": "7.2.22",
            "logs": {}}


def test_urls():
    assert history.parse_url("sqlite:///abs/h.sqlite") == ("sqlite", "/abs/h.sqlite")
    assert history.parse_url("sqlite:rel/h.sqlite") == ("sqlite", "rel/h.sqlite")
    assert history.parse_url("reports/h.sqlite") == ("sqlite", "reports/h.sqlite")
    assert history.parse_url("postgresql://u@h:5432/db") == ("postgresql", "postgresql://u@h:5432/db")
    assert history.parse_url("postgres://u@h/db")[0] == "postgresql"
    with pytest.raises(history.ConfigError, match="unknown database"):
        history.parse_url("mysql://u:secret@h/db")
    assert history.redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert history.redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_default_url_is_beside_the_run_directories(tmp_path, monkeypatch):
    monkeypatch.delenv("CASKIT_DB", raising=False)
    assert history.resolve_url(None, tmp_path / "reports" / "run1") == f"sqlite://{tmp_path / 'reports' / 'history.sqlite'}"
    monkeypatch.setenv("CASKIT_DB", "postgresql://x@y/z")
    assert history.resolve_url(None, tmp_path / "r") == "postgresql://x@y/z"
    assert history.resolve_url("sqlite:///a", tmp_path / "r") == "sqlite:///a"  # --db wins
    assert history.resolve_url("off", tmp_path / "r") is None


def test_schema_is_one_text_for_both_engines():
    sql = history.schema_sql()
    assert sql[0].startswith("CREATE TABLE IF NOT EXISTS caskit_meta")
    cells = next(s for s in sql if "TABLE IF NOT EXISTS cells" in s)
    assert "PRIMARY KEY (run_id, cell_id)" in cells and "record TEXT NOT NULL" in cells
    assert any(s.startswith("CREATE INDEX IF NOT EXISTS cells_by_cell") for s in sql)


def test_runs_and_cells_round_trip(url):
    a, b = cell("PASS", ic_mode="dual"), cell("FAIL", "xics", ic_mode="xics")
    with history.connect(url) as db:
        history.record_run(db, run("r1", "2026-01-01T00:00:00Z", end=None, cell_order=sorted([a["id"], b["id"]])),
                           "/out/r1")
        history.commit_cell(db, "r1", a)
        history.commit_cell(db, "r1", b)
        history.end_run(db, "r1", "2026-01-01T00:10:00Z")
        flaky = {**cell("FLAKY", ic_mode="dual"), "attempts": [{"attempt": 1, "verdict": "FAIL"}, {"attempt": 2, "verdict": "PASS"}]}
        history.commit_results(db, {"run": run("r2", "2026-01-02T00:00:00Z", cell_order=[flaky["id"], b["id"]]),
                                    "cells": [flaky, b]}, "/out/r2")
        # A run killed after one of its two planned cells: the history knows the other as not run.
        history.record_run(db, run("r3", "2026-01-03T00:00:00Z", end=None, cell_order=[a["id"], b["id"]]), "/out/r3")
        history.commit_cell(db, "r3", a)
    with history.connect(url) as db:  # a second connection sees it all: committed
        runs = history.list_runs(db)
        assert [r.id for r in runs] == ["r3", "r2", "r1"]  # newest first
        runs = runs[1:]
        assert runs[1].ended == "2026-01-01T00:10:00Z" and runs[1].counts == {"PASS": 1, "FAIL": 1}
        assert runs[0].counts == {"FLAKY": 1, "FAIL": 1} and runs[0].git_sha == "abc123def456"
        h = history.cell_history(db, a["id"])
        assert [(x.run_id, x.verdict, x.attempts) for x in h] == [("r3", "PASS", 1), ("r2", "FLAKY", 2), ("r1", "PASS", 1)]
        h = h[1:]
        assert h[1].duration_s == 3.0 and h[1].qemu_version == "7.2.22" and h[1].kit == "kit1"
        assert history.flaky_cells(db) == [(a["id"], 1, 3)]  # flaky in 1 of the 3 runs it ran in
        back = history.run_results(db, "r1")
        assert {c["id"]: c["verdict"] for c in back["cells"]} == {a["id"]: "PASS", b["id"]: "FAIL"}
        assert back["cells"][0] == json.loads(json.dumps(sorted([a, b], key=lambda c: c["id"])[0]))
        assert history.run_results(db, "nope") is None
        partial = history.run_results(db, "r3")
        assert [(c["id"], c["verdict"], bool(c.get("not_run"))) for c in partial["cells"]] == [
            (a["id"], "PASS", False), (b["id"], "ERROR", True)]
        assert history.cells_like(db, a["id"][:20]) == sorted({a["id"], b["id"]} & {x for x in (a["id"], b["id"])
                                                                                    if x.startswith(a["id"][:20])})
        hosts = json.loads(db.query("SELECT hosts FROM runs WHERE id = ?", ("r1",))[0][0])
        assert hosts == {"local": {"kvm_mode": "tcg-only", "arch": "x86_64", "cpu": "Xeon", "qemu": {"system": "7.2.22"}}}


def test_committing_a_cell_again_replaces_it_and_a_minimal_run_row_erases_nothing(url):
    c = cell("FAIL")
    with history.connect(url) as db:
        history.commit_cell(db, "r1", c)  # before the run's row: made for it
        history.record_run(db, run("r1", "2026-01-01T00:00:00Z"))
        history.commit_cell(db, "r1", {**c, "verdict": "PASS"})
        history.commit_cell(db, "r1", {**c, "verdict": "PASS"})
        assert [(x.verdict,) for x in history.cell_history(db, c["id"])] == [("PASS",)]
        assert history.list_runs(db)[0].started == "2026-01-01T00:00:00Z"


def test_a_failed_transaction_leaves_nothing(url):
    with history.connect(url) as db:
        with pytest.raises(RuntimeError):
            with db.transaction():
                history._put_run(db, {"id": "half"})
                raise RuntimeError("killed mid-cell")
        assert history.list_runs(db) == []


def test_sqlite_file_is_in_wal_mode(tmp_path):
    p = tmp_path / "h.sqlite"
    history.connect(f"sqlite://{p}").close()
    assert sqlite3.connect(p).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_newer_schema_is_refused(url):
    with history.connect(url) as db:
        with db.transaction():
            db.execute("UPDATE caskit_meta SET value = ? WHERE key = ?", ("99", "schema_version"))
    with pytest.raises(history.HistoryError, match="schema version 99"):
        history.connect(url)


WRITER = """
import sys
from harness import history
url, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = history.connect(url)
for i in range(n):
    history.commit_cell(db, "shared", {"id": f"{who}-{i}", "verdict": "PASS", "expected": {}, "observed": {}})
"""


def test_concurrent_writers_lose_nothing(url):
    """Processes (like xdist workers and farm controllers) creating the schema and committing at
    the same time: every cell arrives, nobody fails on a lock."""
    root = Path(__file__).resolve().parent.parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, f"w{k}", "40"], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1][-1500:] for o in outs]
    with history.connect(url) as db:
        assert db.query("SELECT COUNT(*) FROM cells WHERE run_id = ?", ("shared",))[0][0] == 160


def test_threads_share_nothing_but_the_file(tmp_path):
    """SQLite connections are per thread: one per writer, all waiting on the busy timeout."""
    url = f"sqlite://{tmp_path / 'h.sqlite'}"
    errors = []

    def write(k):
        try:
            with history.connect(url) as db:
                for i in range(25):
                    history.commit_cell(db, "t", {"id": f"{k}-{i}", "verdict": "PASS"})
        except Exception as e:  # collected: an assertion in a thread would be lost
            errors.append(e)

    ts = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    with history.connect(url) as db:
        assert history.list_runs(db)[0].counts == {"PASS": 100}


def test_unreachable_postgres_is_a_history_error_without_the_password():
    with pytest.raises(history.HistoryError) as e:
        history.connect("postgresql://u:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(e.value) and "u:***@127.0.0.1:1" in str(e.value)


def test_formatting():
    rs = [history.RunSummary("r2", "2026-01-02T00:00:00Z", None, "0.1.0", "abcdef0123456", "quick", 3, "r1",
                             {"PASS": 1, "FLAKY": 1})]
    text = history.format_runs(rs)
    assert "unfinished" in text and "2/3" in text and "PASS 1, FLAKY 1" in text and "resumed r1" in text
    assert history.format_runs([]) == "no runs in the history"
    rows = [history.CellAt("r2", "2026-01-02T00:00:00Z", "FLAKY", "xive", "xive", 7.5, 2, "7.2.22", "k", "r2", "passed"),
            history.CellAt("r3", "2026-01-03T00:00:00Z", "PASS", "xive", "xive", 3.5, 1, "7.2.22", "k", "r1", "ok")]
    t = history.format_cell("c", rows)
    assert "(ran in r1)" in t and t.splitlines()[-1] == "2 run(s): FLAKY 1, PASS 1; duration min 3.5 s, max 7.5 s"


def test_a_version_1_history_gains_the_planned_and_shard_columns(tmp_path):
    import sqlite3
    path = tmp_path / "v1.sqlite"
    con = sqlite3.connect(path)
    for stmt in history.schema_sql():
        con.execute(stmt.replace(", planned TEXT", "").replace(", shard TEXT", ""))
    con.execute("INSERT INTO caskit_meta (key, value) VALUES ('schema_version', '1')")
    con.commit()
    con.close()
    with history.connect(f"sqlite://{path}") as db:
        history.record_run(db, run("r1", "2026-01-01T00:00:00Z", cell_order=["c0"]), "/out/r1")
        assert [c["id"] for c in history.run_results(db, "r1")["cells"]] == ["c0"]  # not run, but known
        assert db.query("SELECT value FROM caskit_meta WHERE key = 'schema_version'") == [(str(history.SCHEMA_VERSION),)]
        shard = {"index": 2, "of": 3, "plan": ["c0", "c1"], "plan_specs": [{"id": "c1", "host": "h", "axes": {}}]}
        history.record_run(db, run("r2", "2026-01-01T00:01:00Z", cell_order=["c1"], shard=shard), "/out/r2")
        history.record_run(db, run("r3", "2026-01-01T00:02:00Z", cell_order=["c1"], shard=shard), "/out/r3")
        # A shard's latest run stands for it (a resumed one comes after the run it resumed).
        (sib,) = history.sibling_shards(db, shard)
        assert (sib["run"]["id"], sib["run"]["shard"], sib["run"]["out"]) == ("r3", shard, "/out/r3")
