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
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ion.model.event import Event, Severity
from ion.model.health import HealthReport, Metric, StatsReport
from node.health.histograms import HistogramAccumulator
from node.models.artifact import ModelArtifact, ModelFeed
from node.runner.component import Args, Component, Context

from .common import duration_s
from .kmeans_model import FORMAT, KMeansModel, ModelFormatError
from .values import Batch, ScoredBatch

log = logging.getLogger(__name__)

Output = tuple[str, Any]


@dataclass(slots=True)
class _Active:
    """The model in use, and what this window has seen of it."""

    artifact: ModelArtifact
    model: KMeansModel
    threshold: float
    histograms: HistogramAccumulator | None


@dataclass(slots=True)
class _Window:
    start_s: float
    records: int = 0
    scored: int = 0
    anomalies: int = 0
    unscored: int = 0
    missing: int = 0
    distance_sum: float = 0.0
    distance_max: float = 0.0
    events: int = 0
    suppressed: int = 0
    swaps: int = 0
    batches: int = 0


def _key(artifact: ModelArtifact) -> tuple[str, str, str]:
    return (artifact.model_id, artifact.version, str(artifact.path))


class KMeansScore(Component):
    input_ports = ("data", "model")
    output_ports = ("data", "stats", "health", "events")

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.threshold = args.get_float("threshold", None, min=0.0)
        self.window_s = duration_s(args, "window", "1m")
        self.max_events = args.get_int("max_events", 100, min=0)
        self.active: _Active | None = None
        self._refused: set[tuple[str, str, str]] = set()
        self._window: _Window | None = None
        self.subject = f"{ctx.ion}/{ctx.pipeline}@{ctx.node_id}"
        self.clock: Callable[[], float] = time.time
        """Seconds since the epoch; tests replace it."""

    # -- models ----------------------------------------------------------------------------

    def _load(self, artifact: ModelArtifact) -> _Active:
        if artifact.format != FORMAT:
            raise ModelFormatError(f"unknown model format {artifact.format!r} (want {FORMAT})")
        model = KMeansModel.load(artifact.path)
        threshold = self.threshold if self.threshold is not None else model.threshold
        baseline = {h.feature: h for h in artifact.baseline}
        edges = [baseline[f] for f in model.features if f in baseline]
        return _Active(artifact, model, threshold, HistogramAccumulator(edges) if edges else None)

    def _use(self, artifact: ModelArtifact, feed: ModelFeed | None) -> list[Output]:
        """Switch to ``artifact`` unless it is the active one or was refused; the window of
        the previous model is closed first."""
        key = _key(artifact)
        if (self.active is not None and _key(self.active.artifact) == key) or key in self._refused:
            return []
        try:
            loaded = self._load(artifact)
        except (ModelFormatError, OSError) as e:
            self._refused.add(key)
            self.log.warning("model %s refused: %s", artifact.version or artifact.path, e)
            if feed is not None:
                feed.accepted(artifact, False, str(e))
            elif self.active is None:
                raise  # a batch pipeline with an unusable model has nothing to do
            return []
        out = self._close_window() if self.active is not None else []
        previous = self.active
        self.active = loaded
        if previous is not None:
            self._window_at(self.clock()).swaps += 1
        if feed is not None:
            feed.accepted(artifact, True)
        self.log.info(
            "model %s active (k=%d, %d features, threshold %.4g)%s",
            artifact.version or artifact.model_id or artifact.path,
            loaded.model.k,
            len(loaded.model.features),
            loaded.threshold,
            f", replacing {previous.artifact.version}" if previous is not None else "",
        )
        return out

    # -- scoring ---------------------------------------------------------------------------

    def score(self, batch: Batch) -> ScoredBatch | None:
        """Score one batch with the active model (None when there is none yet)."""
        active = self.active
        window = self._window_at(self.clock())
        window.batches += 1
        window.records += batch.rows
        if active is None:
            window.unscored += batch.rows
            return None
        model = active.model
        x = batch.columns(model.features)
        n = batch.rows
        ok = ~np.isnan(x).any(axis=1)
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
        anomalies = int(np.count_nonzero(anomaly))
        window.scored += good
        window.missing += n - good
        window.anomalies += anomalies
        if good:
            d = distance if good == n else distance[ok]
            window.distance_sum += float(d.sum())
            window.distance_max = max(window.distance_max, float(d.max()))
        art = active.artifact
        return ScoredBatch(
            batch, distance, cluster, anomaly, active.threshold, art.model_id, art.version
        )

    def _events(self, scored: ScoredBatch) -> list[Output]:
        window = self._window
        assert window is not None
        if not scored.anomalies:
            return []
        rows = np.flatnonzero(scored.anomaly)
        room = max(self.max_events - window.events, 0)
        window.suppressed += max(len(rows) - room, 0)
        take = rows[:room]
        window.events += len(take)
        # Plain Python numbers before formatting: formatting numpy scalars is several times
        # slower, and an anomaly burst formats thousands of them.
        batch = scored.batch
        values = batch.values[take].tolist()
        distances = scored.distance[take].tolist()
        clusters = scored.cluster[take].tolist()
        stamps = None if batch.timestamps_ms is None else batch.timestamps_ms[take].tolist()
        names = [f"feature.{f}" for f in batch.features]
        threshold = f"{scored.threshold:.6g}"
        out: list[Output] = []
        for n, i in enumerate(take.tolist()):
            source = batch.source(i)
            attributes = {
                "distance": f"{distances[n]:.6g}",
                "threshold": threshold,
                "cluster": str(clusters[n]),
                "model_version": scored.model_version,
                "source": source,
                **{name: f"{v:.6g}" for name, v in zip(names, values[n], strict=True)},
            }
            if stamps is not None:
                attributes["ts_ms"] = str(stamps[n])
            event = Event(
                type="anomaly.detected",
                severity=Severity.WARNING,
                subject=f"{self.subject}/{source}" if source else self.subject,
                message=(
                    f"distance {distances[n]:.3f} to centroid {clusters[n]} "
                    f"exceeds {scored.threshold:.3f}"
                ),
                attributes=attributes,
                pipeline=self.ctx.pipeline,
                component=self.ctx.component,
            )
            out.append(("events", event))
        return out

    # -- windows ---------------------------------------------------------------------------

    def _window_at(self, now: float) -> _Window:
        if self._window is None:
            self._window = _Window(now)
        return self._window

    def _due(self, now: float) -> bool:
        return self._window is not None and now >= self._window.start_s + self.window_s

    def _close_window(self) -> list[Output]:
        window, self._window = self._window, None
        if window is None:
            return []
        end = self.clock()
        start_ms, end_ms = int(window.start_s * 1000), int(end * 1000)
        active = self.active
        art = active.artifact if active is not None else None
        rate = window.anomalies / window.scored if window.scored else 0.0
        mean = window.distance_sum / window.scored if window.scored else math.nan
        scalars = {
            "records": float(window.records),
            "scored": float(window.scored),
            "anomalies": float(window.anomalies),
            "anomaly_rate": rate,
            "unscored": float(window.unscored),
            "missing": float(window.missing),
            "distance_mean": mean,
            "distance_max": window.distance_max,
            "events_suppressed": float(window.suppressed),
            "model_swaps": float(window.swaps),
            "window_s": end - window.start_s,
        }
        metrics = tuple(Metric(k, v) for k, v in scalars.items() if not math.isnan(v))
        out: list[Output] = [
            ("stats", StatsReport(self.ctx.pipeline, self.ctx.component, scalars=metrics))
        ]
        if art is not None and active is not None:
            histograms = active.histograms.take() if active.histograms is not None else ()
            out.append(
                (
                    "health",
                    HealthReport(
                        pipeline=self.ctx.pipeline,
                        component=self.ctx.component,
                        name="features",
                        window_start_ms=start_ms,
                        window_end_ms=end_ms,
                        model_id=art.model_id,
                        model_version=art.version,
                        sample_count=window.scored,
                        histograms=histograms,
                        scalars=(Metric("anomaly_rate", rate),),
                    ),
                )
            )
        if window.suppressed:
            out.append(
                (
                    "events",
                    Event(
                        type="anomaly.suppressed",
                        severity=Severity.WARNING,
                        subject=self.subject,
                        message=(
                            f"{window.suppressed} more anomalies in this window than the "
                            f"{self.max_events} reported one by one"
                        ),
                        attributes={"count": str(window.suppressed)},
                        pipeline=self.ctx.pipeline,
                        component=self.ctx.component,
                    ),
                )
            )
        return out

    # -- the contract ----------------------------------------------------------------------

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[Output]:
        model_input: Any = inputs["model"]
        feed: ModelFeed | None = None
        if isinstance(model_input, ModelArtifact):
            yield from self._use(model_input, None)
        elif isinstance(model_input, ModelFeed):
            feed = model_input
        else:
            raise TypeError(
                "the model input must be a ModelFeed (streaming) or a ModelArtifact, "
                f"not {type(model_input).__name__}"
            )
        for batch in inputs["data"]:
            if not isinstance(batch, Batch):
                raise TypeError(f"kmeans_score takes Batch values, not {type(batch).__name__}")
            if feed is not None:
                artifact = feed.latest()
                if artifact is not None:
                    yield from self._use(artifact, feed)
            now = self.clock()
            if self._due(now):
                yield from self._close_window()
            if batch.rows == 0:
                continue  # a tick: it only closed a window
            scored = self.score(batch)
            if scored is not None:
                yield ("data", scored)
                yield from self._events(scored)
        yield from self._close_window()

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        artifact = inputs["model"]
        if isinstance(artifact, ModelFeed):
            artifact = artifact.latest()
        if not isinstance(artifact, ModelArtifact):
            raise TypeError(f"the model input must be a ModelArtifact, not {artifact!r}")
        self._use(artifact, None)
        data = inputs["data"]
        batches = data if isinstance(data, list | tuple) else [data]
        scored: list[ScoredBatch] = []
        events: list[Event] = []
        for batch in batches:
            s = self.score(batch)
            if s is not None:
                scored.append(s)
                events.extend(e for _, e in self._events(s))
        out: dict[str, Any] = {"data": scored[0] if len(scored) == 1 else scored}
        for port, value in self._close_window():
            if port == "events":
                events.append(value)
            else:
                out[port] = value
        out["events"] = events
        return out
