"""Chunks that arrive before their manifest, kept on disk for a while.

The producer publishes the manifest before the chunks, but nothing orders messages across
topics end to end (a gateway relays each topic through its outbox, a broker may interleave), so
a chunk can come first.  It cannot be verified yet, so it waits here, bounded in bytes and in
time, and is verified when the manifest arrives.  What does not fit is dropped: the receiver
asks for it again once it knows the manifest.  Staging is a cache: it starts empty.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ion.model.manifest import ModelChunk

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Held:
    since_ms: int
    sizes: dict[int, int] = field(default_factory=dict)


class ChunkStaging:
    def __init__(self, root: Path, *, max_bytes: int, ttl_ms: int) -> None:
        self._root = root
        self._max_bytes = max_bytes
        self._ttl_ms = ttl_ms
        self._held: dict[str, _Held] = {}
        self.bytes = 0
        self.dropped = 0
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)

    def put(self, chunk: ModelChunk, now_ms: int) -> bool:
        """Keep ``chunk`` (its model id is 64 hex digits: checked by the topic); False if full."""
        held = self._held.get(chunk.model_id)
        if held is not None and chunk.index in held.sizes:
            return True
        if self.bytes + len(chunk.data) > self._max_bytes:
            self.dropped += 1
            return False
        if held is None:
            held = self._held[chunk.model_id] = _Held(now_ms)
            (self._root / chunk.model_id).mkdir(exist_ok=True)
        tmp = self._root / chunk.model_id / f".{chunk.index}.tmp"
        tmp.write_bytes(chunk.data)
        os.replace(tmp, self._root / chunk.model_id / str(chunk.index))
        held.sizes[chunk.index] = len(chunk.data)
        self.bytes += len(chunk.data)
        return True

    def take(self, model_id: str) -> Iterator[ModelChunk]:
        """The staged chunks of ``model_id``, one at a time; forgotten afterwards."""
        held = self._held.pop(model_id, None)
        if held is None:
            return
        directory = self._root / model_id
        try:
            for index in sorted(held.sizes):
                try:
                    data = (directory / str(index)).read_bytes()
                except OSError:
                    continue
                yield ModelChunk(model_id, index, data)
        finally:
            self.bytes -= sum(held.sizes.values())
            shutil.rmtree(directory, ignore_errors=True)

    def expire(self, now_ms: int) -> int:
        """Forget models whose manifest did not come within the TTL; how many."""
        old = [m for m, h in self._held.items() if now_ms - h.since_ms >= self._ttl_ms]
        for model_id in old:
            held = self._held.pop(model_id)
            self.bytes -= sum(held.sizes.values())
            shutil.rmtree(self._root / model_id, ignore_errors=True)
        if old:
            log.info("dropped staged chunks of %d model(s) whose manifest never came", len(old))
        return len(old)
