"""``tflite_score``: anomaly scores by autoencoder reconstruction error, with TensorFlow Lite.

Edge inference without TensorFlow: the ``tflite-autoencoder/1`` model (``model_format`` in
``node.components.tensorflow``) runs in the LiteRT interpreter (``ai-edge-litert``, a few MB),
one ``invoke`` per batch.  The error of a row is the mean squared difference between its
standardised features and their reconstruction; above the threshold (the model's, or the
``threshold`` argument) it is an anomaly.

Inputs: ``data`` (``Batch`` values, or the other forms of ``node.components.tensorflow.batches``)
and ``model``: in a streaming pipeline a ``ModelFeed``, asked for ``latest()`` once per batch (a
new version is loaded between two batches and reported with ``accepted``; a version that cannot
be loaded is refused once and the previous model kept); in a batch pipeline a ``ModelArtifact``.

Outputs, like ``kmeans_score``'s:

- ``data``: a ``ReconstructionScores`` per batch (rows with a missing feature are not scored);
- ``stats``: a ``StatsReport`` per window: records, scored, anomalies, anomaly_rate, unscored
  (no model yet), missing, error_mean, error_max, score_ms, events_suppressed, model_swaps;
- ``health``: a ``HealthReport`` per window: histograms of the features and of
  ``reconstruction_error`` on the model's baseline edges, ``sample_count``, the model version;
- ``events``: one ``anomaly.detected`` event per anomaly, at most ``max_events`` per window
  (the rest are counted, and summed up in one ``anomaly.suppressed`` event).

Windows are ``window`` long and end when a batch (or an empty tick batch) arrives after the
window's end, when the model changes (a window never mixes two models), and when the stream ends.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ion.model.event import DataRecords, Event, Severity
from ion.model.health import HealthReport, Metric, StatsReport
from node.components.common import duration_s
from node.components.tensorflow.batches import as_batch
from node.components.tensorflow.model_format import (
    TFLITE_FILE,
    TFLITE_FORMAT,
    AutoencoderMeta,
    FloatArray,
    ModelFormatError,
    read_meta,
    reconstruction_error,
)
from node.components.values import Batch, BoolArray
from node.health.histograms import HistogramAccumulator
from node.models.artifact import ModelArtifact, ModelFeed
from node.runner.component import Args, Component, Context

log = logging.getLogger(__name__)

MISSING_LITERT = "ai-edge-litert is not installed; pip install 'ion-runtime[tflite]'"
MAX_ROWS_PER_INVOKE = 4096
"""Bigger batches are scored in slices, bounding the interpreter's buffers."""

Output = tuple[str, Any]
Float32Array = npt.NDArray[np.float32]


class TfliteNetwork:
    """A ``.tflite`` autoencoder in the LiteRT interpreter, fed float32 rows in any number."""

    def __init__(self, path: Path, features: int, *, threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]
        except ImportError as e:
            raise RuntimeError(MISSING_LITERT) from e
        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        except (ValueError, RuntimeError) as e:
            raise ModelFormatError(f"{path} is not a usable TFLite model: {e}") from e
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFormatError(f"{path}: an autoencoder has one input and one output")
        shape = [int(n) for n in inputs[0]["shape_signature"]]
        if len(shape) != 2 or shape[1] != features or inputs[0]["dtype"] is not np.float32:
            raise ModelFormatError(
                f"{path}: input {shape} of {inputs[0]['dtype']} does not take rows of "
                f"{features} float32 features"
            )
        self.features = features
        self._input = int(inputs[0]["index"])
        self._output = int(outputs[0]["index"])
        self._rows = 0
        # One row through the network now: a model that parses but cannot run is refused here,
        # where the previous version is kept, rather than failing the pipeline mid-stream.
        try:
            probe = self.reconstruct(np.zeros((1, features), dtype=np.float32))
        except (ValueError, RuntimeError) as e:
            raise ModelFormatError(f"{path} does not run: {e}") from e
        if probe.shape != (1, features):
            raise ModelFormatError(f"{path}: output {probe.shape} is not a reconstruction")

    def reconstruct(self, z: Float32Array) -> Float32Array:
        out = np.empty_like(z)
        for start in range(0, len(z), MAX_ROWS_PER_INVOKE):
            chunk = z[start : start + MAX_ROWS_PER_INVOKE]
            out[start : start + len(chunk)] = self._invoke(chunk)
        return out

    def _invoke(self, chunk: Float32Array) -> Float32Array:
        if len(chunk) != self._rows:  # batch sizes repeat: resize only when one changes
            self._interpreter.resize_tensor_input(self._input, [len(chunk), self.features])
            self._interpreter.allocate_tensors()
            self._rows = len(chunk)
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(chunk, dtype=np.float32))
        self._interpreter.invoke()
        result: Float32Array = self._interpreter.get_tensor(self._output)
        return result


