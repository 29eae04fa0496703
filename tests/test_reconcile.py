"""Which pipelines a node runs and which topics it needs (pure)."""

from __future__ import annotations

from dataclasses import replace

from ion.model.definition import (
    Component,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    IonDeleted,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
)
from node.identity import NodeIdentity
from node.reconcile import DefinitionBook, base_subscriptions, diff, plan_node


def pipeline(
    name: str, placement: Placement, mode: PipelineMode = PipelineMode.STREAMING
) -> Pipeline:
    return Pipeline(
        name=name,
        engine="python",
        role=PipelineRole.OTHER,
        mode=mode,
        placement=placement,
        components=(Component(name="c", type="counter_source"),),
    )


ION = IonDefinition(
    name="k",
    version=1,
    pipelines=(
        pipeline("train", Placement(nodes=("cloud-1",)), PipelineMode.BATCH),
        pipeline("infer", Placement(labels={"tier": "edge"})),
    ),
    edges=(
        Edge("model", EdgeKind.MODEL, Endpoint("train"), (Endpoint("infer"),)),
        Edge("drift", EdgeKind.HEALTH, Endpoint("infer"), (Endpoint("train"),)),
        Edge("retrain", EdgeKind.TRIGGER, Endpoint("infer"), (Endpoint("train"),)),
    ),
)
EDGE = NodeIdentity("edge-1", {"tier": "edge", "site": "a"})
CLOUD = NodeIdentity("cloud-1", {"tier": "cloud"})


def test_placement_by_labels_and_by_id() -> None:
    assert set(plan_node({"k": ION}, EDGE).pipelines) == {("k", "infer")}
    assert set(plan_node({"k": ION}, CLOUD).pipelines) == {("k", "train")}
    assert plan_node({"k": ION}, NodeIdentity("other")).pipelines == {}


def test_subscriptions_follow_consumed_edges() -> None:
    edge_subs = plan_node({"k": ION}, EDGE).subscriptions
    assert "ion/v1/ions/k/edges/model/model/#" in edge_subs
    assert "ion/v1/ions/k/edges/drift/health/+" not in edge_subs  # produced, not consumed
    assert "ion/v1/ions/k/cmd" in edge_subs
    cloud_subs = plan_node({"k": ION}, CLOUD).subscriptions
    assert "ion/v1/ions/k/edges/drift/health/+" in cloud_subs
    assert "ion/v1/ions/k/edges/retrain/trigger/+" in cloud_subs
    assert "ion/v1/ions/k/edges/model/model/#" not in cloud_subs
    # A node with nothing placed on it still hears definitions and its own commands.
    assert plan_node({"k": ION}, NodeIdentity("idle")).subscriptions == base_subscriptions("idle")


def test_book_refuses_stale_and_conflicting_versions() -> None:
    book = DefinitionBook()
    assert book.offer(ION).accepted
    assert book.offer(ION).reason == "duplicate"
    v2 = replace(ION, version=2, description="two")
    assert book.offer(v2).accepted
    stale = book.offer(ION)
    assert not stale.accepted
    assert "stale" in stale.reason
    conflict = book.offer(replace(ION, version=2, description="other"))
    assert not conflict.accepted
    assert "conflict" in conflict.reason
    assert book.active() == {"k": v2}


def test_tombstone_removes_and_blocks_replay() -> None:
    book = DefinitionBook()
    book.offer(replace(ION, version=3))
    assert book.offer(IonDeleted("k", 4)).accepted
    assert book.active() == {}
    assert not book.offer(replace(ION, version=3)).accepted  # a replayed copy
    assert book.offer(replace(ION, version=5)).accepted  # re-created later


def test_diff_start_stop_update() -> None:
    a, b, c = ("k", "a"), ("k", "b"), ("k", "c")
    pa = pipeline("a", Placement(nodes=("n",)))
    pb = pipeline("b", Placement(nodes=("n",)))
    pc = pipeline("c", Placement(nodes=("n",)))
    d = diff({a: pa, b: replace(pb, schedule="x")}, {b: pb, c: pc})
    assert d.start == (a,)
    assert d.stop == (c,)
    assert d.update == (b,)
    assert diff({a: pa}, {a: pa}) == diff({}, {})
