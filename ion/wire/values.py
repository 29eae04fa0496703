"""Conversion of shared wire values (StringPair lists, dynamic Values, signatures)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ion.errors import DecodeError
from ion.model.definition import ArgValue, Signature
from ion.v1 import common_pb2 as pb

_MAX_DEPTH = 32


def pairs_to_proto(values: Mapping[str, str]) -> list[pb.StringPair]:
    return [pb.StringPair(key=k, value=v) for k, v in values.items()]


def pairs_from_proto(pairs: Iterable[pb.StringPair]) -> dict[str, str]:
    return {p.key: p.value for p in pairs}


def value_to_proto(value: ArgValue, _depth: int = 0) -> pb.Value:
    if _depth > _MAX_DEPTH:
        raise ValueError("argument value nested too deeply")
    if value is None:
        return pb.Value(null_value=pb.NULL_VALUE)
    if isinstance(value, bool):  # before int: bool is an int
        return pb.Value(bool_value=value)
    if isinstance(value, int):
        return pb.Value(int_value=value)
    if isinstance(value, float):
        return pb.Value(float_value=value)
    if isinstance(value, str):
        return pb.Value(string_value=value)
    if isinstance(value, tuple | list):
        return pb.Value(
            list_value=pb.ValueList(values=[value_to_proto(v, _depth + 1) for v in value])
        )
    if isinstance(value, Mapping):
        return pb.Value(map_value=pb.ValueMap(entries=named_values_to_proto(value, _depth + 1)))
    raise TypeError(f"unsupported argument value of type {type(value).__name__}")


def named_values_to_proto(values: Mapping[str, ArgValue], _depth: int = 0) -> list[pb.NamedValue]:
    return [pb.NamedValue(name=k, value=value_to_proto(v, _depth)) for k, v in values.items()]


def value_from_proto(value: pb.Value, _depth: int = 0) -> ArgValue:
    if _depth > _MAX_DEPTH:
        raise DecodeError("argument value nested too deeply")
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "float_value":
        return value.float_value
    if kind == "string_value":
        return value.string_value
    if kind == "list_value":
        return tuple(value_from_proto(v, _depth + 1) for v in value.list_value.values)
    if kind == "map_value":
        return named_values_from_proto(value.map_value.entries, _depth + 1)
    raise DecodeError(f"unknown value kind {kind!r}")


def named_values_from_proto(
    entries: Iterable[pb.NamedValue], _depth: int = 0
) -> dict[str, ArgValue]:
    return {e.name: value_from_proto(e.value, _depth) for e in entries}


def signature_to_proto(sig: Signature | None) -> pb.Signature | None:
    if sig is None:
        return None
    return pb.Signature(
        key_id=sig.key_id, algorithm=sig.algorithm, value=sig.value, signed_ms=sig.signed_ms
    )


def signature_from_proto(holder: object, field: str = "signature") -> Signature | None:
    """The signature in ``holder.<field>``, or None when the field is not set."""
    if not holder.HasField(field):  # type: ignore[attr-defined]
        return None
    sig: pb.Signature = getattr(holder, field)
    return Signature(
        key_id=sig.key_id, algorithm=sig.algorithm, value=sig.value, signed_ms=sig.signed_ms
    )
