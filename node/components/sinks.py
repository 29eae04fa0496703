"""``event_sink``: keeps the events it receives, as JSON lines in a file or in the log.

Each line is one ``Event`` as an object: ``time_ms`` (when written), ``type``, ``severity``,
``subject``, ``message``, ``attributes``, ``pipeline``, ``component``.  The file (``path``,
inside the work directory) is appended to and flushed per item, so a crash loses nothing that
was acknowledged upstream; without ``path`` events go to the pipeline's log.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from ion.model.event import Event, Severity
from node.runner.component import Args, Component, Context

from .common import output_path

_LEVELS = {
    Severity.DEBUG: logging.DEBUG,
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.ERROR: logging.ERROR,
    Severity.CRITICAL: logging.CRITICAL,
}


def event_json(event: Event, now_ms: int) -> dict[str, Any]:
    return {
        "time_ms": now_ms,
        "type": event.type,
        "severity": event.severity.value,
        "subject": event.subject,
        "message": event.message,
        "attributes": dict(event.attributes),
        "pipeline": event.pipeline,
        "component": event.component,
    }


class EventSink(Component):
    input_ports = ("events",)
    output_ports = ()

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        path = args.get_str("path", None)
        self.path = output_path(ctx, path) if path is not None else None
        self._file: TextIO | None = None
        self.written = 0

    def _take(self, item: Any) -> None:
        if not isinstance(item, Event):
            raise TypeError(f"event_sink takes Event values, not {type(item).__name__}")
        self.written += 1
        if self.path is None:
            self.log.log(_LEVELS[item.severity], "%s %s: %s", item.type, item.subject, item.message)
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        line = json.dumps(event_json(item, int(time.time() * 1000)), sort_keys=True)
        self._file.write(line + "\n")
        self._file.flush()

    def run(self, inputs: Mapping[str, Any]) -> None:
        value = inputs["events"]
        for item in value if isinstance(value, list | tuple) else [value]:
            self._take(item)

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[None]:
        for item in inputs["events"]:
            self._take(item)
            yield None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
