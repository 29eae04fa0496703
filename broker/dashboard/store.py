"""Reading the monitor's store: the only module of the dashboard that talks to SQLite.

Read-only (``mode=ro``): the dashboard never writes, and in WAL mode it reads a consistent
snapshot while ``ion monitor`` writes.  A table the store does not have yet (an older or
empty store) reads as empty rather than failing, since the schema only ever grows.
Rows are plain dicts keyed by the schema's column names, with ``*_json`` columns decoded into
``*`` (``labels_json`` -> ``labels``); ``broker/monitor/schema.py`` is the contract.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ion.errors import UnavailableError

log = logging.getLogger(__name__)

Row = dict[str, Any]

# Series the charts may draw: table -> (the column naming the series, the value column).
SERIES_TABLES = {"stats": ("name", "value"), "drift": ("metric", "score")}
MAX_LIMIT = 1000


class StoreUnavailableError(UnavailableError):
    """The store file is missing, unreadable or not an SQLite database (yet)."""


@contextmanager
def open_store(path: Path) -> Iterator[Store]:
    """A read-only view of the store at ``path`` for one request."""
    if not path.exists():
        raise StoreUnavailableError(
            f"no monitor store at {path} yet: start `ion monitor` (it creates it) or pass "
            "the right --db"
        )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"cannot open the monitor store {path}: {exc}") from None
    try:
        conn.row_factory = sqlite3.Row
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailableError(f"{path} is not a monitor store: {exc}") from None
        yield Store(conn, frozenset(names))
    finally:
        conn.close()


def _decode(row: sqlite3.Row) -> Row:
    out: Row = {}
    names: list[str] = row.keys()
    for key in names:
        value = row[key]
        if key.endswith("_json"):
            try:
                out[key[:-5]] = json.loads(value) if value else None
            except ValueError:
                out[key[:-5]] = None  # a reader must survive a half-written or foreign value
        else:
            out[key] = value
    return out


class Store:
    """Queries over one read-only connection."""

    def __init__(self, conn: sqlite3.Connection, tables: frozenset[str]) -> None:
        self._conn = conn
        self.tables = tables

    @property
    def empty(self) -> bool:
        return "nodes" not in self.tables

    def _rows(self, table: str, sql: str, params: Sequence[object] = ()) -> list[Row]:
        if table not in self.tables:
            return []
        try:
            return [_decode(r) for r in self._conn.execute(sql, params)]
        except sqlite3.OperationalError as exc:
            # A column the writer does not have yet, or a lock past the timeout.
            log.warning("query on %s failed: %s", table, exc)
            return []

    # -- current state ---------------------------------------------------------------------

    def nodes(self) -> list[Row]:
        return self._rows("nodes", "SELECT * FROM nodes ORDER BY node_id")

    def node(self, node_id: str) -> Row | None:
        rows = self._rows("nodes", "SELECT * FROM nodes WHERE node_id = ?", (node_id,))
        return rows[0] if rows else None

    def pipelines(self, *, node_id: str | None = None, ion: str | None = None) -> list[Row]:
        where, params = _where(node_id=node_id, ion=ion)
        return self._rows(
            "pipelines",
            f"SELECT * FROM pipelines{where} ORDER BY ion, pipeline, node_id",  # noqa: S608
            params,
        )

    def links(self, node_id: str) -> list[Row]:
        return self._rows(
            "links", "SELECT * FROM links WHERE node_id = ? ORDER BY name", (node_id,)
        )

    def queues(self, node_id: str | None = None) -> list[Row]:
        where, params = _where(node_id=node_id)
        return self._rows(
            "queues",
            f"SELECT * FROM queues{where} ORDER BY node_id, link, traffic_class",  # noqa: S608
            params,
        )

    def node_models(self, *, node_id: str | None = None, ion: str | None = None) -> list[Row]:
        where, params = _where(node_id=node_id, ion=ion)
        return self._rows(
            "node_models",
            f"SELECT * FROM node_models{where} ORDER BY ion, edge, node_id",  # noqa: S608
            params,
        )

    def model_versions(self, ion: str | None = None) -> list[Row]:
        where, params = _where(ion=ion)
        return self._rows(
            "model_versions",
            f"SELECT * FROM model_versions{where} ORDER BY ion, edge, created_ms DESC",  # noqa: S608
            params,
        )

    def ions(self) -> list[Row]:
        return self._rows("ions", "SELECT * FROM ions ORDER BY name")

    def ion(self, name: str) -> Row | None:
        rows = self._rows("ions", "SELECT * FROM ions WHERE name = ?", (name,))
        return rows[0] if rows else None

    def streams(self) -> list[Row]:
        return self._rows("streams", "SELECT * FROM streams ORDER BY source_node, stream")

    def alerts(self, *, firing_only: bool = False, limit: int = 200) -> list[Row]:
        where = " WHERE state = 'firing'" if firing_only else ""
        # Firing first, then newest: what needs a person is on top.
        return self._rows(
            "alerts",
            f"SELECT * FROM alerts{where} ORDER BY state = 'firing' DESC, started_ms DESC LIMIT ?",  # noqa: S608
            (limit,),
        )

    # -- history ---------------------------------------------------------------------------

    def events(
        self, *, since_ms: int = 0, limit: int = 100, node_id: str | None = None
    ) -> list[Row]:
        where, params = _where(node_id=node_id)
        where += (" AND" if where else " WHERE") + " time_ms >= ?"
        return self._rows(
            "events",
            f"SELECT * FROM events{where} ORDER BY time_ms DESC, id DESC LIMIT ?",  # noqa: S608
            [*params, since_ms, limit],
        )

    def decisions(self, *, ion: str | None = None, limit: int = 50) -> list[Row]:
        where, params = _where(ion=ion)
        return self._rows(
            "decisions",
            f"SELECT * FROM decisions{where} ORDER BY time_ms DESC, id DESC LIMIT ?",  # noqa: S608
            [*params, limit],
        )

    def series(
        self,
        table: str,
        *,
        node_id: str | None = None,
        pipeline: str | None = None,
        name: str | None = None,
        since_ms: int = 0,
        limit: int = 5000,
    ) -> list[Row]:
        """Points of ``stats`` or ``drift`` (``name`` is the stat name or drift metric), oldest
        first; drift rows are the score over all features (``feature`` = "")."""
        key, value = SERIES_TABLES[table]
        where, params = _where(node_id=node_id, pipeline=pipeline, **{key: name})
        where += (" AND" if where else " WHERE") + " time_ms >= ?"
        if table == "drift":
            where += " AND feature = ''"
        extra = ", threshold" if table == "drift" else ""
        # The newest `limit` points, returned oldest first for drawing.
        return self._rows(
            table,
            f"SELECT * FROM (SELECT time_ms, node_id, ion, pipeline, {key} AS name, "  # noqa: S608
            f"{value} AS value{extra} FROM {table}{where} ORDER BY time_ms DESC LIMIT ?) "
            "ORDER BY time_ms",
            [*params, since_ms, limit],
        )

    def series_names(
        self, table: str, node_id: str | None = None, *, since_ms: int = 0
    ) -> list[Row]:
        """The distinct (node, pipeline, name) series in ``table`` with points since
        ``since_ms`` (a recent window reads the time index, not the whole history)."""
        key, _ = SERIES_TABLES[table]
        where, params = _where(node_id=node_id)
        where += (" AND" if where else " WHERE") + " time_ms >= ?"
        if table == "drift":
            where += " AND feature = ''"
        return self._rows(
            table,
            f"SELECT DISTINCT node_id, pipeline, {key} AS name FROM {table}{where} "  # noqa: S608
            "ORDER BY node_id, pipeline, name",
            [*params, since_ms],
        )

    def latest_drift(self, since_ms: int = 0) -> list[Row]:
        """The newest score over all features per (node, ION, pipeline, metric) since
        ``since_ms`` (the time index keeps a scrape cheap on a long history)."""
        # SQLite takes the bare columns from the row that holds MAX(time_ms).
        return self._rows(
            "drift",
            "SELECT *, MAX(time_ms) AS newest_ms FROM drift WHERE time_ms >= ? AND feature = '' "
            "GROUP BY node_id, ion, pipeline, metric ORDER BY node_id, pipeline, metric",
            (since_ms,),
        )

    def queue_history(self, *, node_id: str | None = None, since_ms: int = 0) -> list[Row]:
        where, params = _where(node_id=node_id)
        where += (" AND" if where else " WHERE") + " time_ms >= ?"
        return self._rows(
            "queue_history",
            f"SELECT * FROM queue_history{where} ORDER BY time_ms LIMIT 20000",  # noqa: S608
            [*params, since_ms],
        )

    def stamp(self) -> str:
        """Changes whenever anything the pages show changes (cheap: indexed maxima)."""
        parts = []
        for table, column in (
            ("nodes", "seen_ms"),
            ("pipelines", "updated_ms"),
            ("queues", "updated_ms"),
            ("node_models", "updated_ms"),
            ("ions", "updated_ms"),
            ("streams", "updated_ms"),
            ("alerts", "updated_ms"),
            ("events", "id"),
            ("decisions", "id"),
            ("stats", "time_ms"),
            ("drift", "time_ms"),
        ):
            if table in self.tables:
                try:
                    (value,) = self._conn.execute(f"SELECT MAX({column}) FROM {table}").fetchone()  # noqa: S608
                except sqlite3.OperationalError:
                    value = None
                parts.append(str(value or 0))
        return "-".join(parts)


def _where(**filters: str | None) -> tuple[str, list[object]]:
    """`` WHERE a = ? AND b = ?`` for the filters that are given (column names are ours)."""
    given = [(k, v) for k, v in filters.items() if v is not None]
    if not given:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k, _ in given), [v for _, v in given]
