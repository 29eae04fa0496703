"""The active version of one model edge on a node, and when it changes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .artifact import ModelArtifact

log = logging.getLogger(__name__)


class ModelWatch:
    """``latest()`` never blocks; ``generation`` grows by one per change; ``wait_changed``
    waits for a change; listeners are called (in the event loop) with the new active
    artifact, or None when nothing is active any more.  What a ``ModelFeed`` is built on.
    """

    def __init__(self, ion: str, edge: str, current: ModelArtifact | None) -> None:
        self.ion = ion
        self.edge = edge
        self.generation = 0
        self._current = current
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[ModelArtifact | None], None]] = []

    def latest(self) -> ModelArtifact | None:
        return self._current

    def add_listener(self, listener: Callable[[ModelArtifact | None], None]) -> Callable[[], None]:
        """Call ``listener`` on every change; returns the function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def wait_changed(self, after: int) -> int:
        """Wait until ``generation`` is past ``after``; returns it."""
        while self.generation <= after:
            await self._changed.wait()
        return self.generation

    def update(self, artifact: ModelArtifact | None) -> None:
        """Called by the exchange when the active version changed."""
        if artifact == self._current:
            return
        self._current = artifact
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()
        for listener in list(self._listeners):
            try:
                listener(artifact)
            except Exception:  # one listener's bug must not stop the others
                log.exception("model listener for %s/%s failed", self.ion, self.edge)
