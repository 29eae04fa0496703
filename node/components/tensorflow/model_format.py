"""The autoencoder model formats, shared by training (TensorFlow) and edge scoring (TFLite).

A model is a directory (it travels as one deterministic tar) holding the network and
``meta.json``, plain JSON: models are data, never code, and nothing here is ever unpickled.

- ``keras-autoencoder/1``: ``model.keras`` (a Keras 3 archive, loaded with ``safe_mode=True``)
  and ``meta.json``;
- ``tflite-autoencoder/1``: ``model.tflite`` (a TensorFlow Lite flatbuffer) and ``meta.json``.

``meta.json``::

    {
      "format": "tflite-autoencoder/1",
      "features": ["temperature", ...],   # input columns, in this order
      "mean": [...], "std": [...],         # z = (x - mean) / std goes into the network
      "threshold": 0.83,                   # reconstruction error above which: anomaly
      "threshold_quantile": 0.99,          # the training-error quantile it came from
      "feature_edges": {"temperature": [...], ...},  # inner baseline bin edges per feature
      "error_edges": [...],                # inner baseline bin edges of the error
      "quantize": "none"                   # tflite only: none | dynamic | float16
    }

The reconstruction error of a row is the mean squared difference between ``z`` and the
network's output, in standardised space, so one threshold fits features of any scale.  Bin
edges are stored without their infinite outer edges (JSON has no infinity); the scorer adds
them back, so live histograms always have the training data's bins even when the model
travels without a baseline attached.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ion.model.health import Histogram
from node.health.histograms import finish_edges, histogram

KERAS_FORMAT = "keras-autoencoder/1"
TFLITE_FORMAT = "tflite-autoencoder/1"
META_FILE = "meta.json"
KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
ERROR_FEATURE = "reconstruction_error"
"""The name the reconstruction error's histogram goes by in baselines and health reports."""
QUANTIZE_MODES = ("none", "dynamic", "float16")
MAX_META_BYTES = 4 * 1024 * 1024
MAX_FEATURES = 10_000

FloatArray = npt.NDArray[np.float64]


class ModelFormatError(ValueError):
    """Not a valid autoencoder model of the expected format."""


@dataclass(frozen=True, slots=True, eq=False)
class AutoencoderMeta:
    format: str
    features: tuple[str, ...]
    mean: FloatArray
    std: FloatArray
    threshold: float
    threshold_quantile: float = 0.99
    feature_edges: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    error_edges: tuple[float, ...] = ()
    quantize: str = "none"

    def __post_init__(self) -> None:
        d = len(self.features)
        if self.format not in (KERAS_FORMAT, TFLITE_FORMAT):
            raise ModelFormatError(f"unknown model format {self.format!r}")
        if not 0 < d <= MAX_FEATURES:
            raise ModelFormatError(f"a model needs 1 to {MAX_FEATURES} features, not {d}")
        if len(set(self.features)) != d or not all(self.features):
            raise ModelFormatError("feature names must be distinct and not empty")
        for name, arr in (("mean", self.mean), ("std", self.std)):
            if arr.shape != (d,) or not np.isfinite(arr).all():
                raise ModelFormatError(f"{name} must hold {d} finite numbers")
        if (self.std <= 0).any():
            raise ModelFormatError("std must be positive")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ModelFormatError(f"threshold must be a finite number >= 0: {self.threshold}")
        if not 0 < self.threshold_quantile <= 1:
            raise ModelFormatError("threshold_quantile must be in (0, 1]")
        if self.quantize not in QUANTIZE_MODES:
            raise ModelFormatError(f"unknown quantize mode {self.quantize!r}")
        unknown = set(self.feature_edges) - set(self.features)
        if unknown:
            raise ModelFormatError(f"feature_edges for unknown features: {sorted(unknown)}")
        for edges in (*self.feature_edges.values(), self.error_edges):
            if not all(math.isfinite(e) for e in edges) or list(edges) != sorted(set(edges)):
                raise ModelFormatError("bin edges must be finite and strictly increasing")

    def standardize(self, x: FloatArray) -> npt.NDArray[np.float32]:
        """``(x - mean) / std`` as float32, the network's input type."""
        return ((x - self.mean) / self.std).astype(np.float32)

    def baseline_edges(self) -> list[tuple[str, tuple[float, ...]]]:
        """(name, full edges) of every baseline histogram this model knows."""
        pairs = [(f, finish_edges(self.feature_edges[f])) for f in self.features]
        return [*pairs, (ERROR_FEATURE, finish_edges(self.error_edges))]

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": self.format,
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "threshold": self.threshold,
            "threshold_quantile": self.threshold_quantile,
            "feature_edges": {f: list(e) for f, e in self.feature_edges.items()},
            "error_edges": list(self.error_edges),
        }
        if self.format == TFLITE_FORMAT:
            doc["quantize"] = self.quantize
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> AutoencoderMeta:
        """Strict: a model file comes from the network."""
        if not isinstance(doc, dict):
            raise ModelFormatError("meta.json must hold a JSON object")
        known = {
            "format",
            "features",
            "mean",
            "std",
            "threshold",
            "threshold_quantile",
            "feature_edges",
            "error_edges",
            "quantize",
        }
        if unknown := set(doc) - known:
            raise ModelFormatError(f"meta.json has unknown keys: {sorted(unknown)}")
        try:
            edges = doc.get("feature_edges", {})
            if not isinstance(edges, dict):
                raise ModelFormatError("feature_edges must be an object")
            return cls(
                format=_str(doc.get("format")),
                features=tuple(_str(f) for f in _list(doc.get("features"))),
                mean=_floats(doc.get("mean")),
                std=_floats(doc.get("std")),
                threshold=_float(doc.get("threshold")),
                threshold_quantile=_float(doc.get("threshold_quantile", 0.99)),
                feature_edges={_str(k): tuple(_floats(v).tolist()) for k, v in edges.items()},
                error_edges=tuple(_floats(doc.get("error_edges", [])).tolist()),
                quantize=_str(doc.get("quantize", "none")),
            )
        except (TypeError, ValueError) as e:
            if isinstance(e, ModelFormatError):
                raise
            raise ModelFormatError(f"meta.json: {e}") from e


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise ModelFormatError(f"expected a string, not {x!r}")
    return x


