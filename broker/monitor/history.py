"""Event history from the monitor's store, for ``ion events --db monitor.db``.

A broker keeps no events, the monitor keeps them all (``events``, see docs/monitor.md).  This
reads them read-only (the monitor may be writing: SQLite's WAL lets both go on), newest first
until ``limit`` match, and hands them back oldest first as ``EventRecord``s, the form the live
``ion events`` prints, so both look alike.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ion.client.events import EventFilter, EventRecord
from ion.errors import InputError

_COLUMNS = "time_ms, node_id, ion, pipeline, type, severity, subject, message, attributes_json"


def read_events(db: Path, wanted: EventFilter, *, limit: int) -> list[EventRecord]:
    """The newest ``limit`` events in ``db`` that ``wanted`` accepts, oldest first."""
    if not db.is_file():
        raise InputError(f"no monitor store at {db} (ion monitor --db FILE writes one)")
    where: list[str] = ["1"]
    args: list[object] = []
    if wanted.since_ms is not None:
        where.append("time_ms >= ?")
        args.append(wanted.since_ms)
    for column, value in (("ion", wanted.ion), ("node_id", wanted.node)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise InputError(f"cannot open {db}: {exc}") from None
    out: list[EventRecord] = []
    try:
        rows = con.execute(
            f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(where)} "  # noqa: S608 - fixed text
            "ORDER BY time_ms DESC, id DESC",
            args,
        )
        for row in rows:
            e = _record(row)
            if wanted.accepts(e):
                out.append(e)
                if len(out) >= limit:
                    break
    except sqlite3.Error as exc:
        raise InputError(f"{db} is not a monitor store: {exc}") from None
    finally:
        con.close()
    out.reverse()
    return out


def _record(row: tuple[object, ...]) -> EventRecord:
    time_ms, node, ion, pipeline, kind, severity, subject, message, attrs = row
    try:
        attributes = json.loads(str(attrs)) if attrs else {}
    except ValueError:
        attributes = {}
    kind = str(kind or "")
    source = "alert" if kind.startswith("alert.") else "pipeline" if pipeline else "node"
    return EventRecord(
        time_ms=int(time_ms),  # type: ignore[call-overload]
        source=source,
        node_id=str(node or ""),
        ion=str(ion or ""),
        pipeline=str(pipeline or ""),
        edge="",
        type=kind,
        severity=str(severity or "info"),
        subject=str(subject or ""),
        message=str(message or ""),
        attributes={str(k): str(v) for k, v in attributes.items()}
        if isinstance(attributes, dict)
        else {},
    )
