"""Update policies: the wire mapping (commands, canary events, health signals, topics) and
the rollout driver (signature checks, routing of pipelines' health, what leaves the node),
with the core on a real model store and fake outputs (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_model_policies import CANARY, EDGE, ION, KEY, MANUAL, Node, manifest

from ion import topics
from ion.model.command import (
    ApproveModel,
    Command,
    ModelRef,
    Ping,
    PromoteModel,
    RejectModel,
    RollbackModel,
)
from ion.model.definition import Edge, EdgeKind, Endpoint, IonDefinition, ModelPolicy
from ion.model.event import Event
from ion.model.health import DriftScore, HealthReport, Metric, StatsReport
from ion.model.messages import new_envelope
from ion.security.trust import TrustConfig
from ion.topics import TopicKind
from ion.wire.codec import decode, encode
from node.models.policy import Ruling, Verdict
from node.models.rollout_driver import RolloutDriver
from node.models.rollout_outcomes import CanaryResult, Notice
from node.models.rollout_wire import (
    canary_event,
    canary_of_event,
    health_signals,
    model_ref,
    notice_event,
    ruling_of,
)

# -- wire mapping --------------------------------------------------------------------------------


def test_commands_become_rulings() -> None:
    ref = ModelRef(ION, EDGE, "7")
    cmd = Command("c1", PromoteModel(ref), issued_by="alice", issued_ms=5, reason="looks good")
    assert model_ref(cmd) == ref
    assert ruling_of(cmd, "cli-1") == Ruling(Verdict.PROMOTED, "alice", "looks good", 5, "c1")
    assert ruling_of(Command("c2", RollbackModel(ref)), "cli-1").by == "cli-1"
    assert ruling_of(Command("c3", RejectModel(ref)), "x").verdict is Verdict.REJECTED
    assert ruling_of(Command("c4", ApproveModel(ref)), "x").verdict is Verdict.APPROVED
    assert model_ref(Command("c5", Ping())) is None


@pytest.mark.parametrize(
    "action",
    [PromoteModel(ModelRef(ION, EDGE, "7")), RollbackModel(ModelRef(ION, EDGE, ""))],
)
def test_model_commands_round_trip_the_wire(action: PromoteModel | RollbackModel) -> None:
    cmd = Command("c", action, issued_by="alice", issued_ms=3, reason="why")
    assert decode(encode(new_envelope(cmd, source_node="cli", now_ms=1))).body == cmd


def test_canary_verdicts_travel_as_events() -> None:
    r = CanaryResult(ION, EDGE, "7", "a" * 64, False, "drift 0.9")
    event = canary_event(r, "edge-1")
    assert event.type == "model.canary_failed" and event.attributes["version"] == "7"
    back = decode(encode(new_envelope(event, source_node="edge-1", now_ms=1))).body
    assert isinstance(back, Event)
    assert canary_of_event(back, "edge-1", 9) == (
        "7",
        Ruling(Verdict.CANARY_FAILED, "edge-1", "drift 0.9", 9),
    )
    assert canary_of_event(Event("model.activated", event.severity), "edge-1", 9) is None
    n = notice_event(Notice("model.pending", ION, EDGE, "7", "a" * 64, "why", "policy manual"),
                     "edge-2")  # fmt: skip
    assert n.subject == f"{ION}/{EDGE}@edge-2" and n.attributes["by"] == "policy manual"


def test_health_signals() -> None:
    report = HealthReport(
        pipeline="serve",
        model_id="m",
        drift=(DriftScore("x", "psi", 0.7), DriftScore("", "psi", 0.9)),
        scalars=(Metric("error_rate", 0.02),),
    )
    assert health_signals(report) == ("m", ("psi", 0.9), 0.02)
    assert health_signals(StatsReport("serve")) == ("", None, None)


def test_decision_and_canary_topics_are_retained() -> None:
    d = topics.model_decision(ION, EDGE, "1718000000000")
    c = topics.model_canary(ION, EDGE, "edge-1")
    assert topics.is_retained(topics.parse(d)) and topics.is_retained(topics.parse(c))
    assert topics.parse(d).version == "1718000000000"
    assert topics.parse(c).kind is TopicKind.MODEL_CANARY
    with pytest.raises(topics.TopicError):
        topics.model_decision(ION, EDGE, "v 1")
    manifest_f, decisions_f, canary_f = topics.model_state_filters(ION)
    assert decisions_f == f"ion/v1/ions/{ION}/edges/+/model/decisions/+"
    assert topics.model_state_filters()[0] == "ion/v1/ions/+/edges/+/model/manifest"
    assert topics.filters_overlap(topics.model_filter(ION, EDGE), d)
    assert manifest_f.endswith("/manifest") and canary_f.endswith("/canary/+")


# -- the driver: checks, routing of health reports, what leaves the node ------------------------


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.sent: list[tuple[str, object]] = []
        self.notified: list[tuple[str, str]] = []

    async def emit(self, event: Event, ion: str) -> None:
        self.events.append(event)

    async def send(self, topic: str, body: object, ion: str) -> None:
        self.sent.append((topic, body))


def driver(tmp_path: Path, pol: ModelPolicy, trust: TrustConfig | None = None) -> tuple[
    RolloutDriver, Node, Sink
]:  # fmt: skip
    n = Node(tmp_path, "edge-1", pol)
    sink = Sink()
    d = RolloutDriver(
        n.rollout,
        node_id="edge-1",
        emit=sink.emit,
        send=sink.send,
        notify=sink.notified.append,
        clock=lambda: n.now,
        trust=lambda: trust,
    )
    ion = IonDefinition(
        ION,
        pipelines=(),
        edges=(Edge(EDGE, EdgeKind.MODEL, Endpoint("training"), (Endpoint("inference"),),
                    policy=pol),),
    )  # fmt: skip
    d.plan({ION: ion}, {KEY: pol}, frozenset({(ION, "inference")}))
    return d, n, sink


@pytest.mark.asyncio
async def test_the_driver_takes_commands_and_refuses_unsigned_ones_when_trusting(
    tmp_path: Path,
) -> None:
    d, n, sink = driver(tmp_path / "a", MANUAL)
    n.arrive(manifest("1"))
    ok, message = await d.on_command(Command("c", ApproveModel(ModelRef(ION, EDGE, "1"))), "op")
    assert ok and message == "approved 1" and n.active() == "1"
    assert [e.type for e in sink.events] == ["model.approved", "model.activated"]
    assert sink.notified == [KEY]
    ok, message = await d.on_command(Command("c", ApproveModel(ModelRef(ION, "x", "1"))), "op")
    assert not ok and "not consumed" in message

    strict, n2, sink2 = driver(tmp_path / "b", MANUAL, TrustConfig())  # trusts no key
    n2.arrive(manifest("1"))
    ok, message = await strict.on_command(
        Command("c", ApproveModel(ModelRef(ION, EDGE, "1"))), "op"
    )
    assert not ok and message.startswith("refused: unsigned") and n2.active() is None
    assert [e.type for e in sink2.events] == ["model.decision_refused"]


@pytest.mark.asyncio
async def test_the_driver_routes_pipeline_health_to_the_trial_and_publishes_the_verdict(
    tmp_path: Path,
) -> None:
    d, n, sink = driver(tmp_path, CANARY)
    m = manifest("1")
    n.arrive(m)
    drifting = HealthReport("inference", model_id=m.model_id, drift=(DriftScore("", "psi", 0.8),))
    await d.observe(topics.pipeline(ION, "other", topics.Channel.HEALTH, "edge-1"), drifting)
    await d.observe(topics.edge(ION, "h", topics.Channel.HEALTH, "edge-1"), drifting)
    assert sink.sent == []  # not a pipeline the edge feeds, not a pipeline topic
    await d.observe(topics.pipeline(ION, "inference", topics.Channel.HEALTH, "edge-1"), drifting)
    [(topic, verdict)] = sink.sent
    assert topic == topics.model_canary(ION, EDGE, "edge-1")
    assert isinstance(verdict, Event) and verdict.type == "model.canary_failed"
    assert n.active() is None  # nothing earlier to go back to