@dataclass(frozen=True, slots=True, eq=False)
class ReconstructionScores:
    """A batch with its reconstruction error per row (NaN: not scored, a feature was missing)
    and whether each row is an anomaly (``error > threshold``)."""

    batch: Batch
    error: FloatArray
    anomaly: BoolArray
    threshold: float
    model_id: str = ""
    model_version: str = ""

    def __post_init__(self) -> None:
        n = self.batch.rows
        if self.error.shape != (n,) or self.anomaly.shape != (n,):
            raise ValueError(f"scores of shapes {self.error.shape} do not match {n} rows")

    @property
    def rows(self) -> int:
        return self.batch.rows

    def __len__(self) -> int:
        return self.rows

    @property
    def anomalies(self) -> int:
        return int(np.count_nonzero(self.anomaly))

    def to_data_records(self) -> DataRecords:
        """The rows with two more columns, ``score`` and ``anomaly`` (1.0 or 0.0)."""
        table = np.column_stack([self.batch.values, self.error, self.anomaly.astype(np.float64)])
        stamps = self.batch.timestamps_ms
        return DataRecords(
            columns=(*self.batch.features, "score", "anomaly"),
            values=tuple(table.ravel().tolist()),
            timestamps_ms=tuple(stamps.tolist()) if stamps is not None else (),
        )


@dataclass(slots=True)
class _Active:
    artifact: ModelArtifact
    meta: AutoencoderMeta
    network: TfliteNetwork
    threshold: float
    histograms: HistogramAccumulator


@dataclass(slots=True)
class _Window:
    start_s: float
    records: int = 0
    scored: int = 0
    anomalies: int = 0
    unscored: int = 0
    missing: int = 0
    error_sum: float = 0.0
    error_max: float = 0.0
    score_s: float = 0.0
    events: int = 0
    suppressed: int = 0
    swaps: int = 0
    batches: int = 0


def _key(artifact: ModelArtifact) -> tuple[str, str, str]:
    return (artifact.model_id, artifact.version, str(artifact.path))


