"""Length-prefixed frames on a byte stream: each frame is a 4-byte big-endian unsigned length,
then that many bytes.  Pure (no I/O): the server and the SDK both feed it what they read.

A stream that announces a frame over ``max_frame_size`` is refused as soon as the 4-byte header
arrives, before anything is buffered for it: the length comes from the peer, and a peer that
claims 4 GiB must not make us allocate it.  After a ``FramingError`` the stream is out of sync
(there is no way to find the next frame boundary), so the connection must be closed; the
decoder refuses further input to make that hard to get wrong.
"""

from __future__ import annotations

import struct

from ion.errors import InputError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "FrameDecoder",
    "FramingError",
    "encode",
]

HEADER_SIZE = 4
_HEADER = struct.Struct(">I")

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
"""16 MiB: room for a model chunk with its envelope; far below what hurts a small gateway."""


class FramingError(InputError):
    """The byte stream is not a sequence of valid frames; the connection must be closed."""


def encode(payload: bytes, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """``payload`` with its length prefix.  ``ValueError`` if it is over ``max_frame_size``:
    a frame the peer would refuse (and close the connection for) is a bug to catch here."""
    if len(payload) > max_frame_size:
        raise ValueError(f"frame of {len(payload)} bytes is over the limit of {max_frame_size}")
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Turns chunks of a byte stream into whole frames, however the chunks are cut."""

    __slots__ = ("_buf", "_failed", "_max")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size < 2**32:
            raise ValueError(f"max frame size {max_frame_size} is outside 1..2**32-1")
        self._max = max_frame_size
        self._buf = bytearray()
        self._failed: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (0 between frames)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Every frame completed by ``data``, in order.  ``FramingError`` for an oversized
        frame, and for any call after one (the stream is out of sync)."""
        if self._failed is not None:
            raise self._failed
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_SIZE:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size > self._max:
                self._failed = FramingError(
                    f"frame of {size} bytes announced, over the limit of {self._max}"
                )
                buf.clear()
                raise self._failed
            stop = pos + HEADER_SIZE + size
            if stop > end:
                break
            frames.append(bytes(buf[pos + HEADER_SIZE : stop]))
            pos = stop
        if pos:
            del buf[:pos]
        return frames

    def check_end(self) -> None:
        """At end of stream: ``FramingError`` if it stopped in the middle of a frame."""
        if self._buf:
            raise FramingError(f"stream ended inside a frame ({len(self._buf)} bytes of it)")
