"""The monitor's two processes: the link hands messages over to the writer child in order, and
neither outlives the other (SIGTERM, SIGINT to the group, either side killed)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from monitor_support import pipeline_topic, sequenced, stats, status, status_msg
from support import async_wait_until, unique_name, wait_until
from support.brokers import mqtt_client
from support.leaks import process_table

from broker.monitor.handover import FrameBuffer, frame
from broker.monitor.service import Monitor, MonitorSettings
from broker.monitor.store import StoreError
from broker.monitor.writer_process import WriterGoneError
from ion.topics import Channel
from node.link.fake import FakeBroker, FakeLink

NOW = 1_700_000_000_000


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return list(conn.execute(sql).fetchall())
        except sqlite3.OperationalError:  # not created yet
            return []


def test_frames_come_out_whole_however_the_bytes_are_cut() -> None:
    objs = [("m", [("t", b"\x00" * n, False, n)]) for n in (0, 1, 300, 70_000)] + [("f", 7)]
    data = b"".join(frame(o) for o in objs)
    for step in (1, 3, 4096, len(data)):
        buf, out = FrameBuffer(), []
        for i in range(0, len(data), step):
            buf.feed(data[i : i + step])
            while (obj := buf.next()) is not None:
                out.append(obj)
        assert out == objs
        assert buf.partial == 0


# -- in process, with the in-memory broker ---------------------------------------------------------


def fake_link(fake: FakeBroker) -> Any:
    def make(**kw: Any) -> FakeLink:
        return FakeLink(fake, kw["client_id"], subscriptions=kw["subscriptions"],
                        options=kw["options"])  # fmt: skip

    return make


@pytest.mark.asyncio
async def test_every_message_is_committed_once_and_in_order(tmp_path: Path) -> None:
    fake = FakeBroker()
    db = tmp_path / "m.db"
    settings = MonitorSettings(db_path=db, monitor_id="mon", flush_interval_s=0.05, max_batch=300)
    topic = pipeline_topic("edge-1", Channel.STATS)
    n = 2_000
    async with Monitor(settings, link_factory=fake_link(fake), clock=lambda: NOW) as mon:
        await mon.wait_connected(5)
        async with FakeLink(fake, "ion-node-edge-1") as node:
            await node.wait_connected()
            await node.publish(*status_msg(status("edge-1"), NOW), retain=True)
            for seq in range(1, n + 1):
                await node.publish(topic, sequenced(stats(rate=seq), topic, "edge-1", seq, NOW))
        await async_wait_until(lambda: mon.messages >= n + 1, 10)
        await mon.flush()
        assert mon.committed == mon.messages == n + 1
        assert mon.counters["envelopes"] == n + 1
    # In order: no gap, nothing repaired, every value once.
    assert query(db, "SELECT last_sequence, received, gaps, repaired FROM streams") == [
        (n, n, 0, 0)]  # fmt: skip
    assert query(db, "SELECT count(*), count(DISTINCT value), min(value), max(value) FROM stats "
                     "WHERE name = 'rate'") == [(n, n, 1.0, float(n))]  # fmt: skip
    assert query(db, "SELECT node_id, state FROM nodes") == [("edge-1", "online")]


@pytest.mark.asyncio
async def test_leaving_commits_everything_taken_from_the_link(tmp_path: Path) -> None:
    fake = FakeBroker()
    db = tmp_path / "m.db"
    settings = MonitorSettings(db_path=db, monitor_id="mon", flush_interval_s=60,
                               tick_interval_s=60)  # fmt: skip
    topic = pipeline_topic("edge-1", Channel.STATS)
    n = 1_000
    async with Monitor(settings, link_factory=fake_link(fake), clock=lambda: NOW) as mon:
        await mon.wait_connected(5)
        async with FakeLink(fake, "ion-node-edge-1") as node:
            await node.wait_connected()
            for seq in range(1, n + 1):
                await node.publish(topic, sequenced(stats(rate=seq), topic, "edge-1", seq, NOW))
        await async_wait_until(lambda: mon.messages >= n, 10)
        assert mon.committed < n  # (no commit asked for yet: the chunk begun is still here)
    assert mon.committed == n
    assert query(db, "SELECT received, gaps FROM streams") == [(n, 0)]


@pytest.mark.asyncio
async def test_a_database_that_cannot_be_opened_fails_the_start(tmp_path: Path) -> None:
    db = tmp_path / "a-directory"
    db.mkdir()
    settings = MonitorSettings(db_path=db, monitor_id="mon")
    with pytest.raises(StoreError, match="cannot open the monitor database"):
        async with Monitor(settings, link_factory=fake_link(FakeBroker())):
            pytest.fail("started")


@pytest.mark.asyncio
async def test_a_killed_writer_ends_the_monitor_with_an_error(tmp_path: Path) -> None:
    settings = MonitorSettings(db_path=tmp_path / "m.db", monitor_id="mon")
    monitor = Monitor(settings, link_factory=fake_link(FakeBroker()))

    async def run() -> None:
        async with monitor as mon:
            await mon.wait_connected(5)
            os.kill(mon.writer.proc.pid, signal.SIGKILL)
            await asyncio.sleep(30)  # cancelled when the monitor's task group fails

    with pytest.raises(BaseExceptionGroup) as raised:
        await run()
    gone = raised.value.subgroup(lambda e: isinstance(e, WriterGoneError))
    assert gone is not None
    assert "exited with code -9" in str(gone.exceptions[0])
    assert monitor.writer.proc.returncode == -signal.SIGKILL


# -- ion monitor, with a real broker ---------------------------------------------------------------


@contextmanager
def ion_monitor(url: str, db: Path, monitor_id: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ion.cli.main", "monitor", "--broker", url, "--db", str(db),
         "--id", monitor_id, "--no-http", "--no-model-cache"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(f"monitor {monitor_id}: watching"):
                break
        else:
            pytest.fail(f"ion monitor exited with {proc.wait()} before watching")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def writer_of(proc: subprocess.Popen[str]) -> int:
    found = [p.pid for p in process_table().values()
             if p.ppid == proc.pid and "broker.monitor.writer" in p.command]  # fmt: skip
    assert len(found) == 1, found
    return found[0]


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited; reaps it if it became our child (pytest is a subreaper)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: look at /proc
        info = process_table().get(pid)
        return info is None or info.state == "Z"
    return done == pid


def publish_stats(url_host: str, port: int, node: str, count: int) -> None:
    topic = pipeline_topic(node, Channel.STATS)
    with mqtt_client(url_host, port) as client:
        for seq in range(1, count + 1):
            body = sequenced(stats(rate=seq), topic, node, seq, time.time_ns() // 1_000_000)
            client.publish(topic, body, qos=1)


def received(db: Path, node: str) -> int:
    rows = query(db, f"SELECT received FROM streams WHERE source_node = '{node}'")
    return int(rows[0][0]) if rows else 0


@pytest.mark.integration
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT to the group"])
def test_ion_monitor_stops_with_its_writer_and_commits(
    mosquitto: Any, tmp_path: Path, how: str
) -> None:
    db, node = tmp_path / "m.db", unique_name("edge")
    with ion_monitor(mosquitto.url, db, unique_name("mon")) as proc:
        writer = writer_of(proc)
        publish_stats(mosquitto.host, mosquitto.port, node, 50)
        wait_until(lambda: received(db, node) == 50, 20)
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:  # what Ctrl-C in a terminal does: the writer gets it too, and must not die of it
            os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0
        assert gone(writer)
    assert received(db, node) == 50


@pytest.mark.integration
def test_a_killed_ion_monitor_leaves_no_writer_behind(mosquitto: Any, tmp_path: Path) -> None:
    db, node = tmp_path / "m.db", unique_name("edge")
    with ion_monitor(mosquitto.url, db, unique_name("mon")) as proc:
        writer = writer_of(proc)
        publish_stats(mosquitto.host, mosquitto.port, node, 20)
        wait_until(lambda: received(db, node) == 20, 20)
        proc.kill()
        proc.wait()
        # Its input ends with its parent: it commits what it has and exits by itself.
        wait_until(lambda: gone(writer), 20, message=f"writer {writer} still running")


@pytest.mark.integration
def test_a_killed_writer_ends_ion_monitor_with_exit_1(mosquitto: Any, tmp_path: Path) -> None:
    with ion_monitor(mosquitto.url, tmp_path / "m.db", unique_name("mon")) as proc:
        os.kill(writer_of(proc), signal.SIGKILL)
        assert proc.wait(30) == 1
        assert proc.stdout is not None
        out = proc.stdout.read()
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == ["error: the monitor's writer process exited with code -9"], out
    assert "Traceback" not in out
