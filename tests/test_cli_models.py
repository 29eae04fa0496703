"""``ion models | approve | reject | promote | rollback``: the folding (pure), and the commands
as a user runs them (real subprocesses) against a Mosquitto seeded with retained state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply_sync

from ion import topics
from ion.client.rollouts import (
    DecisionView,
    EdgeView,
    ModelState,
    NodeView,
    current_version,
    decode_model_state,
    describe_policy,
    fold,
    rollback_plan,
)
from ion.client.session import connect
from ion.config.broker import parse_broker_url
from ion.errors import InputError
from ion.model.command import ApproveModel, Command, ModelRef, RejectModel, RollbackModel
from ion.model.definition import (
    CanaryPolicy,
    Component,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    MetricGate,
    ModelPolicy,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    PolicyKind,
)
from ion.model.event import Event, Severity
from ion.model.health import Metric
from ion.model.manifest import ModelManifest
from ion.model.messages import new_envelope
from ion.model.status import ModelStatus, NodeState, NodeStatus
from ion.wire.codec import decode, encode

ROOT = Path(__file__).resolve().parents[1]
ION, EDGE = "clim", "weights"
MID = "ab" * 32


def ion(*args: str, broker: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ION_")}
    env["HOME"] = str(ROOT / ".no-home")  # no user config file leaks in
    if broker:
        env["ION_BROKER"] = broker
    return subprocess.run(
        [sys.executable, "-m", "ion.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def definition(policy: ModelPolicy | None = None) -> IonDefinition:
    def p(name: str, node: str) -> Pipeline:
        return Pipeline(name, "python", PipelineRole.OTHER, PipelineMode.BATCH,
                        Placement(nodes=(node,)), (Component("c", "noop"),))  # fmt: skip

    return IonDefinition(
        name=ION,
        pipelines=(p("training", "cloud"), p("inference", "edge-1")),
        edges=(
            Edge(EDGE, EdgeKind.MODEL, Endpoint("training"), (Endpoint("inference"),),
                 policy=policy or ModelPolicy(kind=PolicyKind.MANUAL)),
            Edge("stats", EdgeKind.STATS, Endpoint("inference"), (Endpoint("training"),)),
        ),
    )  # fmt: skip


def status(
    node: str, active: str, held: tuple[str, ...], pending: tuple[str, ...] = ()
) -> NodeStatus:
    ms = ModelStatus(ION, EDGE, active, MID if active else "", held, pending, "")
    return NodeStatus(node, NodeState.ONLINE, models=(ms,))


def view(
    nodes: tuple[NodeView, ...], latest: str = "", decisions: tuple[DecisionView, ...] = ()
) -> EdgeView:
    return EdgeView(ION, EDGE, "manual", latest=latest, nodes=nodes, decisions=decisions)


def node(
    node_id: str, active: str, held: tuple[str, ...], pending: tuple[str, ...] = ()
) -> NodeView:
    return NodeView(node_id, "online", active, held, pending, "")


# -- pure --------------------------------------------------------------------------------------


def test_policies_are_described_for_people() -> None:
    assert describe_policy(None) == "auto"
    gate = MetricGate("quality", min=0.5, margin_over_active=0.05)
    gated = ModelPolicy(kind=PolicyKind.GATED, gates=(gate,))
    assert describe_policy(gated) == "gated (quality min 0.5 margin 0.05 over active)"
    canary = ModelPolicy(kind=PolicyKind.CANARY,
                         canary=CanaryPolicy(share=0.1, hold_ms=60_000, max_drift=0.3))  # fmt: skip
    assert describe_policy(canary) == "canary (share 0.1, hold 60s; max_drift 0.3)"


def test_fold_puts_everything_about_an_edge_together() -> None:
    m = ModelManifest(MID, "30", ion=ION, edge=EDGE, producer_node="cloud", size_bytes=9,
                      metrics=(Metric("quality", 0.8),))  # fmt: skip
    approve = Command("c1", ApproveModel(ModelRef(ION, EDGE, "20")), issued_by="alice")
    verdict = Event("model.canary_failed", Severity.WARNING, message="drift",
                    attributes={"version": "30"})  # fmt: skip
    state = ModelState(
        manifests={(ION, EDGE): m},
        decisions={(ION, EDGE): [("20", approve)]},
        canaries={(ION, EDGE): [("edge-1", verdict)]},
    )
    statuses = [status("edge-2", "20", ("30", "20"), ("30",)), status("edge-1", "10", ("10",))]
    [v] = fold([definition()], statuses, state)
    assert (v.edge, v.policy, v.latest, v.producer, v.metrics) == (
        EDGE, "manual", "30", "cloud", {"quality": 0.8},
    )  # fmt: skip
    assert [n.node_id for n in v.nodes] == ["edge-1", "edge-2"]
    assert v.decisions == (DecisionView("20", "approve", "alice", "", 0),)
    assert [(c.node_id, c.passed) for c in v.canaries] == [("edge-1", False)]
    assert v.known_versions() == {"10", "20", "30"}


def test_rollback_without_a_version_withdraws_the_newest_running_or_published() -> None:
    nodes = (node("a", "20", ("20", "10")), node("b", "20", ("20", "10")))
    assert current_version(view(nodes, latest="20")) == "20"
    # Statuses may predate the latest manifest: it counts unless a node holds it pending.
    assert current_version(view(nodes, latest="30")) == "30"
    pending = (node("a", "20", ("30", "20"), ("30",)),)
    assert current_version(view(pending, latest="30")) == "20"
    rejected = (DecisionView("30", "reject", "op", "", 1),)
    assert current_version(view(nodes, latest="30", decisions=rejected)) == "20"
    actions, notes = rollback_plan(view(nodes, latest="20"), None)
    assert actions == [RejectModel(ModelRef(ION, EDGE, "20"))] and len(notes) == 1
    with pytest.raises(InputError, match="nothing to roll back"):
        rollback_plan(view(()), None)


def test_rollback_to_a_version_rejects_every_newer_one() -> None:
    nodes = (node("a", "40", ("40", "30", "20")), node("b", "30", ("30",)))
    actions, notes = rollback_plan(view(nodes, latest="40"), "20")

    def ref(v: str) -> ModelRef:
        return ModelRef(ION, EDGE, v)

    assert actions == [RejectModel(ref("30")), RejectModel(ref("40")), RollbackModel(ref("20"))]
    assert notes == ["warning: b do(es) not hold 20"]
    with pytest.raises(InputError, match="unknown version '5'"):
        rollback_plan(view(nodes), "5")


def test_decoding_skips_what_it_cannot_read() -> None:
    cmd = Command("c", RejectModel(ModelRef(ION, EDGE, "7")))
    good = encode(new_envelope(cmd, source_node="cli", now_ms=1))
    state = decode_model_state(
        [(topics.model_decision(ION, EDGE, "7"), good), (topics.model_manifest(ION, EDGE), b"x")]
    )
    assert state.decisions[(ION, EDGE)] == [("7", cmd)] and len(state.problems) == 1


# -- the commands, against a broker ------------------------------------------------------------


def test_every_model_command_has_help() -> None:
    for cmd in ("models", "approve", "reject", "promote", "rollback"):
        r = ion(cmd, "--help")
        assert r.returncode == 0, r.stderr
        assert "Usage:" in r.stdout and "--broker" in r.stdout


@pytest.fixture
def seeded(fresh_mosquitto: Any) -> str:
    """A broker holding the ION, a manifest (version 30) and two nodes' statuses."""
    url: str = fresh_mosquitto.url
    apply_sync(url, definition())
    m = ModelManifest(MID, "30", ion=ION, edge=EDGE, producer_node="cloud", size_bytes=9)
    retained: list[tuple[str, object]] = [
        (topics.model_manifest(ION, EDGE), m),
        (topics.node_status("edge-1"), status("edge-1", "20", ("30", "20"), ("30",))),
        (topics.node_status("edge-2"), status("edge-2", "20", ("20", "10"))),
    ]
    with connect(parse_broker_url(url)) as session:
        for topic, body in retained:
            env = new_envelope(body, source_node="test", now_ms=time.time_ns() // 1_000_000)  # type: ignore[arg-type]
            session.publish(topic, encode(env), retain=True)
    return url


def decisions(url: str) -> dict[str, Command]:
    with connect(parse_broker_url(url)) as session:
        found = session.read_retained([topics.model_state_filters(ION)[1]])
    out = {}
    for msg in found:
        body = decode(msg.payload).body
        assert isinstance(body, Command)
        out[topics.parse(msg.topic).version] = body
    return out


def test_models_shows_versions_nodes_and_pending(seeded: str) -> None:
    r = ion("models", ION, broker=seeded)
    assert r.returncode == 0, r.stderr
    assert f"{ION}/{EDGE}  policy manual" in r.stdout
    assert "latest 30 (model abababababab, 9 bytes, from cloud)" in r.stdout
    assert "pending approval or promotion: 30" in r.stdout
    assert "edge-1  online  20      30" in r.stdout
    r = ion("models", "--json", broker=seeded)
    assert r.returncode == 0, r.stderr
    [v] = [v for v in json.loads(r.stdout) if v["ion"] == ION]
    assert [n["pending"] for n in v["nodes"]] == [["30"], []]


def test_approve_publishes_a_retained_decision(seeded: str) -> None:
    r = ion("approve", ION, EDGE, "30", "--reason", "checked", "--operator", "alice",
            broker=seeded)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"{ION}/{EDGE} version 30: approve published" in r.stdout
    assert "pending on 1 node(s): edge-1" in r.stdout
    assert "publishing unsigned" in r.stderr
    cmd = decisions(seeded)["30"]
    assert cmd.action == ApproveModel(ModelRef(ION, EDGE, "30"))
    assert (cmd.issued_by, cmd.reason) == ("alice", "checked")
    r = ion("reject", ION, EDGE, "30", "--json", broker=seeded)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["decisions"][0]["action"] == "reject"
    assert isinstance(decisions(seeded)["30"].action, RejectModel)  # the last decision wins
    r = ion("models", ION, broker=seeded)
    assert "decision 30: reject by " in r.stdout


def test_rollback_publishes_rejections_and_the_target(seeded: str) -> None:
    r = ion("rollback", ION, EDGE, "10", broker=seeded)
    assert r.returncode == 0, r.stderr
    assert "warning: edge-1 do(es) not hold 10" in r.stdout
    found = decisions(seeded)
    assert {v: type(c.action).__name__ for v, c in found.items()} == {
        "20": "RejectModel", "30": "RejectModel", "10": "RollbackModel",
    }  # fmt: skip
    assert found["10"].reason == "rollback"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["approve", "nope", EDGE, "30"], "unknown ION 'nope'"),
        (["approve", ION, "nope", "30"], f"ION '{ION}' has no edge 'nope'"),
        (["promote", ION, "stats", "30"], "carries stats, not models"),
        (["reject", ION, EDGE, "99"], "unknown version '99'"),
        (["approve", ION, EDGE, "Bad Version"], "invalid model version"),
        (["rollback", ION, EDGE, "5"], "unknown version '5'"),
        (["models", "nope"], "unknown ION 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(seeded: str, args: list[str], message: str) -> None:
    r = ion(*args, broker=seeded)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr


def test_an_unreachable_broker_exits_1() -> None:
    r = ion("models", broker="mqtt://127.0.0.1:9")
    assert r.returncode == 1 and r.stderr.startswith("error: cannot reach broker")