class TfliteScore(Component):
    input_ports = ("data", "model")
    output_ports = ("data", "stats", "health", "events")

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.threshold = args.get_float("threshold", None, min=0.0)
        self.window_s = duration_s(args, "window", "1m")
        self.threads = args.get_int("threads", 1, min=1, max=256)
        self.max_events = args.get_int("max_events", 100, min=0)
        self.active: _Active | None = None
        self._refused: set[tuple[str, str, str]] = set()
        self._window: _Window | None = None
        self.subject = f"{ctx.ion}/{ctx.pipeline}@{ctx.node_id}"
        self.clock: Callable[[], float] = time.time
        """Seconds since the epoch; tests replace it."""

    # -- models ----------------------------------------------------------------------------

    def _load(self, artifact: ModelArtifact) -> _Active:
        if artifact.format != TFLITE_FORMAT:
            raise ModelFormatError(
                f"unknown model format {artifact.format!r} (want {TFLITE_FORMAT})"
            )
        meta = read_meta(artifact.path, TFLITE_FORMAT)
        network = TfliteNetwork(
            artifact.path / TFLITE_FILE, len(meta.features), threads=self.threads
        )
        # Bins: the baseline attached to the artifact where it has one (what drift is scored
        # against), else the training data's own edges from meta.json.
        attached = {h.feature: h.bin_edges for h in artifact.baseline}
        edges = [(name, attached.get(name, own)) for name, own in meta.baseline_edges()]
        threshold = self.threshold if self.threshold is not None else meta.threshold
        return _Active(artifact, meta, network, threshold, HistogramAccumulator(edges))

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
            "model %s active (%d features, %s quantisation, threshold %.4g)%s",
            artifact.version or artifact.model_id or artifact.path,
            len(loaded.meta.features),
            loaded.meta.quantize,
            loaded.threshold,
            f", replacing {previous.artifact.version}" if previous is not None else "",
        )
        return out

    # -- scoring ---------------------------------------------------------------------------

    def score(self, batch: Batch) -> ReconstructionScores | None:
        """Score one batch with the active model (None when there is none yet)."""
        active = self.active
        window = self._window_at(self.clock())
        window.batches += 1
        window.records += batch.rows
        if active is None:
            window.unscored += batch.rows
            return None
        began = time.perf_counter()
        meta = active.meta
        x = batch.columns(meta.features)
        n = batch.rows
        ok = ~np.isnan(x).any(axis=1)
        good = int(np.count_nonzero(ok))
        error = np.full(n, np.nan)
        if good:
            z = meta.standardize(x if good == n else x[ok])
            error[ok] = reconstruction_error(z, active.network.reconstruct(z))
        # NaN compares False: an unscored row is never an anomaly.
        anomaly = error > active.threshold
        if n:
            active.histograms.add(np.column_stack([x, error]))
        window.score_s += time.perf_counter() - began
        anomalies = int(np.count_nonzero(anomaly))
        window.scored += good
        window.missing += n - good
        window.anomalies += anomalies
        if good:
            e = error[ok]
            window.error_sum += float(e.sum())
            window.error_max = max(window.error_max, float(e.max()))
        art = active.artifact
        return ReconstructionScores(
            batch, error, anomaly, active.threshold, art.model_id, art.version
        )

    def _events(self, scored: ReconstructionScores) -> list[Output]:
        window = self._window
        assert window is not None
        if not scored.anomalies:
            return []
        rows = np.flatnonzero(scored.anomaly)
        room = max(self.max_events - window.events, 0)
        window.suppressed += max(len(rows) - room, 0)
        out: list[Output] = []
        features = scored.batch.features
        for i in rows[:room].tolist():
            window.events += 1
            source = scored.batch.source(i)
            attributes = {
                "error": f"{scored.error[i]:.6g}",
                "threshold": f"{scored.threshold:.6g}",
                "model_version": scored.model_version,
                "source": source,
                **{
                    f"feature.{f}": f"{v:.6g}"
                    for f, v in zip(features, scored.batch.values[i], strict=True)
                },
            }
            if scored.batch.timestamps_ms is not None:
                attributes["ts_ms"] = str(int(scored.batch.timestamps_ms[i]))
            event = Event(
                type="anomaly.detected",
                severity=Severity.WARNING,
                subject=f"{self.subject}/{source}" if source else self.subject,
                message=(
                    f"reconstruction error {scored.error[i]:.3f} exceeds {scored.threshold:.3f}"
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
        active = self.active
        rate = window.anomalies / window.scored if window.scored else 0.0
        scalars = {
            "records": float(window.records),
            "scored": float(window.scored),
            "anomalies": float(window.anomalies),
            "anomaly_rate": rate,
            "unscored": float(window.unscored),
            "missing": float(window.missing),
            "error_mean": window.error_sum / window.scored if window.scored else math.nan,
            "error_max": window.error_max,
            "score_ms": window.score_s * 1000.0,
            "events_suppressed": float(window.suppressed),
            "model_swaps": float(window.swaps),
            "window_s": end - window.start_s,
        }
        metrics = tuple(Metric(k, v) for k, v in scalars.items() if not math.isnan(v))
        out: list[Output] = [
            ("stats", StatsReport(self.ctx.pipeline, self.ctx.component, scalars=metrics))
        ]
        if active is not None:
            art = active.artifact
            out.append(
                (
                    "health",
                    HealthReport(
                        pipeline=self.ctx.pipeline,
                        component=self.ctx.component,
                        name="features",
                        window_start_ms=int(window.start_s * 1000),
                        window_end_ms=int(end * 1000),
                        model_id=art.model_id,
                        model_version=art.version,
                        sample_count=window.scored,
                        histograms=active.histograms.take(),
                        scalars=(Metric("anomaly_rate", rate),),
                    ),
                )
            )
        if window.suppressed:
            event = Event(
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
            )
            out.append(("events", event))
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
        for item in inputs["data"]:
            batch = as_batch(item)
            if feed is not None:
                artifact = feed.latest()
                if artifact is not None:
                    yield from self._use(artifact, feed)
            if self._due(self.clock()):
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
        if isinstance(data, list | tuple) and data and all(isinstance(b, Batch) for b in data):
            batches = [as_batch(b) for b in data]
        else:
            batches = [as_batch(data)]
        scored: list[ReconstructionScores] = []
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
