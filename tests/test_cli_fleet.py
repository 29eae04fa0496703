"""``ion status``, ``ion pipelines`` and ``ion events``: the folding alone, then the commands as
a user runs them (subprocesses) against real Mosquitto and real agents."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, ticker
from support import async_wait_until
from support.brokers import mqtt_client

from ion import topics
from ion.client.events import EventFilter, event_filters, event_records
from ion.client.fleet import node_problems, pipeline_rows, read_statuses, status_rows
from ion.client.session import connect
from ion.config.broker import parse_broker_url
from ion.errors import InputError
from ion.model.definition import IonDefinition
from ion.model.messages import (
    EnvelopeBatch,
    Event,
    LinkStatus,
    ModelStatus,
    NodeState,
    NodeStatus,
    PipelineState,
    PipelineStatus,
    QueueStatus,
    Severity,
    new_envelope,
)
from ion.topics import TopicKind
from ion.wire.codec import encode
from node.agent.service import Agent
from node.config import NodeConfig, config_from_mapping

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000_000


def ion(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ion.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env=cli_env(), check=False,
    )  # fmt: skip


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ION_")}
    env["HOME"] = str(ROOT / ".no-home")  # no user config file leaks in
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- pure folding ---------------------------------------------------------------------------


def pipe(name: str, state: PipelineState, **kw: Any) -> PipelineStatus:
    return PipelineStatus(ion="shop", pipeline=name, state=state, engine="python", **kw)


def test_status_rows_by_layer_with_counts_and_problems() -> None:
    statuses = [
        NodeStatus("edge-1", NodeState.ONLINE, layer="edge", heartbeat_interval_ms=1000,
                   pipelines=(pipe("infer", PipelineState.RUNNING),
                              pipe("score", PipelineState.CRASH_LOOP, restarts=5, message="boom")),
                   queues=(QueueStatus("upstream", "data", depth=7, oldest_age_ms=900_000),),
                   models=(ModelStatus("shop", "m", active_version="3", pending=("4",)),)),
        NodeStatus("cloud-1", NodeState.ONLINE, layer="cloud", heartbeat_interval_ms=1000,
                   pipelines=(pipe("train", PipelineState.SUCCEEDED),)),
        NodeStatus("edge-0", NodeState.ONLINE, layer="edge", heartbeat_interval_ms=1000),
        NodeStatus("gw-1", NodeState.OFFLINE, layer="gateway",
                   pipelines=(pipe("relay", PipelineState.FAILED),)),
    ]  # fmt: skip
    sent = {"edge-1": NOW - 500, "cloud-1": NOW - 200, "edge-0": NOW - 10_000, "gw-1": NOW - 9}
    rows, problems = status_rows(statuses, now_ms=NOW, sent_ms=sent, backlog_age_s=300)
    assert [(r.layer, r.node_id, r.state) for r in rows] == [
        ("cloud", "cloud-1", "online"),
        ("gateway", "gw-1", "offline"),
        ("edge", "edge-0", "stale"),  # online, but silent for ten heartbeats
        ("edge", "edge-1", "online"),
    ]
    e1 = rows[3]
    assert (e1.pipelines_running, e1.pipelines_failed, e1.pipelines_total) == (1, 1, 2)
    assert (e1.queue_depth, e1.queue_oldest_s, e1.models_active, e1.models_pending) == (
        7, 900.0, 1, 1
    )  # fmt: skip
    assert e1.heartbeat_age_s == 0.5
    kinds = sorted((p.node_id, p.kind) for p in problems)
    # An offline node's last pipeline states are history, not problems of their own.
    assert kinds == [
        ("edge-0", "node.stale"), ("edge-1", "pipeline.crash_loop"),
        ("edge-1", "queue.backlog"), ("gw-1", "node.offline"),
    ]  # fmt: skip
    crash = next(p for p in problems if p.kind == "pipeline.crash_loop")
    assert crash.message == "shop/score on edge-1 is crash_loop (restarts 5): boom"


def test_failed_node_is_a_problem_with_its_error() -> None:
    s = NodeStatus("edge-1", NodeState.FAILED, error="Not authorized")
    (p,) = node_problems(s, now_ms=NOW, sent_ms=NOW, backlog_age_s=300)
    assert (p.kind, p.message) == ("node.failed", "edge-1 failed: Not authorized")


def test_only_a_gateways_upstream_link_down_is_a_problem() -> None:
    # The node's own link carried the status: "down" there was written before it came up.
    links = (LinkStatus("broker", error="first attempt"), LinkStatus("upstream", error="refused"))
    s = NodeStatus("gw-1", NodeState.ONLINE, links=links)
    (p,) = node_problems(s, now_ms=NOW, sent_ms=NOW, backlog_age_s=300)
    assert (p.kind, p.message) == ("link.down", "gw-1's upstream link is down: refused")


def test_pipeline_rows_filter_by_ion_and_sort() -> None:
    statuses = [
        NodeStatus("b", NodeState.ONLINE, pipelines=(pipe("x", PipelineState.RUNNING,
                   since_ms=NOW - 3000),)),
        NodeStatus("a", NodeState.OFFLINE, pipelines=(
            pipe("x", PipelineState.RUNNING),
            PipelineStatus(ion="other", pipeline="y", state=PipelineState.PENDING))),
    ]  # fmt: skip
    rows = pipeline_rows(statuses, now_ms=NOW, sent_ms={}, ion="shop")
    assert [(r.node_id, r.node_state, r.state, r.since_s) for r in rows] == [
        ("a", "offline", "running", None), ("b", "online", "running", 3.0)
    ]  # fmt: skip
    assert len(pipeline_rows(statuses, now_ms=NOW, sent_ms={})) == 3


def _event_payload(*events: Event, source: str = "edge-1") -> bytes:
    envs = [new_envelope(e, source_node=source, now_ms=NOW + i) for i, e in enumerate(events)]
    if len(envs) == 1:
        return encode(envs[0])
    batch = EnvelopeBatch(tuple(envs))
    return encode(new_envelope(batch, source_node=source, now_ms=NOW))


def test_event_records_from_each_kind_of_topic_and_batches() -> None:
    drift = Event("health.drift", Severity.WARNING, subject="x", message="psi 0.4")
    pipeline_topic = "ion/v1/ions/shop/pipelines/infer/events/edge-1"
    (r,) = event_records(pipeline_topic, _event_payload(drift))
    assert (r.source, r.node_id, r.ion, r.pipeline, r.type, r.severity) == (
        "pipeline", "edge-1", "shop", "infer", "health.drift", "warning"
    )  # fmt: skip
    alerts = event_records(
        topics.monitor_alerts("mon-1"),
        _event_payload(drift, Event("alert.fired", Severity.ERROR), source="mon-1"),
    )
    assert [(a.source, a.node_id, a.type) for a in alerts] == [
        ("alert", "mon-1", "health.drift"), ("alert", "mon-1", "alert.fired")
    ]  # fmt: skip
    (n,) = event_records(topics.node_topic("edge-2", TopicKind.NODE_EVENTS), _event_payload(drift))
    assert (n.source, n.node_id) == ("node", "edge-2")  # the topic names the node
    with pytest.raises(InputError):
        event_records(topics.node_status("edge-1"), _event_payload(drift))
    with pytest.raises(InputError):
        event_records(pipeline_topic, b"\xff\x00garbage")


def test_event_filter() -> None:
    (r,) = event_records(
        "ion/v1/ions/shop/edges/alerts/events/edge-1",
        _event_payload(Event("model.rejected", Severity.ERROR)),
    )
    assert r.edge == "alerts" and r.source == "edge"
    assert EventFilter(ion="shop", node="edge-1", type_pattern="model.*").accepts(r)
    assert EventFilter(min_severity="error", since_ms=NOW).accepts(r)
    assert not EventFilter(min_severity="critical").accepts(r)
    assert not EventFilter(type_pattern="health.*").accepts(r)
    assert not EventFilter(node="edge-2").accepts(r)
    assert not EventFilter(since_ms=NOW + 1).accepts(r)
    with pytest.raises(InputError, match="unknown severity 'loud'"):
        EventFilter(min_severity="loud")
    assert "ion/v1/nodes/edge-1/events" in event_filters(node="edge-1")
    assert not any("nodes/" in f for f in event_filters(ion="shop"))
    with pytest.raises(InputError, match="invalid node id"):
        event_filters(node="edge/#")
    with pytest.raises(InputError, match="invalid ION name"):
        event_filters(ion="+")


# -- against Mosquitto and agents -----------------------------------------------------------


def config(node: str, url: str, tmp: Path, layer: str) -> NodeConfig:
    return config_from_mapping({
        "node": {"id": node, "layer": layer},
        "broker": {"url": url},
        "data_dir": str(tmp / node),
        # 2 s, not 1 s: on a loaded machine a node late by three heartbeats shows as stale.
        "heartbeat_interval": "2s",
        "trust": {"development_mode": True},
    })  # fmt: skip


def statuses_of(url: str) -> dict[str, NodeStatus]:
    with connect(parse_broker_url(url)) as session:
        found, _, _ = read_statuses(session)
    return {s.node_id: s for s in found}


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
@pytest.mark.asyncio
async def test_status_and_pipelines_show_agents_and_a_killed_one(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    cfg = tmp_path / "edge-9.yaml"
    cfg.write_text(
        f"node: {{id: edge-9, layer: edge}}\nbroker: {{url: '{url}'}}\n"
        f"data_dir: {tmp_path / 'edge-9'}\nheartbeat_interval: 2s\n"
    )
    victim = subprocess.Popen(
        [sys.executable, "-m", "node", "run", "-c", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env(),
    )  # fmt: skip
    try:
        async with (
            Agent(config("cloud-1", url, tmp_path, "cloud")) as a,
            Agent(config("edge-1", url, tmp_path, "edge")) as b,
        ):
            await a.link.wait_connected()
            await b.link.wait_connected()
            await apply(url, IonDefinition(
                name="fleetview",
                pipelines=(ticker("train", ("cloud-1",)), ticker("infer", ("edge-1",))),
            ))  # fmt: skip

            def all_running() -> bool:
                s = statuses_of(url)
                return "edge-9" in s and all(
                    n in s and [p.state for p in s[n].pipelines] == [PipelineState.RUNNING]
                    for n in ("cloud-1", "edge-1")
                )

            await async_wait_until(lambda: asyncio.to_thread(all_running), 30)
            r = await asyncio.to_thread(ion, "status", "--json", "--broker", url)
            plain = await asyncio.to_thread(ion, "status", "--broker", url)
            pj = await asyncio.to_thread(ion, "pipelines", "fleetview", "--json", "--broker", url)
            pp = await asyncio.to_thread(ion, "pipelines", "--broker", url)
            nj = await asyncio.to_thread(ion, "nodes", "--json", "--broker", url)

            victim.kill()  # no drain, no goodbye: the broker sends the last will
            victim.wait()
            await async_wait_until(
                lambda: asyncio.to_thread(
                    lambda: statuses_of(url)["edge-9"].state is NodeState.OFFLINE
                ),
                20,
            )
            after = await asyncio.to_thread(ion, "status", "--json", "--broker", url)
            after_plain = await asyncio.to_thread(ion, "status", "--broker", url)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()

    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["broker"] == url
    nodes = {n["node_id"]: n for n in data["nodes"]}
    assert [n["node_id"] for n in data["nodes"]] == ["cloud-1", "edge-1", "edge-9"]  # by layer
    for n in ("cloud-1", "edge-1"):
        assert nodes[n]["state"] == "online", r.stdout
        assert (nodes[n]["pipelines_running"], nodes[n]["pipelines_total"]) == (1, 1)
        assert nodes[n]["heartbeat_age_s"] < 10
    assert data["summary"]["pipelines_running"] == 2
    assert data["summary"]["states"] == {"online": 3}, r.stdout
    assert data["problems"] == [], r.stdout

    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].split() == ["LAYER", "NODE", "STATE", "HEARTBEAT", "RUNNING", "FAILED",
                                "QUEUED", "OLDEST", "MODELS", "PROBLEMS"]  # fmt: skip
    assert lines[1].split()[:3] == ["cloud", "cloud-1", "online"]
    assert "\x1b[" not in plain.stdout  # piped: no colour codes
    # The same fleet as the JSON above, read again: a node of another test that reconnects
    # to a reused port may show up in between, so count the rows rather than expect three.
    table = lines[1 : lines.index("")] if "" in lines else lines[1:]
    rows = {line.split()[1]: line.split()[2] for line in table}
    assert {n: rows.get(n) for n in ("cloud-1", "edge-1", "edge-9")} == dict.fromkeys(
        ("cloud-1", "edge-1", "edge-9"), "online"
    ), plain.stdout
    summary = f"{len(rows)} node(s): {len(rows)} online; "
    assert summary in plain.stdout and " 0 failed; 0 problem(s)" in plain.stdout, plain.stdout

    assert pj.returncode == 0, pj.stderr
    rows = json.loads(pj.stdout)
    assert [(p["pipeline"], p["node_id"], p["state"], p["engine"]) for p in rows] == [
        ("infer", "edge-1", "running", "python"), ("train", "cloud-1", "running", "python")
    ]  # fmt: skip
    assert pp.returncode == 0, pp.stderr
    assert pp.stdout.splitlines()[0].split() == [
        "ION", "PIPELINE", "NODE", "STATE", "ENGINE", "RESTARTS", "SINCE", "MESSAGE"
    ]  # fmt: skip
    assert pp.stdout.splitlines()[1].split()[:5] == [
        "fleetview", "infer", "edge-1", "running", "python"
    ]  # fmt: skip

    assert nj.returncode == 0, nj.stderr  # `ion nodes` reads the same statuses
    assert [(n["node_id"], n["state"], n["pipelines"]) for n in json.loads(nj.stdout)] == [
        ("cloud-1", "online", "1/1"), ("edge-1", "online", "1/1"), ("edge-9", "online", "0/0")
    ]  # fmt: skip

    assert after.returncode == 0, after.stderr
    later = {n["node_id"]: n for n in json.loads(after.stdout)["nodes"]}
    assert later["edge-9"]["state"] == "offline"
    problems = json.loads(after.stdout)["problems"]
    assert [(p["node_id"], p["kind"]) for p in problems] == [("edge-9", "node.offline")]
    edge9 = next(line for line in after_plain.stdout.splitlines() if "edge-9" in line.split())
    assert edge9.split()[:3] == ["edge", "edge-9", "offline"]
    assert "ERROR   edge-9 is offline" in after_plain.stdout


@pytest.mark.integration
@pytest.mark.asyncio
async def test_events_follow_prints_an_agent_event_and_stops_on_sigint(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    proc = subprocess.Popen(
        [sys.executable, "-m", "ion.cli.main", "events", "--follow", "--broker", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )  # fmt: skip
    try:
        assert proc.stderr is not None and proc.stdout is not None
        ready = await asyncio.to_thread(proc.stderr.readline)  # printed after the SUBACK
        assert ready.startswith(f"following events on {url}"), ready
        async with Agent(config("edge-5", url, tmp_path, "edge")) as agent:
            await agent.link.wait_connected()
            await agent.publish(
                topics.node_topic("edge-5", TopicKind.NODE_EVENTS),
                Event("disk.low", Severity.WARNING, subject="edge-5", message="3% free"),
            )
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        proc.send_signal(signal.SIGINT)
        rest, err = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    fields = line.split()
    assert fields[2:6] == ["WARNING", "node", "edge-5", "-"], line
    assert line.rstrip().endswith("disk.low [edge-5]: 3% free")
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert rest == ""  # nothing else was published


@pytest.mark.integration
def test_events_without_follow_listens_then_prints_and_filters(mosquitto: Any) -> None:
    url = mosquitto.url
    ion_name = f"ev{time.time_ns() % 10**9}"  # the shared broker keeps retained verdicts
    verdict = Event("model.canary_failed", Severity.ERROR, subject="v3", message="drift")
    env = new_envelope(verdict, source_node="edge-7", now_ms=time.time_ns() // 1_000_000)
    with mqtt_client(mosquitto.host, mosquitto.port) as client:
        client.publish(topics.model_canary(ion_name, "model", "edge-7"), encode(env), retain=True)
    try:
        r = ion("events", "--ion", ion_name, "--for", "1", "--json", "--broker", url)
        assert r.returncode == 0, r.stderr
        (record,) = [json.loads(line) for line in r.stdout.splitlines()]
        assert record["type"] == "model.canary_failed"
        assert (record["source"], record["node_id"], record["ion"], record["edge"]) == (
            "canary", "edge-7", ion_name, "model"
        )  # fmt: skip
        assert record["message_id"] == env.message_id
        plain = ion("events", "--ion", ion_name, "--for", "1", "--broker", url)
        assert plain.returncode == 0, plain.stderr
        assert "ERROR    canary   edge-7 " in plain.stdout
        none = ion("events", "--ion", ion_name, "--for", "0.5", "--severity", "critical",
                   "--broker", url)  # fmt: skip
        assert none.stdout.startswith("no events in 0.5s on")  # (more filters: pure tests)
    finally:
        with mqtt_client(mosquitto.host, mosquitto.port) as client:
            client.publish(topics.model_canary(ion_name, "model", "edge-7"), b"", retain=True)


@pytest.mark.integration
@pytest.mark.parametrize(
    "cmd", [["status"], ["pipelines"], ["events"], ["events", "--follow"], ["status", "--json"]]
)
def test_unreachable_broker_is_one_clear_line(cmd: list[str], closed_port: int) -> None:
    r = ion(*cmd, "--broker", f"mqtt://127.0.0.1:{closed_port}")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: cannot reach broker at mqtt://127.0.0.1:{closed_port}: Connection refused"
    ]
    assert r.stdout == ""


def test_bad_since_is_an_input_error() -> None:
    r = ion("events", "--since", "yesterday", "--broker", "mqtt://127.0.0.1:1")
    assert r.returncode == 2
    assert "--since 'yesterday'" in r.stderr
    r = ion("events", "--node", "edge/#", "--broker", "mqtt://127.0.0.1:1")
    assert r.returncode == 2
    assert "invalid node id 'edge/#'" in r.stderr


def test_every_view_has_help() -> None:
    from click.testing import CliRunner

    from ion.cli.main import cli

    for cmd in ("status", "pipelines", "events", "nodes", "check"):
        r = CliRunner().invoke(cli, [cmd, "--help"])
        assert r.exit_code == 0, r.output
        assert "Usage:" in r.output and "--broker" in r.output and "--json" in r.output
