"""Hypothesis strategies for every ion.v1 value: envelopes, each body kind, the ION definition.

Shared by the tests of anything that handles messages.  Every generated value is valid (it
passes the domain values' own checks) and fits the wire's integer ranges, so it must survive
``decode(encode(x)) == x``.  Floats never include NaN (NaN != NaN breaks equality); tests that
care about NaN build it explicitly.  Strings include any Unicode except surrogates, which UTF-8
(and so protobuf) cannot carry.

Import with ``from strategies import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from ion.model.definition import (
    ArgValue,
    CanaryPolicy,
    Component,
    DriftMetric,
    DriftSettings,
    Edge,
    EdgeKind,
    Endpoint,
    MetricGate,
    ModelPolicy,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    PolicyKind,
    PortBinding,
    RestartPolicy,
    TriggerCondition,
)
from ion.model.messages import (
    ApproveModel,
    ArtifactLayout,
    Body,
    CategoricalCounts,
    ChunkRequest,
    Command,
    CommandAction,
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
    RejectModel,
    ResourceUsage,
    RestartPipeline,
    RetransmitRequest,
    RollbackModel,
    RunPipeline,
    Severity,
    Signature,
    StatsReport,
    Table,
    TimeSeries,
    TimeSeriesPoint,
    Trigger,
)
from ion.v1 import envelope_pb2

T = TypeVar("T")

# ---- scalars in the wire's ranges ----------------------------------------------------------

text = st.text(max_size=12)
int64 = st.integers(-(2**63), 2**63 - 1)
uint64 = st.integers(0, 2**64 - 1)
uint32 = st.integers(0, 2**32 - 1)
sint32 = st.integers(-(2**31), 2**31 - 1)
finite_or_inf = st.floats(allow_nan=False)
sha256_hex = st.binary(min_size=32, max_size=32).map(bytes.hex)
message_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)


def tuples(elements: st.SearchStrategy[T], max_size: int = 4) -> st.SearchStrategy[tuple[T, ...]]:
    return st.lists(elements, max_size=max_size).map(tuple)


# Dicts keep insertion order, which is what the StringPair lists on the wire keep.
pairs: st.SearchStrategy[Mapping[str, str]] = st.dictionaries(text, text, max_size=4)
signatures = st.builds(
    Signature, key_id=text, algorithm=text, value=st.binary(max_size=64), signed_ms=int64
)
optional_signatures = st.none() | signatures

# ---- the ION definition and its tombstone --------------------------------------------------

arg_values: st.SearchStrategy[ArgValue] = st.recursive(
    st.none() | st.booleans() | int64 | finite_or_inf | text,
    lambda children: (
        st.lists(children, max_size=3).map(tuple) | st.dictionaries(text, children, max_size=3)
    ),
    max_leaves=8,
)
components = st.builds(
    Component,
    name=text,
    type=text,
    args=st.dictionaries(text, arg_values, max_size=3),
    inputs=tuples(st.builds(PortBinding, port=text, from_component=text, from_port=text)),
)
pipelines = st.builds(
    Pipeline,
    name=text,
    engine=text,
    role=st.sampled_from(PipelineRole),
    mode=st.sampled_from(PipelineMode),
    placement=st.builds(Placement, nodes=tuples(text), labels=pairs),
    components=tuples(components, max_size=3),
    schedule=text,
    engine_config=pairs,
    restart=st.builds(
        RestartPolicy,
        max_restarts=uint32,
        window_ms=int64,
        backoff_initial_ms=int64,
        backoff_max_ms=int64,
    ),
    description=text,
)
optional_floats = st.none() | finite_or_inf
model_policies = st.builds(
    ModelPolicy,
    kind=st.sampled_from(PolicyKind),
    keep_versions=uint32,
    gates=tuples(
        st.builds(
            MetricGate,
            metric=text,
            higher_is_better=st.booleans(),
            min=optional_floats,
            max=optional_floats,
            margin_over_active=optional_floats,
        )
    ),
    canary=st.none()
    | st.builds(
        CanaryPolicy,
        share=finite_or_inf,
        nodes=tuples(text),
        hold_ms=int64,
        max_drift=finite_or_inf,
        max_error_rate=finite_or_inf,
    ),
)
endpoints = st.builds(Endpoint, pipeline=text, component=text, port=text)
edges = st.builds(
    Edge,
    name=text,
    kind=st.sampled_from(EdgeKind),
    source=endpoints,
    targets=tuples(endpoints),
    policy=st.none() | model_policies,
    trigger=st.none()
    | st.builds(
        TriggerCondition,
        metric=text,
        above=finite_or_inf,
        min_nodes=uint32,
        window_ms=int64,
        cooldown_ms=int64,
    ),
    drift=st.none()
    | st.builds(
        DriftSettings,
        metric=st.sampled_from(DriftMetric),
        threshold=finite_or_inf,
        window_ms=int64,
        min_samples=uint32,
    ),
    ttl_ms=int64,
    description=text,
)
definitions = st.builds(
    IonDefinition,
    name=text,
    pipelines=tuples(pipelines, max_size=3),
    edges=tuples(edges, max_size=3),
    version=uint64,
    description=text,
    labels=pairs,
    content_sha256=text,
    signature=optional_signatures,
    applied_ms=int64,
    applied_by=text,
)
deletions = st.builds(
    IonDeleted,
    name=text,
    version=uint64,
    deleted_ms=int64,
    deleted_by=text,
    signature=optional_signatures,
)

# ---- node status, commands ------------------------------------------------------------------

node_statuses = st.builds(
    NodeStatus,
    node_id=text,
    state=st.sampled_from(NodeState),
    agent_version=text,
    labels=pairs,
    layer=text,
    parent=text,
    started_ms=int64,
    heartbeat_interval_ms=int64,
    pipelines=tuples(
        st.builds(
            PipelineStatus,
            ion=text,
            pipeline=text,
            state=st.sampled_from(PipelineState),
            engine=text,
            restarts=uint32,
            since_ms=int64,
            message=text,
            exit_code=sint32,
            ion_version=uint64,
            engine_job_id=text,
        )
    ),
    queues=tuples(
        st.builds(
            QueueStatus,
            link=text,
            traffic_class=text,
            depth=uint64,
            bytes=uint64,
            oldest_age_ms=int64,
            sent=uint64,
            dropped=uint64,
            expired=uint64,
            rejected=uint64,
        )
    ),
    resources=st.none()
    | st.builds(
        ResourceUsage,
        cpu_percent=finite_or_inf,
        rss_bytes=uint64,
        disk_free_bytes=uint64,
        load1=finite_or_inf,
    ),
    models=tuples(
        st.builds(
            ModelStatus,
            ion=text,
            edge=text,
            active_version=text,
            active_model_id=text,
            versions=tuples(text),
            pending=tuples(text),
            canary_state=text,
        )
    ),
    links=tuples(
        st.builds(
            LinkStatus,
            name=text,
            url=text,
            connected=st.booleans(),
            since_ms=int64,
            error=text,
        )
    ),
    error=text,
    ions=tuples(st.builds(IonVersion, name=text, version=uint64, content_sha256=text)),
    counters=st.dictionaries(text, uint64, max_size=4),
)
model_refs = st.builds(ModelRef, ion=text, edge=text, version=text)
pipeline_refs = st.builds(PipelineRef, ion=text, pipeline=text)
command_actions: st.SearchStrategy[CommandAction] = st.one_of(
    st.builds(ApproveModel, model_refs),
    st.builds(RejectModel, model_refs),
    st.builds(RollbackModel, model_refs),
    st.builds(RestartPipeline, pipeline_refs),
    st.builds(RunPipeline, pipeline_refs),
    st.just(Ping()),
)
commands = st.builds(
    Command,
    command_id=text,
    action=command_actions,
    issued_by=text,
    issued_ms=int64,
    expires_ms=int64,
    sequence=uint64,
    signature=optional_signatures,
    reason=text,
)
command_results = st.builds(
    CommandResult, command_id=text, node_id=text, ok=st.booleans(), message=text
)

# ---- health and stats -----------------------------------------------------------------------


@st.composite
def histograms(draw: st.DrawFn) -> Histogram:
    # unique + sorted gives strictly increasing edges (0.0 and -0.0 count as one).
    edges = sorted(draw(st.lists(finite_or_inf, unique=True, max_size=6)))
    bins = max(len(edges) - 1, 0)
    counts = draw(st.lists(uint64, min_size=bins, max_size=bins))
    return Histogram(
        feature=draw(text), bin_edges=tuple(edges), counts=tuple(counts), missing=draw(uint64)
    )


@st.composite
def categorical_counts(draw: st.DrawFn) -> CategoricalCounts:
    categories = draw(st.lists(text, unique=True, max_size=5))
    counts = draw(st.lists(uint64, min_size=len(categories), max_size=len(categories)))
    return CategoricalCounts(feature=draw(text), categories=tuple(categories), counts=tuple(counts))


@st.composite
def tables(draw: st.DrawFn) -> Table:
    columns = tuple(draw(st.lists(text, max_size=4)))
    row = st.lists(text, min_size=len(columns), max_size=len(columns)).map(tuple)
    return Table(name=draw(text), columns=columns, rows=tuple(draw(st.lists(row, max_size=4))))


@st.composite
def data_records(draw: st.DrawFn) -> DataRecords:
    columns = tuple(draw(st.lists(text, max_size=4)))
    if columns:
        n = len(columns) * draw(st.integers(0, 4))
        values = tuple(draw(st.lists(finite_or_inf, min_size=n, max_size=n)))
        rows = n // len(columns)
        timestamps = draw(st.just(()) | st.lists(int64, min_size=rows, max_size=rows).map(tuple))
    else:
        values = ()
        timestamps = tuple(draw(st.lists(int64, max_size=1)))
    return DataRecords(
        columns=columns,
        values=values,
        timestamps_ms=timestamps,
        payload=draw(st.binary(max_size=64)),
        content_type=draw(text),
    )


metrics = st.builds(Metric, name=text, value=finite_or_inf)
time_series = st.builds(
    TimeSeries,
    name=text,
    points=tuples(st.builds(TimeSeriesPoint, time_ms=int64, value=finite_or_inf)),
)
health_reports = st.builds(
    HealthReport,
    pipeline=text,
    component=text,
    name=text,
    window_start_ms=int64,
    window_end_ms=int64,
    model_id=text,
    model_version=text,
    sample_count=uint64,
    histograms=tuples(histograms(), max_size=3),
    categorical=tuples(categorical_counts(), max_size=3),
    scalars=tuples(metrics),
    series=tuples(time_series, max_size=3),
    drift=tuples(
        st.builds(
            DriftScore,
            feature=text,
            metric=text,
            score=finite_or_inf,
            threshold=finite_or_inf,
            model_version=text,
        )
    ),
)
stats_reports = st.builds(
    StatsReport,
    pipeline=text,
    component=text,
    scalars=tuples(metrics),
    series=tuples(time_series, max_size=3),
    tables=tuples(tables(), max_size=3),
    progress=st.none()
    | st.builds(
        JobProgress,
        engine_job_id=text,
        jobs_total=uint32,
        jobs_done=uint32,
        stages_total=uint32,
        stages_done=uint32,
        tasks_total=uint64,
        tasks_done=uint64,
        step=uint64,
        elapsed_ms=int64,
    ),
)

# ---- models ---------------------------------------------------------------------------------

model_manifests = st.builds(
    ModelManifest,
    model_id=sha256_hex | text,
    version=text,
    ion=text,
    edge=text,
    producer_pipeline=text,
    producer_node=text,
    size_bytes=uint64,
    chunk_size=uint32,
    chunk_sha256=tuples(sha256_hex),
    format=text,
    layout=st.sampled_from(ArtifactLayout),
    file_name=text,
    metrics=tuples(metrics),
    baseline=tuples(histograms(), max_size=3),
    created_ms=int64,
    annotations=pairs,
    signature=optional_signatures,
)
model_chunks = st.builds(ModelChunk, model_id=text, index=uint32, data=st.binary(max_size=256))
chunk_requests = st.builds(
    ChunkRequest, model_id=text, indexes=tuples(uint32, max_size=8), requester=text
)

# ---- events, triggers, delivery -------------------------------------------------------------

events = st.builds(
    Event,
    type=text,
    severity=st.sampled_from(Severity),
    subject=text,
    message=text,
    attributes=pairs,
    pipeline=text,
    component=text,
)
triggers = st.builds(Trigger, edge=text, target_pipeline=text, reason=text)


@st.composite
def retransmit_requests(draw: st.DrawFn) -> RetransmitRequest:
    a, b = sorted((draw(uint64), draw(uint64)))
    return RetransmitRequest(
        stream=draw(text), from_sequence=a, to_sequence=b, requester=draw(text)
    )


delivery_acks = st.builds(DeliveryAck, stream=text, up_to_sequence=uint64, receiver=text)

# ---- envelopes --------------------------------------------------------------------------------

hops = st.builds(Hop, node=text, received_ms=int64, forwarded_ms=int64)


def envelopes(bodies: st.SearchStrategy[Body] | None = None) -> st.SearchStrategy[Envelope]:
    """Envelopes around ``bodies`` (default: any body kind, batches included)."""
    return st.builds(
        Envelope,
        message_id=message_ids,
        ion=text,
        source_node=text,
        created_ms=int64,
        sequence=uint64,
        stream=text,
        route=tuples(hops, max_size=3),
        correlation_id=text,
        body=any_body() if bodies is None else bodies,
    )


# Every body kind but the batch, by its Envelope.body oneof field name.
SINGLE_BODIES: Mapping[str, st.SearchStrategy[Body]] = {
    "definition": definitions,
    "deletion": deletions,
    "node_status": node_statuses,
    "command": commands,
    "command_result": command_results,
    "model_manifest": model_manifests,
    "model_chunk": model_chunks,
    "chunk_request": chunk_requests,
    "health": health_reports,
    "event": events,
    "stats": stats_reports,
    "data": data_records(),
    "trigger": triggers,
    "retransmit_request": retransmit_requests(),
    "ack": delivery_acks,
}
single_bodies: st.SearchStrategy[Body] = st.one_of(*SINGLE_BODIES.values())
batches = st.builds(EnvelopeBatch, st.lists(envelopes(single_bodies), max_size=3).map(tuple))
BODIES: Mapping[str, st.SearchStrategy[Body]] = {**SINGLE_BODIES, "batch": batches}


def any_body() -> st.SearchStrategy[Body]:
    return st.one_of(single_bodies, batches)


# ---- arbitrary wire messages ------------------------------------------------------------------
# Schema-shaped but unchecked: every field of every message may hold any value of its wire type,
# enums any number, oneofs any member or none.  Parsing always succeeds, so these reach the
# conversion layer with what the domain values refuse (UNSPECIFIED enums, histograms whose
# counts do not fit, nested batches, deep argument values).

_F = FieldDescriptor
_WIRE_SCALARS: Mapping[int, st.SearchStrategy[Any]] = {
    _F.TYPE_STRING: text,
    _F.TYPE_BYTES: st.binary(max_size=16),
    _F.TYPE_BOOL: st.booleans(),
    _F.TYPE_DOUBLE: st.floats(),  # NaN included
    _F.TYPE_INT64: int64,
    _F.TYPE_SINT64: int64,
    _F.TYPE_UINT64: uint64,
    _F.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: sint32,
    _F.TYPE_UINT32: uint32,
    _F.TYPE_ENUM: st.integers(-1, 12) | st.integers(-(2**31), 2**31 - 1),
}


def _wire_value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == _F.TYPE_MESSAGE:
        assert field.message_type is not None
        return wire_messages(field.message_type, depth - 1)
    return _WIRE_SCALARS[field.type]


def _mostly(usual: st.SearchStrategy[T], rare: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    # Hypothesis favours 0, so that is the usual case.
    return st.integers(0, 9).flatmap(lambda i: rare if i == 9 else usual)


def wire_messages(descriptor: Descriptor, depth: int = 5) -> st.SearchStrategy[Message]:
    """Arbitrary instances of the message ``descriptor`` names, nested at most ``depth``."""
    cls = GetMessageClass(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        m = cls()
        if depth <= 0:
            return m
        for field in descriptor.fields:
            if field.containing_oneof is not None:
                continue
            value = _wire_value(field, depth)
            if field.full_name == "ion.v1.Envelope.message_id":
                # Mostly valid, so that most envelopes get as far as converting their body.
                setattr(m, field.name, draw(_mostly(message_ids, text)))
                continue
            if not draw(st.booleans()):
                continue
            if field.is_repeated:
                items = draw(st.lists(value, max_size=2))
                target = getattr(m, field.name)
                if field.type == _F.TYPE_MESSAGE:
                    for item in items:
                        target.add().CopyFrom(item)
                else:
                    target.extend(items)
            elif field.type == _F.TYPE_MESSAGE:
                getattr(m, field.name).CopyFrom(draw(value))
            else:
                setattr(m, field.name, draw(value))
        for oneof in descriptor.oneofs:
            chosen = draw(_mostly(st.sampled_from(list(oneof.fields)), st.none()))
            if chosen is not None:
                value = draw(_wire_value(chosen, depth))
                if chosen.type == _F.TYPE_MESSAGE:
                    sub = getattr(m, chosen.name)
                    sub.SetInParent()
                    sub.CopyFrom(value)
                else:
                    setattr(m, chosen.name, value)
        return m

    return build()


def wire_envelopes(depth: int = 5) -> st.SearchStrategy[bytes]:
    """Encoded arbitrary ``ion.v1.Envelope`` messages (see ``wire_messages``)."""
    descriptor = envelope_pb2.DESCRIPTOR.message_types_by_name["Envelope"]
    return wire_messages(descriptor, depth).map(lambda m: m.SerializeToString())
