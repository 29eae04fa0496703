"""The trigger core (``node.agent.triggers``) and the shell's pure helpers: no network."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from ion.model.event import Event, Severity
from ion.model.health import DriftScore, HealthReport, Metric, StatsReport
from ion.model.status import NodeState, NodeStatus, PipelineState, PipelineStatus
from node.agent.trigger_watch import (
    load_state,
    save_state,
    watched_edges,
)
from node.agent.triggers import TriggerBook, WatchedEdge, metric_value

ION = "ml"
MIN = 60_000


def edge(
    metric: str = "drift",
    above: float = 0.25,
    min_nodes: int = 2,
    window_ms: int = 5 * MIN,
    cooldown_ms: int = 30 * MIN,
    name: str = "retrain",
) -> WatchedEdge:
    return WatchedEdge(
        ion=ION,
        edge=name,
        source_pipeline="inference",
        condition=TriggerCondition(metric, above, min_nodes, window_ms, cooldown_ms),
        targets=("training",),
    )


def drift(score: float, *, feature: str = "") -> HealthReport:
    return HealthReport(pipeline="inference", drift=(DriftScore(feature, "psi", score, 0.2, "3"),))


def book(*edges: WatchedEdge, last: dict[tuple[str, str], int] | None = None) -> TriggerBook:
    b = TriggerBook(last)
    b.configure(edges or (edge(),))
    return b


def status(node: str, *running: str, state: NodeState = NodeState.ONLINE) -> NodeStatus:
    return NodeStatus(
        node_id=node,
        state=state,
        pipelines=tuple(PipelineStatus(ION, p, PipelineState.RUNNING) for p in running),
    )


# -- metric values ------------------------------------------------------------------------------


def test_drift_is_the_overall_score_not_a_feature_score() -> None:
    report = HealthReport(
        pipeline="p",
        drift=(
            DriftScore("temperature", "psi", 9.0),
            DriftScore("", "psi", 0.3),
            DriftScore("", "jensen_shannon", 0.1),
        ),
    )
    assert metric_value(report, "drift") == 0.3
    assert metric_value(drift(0.5, feature="rpm"), "drift") is None
    assert metric_value(HealthReport(pipeline="p"), "drift") is None


def test_other_metrics_come_from_stats_health_scalars_and_event_attributes() -> None:
    stats = StatsReport("p", scalars=(Metric("error_rate", 0.1), Metric("error_rate", 0.4)))
    assert metric_value(stats, "error_rate") == 0.4  # the last one given is the newest
    assert metric_value(stats, "scored") is None
    health = HealthReport("p", scalars=(Metric("anomaly_rate", 0.2),))
    assert metric_value(health, "anomaly_rate") == 0.2
    event = Event("x.y", Severity.INFO, attributes={"error_rate": "0.7", "note": "n/a"})
    assert metric_value(event, "error_rate") == 0.7
    assert metric_value(event, "note") is None  # not a number
    assert metric_value(event, "absent") is None
    assert metric_value(StatsReport("p", scalars=(Metric("e", math.nan),)), "e") is None
    assert metric_value(Event("x", Severity.INFO, attributes={"e": "inf"}), "e") is None


def test_an_invalid_condition_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid condition"):
        edge(min_nodes=0)
    with pytest.raises(ValueError, match="invalid condition"):
        edge(window_ms=0)


# -- firing -------------------------------------------------------------------------------------


def test_fires_when_enough_nodes_agree_then_cools_down() -> None:
    b = book()
    b.observe(ION, "inference", "edge-1", drift(0.4), 1000)
    assert b.evaluate(1000) == []  # one node of two
    b.observe(ION, "inference", "edge-2", drift(0.3), 2000)
    [firing] = b.evaluate(2000)
    assert firing.targets == ("training",)
    assert dict(firing.values) == {"edge-1": 0.4, "edge-2": 0.3}
    assert firing.nodes == ("edge-1", "edge-2")
    assert "drift above 0.25 on 2 node(s)" in firing.reason()
    assert b.last_fired == {(ION, "retrain"): 2000}
    # Still over, but cooling down ...
    b.observe(ION, "inference", "edge-1", drift(0.5), 3000)
    b.observe(ION, "inference", "edge-2", drift(0.5), 3000)
    assert b.evaluate(3000) == []
    assert b.evaluate(2000 + 30 * MIN - 1) == []
    # ... until the cooldown ends; the readings must be recent then, too.
    b.observe(ION, "inference", "edge-1", drift(0.5), 2000 + 30 * MIN)
    b.observe(ION, "inference", "edge-2", drift(0.5), 2000 + 30 * MIN)
    assert len(b.evaluate(2000 + 30 * MIN)) == 1


def test_at_the_threshold_is_not_above_it() -> None:
    b = book(edge(min_nodes=1))
    b.observe(ION, "inference", "edge-1", drift(0.25), 0)
    assert b.evaluate(0) == []


def test_readings_expire_with_the_window() -> None:
    b = book(edge(window_ms=MIN))
    b.observe(ION, "inference", "edge-1", drift(0.9), 0)
    b.observe(ION, "inference", "edge-2", drift(0.9), MIN + 1)
    assert b.evaluate(MIN + 1) == []  # edge-1's reading is too old
    assert b.nodes_over(ION, "retrain", MIN + 1) == {"edge-2": 0.9}
    b.observe(ION, "inference", "edge-1", drift(0.9), MIN + 2)
    assert len(b.evaluate(MIN + 2)) == 1


def test_a_node_reporting_twice_counts_once_with_its_latest_value() -> None:
    b = book()
    b.observe(ION, "inference", "edge-1", drift(0.9), 0)
    b.observe(ION, "inference", "edge-1", drift(0.8), 1)
    assert b.evaluate(1) == []
    # Its latest value fell back under the threshold: what it said before no longer counts.
    b.observe(ION, "inference", "edge-1", drift(0.1), 2)
    b.observe(ION, "inference", "edge-2", drift(0.9), 3)
    assert b.evaluate(3) == []


def test_an_older_report_arriving_late_does_not_replace_a_newer_one() -> None:
    b = book(edge(min_nodes=1))
    b.observe(ION, "inference", "edge-1", drift(0.1), 500)
    assert b.observe(ION, "inference", "edge-1", drift(0.9), 100) == 0
    assert b.evaluate(600) == []


def test_reports_of_other_pipelines_ions_or_metrics_are_not_readings() -> None:
    b = book(edge(min_nodes=1))
    assert b.observe(ION, "training", "cloud-1", drift(0.9), 0) == 0
    assert b.observe("other", "inference", "edge-1", drift(0.9), 0) == 0
    assert b.observe(ION, "inference", "edge-1", StatsReport("inference"), 0) == 0
    assert b.evaluate(0) == []


def test_only_the_named_source_component_counts_when_the_edge_names_one() -> None:
    w = WatchedEdge(
        ION, "retrain", "inference", TriggerCondition("drift", 0.2, 1), ("training",), "health"
    )
    b = book(w)
    other = HealthReport("inference", component="score", drift=(DriftScore("", "psi", 0.9),))
    assert b.observe(ION, "inference", "edge-1", other, 0) == 0
    mine = HealthReport("inference", component="health", drift=(DriftScore("", "psi", 0.9),))
    assert b.observe(ION, "inference", "edge-1", mine, 0) == 1


def test_nodes_no_longer_running_the_source_do_not_count() -> None:
    b = book()
    b.observe(ION, "inference", "edge-1", drift(0.9), 0)
    b.observe(ION, "inference", "edge-2", drift(0.9), 0)
    b.node_status(status("edge-2", "other"))  # inference no longer placed there
    assert b.evaluate(1) == []
    b.node_status(status("edge-1", "inference", state=NodeState.OFFLINE))
    assert b.nodes_over(ION, "retrain", 1) == {}
    # A status saying it runs changes nothing; a new report brings the node back.
    b.node_status(status("edge-2", "inference"))
    assert b.evaluate(2) == []
    b.observe(ION, "inference", "edge-1", drift(0.9), 3)
    b.observe(ION, "inference", "edge-2", drift(0.9), 3)
    assert len(b.evaluate(3)) == 1


def test_a_crash_looping_source_does_not_count_but_one_in_backoff_does() -> None:
    b = book(edge(min_nodes=1))
    b.observe(ION, "inference", "edge-1", drift(0.9), 0)
    looping = NodeStatus(
        "edge-1",
        NodeState.ONLINE,
        pipelines=(PipelineStatus(ION, "inference", PipelineState.CRASH_LOOP),),
    )
    b.node_status(looping)
    assert b.evaluate(0) == []
    b.observe(ION, "inference", "edge-1", drift(0.9), 1)
    backoff = NodeStatus(
        "edge-1",
        NodeState.ONLINE,
        pipelines=(PipelineStatus(ION, "inference", PipelineState.BACKOFF),),
    )
    b.node_status(backoff)
    assert len(b.evaluate(1)) == 1


def test_cooldown_given_at_start_is_respected_and_a_clock_going_back_keeps_cooling() -> None:
    b = book(edge(min_nodes=1), last={(ION, "retrain"): 10 * MIN})
    b.observe(ION, "inference", "edge-1", drift(0.9), 20 * MIN)
    assert b.evaluate(20 * MIN) == []  # 10 of 30 minutes
    b.observe(ION, "inference", "edge-1", drift(0.9), 5 * MIN)
    assert b.evaluate(5 * MIN) == []  # before the last firing: the clock went back
    b.observe(ION, "inference", "edge-1", drift(0.9), 40 * MIN)
    assert len(b.evaluate(40 * MIN)) == 1


def test_a_firing_elsewhere_starts_targets_once_and_starts_the_cooldown() -> None:
    b = book()
    assert b.fired_elsewhere(ION, "retrain", 1000)
    assert not b.fired_elsewhere(ION, "retrain", 2000)  # a second message of the same episode
    b.observe(ION, "inference", "edge-1", drift(0.9), 3000)
    b.observe(ION, "inference", "edge-2", drift(0.9), 3000)
    assert b.evaluate(3000) == []  # cooling down since the other node fired
    assert not b.fired_elsewhere(ION, "unknown", 3000)


def test_configure_keeps_readings_and_cooldowns_and_drops_removed_edges() -> None:
    b = book(edge(min_nodes=1))
    b.observe(ION, "inference", "edge-1", drift(0.9), 0)
    b.configure([edge(min_nodes=1, above=0.5)])  # a new ION version: readings kept
    [firing] = b.evaluate(1)
    assert firing.above == 0.5
    b.configure([])
    assert b.watched == ()
    assert b.observe(ION, "inference", "edge-1", drift(0.9), 2) == 0
    b.configure([edge(min_nodes=1)])  # back: its cooldown was kept
    b.observe(ION, "inference", "edge-1", drift(0.9), 3)
    assert b.evaluate(3) == []


def test_two_edges_are_independent() -> None:
    b = book(edge(min_nodes=1), edge(metric="error_rate", above=0.1, min_nodes=1, name="fix"))
    b.observe(
        ION,
        "inference",
        "edge-1",
        StatsReport("inference", scalars=(Metric("error_rate", 0.5),)),
        0,
    )
    [firing] = b.evaluate(0)
    assert firing.edge == "fix"
    assert firing.metric == "error_rate"


# -- properties ---------------------------------------------------------------------------------

reading = st.tuples(
    st.sampled_from(["e1", "e2", "e3", "e4"]),
    st.floats(0.0, 1.0, allow_nan=False),
    st.integers(0, 20 * MIN),
)


@settings(max_examples=300, deadline=None)
@given(
    readings=st.lists(reading, max_size=30),
    min_nodes=st.integers(1, 4),
    window=st.integers(1, 10 * MIN),
    cooldown=st.integers(0, 10 * MIN),
    steps=st.lists(st.integers(0, 3 * MIN), min_size=1, max_size=10),
)
def test_firings_match_a_direct_reading_of_the_rule(
    readings: list[tuple[str, float, int]],
    min_nodes: int,
    window: int,
    cooldown: int,
    steps: list[int],
) -> None:
    """Feed readings in time order, evaluating at random times: every firing has min_nodes
    nodes whose latest reading is within the window and above; two firings are at least a
    cooldown apart; and whenever the rule holds outside a cooldown, it fires."""
    w = edge(above=0.5, min_nodes=min_nodes, window_ms=window, cooldown_ms=cooldown)
    b = book(w)
    events = sorted(readings, key=lambda r: r[2])
    latest: dict[str, tuple[float, int]] = {}
    fired: list[int] = []
    now = 0
    queue = list(events)
    for step in steps:
        now += step
        while queue and queue[0][2] <= now:
            node, value, at = queue.pop(0)
            b.observe(ION, "inference", node, drift(value), at)
            if node not in latest or latest[node][1] <= at:
                latest[node] = (value, at)
        over = {n for n, (v, at) in latest.items() if v > 0.5 and now - at <= window}
        cooled = not fired or now - fired[-1] >= cooldown
        result = b.evaluate(now)
        if len(over) >= min_nodes and cooled:
            assert len(result) == 1
            assert set(result[0].values) == over
            fired.append(now)
        else:
            assert result == []
    assert all(b2 - a >= cooldown for a, b2 in itertools.pairwise(fired))


# -- the shell's pure helpers ---------------------------------------------------------------------


def _ion(trigger: TriggerCondition | None = None) -> IonDefinition:
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
            pipe("inference", PipelineMode.STREAMING, ("e1", "e2")),
        ),
        edges=(
            Edge(
                "retrain",
                EdgeKind.TRIGGER,
                Endpoint("inference"),
                (Endpoint("training"),),
                trigger=trigger or TriggerCondition("drift", 0.25, 2),
            ),
        ),
    )


def test_only_nodes_hosting_a_target_watch_an_edge() -> None:
    ions = {ION: _ion()}
    [w] = watched_edges(ions, [(ION, "training")])
    assert (w.source_pipeline, w.targets, w.condition.min_nodes) == ("inference", ("training",), 2)
    assert watched_edges(ions, [(ION, "inference")]) == []


def test_pipeline_filter_matches_every_node() -> None:
    from ion import topics
    from ion.topics import Channel

    f = topics.pipeline_filter(ION, "inference", Channel.HEALTH)
    assert f == "ion/v1/ions/ml/pipelines/inference/health/+"
    assert topics.filters_overlap(f, topics.pipeline(ION, "inference", Channel.HEALTH, "edge-9"))


def test_state_round_trips_and_bad_files_are_survived(tmp_path: Path) -> None:
    path = tmp_path / "triggers.json"
    assert load_state(path) == {}
    save_state(path, {(ION, "retrain"): 123, ("b", "e"): 7})
    assert load_state(path) == {(ION, "retrain"): 123, ("b", "e"): 7}
    path.write_text("{not json")
    assert load_state(path) == {}
    path.write_text('{"last_fired_ms": {"noslash": 1, "a/b": "x", "c/d": true, "e/f": 5}}')
    assert load_state(path) == {("e", "f"): 5}
    path.write_text("[]")
    assert load_state(path) == {}
