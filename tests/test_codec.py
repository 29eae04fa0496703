"""The envelope codec by example: every body kind, every way decoding must fail, and the
bytes checked against the stock protoc."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import get_args

import pytest

from ion.errors import DecodeError
from ion.model.definition import (
    Component,
    Edge,
    EdgeKind,
    Endpoint,
    ModelPolicy,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    PolicyKind,
)
from ion.model.messages import (
    ApproveModel,
    ArtifactLayout,
    Body,
    CategoricalCounts,
    ChunkRequest,
    Command,
    CommandResult,
    DataRecords,
    DeliveryAck,
    DriftScore,
    Envelope,
    EnvelopeBatch,
    Event,
    HealthReport,
    Histogram,
    Hop,
    IonDefinition,
    IonDeleted,
    IonVersion,
    JobProgress,
    LinkStatus,
    Metric,
    ModelChunk,
    ModelManifest,
    ModelRef,
    ModelStatus,
    NodeState,
    NodeStatus,
    Ping,
    PipelineRef,
    PipelineState,
    PipelineStatus,
    QueueStatus,
    ResourceUsage,
    RetransmitRequest,
    RunPipeline,
    Severity,
    Signature,
    StatsReport,
    Table,
    TimeSeries,
    TimeSeriesPoint,
    Trigger,
    is_message_id,
    new_envelope,
)
from ion.v1 import (
    common_pb2,
    definition_pb2,
    envelope_pb2,
    event_pb2,
    health_pb2,
    model_pb2,
    node_pb2,
)
from ion.wire import codec
from ion.wire.codec import body_kind, decode, encode
from ion.wire.convert_event import SEVERITIES
from ion.wire.convert_model import LAYOUTS
from ion.wire.convert_node import NODE_STATES, PIPELINE_STATES

ROOT = Path(__file__).resolve().parents[1]
MID = "0123456789abcdef0123456789abcdef"
SHA = "ab" * 32
SIG = Signature(key_id="k1", algorithm="ed25519", value=b"\x01" * 64, signed_ms=5)

HIST = Histogram(
    feature="x", bin_edges=(-math.inf, 0.0, 1.5, math.inf), counts=(3, 0, 2**64 - 1), missing=1
)

# One realistic value per body kind, keyed by the Envelope.body oneof field name.
EXAMPLES: dict[str, Body] = {
    "definition": IonDefinition(
        name="kmeans",
        version=3,
        labels={"team": "ml", "env": "prod"},
        pipelines=(
            Pipeline(
                name="train",
                engine="spark",
                role=PipelineRole.TRAINING,
                mode=PipelineMode.BATCH,
                placement=Placement(nodes=("cloud-1",)),
                components=(
                    Component(name="fit", type="kmeans", args={"k": 3, "cols": ("a", "b")}),
                ),
            ),
        ),
        edges=(
            Edge(
                name="model",
                kind=EdgeKind.MODEL,
                source=Endpoint("train"),
                targets=(Endpoint("infer"),),
                policy=ModelPolicy(kind=PolicyKind.MANUAL),
            ),
        ),
        signature=SIG,
    ),
    "deletion": IonDeleted(name="kmeans", version=4, deleted_ms=9, deleted_by="ops"),
    "node_status": NodeStatus(
        node_id="edge-1",
        state=NodeState.ONLINE,
        agent_version="0.1.0",
        labels={"site": "plant-7", "layer": "edge"},
        layer="edge",
        parent="gw-1",
        started_ms=1_700_000_000_000,
        heartbeat_interval_ms=10_000,
        pipelines=(
            PipelineStatus(
                ion="kmeans",
                pipeline="infer",
                state=PipelineState.CRASH_LOOP,
                engine="python",
                restarts=5,
                exit_code=-9,
                ion_version=3,
            ),
        ),
        queues=(QueueStatus(link="upstream", traffic_class="health", depth=12, bytes=3400),),
        resources=ResourceUsage(cpu_percent=12.5, rss_bytes=2**30, load1=0.25),
        models=(ModelStatus(ion="kmeans", edge="model", versions=("v2", "v1")),),
        links=(LinkStatus(name="local", url="mqtt://127.0.0.1:1883", connected=True),),
        ions=(IonVersion(name="kmeans", version=3, content_sha256=SHA),),
        counters={"malformed.health": 2, "malformed.cmd": 0},
    ),
    "command": Command(
        command_id="c-1",
        action=ApproveModel(ModelRef(ion="kmeans", edge="model", version="v3")),
        issued_by="alice",
        issued_ms=100,
        expires_ms=200,
        sequence=7,
        signature=SIG,
        reason="looks good",
    ),
    "command_result": CommandResult(command_id="c-1", node_id="edge-1", ok=False, message="no"),
    "model_manifest": ModelManifest(
        model_id=SHA,
        version="v3",
        ion="kmeans",
        edge="model",
        size_bytes=10,
        chunk_size=8,
        chunk_sha256=(SHA, SHA),
        format="kmeans-npz",
        layout=ArtifactLayout.DIRECTORY,
        metrics=(Metric("silhouette", 0.61),),
        baseline=(HIST,),
        annotations={"z": "1", "a": "2"},
        signature=SIG,
    ),
    "model_chunk": ModelChunk(model_id=SHA, index=1, data=b"\x00\xffbinary"),
    "chunk_request": ChunkRequest(model_id=SHA, indexes=(0, 4), requester="gw-1"),
    "health": HealthReport(
        pipeline="infer",
        component="score",
        window_start_ms=0,
        window_end_ms=60_000,
        sample_count=1000,
        histograms=(HIST,),
        categorical=(CategoricalCounts("color", ("red", "blue"), (4, 5)),),
        scalars=(Metric("mean", -1.5),),
        series=(TimeSeries("latency", (TimeSeriesPoint(1, 0.5), TimeSeriesPoint(2, 0.75))),),
        drift=(DriftScore(feature="", metric="psi", score=0.31, threshold=0.2),),
    ),
    "event": Event(
        type="health.drift",
        severity=Severity.WARNING,
        subject="kmeans/infer@edge-1",
        message="psi 0.31 over 0.2",
        attributes={"psi": "0.31"},
    ),
    "stats": StatsReport(
        pipeline="train",
        tables=(Table("confusion", ("a", "b"), (("1", "2"), ("3", "4"))),),
        progress=JobProgress(engine_job_id="app-1", jobs_total=2, jobs_done=1, step=10),
    ),
    "data": DataRecords(
        columns=("a", "b"),
        values=(1.0, 2.0, 3.0, 4.0),
        timestamps_ms=(10, 20),
        payload=b"{}",
        content_type="application/json",
    ),
    "trigger": Trigger(edge="retrain", target_pipeline="train", reason="drift on 3 nodes"),
    "batch": EnvelopeBatch(
        (
            Envelope(
                message_id="f" * 32,
                source_node="edge-1",
                created_ms=1,
                sequence=1,
                stream="health",
                body=Trigger(edge="e", target_pipeline="p"),
            ),
        )
    ),
    "retransmit_request": RetransmitRequest(
        stream="health", from_sequence=5, to_sequence=9, requester="monitor"
    ),
    "ack": DeliveryAck(stream="health", up_to_sequence=9, receiver="monitor"),
}


def envelope(body: Body, **fields: object) -> Envelope:
    base: dict[str, object] = {
        "message_id": MID,
        "ion": "kmeans",
        "source_node": "edge-1",
        "created_ms": 1_700_000_000_123,
        "sequence": 42,
        "stream": "health",
        "route": (Hop("gw-1", received_ms=1, forwarded_ms=2),),
        "correlation_id": "c-1",
        "body": body,
    }
    base.update(fields)
    return Envelope(**base)  # type: ignore[arg-type]


def raw(**fields: object) -> bytes:
    """An Envelope built directly in protobuf: for inputs the domain values refuse to build."""
    return envelope_pb2.Envelope(**fields).SerializeToString()  # type: ignore[arg-type]


# ---- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_every_body_kind_round_trips(kind: str) -> None:
    e = envelope(EXAMPLES[kind])
    data = encode(e)
    assert decode(data) == e
    assert body_kind(e) == kind
    assert codec.envelope_from_proto(codec.envelope_to_proto(e)) == e


def test_examples_cover_the_body_union_and_the_oneof() -> None:
    oneof = envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"]
    assert set(EXAMPLES) == {f.name for f in oneof.fields}
    assert {type(b) for b in EXAMPLES.values()} == set(get_args(Body))


def test_encoding_is_deterministic() -> None:
    e = envelope(EXAMPLES["node_status"])
    assert encode(e) == encode(envelope(EXAMPLES["node_status"]))
    assert encode(decode(encode(e))) == encode(e)


def test_string_pairs_keep_their_order() -> None:
    status = NodeStatus(node_id="n", state=NodeState.ONLINE, labels={"z": "1", "a": "2", "m": ""})
    out = decode(encode(envelope(status))).body
    assert isinstance(out, NodeStatus)
    assert list(out.labels.items()) == [("z", "1"), ("a", "2"), ("m", "")]


def test_nan_survives_where_a_float_is_free() -> None:
    out = decode(encode(envelope(StatsReport(pipeline="p", scalars=(Metric("m", math.nan),)))))
    assert isinstance(out.body, StatsReport)
    assert math.isnan(out.body.scalars[0].value)


def test_absent_and_empty_sub_messages_stay_apart() -> None:
    cases: list[tuple[Body, Body]] = [
        (
            NodeStatus("n", NodeState.ONLINE),
            NodeStatus("n", NodeState.ONLINE, resources=ResourceUsage()),
        ),
        (StatsReport("p"), StatsReport("p", progress=JobProgress())),
        (Command("c", Ping()), Command("c", Ping(), signature=Signature("", "", b""))),
    ]
    for with_none, with_empty in cases:
        assert with_none != with_empty
        assert decode(encode(envelope(with_none))).body == with_none
        assert decode(encode(envelope(with_empty))).body == with_empty


@pytest.mark.parametrize(
    "action",
    [
        Ping(),
        RunPipeline(PipelineRef("kmeans", "train")),
        ApproveModel(ModelRef("", "")),  # all-empty ref: the oneof must still be set
    ],
)
def test_command_actions_round_trip(action: object) -> None:
    cmd = Command(command_id="c", action=action)  # type: ignore[arg-type]
    assert decode(encode(envelope(cmd))).body == cmd


def test_empty_batch_round_trips() -> None:
    e = envelope(EnvelopeBatch(()))
    assert decode(encode(e)) == e


# ---- new_envelope and the envelope's own checks ---------------------------------------------


def test_new_envelope_makes_a_fresh_message_id() -> None:
    body = EXAMPLES["ack"]
    a = new_envelope(body, source_node="n", now_ms=5)
    b = new_envelope(body, source_node="n", now_ms=5, ion="i", sequence=3, stream="s")
    assert is_message_id(a.message_id)
    assert is_message_id(b.message_id)
    assert a.message_id != b.message_id
    assert (a.created_ms, a.sequence, a.ion, a.route) == (5, 0, "", ())
    assert (b.ion, b.sequence, b.stream) == ("i", 3, "s")
    assert new_envelope(body, source_node="n", now_ms=5, message_id=MID).message_id == MID


@pytest.mark.parametrize("bad", ["", "abc", MID.upper(), MID + "0", "g" * 32, MID[:-1] + "\n"])
def test_envelope_refuses_a_bad_message_id(bad: str) -> None:
    with pytest.raises(ValueError, match="32 lowercase hex"):
        envelope(EXAMPLES["ack"], message_id=bad)


def test_a_batch_refuses_a_batch() -> None:
    inner = envelope(EnvelopeBatch(()))
    with pytest.raises(ValueError, match="batch inside a batch"):
        EnvelopeBatch((inner,))


def test_encode_refuses_values_the_wire_cannot_hold() -> None:
    with pytest.raises(ValueError):
        encode(envelope(EXAMPLES["ack"], sequence=-1))


def test_body_kind_of_something_else_is_a_type_error() -> None:
    e = envelope("not a body")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an envelope body"):
        body_kind(e)


# ---- domain value checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Histogram("f", (0.0, 1.0), ()), "want 1"),
        (lambda: Histogram("f", (), (1,)), "want 0"),
        (lambda: Histogram("f", (1.0, 0.0), (1,)), "strictly increase"),
        (lambda: Histogram("f", (0.0, 0.0), (1,)), "strictly increase"),
        (lambda: Histogram("f", (0.0, math.nan), (1,)), "strictly increase"),
        (lambda: CategoricalCounts("f", ("a",), ()), "1 categories but 0 counts"),
        (lambda: CategoricalCounts("f", ("a", "a"), (1, 2)), "repeat"),
        (lambda: Table("t", ("a",), (("1", "2"),)), "row 0 has 2 cells"),
        (lambda: DataRecords(values=(1.0,)), "no columns"),
        (lambda: DataRecords(columns=("a", "b"), values=(1.0,)), "not a multiple"),
        (lambda: DataRecords(columns=("a",), values=(1.0,), timestamps_ms=(1, 2)), "1 rows"),
        (lambda: RetransmitRequest("s", 5, 4), "backwards"),
    ],
)
def test_domain_values_check_their_shape(build: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()  # type: ignore[operator]


def test_small_helpers() -> None:
    rec = DataRecords(columns=("a", "b"), values=(1.0, 2.0, 3.0, 4.0))
    assert rec.row_count == 2
    assert rec.row(1) == (3.0, 4.0)
    with pytest.raises(IndexError):
        rec.row(2)
    assert DataRecords(payload=b"x", timestamps_ms=(5,)).row_count == 0
    assert HIST.total == 3 + 2**64 - 1 + 1
    cmd = Command("c", Ping(), expires_ms=100)
    assert not cmd.expired(99)
    assert cmd.expired(100)
    assert not Command("c", Ping()).expired(10**15)
    manifest = EXAMPLES["model_manifest"]
    assert isinstance(manifest, ModelManifest)
    assert manifest.chunk_count == 2
    assert manifest.metric("silhouette") == 0.61
    assert manifest.metric("nope") is None


# ---- enum tables ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "domain", "wire"),
    [
        (NODE_STATES, NodeState, node_pb2.DESCRIPTOR.enum_types_by_name["NodeState"]),
        (PIPELINE_STATES, PipelineState, node_pb2.DESCRIPTOR.enum_types_by_name["PipelineState"]),
        (SEVERITIES, Severity, event_pb2.DESCRIPTOR.enum_types_by_name["Severity"]),
        (LAYOUTS, ArtifactLayout, model_pb2.DESCRIPTOR.enum_types_by_name["ArtifactLayout"]),
    ],
)
def test_enum_tables_cover_the_schema(table: object, domain: object, wire: object) -> None:
    numbers = {v.number for v in wire.values if v.number != 0}  # type: ignore[attr-defined]
    assert table.wire_numbers == numbers  # type: ignore[attr-defined]
    for member in domain:  # type: ignore[attr-defined]
        # The wire name ends with the member's name, and the value is its lower case.
        name = wire.values_by_number[table.to_wire(member)].name  # type: ignore[attr-defined]
        assert name.endswith("_" + member.name)
        assert member.value == member.name.lower()
        assert table.from_wire(table.to_wire(member)) is member  # type: ignore[attr-defined]


# ---- decoding hostile input -----------------------------------------------------------------

STATUS_PB = node_pb2.NodeStatus(node_id="n", state=node_pb2.NODE_STATE_ONLINE)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty message"),
        (b"\xff\xff\xff\xff", "not an ion.v1 envelope"),
        (b"hello world, this is not protobuf", "not an ion.v1 envelope"),
        (b"\x0a\x05abc", "not an ion.v1 envelope"),  # truncated length-delimited field
        (b"\x0a\x02\xc3\x28", "not an ion.v1 envelope"),  # invalid UTF-8 in message_id
        (raw(source_node="n", node_status=STATUS_PB), "no message_id"),
        (raw(message_id=MID.upper(), node_status=STATUS_PB), "invalid message_id"),
        (raw(message_id="xyz", node_status=STATUS_PB), "invalid message_id"),
        (raw(message_id=MID, source_node="n"), "has no body"),
        # A body field from a newer schema (field 99) is an unknown field: no body we know.
        (raw(message_id=MID) + b"\x9a\x06\x00", "has no body"),
        (
            raw(
                message_id=MID,
                batch=envelope_pb2.EnvelopeBatch(
                    envelopes=[
                        envelope_pb2.Envelope(message_id=MID, batch=envelope_pb2.EnvelopeBatch())
                    ]
                ),
            ),
            "envelope 0 of batch: .*batch inside a batch",
        ),
        (
            raw(
                message_id=MID,
                batch=envelope_pb2.EnvelopeBatch(
                    envelopes=[
                        envelope_pb2.Envelope(message_id=MID, node_status=STATUS_PB),
                        envelope_pb2.Envelope(message_id="bad", node_status=STATUS_PB),
                    ]
                ),
            ),
            "envelope 1 of batch: invalid message_id",
        ),
        (raw(message_id=MID, node_status=node_pb2.NodeStatus(node_id="n")), "node state 0"),
        (
            raw(message_id=MID, node_status=node_pb2.NodeStatus(node_id="n", state=99)),  # type: ignore[arg-type]
            "invalid node state 99",
        ),
        (
            raw(
                message_id=MID,
                node_status=node_pb2.NodeStatus(
                    node_id="n",
                    state=node_pb2.NODE_STATE_ONLINE,
                    pipelines=[node_pb2.PipelineStatus(state=77)],  # type: ignore[arg-type]
                ),
            ),
            "invalid pipeline state 77",
        ),
        (raw(message_id=MID, event=event_pb2.Event(type="x")), "invalid event severity 0"),
        (raw(message_id=MID, model_manifest=model_pb2.ModelManifest()), "artifact layout 0"),
        (raw(message_id=MID, command=node_pb2.Command(command_id="c")), "has no action"),
        (
            raw(
                message_id=MID,
                health=health_pb2.HealthReport(
                    histograms=[
                        health_pb2.Histogram(feature="f", bin_edges=[0.0, 1.0], counts=[1, 2, 3])
                    ]
                ),
            ),
            "invalid health report: histogram 'f' has 2 edges but 3 counts",
        ),
        (
            raw(message_id=MID, data=event_pb2.DataRecords(values=[1.0])),
            "invalid data records: .*no columns",
        ),
        (
            raw(
                message_id=MID,
                retransmit_request=envelope_pb2.RetransmitRequest(from_sequence=3, to_sequence=2),
            ),
            "invalid retransmit request: .*backwards",
        ),
        (
            raw(
                message_id=MID,
                definition=definition_pb2.IonDefinition(pipelines=[definition_pb2.Pipeline()]),
            ),
            "pipeline role 0",
        ),
    ],
)
def test_decode_refuses_with_a_clear_message(data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(data)


def test_decode_refuses_oversize_input_before_parsing() -> None:
    data = encode(envelope(ModelChunk(model_id=SHA, index=0, data=b"x" * 1000)))
    assert decode(data, max_size=len(data)).body == ModelChunk(SHA, 0, b"x" * 1000)
    with pytest.raises(DecodeError, match=f"{len(data)} bytes is over the limit of 1000"):
        decode(data, max_size=1000)


def test_decode_refuses_argument_values_nested_too_deeply() -> None:
    value = common_pb2.Value(int_value=1)
    for _ in range(40):
        value = common_pb2.Value(list_value=common_pb2.ValueList(values=[value]))
    component = definition_pb2.Component(
        name="c", args=[common_pb2.NamedValue(name="a", value=value)]
    )
    pipeline = definition_pb2.Pipeline(
        name="p",
        role=definition_pb2.PIPELINE_ROLE_OTHER,
        mode=definition_pb2.PIPELINE_MODE_BATCH,
        components=[component],
    )
    data = raw(message_id=MID, definition=definition_pb2.IonDefinition(pipelines=[pipeline]))
    with pytest.raises(DecodeError, match="nested too deeply"):
        decode(data)


def test_decode_refuses_protobuf_nested_past_its_recursion_limit() -> None:
    data = raw(message_id=MID, batch=envelope_pb2.EnvelopeBatch())
    for _ in range(200):  # wrap: Envelope{batch{envelopes: [previous]}}, as raw bytes
        batch = b"\x0a" + _varint(len(data)) + data
        data = b"\x0a\x20" + MID.encode() + b"\x8a\x02" + _varint(len(batch)) + batch
    with pytest.raises(DecodeError, match=r"not an ion\.v1 envelope"):
        decode(data)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def test_per_body_from_proto_raises_only_decode_error() -> None:
    with pytest.raises(DecodeError, match="invalid stats report"):
        codec.stats_report_from_proto(
            health_pb2.StatsReport(
                tables=[
                    health_pb2.Table(columns=["a"], rows=[health_pb2.TableRow(cells=["1", "2"])])
                ]
            )
        )


# ---- the stock protoc reads our bytes -------------------------------------------------------


def _protoc_decode(data: bytes) -> str:
    protoc = shutil.which("protoc")
    if protoc is None:
        pytest.fail(
            "protoc is not installed; it checks that our bytes are plain ion.v1 protobuf. "
            "Install it with `sudo apt-get install protobuf-compiler` (or `brew install protobuf`)."
        )
    result = subprocess.run(
        [protoc, "--decode", "ion.v1.Envelope", "-I", "proto", "proto/ion/v1/envelope.proto"],
        input=data,
        capture_output=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


def test_protoc_decodes_a_node_status() -> None:
    text = _protoc_decode(encode(envelope(EXAMPLES["node_status"])))
    for expected in [
        f'message_id: "{MID}"',
        'source_node: "edge-1"',
        "created_ms: 1700000000123",
        "sequence: 42",
        "node_status {",
        "state: NODE_STATE_ONLINE",
        "state: PIPELINE_STATE_CRASH_LOOP",
        "exit_code: -9",
        'key: "site"',
        "cpu_percent: 12.5",
        'name: "malformed.health"',
    ]:
        assert expected in text, f"{expected!r} not in protoc output:\n{text}"


def test_protoc_decodes_every_body_kind() -> None:
    inner = tuple(
        envelope(body, message_id=f"{i:032x}")
        for i, (kind, body) in enumerate(EXAMPLES.items())
        if kind != "batch"
    )
    text = _protoc_decode(encode(envelope(EnvelopeBatch(inner))))
    fields = set(re.findall(r"^\s*(\w+) \{$", text, re.MULTILINE))
    assert set(EXAMPLES) <= fields
    for expected in [
        "severity: SEVERITY_WARNING",
        "layout: ARTIFACT_LAYOUT_DIRECTORY",
        "approve_model {",
        'data: "\\000\\377binary"',
        "bin_edges: -inf",
        "counts: 18446744073709551615",
    ]:
        assert expected in text, f"{expected!r} not in protoc output:\n{text}"
