"""The monitor's SQLite store (sqlite-utils) and retention, with an injected clock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from monitor_support import pipeline_topic, sequenced, stats, status, status_msg

from broker.monitor.core import MonitorCore, Writes
from broker.monitor.retention import (
    MINUTE_MS,
    RetentionSettings,
    apply_retention,
    plan,
)
from broker.monitor.schema import INDEXES, TABLES
from broker.monitor.store import MonitorStore, StoreError
from ion.errors import ConfigError
from ion.model.status import NodeState
from ion.topics import Channel

T0 = 1_700_000_000_000
HOUR = 3_600_000


def rows(store: MonitorStore, sql: str, *args: object) -> list[tuple[object, ...]]:
    return list(store.db.execute(sql, list(args)).fetchall())


def test_schema_is_created_as_declared_in_wal_mode(tmp_path: Path) -> None:
    store = MonitorStore(tmp_path / "m.db")
    try:
        for name, (columns, pk) in TABLES.items():
            table = store.table(name)
            assert list(table.columns_dict) == list(columns), name
            if pk:
                assert tuple(table.pks) == pk, name
        indexed = {(t, tuple(i.columns)) for t in TABLES for i in store.table(t).indexes}
        assert set(INDEXES) <= indexed
        assert rows(store, "PRAGMA journal_mode") == [("wal",)]
        assert store.meta("schema_version") == "1"
    finally:
        store.close()
    MonitorStore(tmp_path / "m.db").close()  # opening again changes nothing


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match="cannot open the monitor database"):
        MonitorStore(bad)


def test_writes_commit_and_a_restored_core_continues(tmp_path: Path) -> None:
    store = MonitorStore(tmp_path / "m.db")
    core = MonitorCore("mon")
    topic, payload = status_msg(status("edge-1", heartbeat_ms=1000), T0)
    core.ingest(topic, payload, T0)
    stats_topic = pipeline_topic("edge-1", Channel.STATS)
    for seq in (1, 2, 3):
        core.ingest(stats_topic, sequenced(stats(rate=float(seq)), stats_topic, "edge-1", seq, T0),
                    T0)  # fmt: skip
    core.tick(T0 + 10_000)  # silent: offline, an alert fires
    w = core.take()
    assert len(w.alerts) == 1
    assert store.apply(w) == w.row_count
    assert rows(store, "SELECT node_id, state FROM nodes") == [("edge-1", "offline")]
    assert rows(store, "SELECT count(*), sum(value) FROM stats") == [(3, 6.0)]
    assert rows(store, "SELECT rule, key, state FROM alerts") == [("node_offline", "edge-1",
                                                                    "firing")]  # fmt: skip
    assert rows(store, "SELECT last_sequence, gaps FROM streams") == [(3, 0)]
    store.close()

    store = MonitorStore(tmp_path / "m.db")
    again = MonitorCore("mon", restored=store.restore())
    again.ingest(stats_topic, sequenced(stats(rate=4.0), stats_topic, "edge-1", 4, T0), T0 + 20_000)
    again.tick(T0 + 20_000)
    w = again.take()
    assert w.alerts == []  # still firing from before: not again
    store.apply(w)
    assert rows(store, "SELECT last_sequence, received, gaps FROM streams") == [(4, 4, 0)]
    again.ingest(topic, status_msg(status("edge-1"), T0 + 21_000)[1], T0 + 21_000)
    w = again.take()
    assert [(a.id, a.state) for a in w.alerts] == [(1, "resolved")]
    store.apply(w)
    assert rows(store, "SELECT id, state, resolved_ms FROM alerts") == [
        (1, "resolved", T0 + 21_000)
    ]
    events = rows(store, "SELECT type FROM events ORDER BY id")
    assert events == [("alert.fired",), ("alert.resolved",)]
    store.close()


def test_deletes_and_upserts_of_children(tmp_path: Path) -> None:
    store = MonitorStore(tmp_path / "m.db")
    core = MonitorCore("mon")
    from ion.model.status import PipelineState

    s = status("edge-1", pipelines=(("a", PipelineState.RUNNING), ("b", PipelineState.RUNNING)))
    core.ingest(*status_msg(s, T0), T0)
    store.apply(core.take())
    s = status("edge-1", pipelines=(("a", PipelineState.CRASH_LOOP),))
    core.ingest(*status_msg(s, T0 + 1), T0 + 1)
    store.apply(core.take())
    assert rows(store, "SELECT pipeline, state FROM pipelines") == [("a", "crash_loop")]
    store.close()


# -- retention ------------------------------------------------------------------------------


def _stat_row(t: int, value: float, name: str = "rate") -> dict[str, object]:
    return {"time_ms": t, "node_id": "n", "ion": "i", "pipeline": "p", "component": "c",
            "name": name, "value": value, "samples": 1}  # fmt: skip


def test_retention_folds_old_rows_per_minute_and_drops_the_oldest(tmp_path: Path) -> None:
    store = MonitorStore(tmp_path / "m.db")
    settings = RetentionSettings(raw_ms=HOUR, keep_ms=24 * HOUR, events_keep_ms=2 * HOUR)
    now = T0 - T0 % MINUTE_MS + 30 * HOUR
    base = now - 3 * HOUR  # minute aligned, older than raw_ms: folded
    w = Writes()
    w.appends["stats"] = [
        _stat_row(base + 1_000, 1.0), _stat_row(base + 2_000, 2.0), _stat_row(base + 59_000, 6.0),
        _stat_row(base + 60_000, 10.0),  # the next minute
        _stat_row(base + 1_000, 5.0, "latency"),
        _stat_row(now - 10 * 60_000, 7.0),  # recent: stays raw
        _stat_row(now - 25 * HOUR, 9.0),  # older than keep_ms: dropped
    ]  # fmt: skip
    w.appends["queue_history"] = [
        {"time_ms": base + i * 1000, "node_id": "n", "link": "up", "depth": d, "bytes": 10 * d,
         "oldest_age_ms": d * 100}
        for i, d in enumerate((1, 2, 6))
    ]  # fmt: skip
    w.appends["events"] = [
        {"time_ms": now - 3 * HOUR, "node_id": "n", "ion": "", "pipeline": "", "type": "old",
         "severity": "info", "subject": "", "message": "", "attributes_json": "{}"},
        {"time_ms": now - HOUR, "node_id": "n", "ion": "", "pipeline": "", "type": "new",
         "severity": "info", "subject": "", "message": "", "attributes_json": "{}"},
    ]  # fmt: skip
    store.apply(w)
    report = apply_retention(store, settings, now)
    assert (report.folded, report.written) == (8, 4)
    assert rows(store, "SELECT time_ms - ?, name, value, samples FROM stats ORDER BY time_ms, name",
                base) == [
        (0, "latency", 5.0, 1),
        (0, "rate", 3.0, 3),
        (60_000, "rate", 10.0, 1),
        (3 * HOUR - 10 * 60_000, "rate", 7.0, 1),
    ]  # fmt: skip
    assert rows(store, "SELECT depth, bytes, oldest_age_ms FROM queue_history") == [(3, 30, 600)]
    assert rows(store, "SELECT type FROM events") == [("new",)]
    assert store.meta("downsampled_until.stats") == str(now - HOUR)
    # A second pass an hour later folds only what became old since; folded rows stay folded.
    again = apply_retention(store, settings, now + HOUR)
    assert (again.folded, again.written) == (1, 1)
    assert rows(store, "SELECT value, samples FROM stats WHERE name = 'rate' AND time_ms = ?",
                base) == [(3.0, 3)]  # fmt: skip
    # Folded rows are dropped at keep_ms like raw ones.
    apply_retention(store, settings, now + 22 * HOUR)
    assert rows(store, "SELECT time_ms - ? FROM stats", now) == [(-10 * 60_000,)]
    apply_retention(store, settings, now + 25 * HOUR)
    assert rows(store, "SELECT count(*) FROM stats") == [(0,)]
    store.close()


def test_retention_plan_and_settings() -> None:
    s = RetentionSettings(raw_ms=HOUR, keep_ms=2 * HOUR)
    now = 10 * HOUR + 30_000
    (w, *_) = plan(s, now, {"stats": 5 * HOUR})
    assert (w.fold_from_ms, w.fold_to_ms, w.drop_before_ms) == (8 * HOUR + 30_000, 9 * HOUR,
                                                                8 * HOUR + 30_000)  # fmt: skip
    with pytest.raises(ConfigError, match="longer"):
        RetentionSettings(raw_ms=HOUR, keep_ms=HOUR)
    with pytest.raises(ConfigError, match="one minute"):
        RetentionSettings(raw_ms=1000)


def test_a_directory_as_the_database_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the monitor database"):
        MonitorStore(tmp_path)


def test_offline_node_row_round_trips(tmp_path: Path) -> None:
    store = MonitorStore(tmp_path / "m.db")
    core = MonitorCore("mon")
    core.ingest(*status_msg(status("edge-1", NodeState.OFFLINE), T0), T0)
    store.apply(core.take())
    restored = store.restore()
    assert [n["state"] for n in restored.nodes] == ["offline"]
    assert restored.firing[0].rule == "node_offline"
    assert restored.next_alert_id == 2
    store.close()
    with sqlite3.connect(tmp_path / "m.db") as conn:  # an ordinary SQLite file for any reader
        assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (1,)
