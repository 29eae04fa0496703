"""The SDK without an agent: a pipeline run by hand, or in a test, works the same.

What the component emits is written as JSON lines, one ``Emit`` frame per line in proto3 JSON
(``ion.wire.local.frame_to_json``: snake_case names, 64-bit integers as strings), to
``ION_SDK_OUTPUT`` (a file, appended to) or standard output.  Each emit is written and flushed
before it returns, so the file is as far along as the component believes.

``subscribe`` reads ``ION_SDK_INPUT`` when set: JSON lines of ``Emit`` or ``Delivery`` frames,
so one standalone pipeline's output feeds the next one's input.  Lines for other edges are
skipped; the iteration ends at the end of the file.  Without an input there is nothing to
receive and the iteration ends at once.

Models work the same way.  ``publish_model`` writes one ``Emit`` line whose manifest names the
file or directory (annotation ``local_path``; nothing is packed or copied), after checking it
is there, as an agent would.  ``model_feed`` reads the model edge's lines of ``ION_SDK_INPUT``:
a training run's output, or ``Delivery`` lines made with ``node.sdk.models.delivery_line``,
also from the command line::

    python -m node.sdk.models --format kmeans-json/1 [--edge model] DIR >> input.jsonl

The feed reads the whole file before the pipeline's first batch, so a run alone uses the
file's newest model from its first row on, the same way every run.
"""

from __future__ import annotations

import logging
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

from ion.errors import ConfigError, InputError, IonError
from ion.model.local import Delivery, Emit, LocalFrame
from ion.model.messages import Envelope
from ion.wire.local import frame_from_json, frame_to_json
from node.models.artifact import ModelArtifact, ModelFeed

from .client import DEFAULT_TIMEOUT_S, DEFAULT_WINDOW, Client, EmitHandle, Identity, StopFlag

__all__ = ["INPUT_ENV", "OUTPUT_ENV", "StandaloneClient"]

log = logging.getLogger(__name__)

OUTPUT_ENV = "ION_SDK_OUTPUT"
INPUT_ENV = "ION_SDK_INPUT"

FEED_SETTLE_S = 5.0
"""How long a model feed may take to read ``ION_SDK_INPUT`` before the pipeline starts
without it (a file takes milliseconds; a pipe that stays open is followed as it goes)."""


class StandaloneClient(Client):
    """Writes emits as JSON lines to ``output`` (None: standard output)."""

    def __init__(
        self,
        identity: Identity,
        *,
        output: Path | None = None,
        input: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(identity, clock=clock)
        self.output = output
        self.input = input
        self._lock = threading.Lock()
        self._owned: IO[str] | None = None
        self._closed = False
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            self._owned = output.open("a", encoding="utf-8")

    @classmethod
    def from_environ(cls, identity: Identity, environ: Mapping[str, str]) -> StandaloneClient:
        out = environ.get(OUTPUT_ENV, "")
        inp = environ.get(INPUT_ENV, "")
        return cls(
            identity,
            output=Path(out) if out and out != "-" else None,
            input=Path(inp) if inp else None,
        )

    def _submit(self, edge: str, envelope: Envelope, *, record: bool) -> EmitHandle:
        if self._closed:
            raise InputError("the SDK client is closed")
        line = frame_to_json(LocalFrame(0, Emit(edge, envelope))) + "\n"
        with self._lock:
            stream = self._owned if self._owned is not None else sys.stdout
            stream.write(line)
            stream.flush()
        return EmitHandle.completed()

    def flush(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        """Every emit was written when it returned: nothing to wait for."""

    def subscribe(
        self,
        edges: Iterable[str] = (),
        *,
        window: int = DEFAULT_WINDOW,
        stop: StopFlag | None = None,
    ) -> Iterator[tuple[str, Envelope]]:
        wanted = frozenset(edges)
        if self.input is None:
            return iter(())
        return self._read_input(self.input, wanted, stop)

    def _read_input(
        self, path: Path, wanted: frozenset[str], stop: StopFlag | None
    ) -> Iterator[tuple[str, Envelope]]:
        try:
            f = path.open(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read {INPUT_ENV}={path}: {e}") from e
        with f:
            for n, line in enumerate(f, 1):
                if stop is not None and stop.is_set():
                    return
                if not line.strip():
                    continue
                try:
                    msg = frame_from_json(line).message
                except IonError as e:
                    raise InputError(f"{path}:{n}: {e}") from e
                if not isinstance(msg, Emit | Delivery):
                    continue
                if not wanted or msg.edge in wanted:
                    yield msg.edge, msg.envelope

    def publish_model(
        self, edge: str, artifact: ModelArtifact, *, timeout: float | None = DEFAULT_TIMEOUT_S
    ) -> None:
        # An agent packs the artifact at once and refuses one it cannot read: so does a run
        # alone, or a pipeline would pass its tests and fail under an agent.
        path = Path(artifact.path)
        try:
            mode = path.lstat().st_mode
        except OSError as e:
            raise InputError(f"cannot read the artifact {path}: {e.strerror or e}") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InputError(f"{path}: a model artifact is a regular file or a directory")
        super().publish_model(edge, artifact, timeout=timeout)

    def model_feed(self, edge: str, *, stop: StopFlag | None = None) -> ModelFeed:
        from .models import FeedFollower

        if self.input is None:
            log.warning("no %s: no model will arrive on edge %r", INPUT_ENV, edge)
        elif not self.input.exists():
            # Said here, before the pipeline runs, not as a warning from the feed's thread.
            raise ConfigError(f"cannot read {INPUT_ENV}={self.input}: no such file")
        follower = FeedFollower(self, edge, stop)
        if not follower.settle(FEED_SETTLE_S):
            log.info("%s is still open: following it for models on %r", INPUT_ENV, edge)
        return follower

    def close(self) -> None:
        self._closed = True
        with self._lock:
            if self._owned is not None:
                self._owned.close()
                self._owned = None
