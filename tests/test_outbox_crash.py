"""kill -9 at random moments: the outbox loses nothing it acknowledged and keeps no acked item.

A child process (this file run as a script) enqueues, sends and acks in a loop and journals,
with one ``write`` per line, what the store has confirmed: ``E id:token ...`` after an enqueue
returned, ``a ids`` before an ack and ``A ids`` after it returned.  The test kills it with
SIGKILL at random moments, several times over the same database, and after each kill reopens
the store and checks:

- an id journalled as acked (``A``) is gone;
- an id journalled as enqueued and never offered for an ack is present, with its payload;
- an id present but not journalled belongs to the batch in progress at a kill (committed, not
  yet journalled): newer than every id journalled by then;
- ``PRAGMA integrity_check`` is ok, and after ``requeue_in_flight`` nothing is in flight.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROUNDS = 6


def child(db: Path, journal: Path, round_no: int) -> None:
    from node.outbox.classes import TrafficClass
    from node.outbox.policy import OutboundItem
    from node.outbox.store import OutboxStore

    rng = random.Random(round_no)
    store = OutboxStore(db)
    store.requeue_in_flight()
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"R\n")
    n = 0
    while True:
        batch = []
        for _ in range(rng.randint(1, 40)):
            n += 1
            token = f"{round_no}-{n}"
            cls = rng.choice([TrafficClass.DATA, TrafficClass.EVENTS, TrafficClass.CONTROL])
            now = int(time.time() * 1000)
            batch.append(
                OutboundItem("ion/v1/crash/t", token.encode(), cls, now, stream="s", sequence=n)
            )
        got = store.enqueue(batch)
        line = " ".join(f"{i}:{item.payload.decode()}" for i, item in zip(got, batch, strict=True))
        os.write(fd, f"E {line}\n".encode())
        queues = store.candidates(None, 30)
        ids = [p.id for q in queues.values() for p in q.backlog][: rng.randint(0, 30)]
        store.mark_in_flight(ids)
        acked = ids[: len(ids) * 3 // 4]  # the rest stays in flight
        os.write(fd, f"a {' '.join(map(str, acked))}\n".encode())
        store.ack(acked)
        os.write(fd, f"A {' '.join(map(str, acked))}\n".encode())


def starts(journal: Path) -> int:
    return journal.read_text().count("R\n") if journal.exists() else 0


def read_journal(journal: Path) -> tuple[dict[int, str], set[int], set[int]]:
    enqueued: dict[int, str] = {}
    offered: set[int] = set()
    acked: set[int] = set()
    text = journal.read_text()
    lines = text.split("\n")[:-1]  # a line cut by the kill has no newline: ignore it
    for line in lines:
        kind, _, rest = line.partition(" ")
        words = rest.split()
        if kind == "E":
            for word in words:
                i, token = word.split(":")
                enqueued[int(i)] = token
        elif kind == "a":
            offered.update(map(int, words))
        elif kind == "A":
            acked.update(map(int, words))
    return enqueued, offered, acked


@pytest.mark.integration
def test_kill_9_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    from node.outbox.store import OutboxStore

    db, journal = tmp_path / "outbox.db", tmp_path / "journal"
    rng = random.Random(20240601)
    checked = 0
    orphans: set[int] = set()  # committed in a killed round before its journal line
    for round_no in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, __file__, str(db), str(journal), str(round_no)],
            cwd=Path(__file__).resolve().parents[1],
        )
        try:
            deadline = time.monotonic() + 30
            while starts(journal) <= round_no:
                assert proc.poll() is None, "the child died on its own"
                assert time.monotonic() < deadline, "the child never got ready"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 0.4))
            assert proc.poll() is None, "the child died on its own"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL

        enqueued, offered, acked = read_journal(journal)
        with OutboxStore(db) as store:
            assert store.integrity_check() == "ok"
            rows = {i.id: i.payload.decode() for i in store.items()}
            assert not (acked & rows.keys()), "an acknowledged item came back"
            for i, token in enqueued.items():
                if i not in offered:
                    assert rows.get(i) == token, f"item {i} was lost"
            newest_logged = max(enqueued, default=0)
            for i, payload in rows.items():
                if i in enqueued:
                    assert payload == enqueued[i]
                elif i not in orphans:
                    assert i > newest_logged, f"item {i} is neither journalled nor in progress"
                    orphans.add(i)  # a later round may still find it, or ack it
            store.requeue_in_flight()
            assert not any(i.in_flight for i in store.items())
            checked += len(rows)
    assert len(enqueued) > 100, "the child did too little work to prove anything"
    assert checked > 0


if __name__ == "__main__":
    child(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