def _list(x: Any) -> list[Any]:
    if not isinstance(x, list):
        raise ModelFormatError(f"expected a list, not {type(x).__name__}")
    return x


def _float(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ModelFormatError(f"expected a number, not {x!r}")
    return float(x)


def _floats(x: Any) -> FloatArray:
    return np.array([_float(v) for v in _list(x)], dtype=np.float64)


def read_meta(directory: Path, expected: str) -> AutoencoderMeta:
    """The ``meta.json`` of a model directory of format ``expected``."""
    path = directory / META_FILE
    try:
        if path.stat().st_size > MAX_META_BYTES:
            raise ModelFormatError(f"{path} is larger than {MAX_META_BYTES} bytes")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"cannot read {path}: {e}") from e
    meta = AutoencoderMeta.from_json(doc)
    if meta.format != expected:
        raise ModelFormatError(f"{path} is {meta.format!r}, not {expected!r}")
    return meta


def write_meta(directory: Path, meta: AutoencoderMeta) -> None:
    text = json.dumps(meta.to_json(), indent=2, allow_nan=False) + "\n"
    (directory / META_FILE).write_text(text, encoding="utf-8")


def reconstruction_error(z: npt.ArrayLike, reconstructed: npt.ArrayLike) -> FloatArray:
    """Per row: the mean squared difference, in float64."""
    diff = np.asarray(z, dtype=np.float64) - np.asarray(reconstructed, dtype=np.float64)
    error: FloatArray = np.mean(diff * diff, axis=1)
    return error


def baseline_histograms(
    meta: AutoencoderMeta, x: FloatArray, errors: FloatArray
) -> tuple[Histogram, ...]:
    """The training data's histograms on the model's own edges: features, then the error."""
    columns: list[Sequence[float] | FloatArray] = [x[:, j] for j in range(x.shape[1])]
    return tuple(
        histogram(name, values, edges)
        for (name, edges), values in zip(meta.baseline_edges(), [*columns, errors], strict=True)
    )


def replace_directory(staging: Path, final: Path) -> None:
    """Move a finished ``staging`` directory to ``final``, replacing what was there, so a
    reader never sees half a model."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def staging_directory(final: Path) -> Path:
    """An empty directory beside ``final`` to write a model into."""
    staging = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging
