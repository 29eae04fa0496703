"""The agent's trigger shell (``node.agent.trigger_watch``) with fakes: no broker, no agent."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from ion import topics
from ion.model.definition import (
    Component,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    TriggerCondition,
)
from ion.model.event import Event, Trigger
from ion.model.health import DriftScore, HealthReport
from ion.model.messages import new_envelope
from ion.model.status import NodeState, NodeStatus
from ion.topics import Channel
from node.agent.receiver import Arrival
from node.agent.trigger_watch import STATE_FILE, TriggerWatch
from node.reconcile import PipelineKey

ION = "ml"
NOW = 1_800_000_000_000


def definition(metric: str = "drift") -> IonDefinition:
    def pipe(name: str, mode: PipelineMode, nodes: tuple[str, ...]) -> Pipeline:
        return Pipeline(
            name=name,
            engine="python",
            role=PipelineRole.OTHER,
            mode=mode,
            placement=Placement(nodes=nodes),
            components=(Component("c", "counter_source", {"count": 1}),),
        )

    return IonDefinition(
        name=ION,
        pipelines=(
            pipe("training", PipelineMode.BATCH, ("cloud",)),
            pipe("report", PipelineMode.BATCH, ("cloud",)),
            pipe("inference", PipelineMode.STREAMING, ("e1", "e2")),
        ),
        edges=(
            Edge(
                "retrain",
                EdgeKind.TRIGGER,
                Endpoint("inference"),
                (Endpoint("training"), Endpoint("report"), Endpoint("elsewhere")),
                trigger=TriggerCondition(metric, 0.25, 2, 60_000, 600_000),
            ),
        ),
    )


class Harness:
    def __init__(self, data_dir: Path, *, now: int = NOW) -> None:
        self.now = now
        self.started: list[PipelineKey] = []
        self.published: list[tuple[str, object, str]] = []
        self.watch = TriggerWatch(
            node_id="cloud",
            data_dir=data_dir,
            clock=lambda: self.now,
            publish=self._publish,
            spawn=self._spawn,
            start=self._start,
        )
        self.watch.plan(
            {ION: definition()}, [(ION, "training"), (ION, "report"), (ION, "unrelated")]
        )

    async def _publish(self, topic: str, body: object, *, ion: str = "") -> None:
        self.published.append((topic, body, ion))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        asyncio.run(coro)  # the fake publish finishes at once

    def _start(self, key: PipelineKey) -> bool:
        self.started.append(key)
        return True

    def health(self, node: str, score: float, *, created: int | None = None) -> None:
        body = HealthReport("inference", drift=(DriftScore("", "psi", score),))
        topic = topics.parse(topics.pipeline(ION, "inference", Channel.HEALTH, node))
        env = new_envelope(body, source_node=node, now_ms=self.now if created is None else created)
        self.watch.on_arrival(Arrival(topic, env))

    def trigger_from(self, node: str) -> bool:
        topic = topics.parse(topics.edge(ION, "retrain", Channel.TRIGGER, node))
        env = new_envelope(Trigger("retrain", "training"), source_node=node, now_ms=self.now)
        return self.watch.accept_trigger(Arrival(topic, env))


def test_subscriptions_follow_the_metric_and_the_targets_placed_here(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert h.watch.subscriptions() == {
        "ion/v1/ions/ml/pipelines/inference/health/+",
        topics.ALL_NODE_STATUS,
    }
    h.watch.plan({ION: definition("error_rate")}, [(ION, "training")])
    assert h.watch.subscriptions() == {
        "ion/v1/ions/ml/pipelines/inference/health/+",
        "ion/v1/ions/ml/pipelines/inference/stats/+",
        "ion/v1/ions/ml/pipelines/inference/events/+",
        topics.ALL_NODE_STATUS,
    }
    h.watch.plan({ION: definition()}, [(ION, "inference")])  # an edge node: nothing to watch
    assert h.watch.subscriptions() == frozenset()


def test_a_firing_starts_local_targets_publishes_triggers_and_an_event(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.health("e1", 0.4)
    assert h.started == []
    h.health("e2", 0.3)
    assert h.started == [(ION, "training"), (ION, "report")]  # not "elsewhere": not here
    trigger_topic = topics.edge(ION, "retrain", Channel.TRIGGER, "cloud")
    sent = [(t, b) for t, b, _ in h.published if isinstance(b, Trigger)]
    assert [b.target_pipeline for _, b in sent] == ["training", "report", "elsewhere"]
    assert {t for t, _ in sent} == {trigger_topic}
    assert all(ion == ION for _, b, ion in h.published if isinstance(b, Trigger))
    [(topic, event, _)] = [p for p in h.published if isinstance(p[1], Event)]
    assert topic == topics.node_topic("cloud", topics.TopicKind.NODE_EVENTS)
    assert isinstance(event, Event)
    assert event.type == "trigger.fired"
    assert event.attributes["nodes"] == "e1,e2"
    assert event.attributes["value.e1"] == "0.4"
    assert event.attributes["started"] == "training,report"
    assert (tmp_path / STATE_FILE).exists()
    # Still drifting: nothing more during the cooldown.
    h.now += 1000
    h.health("e1", 0.9)
    assert len(h.started) == 2


def test_its_own_trigger_message_is_ignored_another_nodes_starts_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert not h.trigger_from("cloud")  # our own, coming back
    assert h.trigger_from("cloud-2")  # another target host fired first
    assert not h.trigger_from("cloud-3")  # same episode: cooling down now
    h.health("e1", 0.9)
    h.health("e2", 0.9)
    assert h.started == []  # the cooldown started with the other node's firing


def test_a_trigger_on_an_edge_not_evaluated_here_is_obeyed(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.watch.plan({}, [])
    assert h.trigger_from("cloud-2")


def test_old_reports_do_not_count_and_future_ones_count_as_now(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.health("e1", 0.9, created=NOW - 120_000)  # relayed late: outside the 1 min window
    h.health("e2", 0.9)
    assert h.started == []
    h.health("e1", 0.9, created=NOW + 3_600_000)  # a clock ahead: taken as now
    assert len(h.started) == 2


def test_a_node_that_went_offline_no_longer_counts(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.health("e1", 0.9)
    status = NodeStatus("e1", NodeState.OFFLINE)
    topic = topics.parse(topics.node_status("e1"))
    h.watch.on_arrival(Arrival(topic, new_envelope(status, source_node="e1", now_ms=NOW)))
    h.health("e2", 0.9)
    assert h.started == []


def test_the_cooldown_survives_a_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.health("e1", 0.9)
    h.health("e2", 0.9)
    assert len(h.started) == 2
    again = Harness(tmp_path, now=NOW + 60_000)  # the agent restarted a minute later
    assert again.watch.book.last_fired == {(ION, "retrain"): NOW}
    again.health("e1", 0.9)
    again.health("e2", 0.9)
    assert again.started == []
    later = Harness(tmp_path, now=NOW + 600_000)
    later.health("e1", 0.9)
    later.health("e2", 0.9)
    assert len(later.started) == 2


@pytest.mark.asyncio
async def test_the_tick_evaluates_without_new_reports(tmp_path: Path) -> None:
    published: list[object] = []
    started: list[PipelineKey] = []
    now = [NOW]

    async def publish(topic: str, body: object, *, ion: str = "") -> None:
        published.append(body)

    tasks: list[asyncio.Task[None]] = []
    began = asyncio.Event()

    def start(key: PipelineKey) -> bool:
        started.append(key)
        began.set()
        return True

    watch = TriggerWatch(
        node_id="cloud",
        data_dir=tmp_path,
        clock=lambda: now[0],
        publish=publish,
        spawn=lambda coro, name: tasks.append(asyncio.ensure_future(coro)),
        start=start,
    )
    watch.plan({ION: definition()}, [(ION, "training")])
    watch.book.fired_elsewhere(ION, "retrain", NOW - 599_000)  # cooling down for 1 more s
    for node in ("e1", "e2"):
        body = HealthReport("inference", drift=(DriftScore("", "psi", 0.9),))
        topic = topics.parse(topics.pipeline(ION, "inference", Channel.HEALTH, node))
        watch.on_arrival(Arrival(topic, new_envelope(body, source_node=node, now_ms=NOW)))
    assert started == []
    now[0] += 1000  # the cooldown ends; no report arrives
    runner = asyncio.create_task(watch.run())
    try:
        async with asyncio.timeout(10):
            await began.wait()
    finally:
        runner.cancel()
        await asyncio.gather(runner, *tasks, return_exceptions=True)
    assert started == [(ION, "training")]
    assert any(isinstance(b, Event) and b.type == "trigger.fired" for b in published)
