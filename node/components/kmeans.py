"""``kmeans_score``: anomaly scores by distance to the nearest KMeans centroid (edge inference).

Inputs: ``data`` (``Batch`` values) and ``model``: in a streaming pipeline a ``ModelFeed``
(asked for ``latest()`` once per batch: a new ``model_id``/``version`` is loaded between two
batches, reported with ``accepted``, and a version that cannot be loaded is refused once and
the previous model kept); in a batch pipeline a ``ModelArtifact``.  Only ``kmeans-json/1`` is
understood.

Outputs (see ``node.components.values``):

- ``data``: a ``ScoredBatch`` per batch (rows with a missing feature are not scored);
- ``stats``: a ``StatsReport`` per window: records, scored, anomalies, anomaly_rate, unscored
  (no model yet), missing (a feature absent), mean/max distance, events_suppressed, swaps;
- ``health``: a ``HealthReport`` per window: histograms of the raw features on the model's
  baseline edges (when the model has a baseline), ``sample_count``, the model's id/version;
- ``events``: one ``anomaly.detected`` event per anomaly, at most ``max_events`` per window
  (the rest are counted, and summed up in one ``anomaly.suppressed`` event).

Windows are ``window`` long (a duration) and end when a batch (or an empty tick batch) arrives
after the window's end, when the model changes (a window never mixes two models), and when the
stream ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from node.health.histograms import HistogramAccumulator
from node.models.artifact import ModelArtifact

from .kmeans_model import FORMAT, KMeansModel, ModelFormatError
from .scoring import Rows, Window, WindowedScorer, scorable
from .values import Batch, BoolArray, FloatArray, ScoredBatch

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Active:
    """The model in use, and what this window has seen of it."""

    artifact: ModelArtifact
    model: KMeansModel
    threshold: float
    histograms: HistogramAccumulator | None


class KMeansScore(WindowedScorer[_Active, ScoredBatch]):
    model_format = FORMAT
    format_error = ModelFormatError

    def _load(self, artifact: ModelArtifact) -> _Active:
        model = KMeansModel.load(artifact.path)
        threshold = self.threshold if self.threshold is not None else model.threshold
        baseline = {h.feature: h for h in artifact.baseline}
        edges = [baseline[f] for f in model.features if f in baseline]
        return _Active(artifact, model, threshold, HistogramAccumulator(edges) if edges else None)

    def _model_summary(self, active: _Active) -> str:
        return f"k={active.model.k:d}, {len(active.model.features):d} features"

    def _batch(self, item: Any) -> Batch:
        if not isinstance(item, Batch):
            raise TypeError(f"kmeans_score takes Batch values, not {type(item).__name__}")
        return item

    def _batches(self, data: Any) -> list[Batch]:
        return list(data) if isinstance(data, list | tuple) else [data]

    def _score(self, active: _Active, batch: Batch) -> tuple[ScoredBatch, FloatArray, BoolArray]:
        model = active.model
        x = batch.columns(model.features)
        n = batch.rows
        ok = scorable(x)
        good = int(np.count_nonzero(ok))
        if good == n:
            distance, cluster = model.nearest(x)
        else:
            distance = np.full(n, np.nan)
            cluster = np.full(n, -1, dtype=np.int64)
            if good:
                distance[ok], cluster[ok] = model.nearest(x[ok])
        # NaN compares False: an unscored row is never an anomaly.
        anomaly = distance > active.threshold
        if active.histograms is not None and n:
            edges_features = active.histograms.features
            values = x if edges_features == model.features else batch.columns(edges_features)
            active.histograms.add(values)
        art = active.artifact
        scored = ScoredBatch(
            batch, distance, cluster, anomaly, active.threshold, art.model_id, art.version
        )
        return scored, distance, ok

    def _describe(self, scored: ScoredBatch, rows: Rows) -> list[tuple[str, dict[str, str]]]:
        distances = scored.distance[rows].tolist()
        clusters = scored.cluster[rows].tolist()
        threshold = f"{scored.threshold:.6g}"
        return [
            (
                f"distance {d:.3f} to centroid {c} exceeds {scored.threshold:.3f}",
                {"distance": f"{d:.6g}", "threshold": threshold, "cluster": str(c)},
            )
            for d, c in zip(distances, clusters, strict=True)
        ]

    def _scalars(self, window: Window) -> dict[str, float]:
        return {"distance_mean": window.score_mean(), "distance_max": window.score_max}
