"""Events, triggers and data records <-> protobuf (proto/ion/v1/event.proto)."""

from __future__ import annotations

from ion.errors import DecodeError
from ion.model.event import DataRecords, Event, Severity, Trigger
from ion.v1 import event_pb2 as pb
from ion.wire.convert_common import EnumTable, decoding
from ion.wire.values import pairs_from_proto, pairs_to_proto

SEVERITIES: EnumTable[Severity, pb.Severity] = EnumTable(
    "event severity",
    {
        Severity.DEBUG: pb.SEVERITY_DEBUG,
        Severity.INFO: pb.SEVERITY_INFO,
        Severity.WARNING: pb.SEVERITY_WARNING,
        Severity.ERROR: pb.SEVERITY_ERROR,
        Severity.CRITICAL: pb.SEVERITY_CRITICAL,
    },
)


def event_to_proto(e: Event) -> pb.Event:
    return pb.Event(
        type=e.type,
        severity=SEVERITIES.to_wire(e.severity),
        subject=e.subject,
        message=e.message,
        attributes=pairs_to_proto(e.attributes),
        pipeline=e.pipeline,
        component=e.component,
    )


def event_from_proto(m: pb.Event) -> Event:
    with decoding("event"):
        return Event(
            type=m.type,
            severity=SEVERITIES.from_wire(m.severity),
            subject=m.subject,
            message=m.message,
            attributes=pairs_from_proto(m.attributes),
            pipeline=m.pipeline,
            component=m.component,
        )


def trigger_to_proto(t: Trigger) -> pb.Trigger:
    return pb.Trigger(edge=t.edge, target_pipeline=t.target_pipeline, reason=t.reason)


def trigger_from_proto(m: pb.Trigger) -> Trigger:
    with decoding("trigger"):
        return Trigger(edge=m.edge, target_pipeline=m.target_pipeline, reason=m.reason)


def data_records_to_proto(d: DataRecords) -> pb.DataRecords:
    return pb.DataRecords(
        columns=d.columns,
        values=d.values,
        timestamps_ms=d.timestamps_ms,
        payload=d.payload,
        content_type=d.content_type,
    )


def data_records_from_proto(m: pb.DataRecords) -> DataRecords:
    # The hot path of data edges: a plain try (see ``codec._envelope_from_proto``), and no
    # tuple made of an empty repeated field (each costs more than the test for emptiness).
    columns, values, stamps = m.columns, m.values, m.timestamps_ms
    try:
        return DataRecords(
            columns=tuple(columns) if columns else (),
            values=tuple(values) if values else (),
            timestamps_ms=tuple(stamps) if stamps else (),
            payload=m.payload,
            content_type=m.content_type,
        )
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"invalid data records: {exc}") from exc
