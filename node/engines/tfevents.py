"""TensorBoard event files, read as they are written, without TensorFlow or tensorboard.

The agent must stay light (a gateway has no TensorFlow), so this module reads the two formats
by hand, and only as much of them as scalars need:

- TFRecord framing: ``u64 length (LE) | masked crc32c(length) | data | masked crc32c(data)``.
  A writer appends records, so the end of a file that is still being written may hold part of
  one: the reader stops before it and resumes at the same offset on the next poll.  A record
  whose data CRC is wrong is counted and skipped (its length was verified, so the next record
  is found); a wrong *length* CRC means we cannot know where the next record starts, so the
  rest of that file is abandoned (counted, logged once).
- The ``Event`` / ``Summary`` protobuf subset (``tensorflow/core/util/event.proto``,
  ``framework/summary.proto``, ``framework/tensor.proto``): ``wall_time`` (1), ``step`` (2),
  ``summary`` (5) -> ``value`` (1) -> ``tag`` (1) and ``simple_value`` (2, TF1) or ``tensor``
  (8, TF2: ``dtype`` (1), ``tensor_shape`` (2), ``tensor_content`` (4, little-endian) or the
  typed ``*_val`` fields).  A scalar is a tensor with exactly one number in it; everything else
  (histograms, images, text, graphs) is skipped.

Decoding never raises past ``EventTailer.poll``: malformed bytes, vanished files and read errors
are counted and skipped, since they come from a job's output and must not crash the agent.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

HEADER_BYTES = 12
"""Length (8) and its masked CRC (4)."""
FOOTER_BYTES = 4
MAX_SCALAR_RECORD_BYTES = 1 << 20
"""Records longer than this hold graphs or images, never a scalar event: skipped unread."""
DEFAULT_POLL_BUDGET_BYTES = 128 * 1024
"""Bytes of records decoded per poll (CRC32C in pure Python runs at a few MB/s, and a poll runs
on the agent's event loop); whatever is left is read by the next poll."""
MAX_FILES = 256
"""Event files followed at once per directory (a job that writes more is misbehaving)."""
_MAX_DEPTH = 4


class EventDecodeError(ValueError):
    """Bytes that are not a well-formed event (or not the subset read here)."""


# -- CRC32C (Castagnoli), as TFRecord uses it ----------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of ``data`` (continuing from ``crc``)."""
    table = _CRC_TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotated and offset, so CRCs of CRCs do not collapse."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """``data`` as one TFRecord (for writers and tests)."""
    length = struct.pack("<Q", len(data))
    return b"".join(
        (
            length,
            struct.pack("<I", masked_crc32c(length)),
            data,
            struct.pack("<I", masked_crc32c(data)),
        )
    )


# -- protobuf wire format ---------------------------------------------------------------------

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise EventDecodeError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
    raise EventDecodeError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field: an int for varints and fixed-width
    fields (raw bits), the bytes for length-delimited ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise EventDecodeError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > len(buf):
                raise EventDecodeError("truncated fixed-width field")
            yield number, wire, int.from_bytes(buf[pos : pos + size], "little")
            pos += size
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise EventDecodeError("truncated length-delimited field")
            yield number, wire, buf[pos : pos + size]
            pos += size
        else:  # groups (3, 4) are not in these messages; 6 and 7 do not exist
            raise EventDecodeError(f"unsupported wire type {wire}")


def _as_int(wire: int, value: int | bytes, want: int) -> int:
    if wire != want or not isinstance(value, int):
        raise EventDecodeError(f"unexpected wire type {wire}")
    return value


def _as_bytes(wire: int, value: int | bytes) -> bytes:
    if wire != _LEN or not isinstance(value, bytes):
        raise EventDecodeError(f"unexpected wire type {wire} for a message or string")
    return value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_varints(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        value, pos = _varint(data, pos)
        out.append(value)
    return out


# -- Event / Summary / TensorProto ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scalar:
    """One scalar value of one event."""

    tag: str
    value: float
    step: int
    wall_time: float


# DataType numbers (tensorflow/core/framework/types.proto) we can read as one number:
# struct code for tensor_content, and the typed field that may hold it instead.
_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_INT64, _DT_BFLOAT16, _DT_HALF = 1, 2, 3, 9, 14, 19
_CONTENT_CODES = {
    _DT_FLOAT: "<f",
    _DT_DOUBLE: "<d",
    _DT_INT32: "<i",
    _DT_INT64: "<q",
    _DT_HALF: "<e",
    _DT_BFLOAT16: "<H",  # the upper half of a float32
}
_F_FLOAT_VAL, _F_DOUBLE_VAL, _F_INT_VAL, _F_INT64_VAL, _F_HALF_VAL = 5, 6, 7, 10, 13


def parse_event(data: bytes) -> list[Scalar]:
    """The scalars in one serialized ``Event`` (none for events of other kinds)."""
    wall_time, step, summaries = 0.0, 0, []
    for number, wire, value in _fields(data):
        if number == 1:
            wall_time = struct.unpack("<d", _as_int(wire, value, _FIXED64).to_bytes(8, "little"))[0]
        elif number == 2:
            step = _signed64(_as_int(wire, value, _VARINT))
        elif number == 5:
            summaries.append(_as_bytes(wire, value))
    scalars = []
    for summary in summaries:
        for number, wire, value in _fields(summary):
            if number == 1:
                found = _summary_value(_as_bytes(wire, value))
                if found is not None:
                    scalars.append(Scalar(found[0], found[1], step, wall_time))
    return scalars


def _summary_value(data: bytes) -> tuple[str, float] | None:
    tag, number_found, tensor = "", None, None
    for number, wire, value in _fields(data):
        if number == 1:
            try:
                tag = _as_bytes(wire, value).decode("utf-8")
            except UnicodeDecodeError as e:
                raise EventDecodeError("tag is not UTF-8") from e
        elif number == 2:
            bits = _as_int(wire, value, _FIXED32)
            number_found = struct.unpack("<f", bits.to_bytes(4, "little"))[0]
        elif number == 8:
            tensor = _as_bytes(wire, value)
    if number_found is None and tensor is not None:
        number_found = _tensor_scalar(tensor)
    if number_found is None or not tag:
        return None
    return tag, float(number_found)


def _tensor_scalar(data: bytes) -> float | None:
    """The one number in a ``TensorProto``, or None when it holds anything else."""
    dtype, shape_elements = 0, 1
    content = b""
    typed: dict[int, list[float]] = {}
    for number, wire, value in _fields(data):
        if number == 1:
            dtype = _as_int(wire, value, _VARINT)
        elif number == 2:
            shape_elements = _shape_elements(_as_bytes(wire, value))
        elif number == 4:
            content = _as_bytes(wire, value)
        elif number in (_F_FLOAT_VAL, _F_DOUBLE_VAL, _F_INT_VAL, _F_INT64_VAL, _F_HALF_VAL):
            typed.setdefault(number, []).extend(_typed_values(number, wire, value))
    code = _CONTENT_CODES.get(dtype)
    if code is None or shape_elements != 1:
        return None
    if content:
        size = struct.calcsize(code)
        if len(content) != size:
            return None
        (raw,) = struct.unpack(code, content)
        if dtype == _DT_BFLOAT16:
            return float(struct.unpack("<f", struct.pack("<I", raw << 16))[0])
        return float(raw)
    field_for = {
        _DT_FLOAT: _F_FLOAT_VAL,
        _DT_DOUBLE: _F_DOUBLE_VAL,
        _DT_INT32: _F_INT_VAL,
        _DT_INT64: _F_INT64_VAL,
        _DT_HALF: _F_HALF_VAL,
        _DT_BFLOAT16: _F_HALF_VAL,  # bfloat16 bits travel in half_val too
    }
    values = typed.get(field_for[dtype], [])
    if len(values) != 1:
        return None
    if dtype in (_DT_HALF, _DT_BFLOAT16):  # half_val holds the 16 bits as an int
        bits = int(values[0]) & 0xFFFF
        if dtype == _DT_HALF:
            return float(struct.unpack("<e", bits.to_bytes(2, "little"))[0])
        return float(struct.unpack("<f", struct.pack("<I", bits << 16))[0])
    return values[0]


def _typed_values(number: int, wire: int, value: int | bytes) -> list[float]:
    if number == _F_FLOAT_VAL:
        raw = _as_bytes(wire, value) if wire == _LEN else _u32(wire, value)
        return _unpack_all("<f", raw)
    if number == _F_DOUBLE_VAL:
        raw = _as_bytes(wire, value) if wire == _LEN else _u64(wire, value)
        return _unpack_all("<d", raw)
    ints = _packed_varints(_as_bytes(wire, value)) if wire == _LEN else [_as_int(wire, value, 0)]
    if number == _F_HALF_VAL:  # raw 16-bit patterns, converted once the dtype is known
        return [float(i & 0xFFFF) for i in ints]
    # int32 and int64 alike: a negative int32 is sign-extended to 64 bits on the wire.
    return [float(_signed64(i)) for i in ints]


def _u32(wire: int, value: int | bytes) -> bytes:
    return _as_int(wire, value, _FIXED32).to_bytes(4, "little")


def _u64(wire: int, value: int | bytes) -> bytes:
    return _as_int(wire, value, _FIXED64).to_bytes(8, "little")


def _unpack_all(code: str, raw: bytes) -> list[float]:
    size = struct.calcsize(code)
    if len(raw) % size:
        raise EventDecodeError("packed field length is not a multiple of its element size")
    return [float(v[0]) for v in struct.iter_unpack(code, raw)]


def _shape_elements(data: bytes) -> int:
    """The number of elements of a ``TensorShapeProto`` (-1 when unknown)."""
    elements = 1
    for number, wire, value in _fields(data):
        if number == 2:  # dim
            size = 1
            for dim_number, dim_wire, dim_value in _fields(_as_bytes(wire, value)):
                if dim_number == 1:
                    size = _signed64(_as_int(dim_wire, dim_value, _VARINT))
            if size < 0:
                return -1
            elements *= size
        elif number == 3 and _as_int(wire, value, _VARINT):  # unknown_rank
            return -1
    return elements


# -- following files ------------------------------------------------------------------------


@dataclass
class RecordFile:
    """One event file, read incrementally from ``offset``."""

    path: Path
    offset: int = 0
    broken: bool = False
    """A length CRC failed: where the next record starts is unknown, so reading stopped."""

    def read(self, budget: int, counters: TailCounters) -> list[bytes]:
        """The complete, verified records after ``offset``, about ``budget`` bytes of them."""
        records: list[bytes] = []
        if self.broken:
            return records
        with self.path.open("rb") as f:
            f.seek(self.offset)
            spent = 0
            while spent < budget:
                header = f.read(HEADER_BYTES)
                if len(header) < HEADER_BYTES:
                    break  # end of file, or a header still being written
                (length,) = struct.unpack("<Q", header[:8])
                (length_crc,) = struct.unpack("<I", header[8:])
                if masked_crc32c(header[:8]) != length_crc:
                    self.broken = True
                    counters.corrupt_records += 1
                    log.warning(
                        "%s: corrupt record length at offset %d; not reading further",
                        self.path,
                        self.offset,
                    )
                    break
                end = self.offset + HEADER_BYTES + length + FOOTER_BYTES
                if length > MAX_SCALAR_RECORD_BYTES:
                    if os.fstat(f.fileno()).st_size < end:
                        break  # still being written; skip it once it is complete
                    f.seek(end)
                    self.offset = end
                    counters.skipped_records += 1
                    continue
                body = f.read(length + FOOTER_BYTES)
                if len(body) < length + FOOTER_BYTES:
                    break  # a record still being written: resume here next time
                self.offset = end
                spent += HEADER_BYTES + length + FOOTER_BYTES
                data = body[:length]
                (data_crc,) = struct.unpack("<I", body[length:])
                if masked_crc32c(data) != data_crc:
                    counters.corrupt_records += 1
                    continue
                records.append(data)
        return records


@dataclass
class TailCounters:
    records: int = 0
    scalars: int = 0
    corrupt_records: int = 0
    """Records whose CRC did not match (plus files abandoned on a bad length)."""
    malformed_events: int = 0
    """Records with a valid CRC that are not a decodable event."""
    skipped_records: int = 0
    """Records too large to hold a scalar, skipped unread."""
    read_errors: int = 0


@dataclass
class EventTailer:
    """Follows every event file under ``directory`` and keeps the latest value of each scalar.

    ``poll`` reads what was appended since the last poll (new files included); ``latest`` maps
    each key to its newest ``Scalar`` by wall time.  A key is the tag for files directly in the
    directory and ``<subdir>/<tag>`` for files below it (Keras' ``train``/``validation`` runs).
    """

    directory: Path
    budget_bytes: int = DEFAULT_POLL_BUDGET_BYTES
    latest: dict[str, Scalar] = field(default_factory=dict)
    counters: TailCounters = field(default_factory=TailCounters)
    _files: dict[Path, RecordFile] = field(default_factory=dict)

    def poll(self) -> bool:
        """Read what is new; True if any scalar was updated.  Never raises."""
        changed = False
        budget = self.budget_bytes
        try:
            self._discover()
        except OSError:
            self.counters.read_errors += 1
        for path, record_file in sorted(self._files.items()):
            if budget <= 0:
                break
            before = record_file.offset
            try:
                records = record_file.read(budget, self.counters)
            except FileNotFoundError:
                del self._files[path]  # removed (e.g. an old run cleaned up)
                continue
            except OSError:
                self.counters.read_errors += 1
                continue
            budget -= record_file.offset - before
            run = self._run_prefix(path)
            for data in records:
                changed |= self._take(run, data)
        return changed

    def values(self) -> dict[str, float]:
        """The latest value per key, plus ``step``: the step of the newest event."""
        if not self.latest:
            return {}
        values = {key: scalar.value for key, scalar in self.latest.items()}
        newest = max(self.latest.values(), key=lambda s: s.wall_time)
        values.setdefault("step", float(newest.step))
        return values

    def newest_wall_time(self) -> float | None:
        return max((s.wall_time for s in self.latest.values()), default=None)

    def _take(self, run: str, data: bytes) -> bool:
        self.counters.records += 1
        try:
            scalars = parse_event(data)
        except (EventDecodeError, struct.error, OverflowError, ValueError):
            self.counters.malformed_events += 1
            return False
        changed = False
        for scalar in scalars:
            self.counters.scalars += 1
            key = f"{run}/{scalar.tag}" if run else scalar.tag
            current = self.latest.get(key)
            if current is None or scalar.wall_time >= current.wall_time:
                self.latest[key] = scalar
                changed = True
        return changed

    def _run_prefix(self, path: Path) -> str:
        parent = path.parent.relative_to(self.directory)
        return "" if parent == Path() else parent.as_posix()

    def _discover(self) -> None:
        if len(self._files) >= MAX_FILES or not self.directory.is_dir():
            return
        for path in _event_files(self.directory, _MAX_DEPTH):
            if path not in self._files:
                if len(self._files) >= MAX_FILES:
                    log.warning("%s: more than %d event files; ignoring the rest", path, MAX_FILES)
                    return
                self._files[path] = RecordFile(path)


def _event_files(directory: Path, depth: int) -> Iterator[Path]:
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if depth > 0:
                    yield from _event_files(Path(entry.path), depth - 1)
            elif "tfevents" in entry.name and entry.is_file(follow_symlinks=False):
                yield Path(entry.path)
