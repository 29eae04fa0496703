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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ion.model.event import DataRecords
from node.components.scoring import Rows, Window, WindowedScorer, scorable
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
from node.models.artifact import ModelArtifact
from node.runner.component import Args, Context

log = logging.getLogger(__name__)

MISSING_LITERT = "ai-edge-litert is not installed; pip install 'ion-runtime[tflite]'"
MAX_ROWS_PER_INVOKE = 4096
"""Bigger batches are scored in slices, bounding the interpreter's buffers."""

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


class TfliteScore(WindowedScorer[_Active, ReconstructionScores]):
    model_format = TFLITE_FORMAT
    times_scoring = True  # reported as score_ms
    format_error = ModelFormatError

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.threads = args.get_int("threads", 1, min=1, max=256)

    def _load(self, artifact: ModelArtifact) -> _Active:
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

    def _model_summary(self, active: _Active) -> str:
        return f"{len(active.meta.features):d} features, {active.meta.quantize!s} quantisation"

    def _batch(self, item: Any) -> Batch:
        return as_batch(item)

    def _batches(self, data: Any) -> list[Batch]:
        if isinstance(data, list | tuple) and data and all(isinstance(b, Batch) for b in data):
            return [as_batch(b) for b in data]
        return [as_batch(data)]

    def _score(
        self, active: _Active, batch: Batch
    ) -> tuple[ReconstructionScores, FloatArray, BoolArray]:
        meta = active.meta
        x = batch.columns(meta.features)
        n = batch.rows
        ok = scorable(x)
        good = int(np.count_nonzero(ok))
        error: FloatArray = np.full(n, np.nan)
        if good:
            z = meta.standardize(x if good == n else x[ok])
            error[ok] = reconstruction_error(z, active.network.reconstruct(z))
        # NaN compares False: an unscored row is never an anomaly.
        anomaly = error > active.threshold
        if n:
            active.histograms.add(np.column_stack([x, error]))
        art = active.artifact
        scored = ReconstructionScores(
            batch, error, anomaly, active.threshold, art.model_id, art.version
        )
        return scored, error, ok

    def _describe(
        self, scored: ReconstructionScores, rows: Rows
    ) -> list[tuple[str, dict[str, str]]]:
        threshold = f"{scored.threshold:.6g}"
        return [
            (
                f"reconstruction error {e:.3f} exceeds {scored.threshold:.3f}",
                {"error": f"{e:.6g}", "threshold": threshold},
            )
            for e in scored.error[rows].tolist()
        ]

    def _scalars(self, window: Window) -> dict[str, float]:
        return {
            "error_mean": window.score_mean(),
            "error_max": window.score_max,
            "score_ms": window.scoring_s * 1000.0,
        }
