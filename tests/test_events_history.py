"""``ion events --db``: the history the monitor keeps, filtered and printed like live events."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from test_cli_fleet import ion

from broker.monitor.store import MonitorStore

NOW = time.time_ns() // 1_000_000


def store_with_events(path: Path) -> Path:
    MonitorStore(path).close()  # the schema, as the monitor creates it
    rows = [
        # (minutes ago, node, ion, pipeline, type, severity, message, attributes)
        (90, "edge-1", "kmeans", "inference", "health.drift", "warning", "psi 0.4", {"psi": "0.4"}),
        (30, "edge-2", "kmeans", "inference", "model.activated", "info", "v2", {}),
        (20, "cloud-1", "kmeans", "training", "trigger.fired", "info", "drift on 2 nodes", {}),
        (10, "monitor", "kmeans", "", "alert.fired", "error", "drift over 0.2", {}),
        (5, "edge-1", "other", "", "node.started", "info", "", {}),
    ]
    with sqlite3.connect(path) as con:
        con.executemany(
            "INSERT INTO events (time_ms, node_id, ion, pipeline, type, severity, subject, "
            "message, attributes_json) VALUES (?, ?, ?, ?, ?, ?, '', ?, ?)",
            [(NOW - m * 60_000, n, i, p, t, s, msg, json.dumps(a))
             for m, n, i, p, t, s, msg, a in rows],
        )  # fmt: skip
    return path


def records(*args: str) -> list[dict[str, object]]:
    r = ion("events", *args, "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_history_is_read_filtered_and_oldest_first(tmp_path: Path) -> None:
    db = str(store_with_events(tmp_path / "monitor.db"))
    every = records("--db", db)
    assert [e["type"] for e in every] == [
        "health.drift", "model.activated", "trigger.fired", "alert.fired", "node.started"
    ]  # fmt: skip
    assert every[0]["attributes"] == {"psi": "0.4"} and every[0]["source"] == "pipeline"
    assert every[3]["source"] == "alert" and every[4]["source"] == "node"
    assert [e["type"] for e in records("--db", db, "--since", "1h", "--ion", "kmeans")] == [
        "model.activated", "trigger.fired", "alert.fired"
    ]  # fmt: skip
    assert [e["node_id"] for e in records("--db", db, "--severity", "warning")] == [
        "edge-1", "monitor"
    ]  # fmt: skip
    assert [e["type"] for e in records("--db", db, "--type", "model.*", "--node", "edge-2")] == [
        "model.activated"
    ]
    assert [e["type"] for e in records("--db", db, "--limit", "2")] == [
        "alert.fired",
        "node.started",
    ]  # fmt: skip (the newest two)
    plain = ion("events", "--db", db, "--type", "trigger.*")
    assert plain.returncode == 0 and "trigger.fired" in plain.stdout
    assert "drift on 2 nodes" in plain.stdout and "kmeans/training" in plain.stdout
    none = ion("events", "--db", db, "--ion", "nothing")
    assert none.returncode == 0 and f"no events in {db}" in none.stdout


def test_a_missing_or_foreign_file_is_one_clear_line(tmp_path: Path) -> None:
    r = ion("events", "--db", str(tmp_path / "nope.db"))
    assert r.returncode != 0 and "no monitor store at" in r.stderr
    assert "Traceback" not in r.stderr
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.commit()
    r = ion("events", "--db", str(other))
    assert r.returncode != 0 and "is not a monitor store" in r.stderr
    assert "Traceback" not in r.stderr
