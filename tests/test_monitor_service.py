"""The monitor end to end: real Mosquitto, real agents, the SQLite store, alerts on the bus, the
``ion monitor`` command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config, ticker
from click.testing import CliRunner
from support import async_wait_until
from support.brokers import mqtt_client
from support.leaks import descendants_of, process_table

from broker.monitor.service import Monitor, MonitorSettings
from ion import topics
from ion.cli.main import cli
from ion.config.broker import parse_broker_url
from ion.model.definition import IonDefinition
from ion.model.event import Event
from ion.wire.codec import decode
from node.agent.service import Agent

pytestmark = [pytest.mark.integration]


def query(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Read the store the way a dashboard does: another connection, read-only, while it runs."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return list(conn.execute(sql, args).fetchall())
        except sqlite3.OperationalError:  # not created yet
            return []


class AgentProcess:
    """``python -m node run`` in a child process, to be killed with SIGKILL (its last will)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.orphans: list[int] = []

    def kill(self) -> None:
        # Its pipelines die with it (PDEATHSIG) and are re-parented to pytest, a subreaper
        # (see tests/conftest.py): remember them to reap them.
        self.orphans = [p.pid for p in descendants_of(self.proc.pid, process_table())]
        self.proc.kill()
        self.proc.wait()

    def reap(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        for pid in self.orphans:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break  # not ours, or reaped already
                if done:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


@contextmanager
def agent_process(node_id: str, url: str, tmp: Path, labels: str) -> Iterator[AgentProcess]:
    cfg = tmp / f"{node_id}.yaml"
    cfg.write_text(
        f"node: {{id: {node_id}, labels: {labels}}}\nbroker: {{url: '{url}'}}\n"
        f"data_dir: {tmp / node_id}\nheartbeat_interval: 1s\ntrust: {{development_mode: true}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "run", "-c", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    agent = AgentProcess(proc)
    try:
        yield agent
    finally:
        agent.reap()


@pytest.mark.asyncio
async def test_fleet_lands_in_the_store_a_killed_agent_alerts_and_a_restart_continues(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    db = tmp_path / "monitor.db"
    settings = MonitorSettings(broker=parse_broker_url(url), db_path=db, monitor_id="mon",
                               flush_interval_s=0.1, tick_interval_s=0.2)  # fmt: skip
    ion = IonDefinition(
        name="watch", pipelines=(ticker("p1", ("edge-1",)), ticker("p2", ("edge-2",)))
    )
    one = node_config("edge-1", url, tmp_path, labels={"site": "north"})
    with agent_process("edge-2", url, tmp_path, "{site: south}") as edge2:
        async with Agent(one) as agent:
            async with Monitor(settings) as mon:
                await mon.wait_connected(10)
                await agent.link.wait_connected()
                await apply(url, ion)

                def fleet_seen() -> bool:
                    nodes = query(db, "SELECT node_id, state, labels_json FROM nodes ORDER BY 1")
                    running = query(db, "SELECT node_id, pipeline FROM pipelines "
                                        "WHERE state = 'running' ORDER BY 1")  # fmt: skip
                    stats = query(db, "SELECT DISTINCT node_id FROM stats ORDER BY 1")
                    return (
                        [(n, s, json.loads(lj)) for n, s, lj in nodes]
                        == [("edge-1", "online", {"site": "north"}),
                            ("edge-2", "online", {"site": "south"})]
                        and running == [("edge-1", "p1"), ("edge-2", "p2")]
                        and stats == [("edge-1",), ("edge-2",)]
                    )  # fmt: skip

                await async_wait_until(fleet_seen, 40, message=lambda: str(
                    query(db, "SELECT node_id, state FROM nodes")))  # fmt: skip
                assert query(db, "SELECT name, version FROM ions") == [("watch", 1)]
                queues = query(db, "SELECT DISTINCT node_id FROM queues ORDER BY 1")
                assert queues == [("edge-1",), ("edge-2",)]
                streams = query(db, "SELECT count(*), sum(gaps), min(received) FROM streams")
                assert streams[0][0] >= 2 and streams[0][1] == 0 and streams[0][2] >= 1
                assert query(db, "SELECT count(*) FROM queue_history")[0][0] >= 2

                # SIGKILL edge-2: the broker publishes its last will.
                host, port = fresh_mosquitto.host, fresh_mosquitto.port
                with mqtt_client(host, port) as sub:
                    sub.subscribe(topics.monitor_alerts("mon"))
                    edge2.kill()
                    await async_wait_until(lambda: query(
                        db, "SELECT state FROM nodes WHERE node_id = 'edge-2'") == [("offline",)],
                        20)  # fmt: skip
                    await async_wait_until(lambda: query(
                        db, "SELECT rule, key, state FROM alerts") == [
                            ("node_offline", "edge-2", "firing")], 10)  # fmt: skip
                    fired = None
                    while fired is None:
                        received = await asyncio.to_thread(sub.expect, 10)
                        body = decode(received.payload).body
                        assert isinstance(body, Event)
                        if body.attributes.get("key") == "edge-2":
                            fired = body
                    assert fired.type == "alert.fired"
                    assert fired.attributes["rule"] == "node_offline"
                    assert {"value", "threshold"} <= set(fired.attributes)
                events = query(db, "SELECT type, node_id FROM events WHERE type LIKE 'alert.%'")
                assert events == [("alert.fired", "edge-2")]
                received_before = query(db, "SELECT sum(received) FROM streams")[0][0]

            # The same store again: retained state comes back, nothing fires twice, stats go on.
            async with Monitor(settings) as mon:
                await mon.wait_connected(10)
                await async_wait_until(lambda: (query(
                    db, "SELECT sum(received) FROM streams")[0][0] or 0) > received_before + 2,
                    20)  # fmt: skip
                await mon.flush()
                assert query(db, "SELECT rule, key, state FROM alerts") == [
                    ("node_offline", "edge-2", "firing")]  # fmt: skip
                assert query(db, "SELECT sum(gaps) FROM streams") == [(0,)]
                states = query(db, "SELECT state FROM nodes ORDER BY node_id")
                assert states == [("online",), ("offline",)]


def run_ion(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ion.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_unreachable_broker_exits_1_with_one_line(tmp_path: Path) -> None:
    result = run_ion("monitor", "--broker", "mqtt://127.0.0.1:9", "--timeout", "1", "--no-http",
                     "--db", str(tmp_path / "m.db"))  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mqtt://127.0.0.1:9 is unreachable" in errors[0]
    assert "Traceback" not in result.stderr


def test_refused_login_exits_1_with_one_line(broker_factory: Any, tmp_path: Path) -> None:
    from broker.settings import BrokerSettings

    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "u", "right"], check=True)
    broker = broker_factory(settings=BrokerSettings(allow_anonymous=False, password_file=pw))
    result = run_ion("monitor", "--broker", f"mqtt://u:wrong@{broker.host}:{broker.port}",
                     "--no-http", "--db", str(tmp_path / "m.db"))  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not authorized" in errors[0].lower()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http", "nowhere"], "expected HOST:PORT"),
        (["--id", "Not An Id"], "invalid monitor id"),
        (["--raw-hours", "10", "--keep-days", "0.1"], "longer than they are kept raw"),
        (["--lag", "0"], "lag_ms"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["monitor", "--db", str(tmp_path / "m.db"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_help_describes_the_command() -> None:
    result = CliRunner().invoke(cli, ["monitor", "--help"])
    assert result.exit_code == 0
    for flag in (
        "--broker",
        "--db",
        "--id",
        "--raw-hours",
        "--keep-days",
        "--drift-threshold",
        "--backlog-depth",
        "--lag",
        "--http",
        "--no-http",
        "--token",
        "--ca-file",
    ):
        assert flag in result.output  # fmt: skip


def test_ion_monitor_serves_the_dashboard_and_stops_cleanly_on_sigterm(
    mosquitto: Any, tmp_path: Path
) -> None:
    db = tmp_path / "m.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ion.cli.main", "monitor", "--broker", mosquitto.url, "--db",
         str(db), "--id", "cli-mon", "--http", "127.0.0.1:0", "--token", "secret"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("dashboard: "):
                url = line.split(" ", 1)[1].strip()
                break
        assert url.startswith("http://127.0.0.1:"), "".join(lines)
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + (rest or "")
    assert query(db, "SELECT value FROM meta WHERE key = 'monitor_id'") == [("cli-mon",)]
    assert any(line.startswith("monitor cli-mon: watching") for line in lines)


@pytest.mark.asyncio
async def test_alerts_raised_while_the_link_is_down_are_published_when_it_returns(
    tmp_path: Path,
) -> None:
    """With the in-memory broker and an injected clock: a node goes silent while the monitor's
    link is partitioned; the alert is committed at once and announced once the link is back."""
    from monitor_support import status, status_msg

    from node.link.fake import FakeBroker, FakeLink

    fake = FakeBroker()
    now = [1_700_000_000_000]

    def link(**kw: Any) -> FakeLink:
        return FakeLink(fake, kw["client_id"], subscriptions=kw["subscriptions"],
                        options=kw["options"], sleep=_no_sleep)  # fmt: skip

    settings = MonitorSettings(db_path=tmp_path / "m.db", monitor_id="mon",
                               flush_interval_s=0.01, tick_interval_s=0.01)  # fmt: skip
    alerts_topic = topics.monitor_alerts("mon")
    async with Monitor(settings, link_factory=link, clock=lambda: now[0]) as mon:
        await mon.wait_connected(5)
        async with FakeLink(fake, "ion-node-edge-1") as node:
            await node.wait_connected()
            await node.publish(*status_msg(status("edge-1", heartbeat_ms=1000), now[0]),
                               retain=True)  # fmt: skip
        await async_wait_until(lambda: query(tmp_path / "m.db", "SELECT state FROM nodes")
                               == [("online",)], 5)  # fmt: skip
        fake.partition("ion-monitor-mon")
        now[0] += 5_000  # five heartbeats of silence
        await async_wait_until(lambda: query(tmp_path / "m.db", "SELECT rule, state FROM alerts")
                               == [("node_offline", "firing")], 5)  # fmt: skip
        assert fake.published_on(alerts_topic) == []
        fake.heal("ion-monitor-mon")
        await async_wait_until(lambda: len(fake.published_on(alerts_topic)) == 1, 10)
        body = decode(fake.published_on(alerts_topic)[0]).body
        assert isinstance(body, Event)
        assert (body.type, body.attributes["rule"], body.attributes["key"]) == (
            "alert.fired", "node_offline", "edge-1")  # fmt: skip
        assert mon.alerts_published == 1


async def _no_sleep(seconds: float) -> None:
    await asyncio.sleep(min(seconds, 0.01))
