"""The monitor's SQLite store, written through sqlite-utils: the only monitor module that talks
to SQLite (retention's SQL runs on the connection this opens).

Tables and indexes come from ``broker.monitor.schema`` and are created when missing; columns
added to the schema later are added to an existing file.  WAL mode, ``synchronous=NORMAL``
(a commit survives the monitor being killed; only a power loss can take the last ones).
``apply`` commits one ``Writes`` (everything folded since the last flush) in one transaction:
deletes, then coalesced upserts, then appended history rows.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.db import Table

from ion.errors import UnavailableError

from .alerts import Alert
from .core import PRIMARY_KEYS, Restored, Writes
from .schema import INDEXES, SCHEMA_VERSION, TABLES

log = logging.getLogger(__name__)

_TYPES: dict[str, type] = {"TEXT": str, "INTEGER": int, "REAL": float}
_CHILDREN = ("pipelines", "queues", "links", "node_models")
_CACHE_KIB = 64 * 1024
_CHECKPOINT_PAGES = 10_000


class StoreError(UnavailableError):
    """The monitor's database cannot be opened or written (disk full, locked, not SQLite)."""


class MonitorStore:
    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread off: one thread at a time, not always the one that opened it.
            conn = sqlite3.connect(str(path), check_same_thread=False)
            self.db = Database(conn)
            self.db.enable_wal()
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            # The indexes of the history tables stay in memory (SQLite's default cache is
            # 2 MiB), and the WAL is copied back (with an fsync) every ~40 MiB rather than
            # every ~4 MiB: 25 -> 20 us of commit per message at 10,000 messages/s.
            self.db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            self.db.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
            self._create()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the monitor database {path}: {exc}") from exc
        self.rows_written = 0
        self._insert_sql: dict[tuple[str, tuple[str, ...]], str] = {}
        self._upsert_sql: dict[tuple[str, tuple[str, ...]], str] = {}

    def _create(self) -> None:
        with self.db.atomic():
            for name, (columns, pk) in TABLES.items():
                table = self.table(name)
                if not table.exists():
                    table.create(
                        {c: _TYPES[t] for c, t in columns.items()},
                        pk=(pk[0] if len(pk) == 1 else pk) if pk else None,
                    )
                    continue
                have = set(table.columns_dict)
                for column, sql_type in columns.items():
                    if column not in have:
                        table.add_column(column, _TYPES[sql_type])
            for name, index_columns in INDEXES:
                self.table(name).create_index(index_columns, if_not_exists=True)
            self.table("meta").upsert(
                {"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key"
            )

    def table(self, name: str) -> Table:
        table = self.db[name]
        assert isinstance(table, Table)
        return table

    def close(self) -> None:
        self.db.close()

    # -- writes ----------------------------------------------------------------------------------

    def apply(self, w: Writes) -> int:
        """Commit ``w`` in one transaction; returns the rows written."""
        count = 0
        try:
            with self.db.atomic():
                for name, keys in w.deletes.items():
                    if keys:
                        pk = PRIMARY_KEYS[name]
                        where = " AND ".join(f"[{c}] = ?" for c in pk)
                        sql = f"DELETE FROM [{name}] WHERE {where}"  # noqa: S608 - schema names
                        self.db.conn.executemany(sql, list(keys))
                        count += len(keys)
                for name, by_key in w.upserts.items():
                    if by_key:
                        self._upsert(name, list(by_key.values()))
                        count += len(by_key)
                for name, rows in w.appends.items():
                    if rows:
                        self._insert(name, rows)
                        count += len(rows)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot write the monitor database {self.path}: {exc}") from exc
        self.rows_written += count
        return count

    def _upsert(self, name: str, rows: list[dict[str, Any]]) -> None:
        # One prepared INSERT ... ON CONFLICT DO UPDATE per table: sqlite-utils's upsert_all
        # reads the table's schema on every call (about 8 ms a call; a commit writes a
        # dozen tables, several times a second).
        columns = tuple(rows[0])
        sql = self._upsert_sql.get((name, columns))
        if sql is None:
            pk = PRIMARY_KEYS[name]
            names = ", ".join(f"[{c}]" for c in columns)
            marks = ", ".join("?" * len(columns))
            updates = ", ".join(f"[{c}] = excluded.[{c}]" for c in columns if c not in pk)
            conflict = ", ".join(f"[{c}]" for c in pk)
            sql = (
                f"INSERT INTO [{name}] ({names}) VALUES ({marks}) "  # noqa: S608 - schema names
                f"ON CONFLICT({conflict}) DO UPDATE SET {updates}"
            )
            self._upsert_sql[(name, columns)] = sql
        values = itemgetter(*columns)
        self.db.conn.executemany(sql, [values(r) for r in rows])

    def _insert(self, name: str, rows: list[dict[str, Any]]) -> None:
        # History rows of one table all have the same columns (the id of events and decisions
        # is left to SQLite).  One prepared statement and executemany: sqlite-utils's
        # insert_all converts every value through its JSON check, which cost more than the
        # whole fold at 10,000 messages/s (see docs/benchmarks.md).
        columns = tuple(rows[0])
        sql = self._insert_sql.get((name, columns))
        if sql is None:
            names = ", ".join(f"[{c}]" for c in columns)
            marks = ", ".join("?" * len(columns))
            sql = f"INSERT INTO [{name}] ({names}) VALUES ({marks})"  # noqa: S608 - schema names
            self._insert_sql[(name, columns)] = sql
        values = itemgetter(*columns)
        self.db.conn.executemany(sql, [values(r) for r in rows])

    def set_meta(self, values: dict[str, str]) -> None:
        with self.db.atomic():
            self.table("meta").upsert_all(
                [{"key": k, "value": v} for k, v in values.items()], pk="key"
            )

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    # -- reading back ----------------------------------------------------------------------------

    def restore(self) -> Restored:
        """What a restarted monitor needs to continue where the last one stopped."""
        firing = tuple(Alert(**r) for r in self.table("alerts").rows_where("state = ?", ["firing"]))
        next_id = self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM alerts").fetchone()[0]
        retained = {
            str(r["key"]).removeprefix("retained:"): str(r["value"])
            for r in self.table("meta").rows_where("key LIKE 'retained:%'")
        }
        return Restored(
            nodes=tuple(self.table("nodes").rows),
            children={name: tuple(self.table(name).rows) for name in _CHILDREN},
            ions=tuple(self.table("ions").rows),
            streams=tuple(self.table("streams").rows),
            firing=firing,
            next_alert_id=int(next_id),
            retained_ids=retained,
        )


def counters_json(counters: dict[str, int]) -> str:
    return json.dumps(dict(sorted(counters.items())), separators=(",", ":"))
