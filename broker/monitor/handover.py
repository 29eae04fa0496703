"""What the monitor's two processes say to each other over their pipes (see ``writer.py``).

Frames both ways: a 4-byte big-endian length, a kind byte, then the body.  MQTT messages (the
hot path) are packed as lengths and bytes (``struct``); the few control frames are JSON.  No
pickle: these bytes carry what came from the network, and nothing in the runtime unpickles
(tests/test_model_transfer_faults_hostile.py holds that).  A frame that does not decode is a
bug between the two ends and raises ``ValueError``.

Parent (the link) -> writer: a ``WriterConfig`` first, then tuples:

- ``("m", [(topic, payload, retained, now_ms), ...])``: fold these MQTT messages, in order;
- ``("t", now_ms)``: liveness and alert expiry;
- ``("r", now_ms)``: a retention pass;
- ``("f", flush_id)``: commit now and answer with a ``Committed`` carrying ``flush_id``;
- end of file: commit what is folded, close the database, exit 0.

Writer -> parent: ``Ready`` (or ``Failed`` and exit 1) once the database is open and read back,
then a ``Committed`` after every commit, or ``Failed`` (and exit 1) when the database cannot
be written.
"""

from __future__ import annotations

import json
import struct
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .alerts import Alert, AlertBounds
from .retention import RetentionSettings

HEADER = struct.Struct(">I")
Fold = tuple[str, bytes, bool, int]  # topic, payload, retained, receive time (ms)


@dataclass(frozen=True, slots=True)
class WriterConfig:
    db_path: Path
    monitor_id: str
    bounds: AlertBounds
    retention: RetentionSettings
    max_batch: int
    started_ms: int
    log_level: int


@dataclass(frozen=True, slots=True)
class Ready:
    pass


@dataclass(frozen=True, slots=True)
class Committed:
    """messages: messages folded and committed since the writer started (all of them that
    were sent before this commit); flush_id: the flush request this commit answers (0 if
    none); alerts: transitions now committed, to announce; counters: the core's counters."""

    messages: int
    flush_id: int
    alerts: tuple[Alert, ...]
    counters: dict[str, int]


@dataclass(frozen=True, slots=True)
class Failed:
    message: str


_MESSAGE = struct.Struct(">HI?q")  # topic length, payload length, retained, receive time
_NUMBER = struct.Struct(">q")
_TIMED = {"t": b"t", "r": b"r", "f": b"f"}  # tick, retention pass, flush request


def frame(obj: object) -> bytes:
    """``obj`` as one frame (see the module docstring for what may be sent)."""
    data = _encode(obj)
    return HEADER.pack(len(data)) + data


def _encode(obj: object) -> bytes:
    if isinstance(obj, tuple) and obj and obj[0] == "m":
        parts = [b"m"]
        for topic, payload, retained, now_ms in obj[1]:
            t = topic.encode()
            parts += [_MESSAGE.pack(len(t), len(payload), retained, now_ms), t, payload]
        return b"".join(parts)
    if isinstance(obj, tuple) and len(obj) == 2 and obj[0] in _TIMED:
        return _TIMED[obj[0]] + _NUMBER.pack(obj[1])
    if isinstance(obj, Ready):
        return b"R"
    if isinstance(obj, Failed):
        return b"F" + obj.message.encode()
    if isinstance(obj, Committed):
        doc: dict[str, Any] = asdict(obj)
        return b"K" + json.dumps(doc).encode()
    if isinstance(obj, WriterConfig):
        doc = asdict(obj)
        doc["db_path"] = str(obj.db_path)
        return b"C" + json.dumps(doc).encode()
    raise TypeError(f"no frame for {type(obj).__name__}")


def _decode(body: bytes) -> object:
    kind, rest = body[:1], memoryview(body)[1:]
    if kind == b"m":
        out, at, end = [], 0, len(rest)
        while at < end:
            topic_len, payload_len, retained, now_ms = _MESSAGE.unpack_from(rest, at)
            at += _MESSAGE.size
            topic = str(rest[at : at + topic_len], "utf-8")
            at += topic_len
            out.append((topic, bytes(rest[at : at + payload_len]), retained, now_ms))
            at += payload_len
        if at != end:
            raise ValueError("a messages frame with a truncated message")
        return ("m", out)
    for name, code in _TIMED.items():
        if kind == code:
            return (name, _NUMBER.unpack(rest)[0])
    if kind == b"R":
        return Ready()
    if kind == b"F":
        return Failed(str(rest, "utf-8"))
    if kind == b"K":
        doc = json.loads(bytes(rest))
        alerts = tuple(Alert(**a) for a in doc.pop("alerts"))
        return Committed(alerts=alerts, **doc)
    if kind == b"C":
        doc = json.loads(bytes(rest))
        return WriterConfig(
            db_path=Path(doc.pop("db_path")),
            bounds=AlertBounds(**doc.pop("bounds")),
            retention=RetentionSettings(**doc.pop("retention")),
            **doc,
        )
    raise ValueError(f"unknown frame kind {bytes(kind)!r}")


class FrameBuffer:
    """Whole frames out of a byte stream read in arbitrary pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._frames: deque[object] = deque()

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start, end = 0, len(buf)
        while end - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buf, start)
            if end - start - HEADER.size < size:
                break
            body = buf[start + HEADER.size : start + HEADER.size + size]
            self._frames.append(_decode(bytes(body)))
            start += HEADER.size + size
        if start:
            del buf[:start]

    def next(self) -> object | None:
        """The next whole frame, or None until more bytes are fed."""
        return self._frames.popleft() if self._frames else None

    @property
    def partial(self) -> int:
        """Bytes of an incomplete frame held (a peer that died mid-frame leaves some)."""
        return len(self._buf)
