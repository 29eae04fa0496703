"""Retention and downsampling of the monitor's time series.

Time series (``stats``, ``drift``, ``queue_history``) are kept raw for ``raw_ms``; older rows
are folded into one row per minute (per series) and dropped after ``keep_ms``.  Events and
resolved alerts are dropped after ``events_keep_ms``; the audit trail (``decisions``) is kept.

Folding a minute: ``stats`` rows become their average weighted by ``samples`` (the sum of
``samples`` is how many raw points the row stands for); ``drift`` rows the mean score, the
highest threshold and the summed sample counts; ``queue_history`` the mean depth and bytes
and the largest oldest-message age.  A pass folds only rows between the last pass's cut-off
(kept in ``meta`` as ``downsampled_until.<table>``) and this one's, so each row is folded once
and a pass costs what arrived since the last one.  ``plan`` decides the windows (pure, takes
``now``); ``apply_retention`` runs the SQL in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from ion.errors import ConfigError

from .store import MonitorStore

MINUTE_MS = 60_000

# table -> (series columns, aggregate expressions, in schema column order)
_FOLD: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "stats": (
        ("node_id", "ion", "pipeline", "component", "name"),
        {"value": "SUM(value * samples) / SUM(samples)", "samples": "SUM(samples)"},
    ),
    "drift": (
        ("node_id", "ion", "pipeline", "feature", "metric", "model_version"),
        {"score": "AVG(score)", "threshold": "MAX(threshold)", "samples": "SUM(samples)"},
    ),
    "queue_history": (
        ("node_id", "link"),
        {"depth": "CAST(ROUND(AVG(depth)) AS INTEGER)",
         "bytes": "CAST(ROUND(AVG(bytes)) AS INTEGER)",
         "oldest_age_ms": "MAX(oldest_age_ms)"},
    ),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """raw_ms: keep time series raw this long (6 h); keep_ms: drop them after this (7 days);
    events_keep_ms: drop events and resolved alerts after this (30 days)."""

    raw_ms: int = 6 * 3_600_000
    keep_ms: int = 7 * 86_400_000
    events_keep_ms: int = 30 * 86_400_000

    def __post_init__(self) -> None:
        if self.raw_ms < MINUTE_MS:
            raise ConfigError("raw time series must be kept at least one minute")
        if self.keep_ms <= self.raw_ms:
            raise ConfigError("time series must be kept longer than they are kept raw")
        if self.events_keep_ms <= 0:
            raise ConfigError("events must be kept for a positive time")


@dataclass(frozen=True, slots=True)
class Window:
    table: str
    fold_from_ms: int  # fold rows with fold_from_ms <= time_ms < fold_to_ms
    fold_to_ms: int
    drop_before_ms: int


def plan(settings: RetentionSettings, now_ms: int, folded_until: dict[str, int]) -> list[Window]:
    """What one pass does to each time-series table (``folded_until``: the last cut-offs)."""
    cut = (now_ms - settings.raw_ms) // MINUTE_MS * MINUTE_MS
    drop = now_ms - settings.keep_ms
    return [Window(table, max(folded_until.get(table, 0), drop), cut, drop) for table in _FOLD]


@dataclass(frozen=True, slots=True)
class RetentionReport:
    folded: int  # raw rows replaced by per-minute rows
    written: int  # per-minute rows written
    dropped: int  # rows deleted for age


def apply_retention(
    store: MonitorStore, settings: RetentionSettings, now_ms: int
) -> RetentionReport:
    conn = store.db.conn
    folded_until = {table: int(store.meta(f"downsampled_until.{table}") or 0) for table in _FOLD}
    folded = written = dropped = 0
    with store.db.atomic():
        for w in plan(settings, now_ms, folded_until):
            keys, aggregates = _FOLD[w.table]
            if w.fold_to_ms > w.fold_from_ms:
                # Table and column names below come from _FOLD, never from input.
                top_sql = f"SELECT COALESCE(MAX(rowid), 0) FROM [{w.table}]"  # noqa: S608
                (top,) = conn.execute(top_sql).fetchone()
                columns = ["time_ms", *keys, *aggregates]
                select = ", ".join(
                    [f"(time_ms / {MINUTE_MS}) * {MINUTE_MS}", *keys, *aggregates.values()]
                )
                cur = conn.execute(
                    f"INSERT INTO [{w.table}] ({', '.join(columns)}) SELECT {select} "  # noqa: S608
                    f"FROM [{w.table}] WHERE time_ms >= ? AND time_ms < ? "
                    f"GROUP BY time_ms / {MINUTE_MS}, {', '.join(keys)}",
                    (w.fold_from_ms, w.fold_to_ms),
                )
                written += cur.rowcount
                cur = conn.execute(
                    f"DELETE FROM [{w.table}] WHERE time_ms >= ? AND time_ms < ? "  # noqa: S608
                    "AND rowid <= ?",
                    (w.fold_from_ms, w.fold_to_ms, top),
                )
                folded += cur.rowcount
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (f"downsampled_until.{w.table}", str(w.fold_to_ms)),
                )
            drop_sql = f"DELETE FROM [{w.table}] WHERE time_ms < ?"  # noqa: S608
            cur = conn.execute(drop_sql, (w.drop_before_ms,))
            dropped += cur.rowcount
        old = now_ms - settings.events_keep_ms
        dropped += conn.execute("DELETE FROM events WHERE time_ms < ?", (old,)).rowcount
        dropped += conn.execute(
            "DELETE FROM alerts WHERE state = 'resolved' AND resolved_ms < ?", (old,)
        ).rowcount
    return RetentionReport(folded, written, dropped)
