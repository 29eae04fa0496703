"""What a trained model is between components, the SDK and the agent: a path plus what it means.

Training components return a ``ModelArtifact`` from their ``model`` output; ``model_publisher``
adds the baseline histograms; the runner hands it to the SDK, which asks the agent to publish it
on the ION model edge (manifest + chunks).  On the consuming side the agent verifies and
unpacks each version into its model store and the pipeline sees a ``ModelArtifact`` again,
through a ``ModelFeed``: the newest version the edge's policy activated, read without blocking,
so a streaming component swaps models between two batches (hot swap, no restart).

Model files are data, never code: formats are plain (JSON, ``.npz`` loaded with
``allow_pickle=False``, TFLite flatbuffers, Keras ``.keras`` archives loaded with
``safe_mode=True``).  Nothing from the network is ever unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from ion.model.health import Histogram, Metric
from ion.model.manifest import ModelManifest

__all__ = ["LOCAL_PATH", "ModelArtifact", "ModelFeed", "artifact_of", "manifest_for"]

LOCAL_PATH = "local_path"
"""Manifest annotation naming a model's place on this machine: how a model crosses the local
socket (component -> agent to publish it, agent -> component to hand over a version); it is
never sent over MQTT."""


@dataclass(frozen=True, slots=True)
class ModelArtifact:
    """One model version on local disk.

    ``path`` is a file or a directory (a directory travels as a deterministic tar).
    ``format`` names the layout inside, with a version, e.g. ``kmeans-json/1``,
    ``keras-autoencoder/1``, ``tflite-autoencoder/1``; consumers refuse formats they do not know.
    """

    path: Path
    format: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Quality figures the gates compare (e.g. ``silhouette``, ``val_loss``)."""
    baseline: tuple[Histogram, ...] = ()
    """Feature histograms of the training data: what drift is scored against."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    model_id: str = ""
    """Hex SHA-256 of the artifact bytes; set once published or received."""
    version: str = ""
    """Set by the agent when published (the producer's version label) or received."""

    def with_baseline(self, baseline: tuple[Histogram, ...]) -> ModelArtifact:
        return replace(self, baseline=baseline)


@runtime_checkable
class ModelFeed(Protocol):
    """The models arriving for one model input, as a streaming component sees them.

    ``latest`` never blocks: a component calls it once per batch and swaps when the version
    changed.  ``accepted`` reports whether the component could load the version (the agent turns
    it into a ``model.accepted`` / ``model.rejected`` event, and a rejected version is rolled
    back to the previous one).
    """

    def latest(self) -> ModelArtifact | None:
        """The newest active version, or None while there is none."""
        ...

    def wait(self, timeout: float | None = None) -> ModelArtifact | None:
        """Block until a version is active (or the timeout passes, or the job is stopping)."""
        ...

    def accepted(self, artifact: ModelArtifact, ok: bool, detail: str = "") -> None:
        """Report that ``artifact`` was loaded (ok) or could not be (with why)."""
        ...


def manifest_for(
    artifact: ModelArtifact, *, ion: str, edge: str, pipeline: str = ""
) -> ModelManifest:
    """``artifact`` as a manifest whose ``local_path`` annotation names it (its id and version
    as far as known: empty in a request to publish, which the agent fills in)."""
    return ModelManifest(
        model_id=artifact.model_id,
        version=artifact.version,
        ion=ion,
        edge=edge,
        producer_pipeline=pipeline,
        format=artifact.format,
        file_name=artifact.path.name,
        metrics=tuple(Metric(k, float(v)) for k, v in artifact.metrics.items()),
        baseline=artifact.baseline,
        annotations={**artifact.annotations, LOCAL_PATH: str(Path(artifact.path).absolute())},
    )


def artifact_of(manifest: ModelManifest) -> ModelArtifact | None:
    """The local model a manifest describes (None without a ``local_path``)."""
    path = manifest.annotations.get(LOCAL_PATH, "")
    if not path:
        return None
    return ModelArtifact(
        path=Path(path),
        format=manifest.format,
        metrics={m.name: m.value for m in manifest.metrics},
        baseline=manifest.baseline,
        annotations={k: v for k, v in manifest.annotations.items() if k != LOCAL_PATH},
        model_id=manifest.model_id,
        version=manifest.version,
    )
