"""The KMeans anomaly model: format ``kmeans-json/1``, shared by Spark training and edge scoring.

A model is a directory holding one file, ``model.json`` (plain JSON: a model is data and is
never unpickled)::

    {
      "format": "kmeans-json/1",
      "features": ["temperature", ...],      # column names, in the order used below
      "mean": [...], "std": [...],           # per feature: z = (x - mean) / std
      "centroids": [[...], ...],             # k rows, in standardised space
      "threshold": 3.2                       # Euclidean distance to the nearest centroid,
    }                                        # in standardised space, above which: anomaly

Scoring is vectorised: for a batch ``Z`` (n x d) the squared distances to every centroid are
``|z|^2 - 2 Z C^T + |c|^2``, one matrix product, with ``-2 C^T`` and ``|c|^2`` computed once
per model instead of once per batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT = "kmeans-json/1"
MODEL_FILE = "model.json"
MAX_MODEL_BYTES = 64 * 1024 * 1024  # a KMeans model is tiny; a huge file is not one

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class ModelFormatError(ValueError):
    """The file is not a valid ``kmeans-json/1`` model."""


@dataclass(frozen=True, slots=True, eq=False)
class KMeansModel:
    features: tuple[str, ...]
    mean: FloatArray
    std: FloatArray
    centroids: FloatArray
    threshold: float
    _inv_std: FloatArray = field(init=False, repr=False)
    _neg2_ct: FloatArray = field(init=False, repr=False)
    _c2: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        d = len(self.features)
        if d == 0:
            raise ModelFormatError("a model needs at least one feature")
        if len(set(self.features)) != d:
            raise ModelFormatError("a model repeats a feature name")
        for name, arr, shape in (
            ("mean", self.mean, (d,)),
            ("std", self.std, (d,)),
        ):
            if arr.shape != shape:
                raise ModelFormatError(f"{name} has shape {arr.shape}, expected {shape}")
        if self.centroids.ndim != 2 or self.centroids.shape[1] != d or self.centroids.shape[0] < 1:
            raise ModelFormatError(
                f"centroids have shape {self.centroids.shape}, expected (k >= 1, {d})"
            )
        for name, arr in (("mean", self.mean), ("std", self.std), ("centroids", self.centroids)):
            if not np.all(np.isfinite(arr)):
                raise ModelFormatError(f"{name} holds a value that is not a finite number")
        if np.any(self.std <= 0):
            raise ModelFormatError("std must be positive for every feature")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ModelFormatError(f"threshold must be a finite number >= 0, not {self.threshold}")
        c = self.centroids
        object.__setattr__(self, "_inv_std", 1.0 / self.std)
        object.__setattr__(self, "_neg2_ct", np.ascontiguousarray(-2.0 * c.T))
        object.__setattr__(self, "_c2", np.einsum("ij,ij->i", c, c))

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @classmethod
    def of(
        cls,
        features: Sequence[str],
        mean: npt.ArrayLike,
        std: npt.ArrayLike,
        centroids: npt.ArrayLike,
        threshold: float,
    ) -> KMeansModel:
        try:
            return cls(
                tuple(str(f) for f in features),
                np.asarray(mean, dtype=np.float64),
                np.asarray(std, dtype=np.float64),
                np.atleast_2d(np.asarray(centroids, dtype=np.float64)),
                float(threshold),
            )
        except (TypeError, ValueError) as e:
            if isinstance(e, ModelFormatError):
                raise
            raise ModelFormatError(f"bad model values: {e}") from e

    # -- scoring ---------------------------------------------------------------------------

    def standardize(self, x: FloatArray) -> FloatArray:
        z: FloatArray = (x - self.mean) * self._inv_std
        return z

    def squared_distances(self, x: FloatArray) -> FloatArray:
        """(n, k) squared distances of raw rows ``x`` (n, d) to every centroid."""
        z = self.standardize(x)
        d2: FloatArray = z @ self._neg2_ct
        d2 += self._c2
        d2 += np.einsum("ij,ij->i", z, z)[:, None]
        return d2

    def nearest(self, x: FloatArray) -> tuple[FloatArray, IntArray]:
        """Distance to the nearest centroid and its index, per row of ``x`` (n, d)."""
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
        d2 = self.squared_distances(x)
        cluster = d2.argmin(axis=1)
        best = d2.min(axis=1)
        # The expanded form can dip a hair below zero for a point on a centroid.
        np.maximum(best, 0.0, out=best)
        return np.sqrt(best), cluster.astype(np.int64, copy=False)

    # -- files -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "centroids": self.centroids.tolist(),
            "threshold": self.threshold,
        }

    @classmethod
    def from_json(cls, doc: object) -> KMeansModel:
        if not isinstance(doc, Mapping):
            raise ModelFormatError("model.json must hold a JSON object")
        fmt = doc.get("format")
        if fmt != FORMAT:
            raise ModelFormatError(f"unknown model format {fmt!r} (this reads {FORMAT})")
        missing = [k for k in ("features", "mean", "std", "centroids", "threshold") if k not in doc]
        if missing:
            raise ModelFormatError(f"model.json lacks {', '.join(missing)}")
        features = doc["features"]
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ModelFormatError("features must be a list of names")
        threshold = doc["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ModelFormatError("threshold must be a number")
        return cls.of(features, doc["mean"], doc["std"], doc["centroids"], threshold)

    def save(self, directory: Path) -> Path:
        """Write ``directory/model.json`` (deterministic bytes); return the directory."""
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=1, sort_keys=True, allow_nan=False)
        tmp = directory / (MODEL_FILE + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(directory / MODEL_FILE)
        return directory

    @classmethod
    def load(cls, path: Path) -> KMeansModel:
        """Read a model from its directory (or the ``model.json`` file itself)."""
        file = path / MODEL_FILE if path.is_dir() else path
        try:
            if file.stat().st_size > MAX_MODEL_BYTES:
                raise ModelFormatError(f"{file} is larger than {MAX_MODEL_BYTES} bytes")
            doc = json.loads(file.read_text(encoding="utf-8"))
        except OSError as e:
            raise ModelFormatError(f"cannot read {file}: {e}") from e
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFormatError(f"{file} is not JSON: {e}") from e
        return cls.from_json(doc)
