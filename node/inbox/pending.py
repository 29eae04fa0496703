"""What arrived for a local pipeline and its components have not handled yet.

Edge messages for a pipeline on this node are written here as they arrive (before the
receiver remembers their ids as seen), and deleted only when the component says it handled
them (``Delivered`` on the local socket).  So a pipeline that is starting, restarting or
crashed loses nothing, and neither does an agent killed at any instant: what was not yet
written here was not yet remembered as seen either, and comes again from the sender.

One SQLite file (WAL, synchronous=NORMAL: a power cut may lose the last transactions, a
process crash loses nothing).  Bounded per pipeline: past ``max_items`` the oldest rows are
dropped and counted (a pipeline that is down for days must not fill the disk).
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ion TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    edge TEXT NOT NULL,
    message_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (ion, pipeline, message_id)
);
CREATE INDEX IF NOT EXISTS pending_by_pipeline ON pending (ion, pipeline, id);
"""


@dataclass(frozen=True, slots=True)
class PendingItem:
    row_id: int
    edge: str
    message_id: str
    payload: bytes
    """The encoded envelope."""


class PendingInbox:
    def __init__(self, path: Path, *, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.path = path
        self.max_items = max_items
        self.dropped: Counter[tuple[str, str]] = Counter()
        self._db: sqlite3.Connection | None = None
        self._entered = False
        self._counts: Counter[tuple[str, str]] = Counter()
        self._staged: list[tuple[str, str, str, str, bytes]] = []
        self._staged_ids: set[tuple[str, str, str]] = set()

    def __enter__(self) -> Self:
        # Opened on first use: most nodes (gateways, cloud nodes running batch jobs) never
        # keep anything here, and an open SQLite file costs memory an idle agent should not.
        self._entered = True
        return self

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        for ion, pipeline, n in db.execute(
            "SELECT ion, pipeline, COUNT(*) FROM pending GROUP BY ion, pipeline"
        ):
            self._counts[(ion, pipeline)] = n
        self._db = db
        return db

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._entered = False
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            if not self._entered:
                raise RuntimeError("the pending inbox is not open")
            return self._open()
        return self._db

    def add(self, ion: str, pipeline: str, edge: str, message_id: str, payload: bytes) -> None:
        """Stage one message for ``ion/pipeline``; ``flush`` writes what is staged (in one
        transaction: the cost of a commit is per received MQTT message, not per item)."""
        key = (ion, pipeline, message_id)
        if key not in self._staged_ids:
            self._staged_ids.add(key)
            self._staged.append((ion, pipeline, edge, message_id, payload))

    def flush(self) -> set[tuple[str, str]]:
        """Write what was staged; returns the pipelines that got something new."""
        if not self._staged:
            return set()
        staged, self._staged = self._staged, []
        self._staged_ids.clear()
        db = self.db
        fresh: set[tuple[str, str]] = set()
        db.execute("BEGIN")
        try:
            for row in staged:
                cur = db.execute(
                    "INSERT OR IGNORE INTO pending (ion, pipeline, edge, message_id, payload) "
                    "VALUES (?, ?, ?, ?, ?)",
                    row,
                )
                if cur.rowcount:
                    key = (row[0], row[1])
                    self._counts[key] += 1
                    fresh.add(key)
            for key in fresh:
                self._bound(key)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return fresh

    def _bound(self, key: tuple[str, str]) -> None:
        ion, pipeline = key
        if self._counts[key] > self.max_items:
            excess = self._counts[key] - self.max_items
            self.db.execute(
                "DELETE FROM pending WHERE id IN (SELECT id FROM pending WHERE ion = ? AND "
                "pipeline = ? ORDER BY id LIMIT ?)",
                (ion, pipeline, excess),
            )
            self._counts[key] -= excess
            if not self.dropped[key]:
                log.warning(
                    "pipeline %s/%s is not taking its input: dropping the oldest of %d pending",
                    ion,
                    pipeline,
                    self.max_items,
                )
            self.dropped[key] += excess

    def take(
        self, ion: str, pipeline: str, edges: Sequence[str], after: int, limit: int
    ) -> list[PendingItem]:
        """Up to ``limit`` items with a row id above ``after``, oldest first (``edges`` empty:
        all)."""
        sql = "SELECT id, edge, message_id, payload FROM pending WHERE ion = ? AND pipeline = ?"
        params: list[object] = [ion, pipeline]
        if edges:
            sql += f" AND edge IN ({','.join('?' * len(edges))})"
            params.extend(edges)
        sql += " AND id > ? ORDER BY id LIMIT ?"
        params.extend([after, limit])
        return [PendingItem(*row) for row in self.db.execute(sql, params)]

    def done(self, ion: str, pipeline: str, row_ids: Sequence[int]) -> None:
        """The component handled these: forget them."""
        if not row_ids:
            return
        deleted = 0
        for start in range(0, len(row_ids), 500):
            part = row_ids[start : start + 500]
            cur = self.db.execute(
                f"DELETE FROM pending WHERE ion = ? AND pipeline = ? AND id IN "  # noqa: S608
                f"({','.join('?' * len(part))})",
                (ion, pipeline, *part),
            )
            deleted += cur.rowcount
        self._counts[(ion, pipeline)] -= deleted

    def forget_pipeline(self, ion: str, pipeline: str) -> int:
        """Drop everything kept for a pipeline that no longer runs here."""
        if self._db is None and not self.path.exists():
            return 0
        cur = self.db.execute("DELETE FROM pending WHERE ion = ? AND pipeline = ?", (ion, pipeline))
        self._counts.pop((ion, pipeline), None)
        return cur.rowcount

    def count(self, ion: str, pipeline: str) -> int:
        if self._db is None and self.path.exists():
            self.db  # noqa: B018 - opening loads the counts
        return self._counts[(ion, pipeline)]

    def pipelines(self) -> list[tuple[str, str]]:
        if self._db is None and self.path.exists():
            self.db  # noqa: B018 - opening loads the counts
        return [k for k, n in self._counts.items() if n > 0]
