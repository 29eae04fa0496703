"""Outbox store throughput: enqueue (batched and one row per call), send bookkeeping and ack,
against a plain ``sqlite3`` ``executemany`` of the same rows into a bare table, same run, same
disk, same pragmas (WAL, synchronous=NORMAL unless --full).

    .venv/bin/python bench/outbox_store.py [--rows 100000] [--batch 500] [--size 100] [--full]

Prints a table; the figures vary with the disk and the machine: read the ratios.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from node.outbox import OutboundItem, OutboxConfig, OutboxStore, SendScheduler, TrafficClass
from node.outbox.classes import DEFAULT_CLASSES, ClassConfig


def _items(n: int, size: int, offset: int = 0) -> list[OutboundItem]:
    payload = b"x" * size
    return [
        OutboundItem(
            f"ion/v1/demo/edge/e{(offset + i) % 4}/data",
            payload,
            TrafficClass.DATA,
            created_ms=1_000 + i,
            stream=f"s{(offset + i) % 4}",
            sequence=offset + i + 1,
        )
        for i in range(n)
    ]


def _config(synchronous: str) -> OutboxConfig:
    big = ClassConfig(1, None, 10_000_000, 10 * 1024**3, "drop_oldest")
    return OutboxConfig(
        classes={**DEFAULT_CLASSES, TrafficClass.DATA: big},
        synchronous="FULL" if synchronous == "FULL" else "NORMAL",
    )


def _rate(n: int, fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def bare_executemany(
    path: Path, items: list[OutboundItem], single: list[OutboundItem], batch: int, sync: str
) -> tuple[float, float]:
    """The same rows into a bare table: batched, then one per transaction (like the store run,
    so both see a table of the same size)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync}")
    db.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, cls INTEGER, topic TEXT, payload BLOB,"
        " created_ms INTEGER, stream TEXT, sequence INTEGER)"
    )

    def rows_of(some: list[OutboundItem]) -> list[tuple[object, ...]]:
        return [
            (i.traffic_class.code, i.topic, i.payload, i.created_ms, i.stream, i.sequence)
            for i in some
        ]

    def run(rows: list[tuple[object, ...]], size: int) -> None:
        for k in range(0, len(rows), size):
            db.execute("BEGIN")
            db.executemany("INSERT INTO t VALUES (NULL, ?, ?, ?, ?, ?, ?)", rows[k : k + size])
            db.execute("COMMIT")

    rows, rows1 = rows_of(items), rows_of(single)
    batched = _rate(len(rows), lambda: run(rows, batch))
    one = _rate(len(rows1), lambda: run(rows1, 1))
    db.close()
    return batched, one


def store_run(
    tmp: Path, items: list[OutboundItem], single: list[OutboundItem], args: argparse.Namespace
) -> dict[str, float]:
    """One pass over a fresh store: enqueue batched, enqueue one per call, then drain."""
    sync = "FULL" if args.full else "NORMAL"
    rates: dict[str, float] = {}
    path = tmp / f"outbox-{time.monotonic_ns()}.db"
    with OutboxStore(path, _config(sync)) as store:
        batch = args.batch
        rates["enqueue"] = _rate(
            len(items),
            lambda: [store.enqueue(items[k : k + batch]) for k in range(0, len(items), batch)],
        )
        rates["enqueue1"] = _rate(len(single), lambda: [store.enqueue([i]) for i in single])
        # The agent's drain loop without the network: schedule, mark in flight, ack.
        scheduler = SendScheduler(_config(sync))
        scheduler.link_up(store.newest_id())
        total, drained, messages = len(items) + len(single), 0, 0
        spent = {"plan": 0.0, "mark": 0.0, "ack": 0.0}
        start = time.perf_counter()
        while drained < total:
            t0 = time.perf_counter()
            limit = scheduler.candidate_limit(args.window)
            queues = store.candidates(scheduler.live_after_id, limit)
            plan = scheduler.next_sends(queues, args.window, 2_000)
            t1 = time.perf_counter()
            ids = [i for send in plan.sends for i in send.ids]
            store.mark_in_flight(ids)
            t2 = time.perf_counter()
            drained += store.ack(ids)
            t3 = time.perf_counter()
            messages += len(plan.sends)
            spent["plan"] += t1 - t0
            spent["mark"] += t2 - t1
            spent["ack"] += t3 - t2
            if not ids:
                break
        rates["drain"] = drained / (time.perf_counter() - start)
        rates.update({k: drained / v for k, v in spent.items()})
        rates["messages"] = messages
        rates["drained"] = drained
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--single", type=int, default=5_000, help="rows for one-per-call")
    parser.add_argument("--window", type=int, default=100, help="free in-flight slots")
    parser.add_argument("--repeat", type=int, default=3, help="best of N passes")
    parser.add_argument("--full", action="store_true", help="synchronous=FULL")
    args = parser.parse_args()
    sync = "FULL" if args.full else "NORMAL"
    items = _items(args.rows, args.size)
    single = _items(args.single, args.size, offset=args.rows)
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.repeat):
            # Baseline and store alternate, so both see the same machine load.
            bare, bare1 = bare_executemany(
                Path(tmp, f"bare{n}.db"), items, single, args.batch, sync
            )
            got = {"bare": bare, "bare1": bare1, **store_run(Path(tmp), items, single, args)}
            for key, value in got.items():
                best[key] = max(best.get(key, 0.0), value)
    base, base1 = best["bare"], best["bare1"]
    rows = [
        (f"bare executemany, {args.batch}/txn", base, base),
        ("bare insert, 1/txn", base1, base1),
        (f"enqueue, {args.batch}/call", best["enqueue"], base),
        ("enqueue, 1/call", best["enqueue1"], base1),
        ("drain: candidates+plan+mark+ack", best["drain"], base),
        ("  candidates+plan alone", best["plan"], base),
        ("  mark_in_flight alone", best["mark"], base),
        ("  ack alone", best["ack"], base),
    ]
    print(
        f"outbox store: {args.rows:,} rows of {args.size} B, synchronous={sync}, "
        f"best of {args.repeat}; SQLite {sqlite3.sqlite_version}"
    )
    print(f"{'operation':34} {'rows/s':>10} {'vs bare':>8}")
    for name, rate, ref in rows:
        print(f"{name:34} {rate:10,.0f} {rate / ref:7.2f}x")
    print(
        f"drain: {int(best['drained']):,} items in {int(best['messages']):,} MQTT messages "
        f"(window {args.window} slots; batches of up to 64 small items)"
    )


if __name__ == "__main__":
    main()
