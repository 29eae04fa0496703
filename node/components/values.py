"""The values that flow between python-engine components, and the telemetry they emit.

Data (``data`` ports):

- ``Batch``: rows of numeric features, a 2-D float64 array plus the feature names, optionally
  the source of each row (a device id) and its time.  Sources such as ``mqtt_source`` and
  ``csv_source`` produce them.  A streaming source may yield an *empty* batch when nothing
  arrived for a while: a tick that lets windowed components close their windows on time in a
  pipeline that is pulled in one thread.
- ``ScoredBatch``: a ``Batch`` with a score per row: distance to the nearest centroid, that
  centroid, and whether the row is an anomaly; produced by ``kmeans_score``.

Telemetry (the runner forwards these ports to the agent), all existing domain values:

- ``stats``: ``ion.model.health.StatsReport`` (scalars as ``Metric`` name/value pairs).
- ``health``: ``ion.model.health.HealthReport`` (histograms on the model's baseline edges,
  with ``model_id``/``model_version``, ``sample_count`` and a few scalars).
- ``events``: ``ion.model.event.Event``.

Arrays inside these values are shared, not copied, between components: treat them as
read-only (numpy marks them so where it costs nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_EMPTY_VALUES: FloatArray = np.zeros((0, 0), dtype=np.float64)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Batch:
    """Rows of numeric features: ``values[i, j]`` is feature ``features[j]`` of row ``i``.

    NaN marks a value that is missing from its record.  ``sources`` is empty or holds one
    string per row (the device the reading came from); ``timestamps_ms`` is None or holds one
    time per row (milliseconds since the epoch).
    """

    features: tuple[str, ...]
    values: FloatArray
    sources: tuple[str, ...] = ()
    timestamps_ms: IntArray | None = None

    def __post_init__(self) -> None:
        v = self.values
        if v.ndim != 2 or v.shape[1] != len(self.features):
            raise ValueError(
                f"a batch of {len(self.features)} feature(s) needs a 2-D array with as many "
                f"columns, not shape {v.shape}"
            )
        if v.dtype != np.float64:
            raise ValueError(f"batch values must be float64, not {v.dtype}")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"a batch repeats a feature name: {self.features}")
        if self.sources and len(self.sources) != v.shape[0]:
            raise ValueError(f"a batch of {v.shape[0]} rows has {len(self.sources)} sources")
        if self.timestamps_ms is not None and self.timestamps_ms.shape != (v.shape[0],):
            raise ValueError(
                f"a batch of {v.shape[0]} rows has timestamps of shape {self.timestamps_ms.shape}"
            )

    @classmethod
    def of(
        cls,
        features: Sequence[str],
        values: npt.ArrayLike,
        sources: Sequence[str] = (),
        timestamps_ms: npt.ArrayLike | None = None,
    ) -> Batch:
        """A batch from anything array-like (converted to float64, C order)."""
        array = np.ascontiguousarray(values, dtype=np.float64)
        if array.ndim == 1 and array.size == 0:
            array = array.reshape(0, len(features))
        stamps = None if timestamps_ms is None else np.asarray(timestamps_ms, dtype=np.int64)
        return cls(tuple(features), array, tuple(sources), stamps)

    @classmethod
    def empty(cls, features: Sequence[str] = ()) -> Batch:
        """A batch with no rows: what a streaming source yields as a tick."""
        return cls(tuple(features), np.zeros((0, len(features)), dtype=np.float64))

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    def __len__(self) -> int:
        return self.rows

    def columns(self, names: Sequence[str]) -> FloatArray:
        """The columns ``names`` in that order; NaN for a name the batch lacks.  The batch's
        own array (not a copy) when ``names`` are its features in its order."""
        if tuple(names) == self.features:
            return self.values
        index = {name: j for j, name in enumerate(self.features)}
        out = np.full((self.rows, len(names)), np.nan, dtype=np.float64)
        for k, name in enumerate(names):
            j = index.get(name)
            if j is not None:
                out[:, k] = self.values[:, j]
        return out

    def source(self, i: int) -> str:
        return self.sources[i] if self.sources else ""

    def __repr__(self) -> str:
        # Short: log sinks print items, and a batch's array would fill the log.
        return f"Batch({self.rows} rows x {', '.join(self.features) or 'no features'})"


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class ScoredBatch:
    """A batch with a KMeans score per row.

    ``distance`` is the Euclidean distance to the nearest centroid in the model's
    standardised space (NaN for rows that could not be scored: a feature was missing),
    ``cluster`` the index of that centroid (-1 when not scored), ``anomaly`` whether
    ``distance > threshold``.
    """

    batch: Batch
    distance: FloatArray
    cluster: IntArray
    anomaly: BoolArray
    threshold: float
    model_id: str = ""
    model_version: str = ""

    def __post_init__(self) -> None:
        n = self.batch.rows
        for name in ("distance", "cluster", "anomaly"):
            shape = getattr(self, name).shape
            if shape != (n,):
                raise ValueError(f"{name} of shape {shape} does not match {n} rows")

    @property
    def rows(self) -> int:
        return self.batch.rows

    def __len__(self) -> int:
        return self.rows

    @property
    def anomalies(self) -> int:
        return int(np.count_nonzero(self.anomaly))

    def __repr__(self) -> str:
        return (
            f"ScoredBatch({self.rows} rows, {self.anomalies} anomalies, "
            f"threshold {self.threshold:.4g}, model {self.model_version or self.model_id or '?'})"
        )
