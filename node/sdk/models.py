"""Models through the SDK: publish one along a model edge, follow the versions of another.

Publishing names a file or directory on this machine; the agent packs, hashes, chunks and
publishes it (the bytes never cross the local socket).  Following a model edge gives a
``ModelFeed``: a background thread takes each newly activated version from the agent (a
manifest whose ``local_path`` annotation says where the agent unpacked it), and the component
reads the newest with ``latest()`` between two batches: a hot swap, no restart.  Whether the
component could load it goes back as a ``model.accepted`` / ``model.rejected`` event, on which
the agent keeps or rolls back the version.

Standalone (no agent), the feed reads ``ION_SDK_INPUT`` like any subscription: ``Delivery``
lines, what an agent would deliver (``delivery_line``; for a model on disk,
``python -m node.sdk.models --format kmeans-json/1 DIR >> input.jsonl``), or ``Emit`` lines (a
training run's own ``ION_SDK_OUTPUT``: its ``publish_model`` request names the model in the
same annotation, with the baseline), so a pipeline can be tested with a model on disk.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ion.errors import IonError
from ion.model.local import Delivery, LocalFrame
from ion.model.manifest import ModelManifest
from ion.model.messages import Envelope, new_envelope
from ion.wire.local import frame_to_json
from node.models.artifact import ModelArtifact, artifact_of, manifest_for

if TYPE_CHECKING:
    from .client import Client, StopFlag

log = logging.getLogger(__name__)


class FeedFollower:
    """A ``ModelFeed`` fed by a subscription to one model edge (see the module docstring)."""

    def __init__(self, client: Client, edge: str, stop: StopFlag | None = None) -> None:
        self._client = client
        self.edge = edge
        self._stop = stop
        self._cond = threading.Condition()
        self._latest: ModelArtifact | None = None
        self._closed = False
        self._items: Iterator[tuple[str, Envelope]] = client.subscribe([edge], window=1, stop=stop)
        self._thread = threading.Thread(target=self._follow, name=f"ion-model-{edge}", daemon=True)
        self._thread.start()

    def latest(self) -> ModelArtifact | None:
        with self._cond:
            return self._latest

    def settle(self, timeout: float) -> bool:
        """Wait until the subscription has ended (a standalone input file was read to its
        end), at most ``timeout`` seconds; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> ModelArtifact | None:
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    self._latest is not None
                    or self._closed
                    or (self._stop is not None and self._stop.is_set())
                ),
                timeout,
            )
            return self._latest

    def accepted(self, artifact: ModelArtifact, ok: bool, detail: str = "") -> None:
        kind = "model.accepted" if ok else "model.rejected"
        message = detail or (
            f"model {artifact.version or artifact.model_id[:12]} "
            f"{'loaded' if ok else 'could not be loaded'}"
        )
        try:
            self._client.emit_event(
                kind,
                message,
                "info" if ok else "error",
                {"edge": self.edge, "model_id": artifact.model_id, "version": artifact.version},
            )
        except IonError as exc:
            log.warning("could not report %s for %s: %s", kind, artifact.model_id[:12], exc)

    def _follow(self) -> None:
        try:
            for _edge, envelope in self._items:
                body = envelope.body
                if not isinstance(body, ModelManifest):
                    continue
                artifact = artifact_of(body)
                if artifact is None:
                    log.warning("model %s arrived without a local path", body.model_id[:12])
                    continue
                with self._cond:
                    self._latest = artifact
                    self._cond.notify_all()
                # Run alone, a model may have neither id nor version: its path names it.
                log.info(
                    "model %s is available on %s",
                    artifact.version or artifact.model_id[:12] or artifact.path,
                    self.edge,
                )
        except IonError as exc:
            log.warning("model feed %s ended: %s", self.edge, exc)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()


def delivery_line(
    edge: str, artifact: ModelArtifact, *, delivery_id: int = 1, ion: str = ""
) -> str:
    """The line of ``ION_SDK_INPUT`` that hands ``artifact`` to a model feed on ``edge``: a
    ``Delivery`` of its manifest, as an agent delivers a version it activated (no newline)."""
    manifest = manifest_for(artifact, ion=ion, edge=edge)
    envelope = new_envelope(manifest, source_node="", now_ms=int(time.time() * 1000), ion=ion)
    return frame_to_json(LocalFrame(0, Delivery(delivery_id, edge, envelope)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m node.sdk.models",
        description="Print the ION_SDK_INPUT line that hands a model on disk to a pipeline "
        "run without an agent.",
    )
    parser.add_argument("path", type=Path, help="the model: a file or a directory")
    parser.add_argument("--format", required=True, help="its format, e.g. kmeans-json/1")
    parser.add_argument("--edge", default="model", help="the model edge (default: model)")
    parser.add_argument("--version", default="", help="a version label to show")
    ns = parser.parse_args(argv)
    path: Path = ns.path.absolute()
    if not path.exists():
        parser.error(f"{path}: no such file or directory")
    artifact = ModelArtifact(path=path, format=ns.format, version=ns.version)
    print(delivery_line(ns.edge, artifact))
    return 0


if __name__ == "__main__":
    sys.exit(main())
