"""Engine adapters imported on first use.

The spark and tensorflow adapters are small, but what they import (HTTP clients for Spark's
REST API, event-file readers) is not needed by an agent that never runs such a pipeline, and a
small gateway's memory is worth more than a few milliseconds at the first start.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator, Mapping

from .base import Engine, JobSpec, JobStartError, RunningJob

log = logging.getLogger(__name__)


class Unavailable:
    """An engine that cannot run anything here, and says why."""

    def __init__(self, name: str, reason: str) -> None:
        self._name = name
        self._reason = reason

    @property
    def name(self) -> str:
        return self._name

    def check_available(self) -> str | None:
        return self._reason

    async def start(self, job: JobSpec) -> RunningJob:
        raise JobStartError(self._reason)


class LazyEngines(Mapping[str, Engine]):
    """A mapping of engine name to adapter; ``"module:Class"`` is imported and constructed on
    first lookup."""

    def __init__(self, paths: Mapping[str, str]) -> None:
        self._paths = dict(paths)
        self._made: dict[str, Engine] = {}

    def __getitem__(self, name: str) -> Engine:
        engine = self._made.get(name)
        if engine is None:
            module, _, attr = self._paths[name].partition(":")
            try:
                engine = getattr(importlib.import_module(module), attr)()
            except Exception as exc:
                log.exception("engine %s cannot be loaded", name)
                engine = Unavailable(name, f"the {name} engine adapter cannot be loaded: {exc}")
            self._made[name] = engine
        return engine

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)
