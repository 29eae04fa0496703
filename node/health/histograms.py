"""Feature histograms with numpy: baseline bin edges, counting on given edges, exact merging.

Bin ``i`` covers ``[edges[i], edges[i+1])`` (``ion.model.health.Histogram``).  Baselines made
here always have ``-inf`` and ``+inf`` as outer edges, so every live value lands in some bin
however far it drifted: drift then shows up as mass in the outer bins instead of being lost.
A histogram received from elsewhere may have finite outer edges; values outside them are
counted in the nearest outer bin (a histogram has no "out of range" count, and dropping them
would hide exactly the drift we look for).  NaN is counted in ``missing``.

Merging is exact (counts add) and needs identical edges: that is what lets histograms travel up
the hierarchy without raw data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from ion.model.health import Histogram

log = logging.getLogger(__name__)

BinMethod = Literal["quantile", "uniform"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def finish_edges(inner: Iterable[float]) -> tuple[float, ...]:
    """``(-inf, *inner, +inf)`` with ``inner`` sorted, deduplicated and finite.

    Quantiles of discrete or constant data repeat; repeated edges would make empty,
    zero-width bins (and break the strictly increasing rule), so they collapse into one.
    """
    finite = sorted({float(x) for x in inner if math.isfinite(float(x))})
    return (-math.inf, *finite, math.inf)


def quantile_edges(values: npt.ArrayLike, bins: int) -> tuple[float, ...]:
    """Edges putting about the same number of (non-NaN) values in each of ``bins`` bins."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, not {bins}")
    x = _finite(values)
    if x.size == 0 or bins == 1:
        return finish_edges(())
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return finish_edges(np.quantile(x, qs).tolist())


def uniform_edges(values: npt.ArrayLike, bins: int) -> tuple[float, ...]:
    """Edges splitting ``[min, max]`` of the (non-NaN) values into ``bins`` equal parts."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, not {bins}")
    x = _finite(values)
    if x.size == 0 or bins == 1:
        return finish_edges(())
    lo, hi = float(x.min()), float(x.max())
    return finish_edges(np.linspace(lo, hi, bins + 1)[1:-1].tolist())


def baseline_edges(values: npt.ArrayLike, bins: int, method: BinMethod) -> tuple[float, ...]:
    if method == "quantile":
        return quantile_edges(values, bins)
    if method == "uniform":
        return uniform_edges(values, bins)
    raise ValueError(f"unknown bin method {method!r}: quantile or uniform")


def bin_counts(values: npt.ArrayLike, edges: npt.ArrayLike) -> tuple[IntArray, int]:
    """Counts per bin of ``edges`` and the number of NaN values."""
    x = np.asarray(values, dtype=np.float64).ravel()
    e = np.asarray(edges, dtype=np.float64)
    bins = e.size - 1
    if bins < 1:
        raise ValueError("a histogram needs at least two edges")
    nan = np.isnan(x)
    missing = int(nan.sum())
    if missing:
        x = x[~nan]
    # side="right": a value equal to an edge belongs to the bin that starts there.
    # Inner edges only: values beyond a finite outer edge fall into the outer bin.
    idx = np.searchsorted(e[1:-1], x, side="right")
    return np.bincount(idx, minlength=bins).astype(np.int64), missing


def histogram(feature: str, values: npt.ArrayLike, edges: Sequence[float]) -> Histogram:
    counts, missing = bin_counts(values, edges)
    return Histogram(feature, tuple(float(v) for v in edges), tuple(counts.tolist()), missing)


def baseline(
    features: Sequence[str], values: npt.ArrayLike, bins: int, method: BinMethod
) -> tuple[Histogram, ...]:
    """Baseline histograms of the columns of a 2-D array, one per feature."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(features):
        raise ValueError(f"values of shape {x.shape} do not match {len(features)} features")
    return tuple(
        histogram(name, x[:, j], baseline_edges(x[:, j], bins, method))
        for j, name in enumerate(features)
    )


def same_edges(a: Histogram, b: Histogram) -> bool:
    return a.bin_edges == b.bin_edges


def merge(a: Histogram, b: Histogram) -> Histogram:
    """The exact sum of two histograms of one feature with identical edges."""
    if a.feature != b.feature:
        raise ValueError(f"cannot merge histograms of {a.feature!r} and {b.feature!r}")
    if not same_edges(a, b):
        raise ValueError(f"cannot merge histograms of {a.feature!r}: their bin edges differ")
    counts = tuple(x + y for x, y in zip(a.counts, b.counts, strict=True))
    return Histogram(a.feature, a.bin_edges, counts, a.missing + b.missing)


def merge_all(histograms: Iterable[Histogram]) -> tuple[Histogram, ...]:
    """Histograms merged per feature (first-seen order); edges must agree per feature."""
    merged: dict[str, Histogram] = {}
    for h in histograms:
        prev = merged.get(h.feature)
        merged[h.feature] = h if prev is None else merge(prev, h)
    return tuple(merged.values())


class HistogramAccumulator:
    """Running counts of several features on fixed edges, fed 2-D batches.

    Small batches are buffered and binned together (every ``flush_rows`` rows and when the
    counts are taken): binning costs a few numpy calls per feature whatever the number of
    rows, so binning 50 rows at a time would cost far more per row than scoring them.  All
    features are counted with one ``bincount``: each feature's bin indices are offset into
    its own range of one long count vector, whose last slot per feature counts NaN.
    """

    def __init__(
        self,
        edges: Sequence[Histogram] | Sequence[tuple[str, Sequence[float]]],
        flush_rows: int = 8192,
    ) -> None:
        pairs = [(h.feature, h.bin_edges) if isinstance(h, Histogram) else h for h in edges]
        self.features: tuple[str, ...] = tuple(name for name, _ in pairs)
        self._edge_tuples = [tuple(float(v) for v in e) for _, e in pairs]
        if any(len(e) < 2 for e in self._edge_tuples):
            raise ValueError("a histogram needs at least two edges")
        # Inner edges only: with side="right", searchsorted on them gives the bin index
        # directly, and a value beyond a finite outer edge falls into the outer bin.
        self._inner = [np.asarray(e[1:-1], dtype=np.float64) for e in self._edge_tuples]
        sizes = [len(e) for e in self._edge_tuples]  # bins + 1 slot for NaN
        self._offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self._sizes = sizes
        self._counts = np.zeros(sum(sizes), dtype=np.int64)
        self._pending: list[FloatArray] = []
        self._pending_rows = 0
        self.flush_rows = flush_rows
        self.samples = 0

    def add(self, values: FloatArray) -> None:
        """Add a batch whose columns are ``self.features``, in that order."""
        if values.ndim != 2 or values.shape[1] != len(self.features):
            raise ValueError(
                f"a batch of shape {values.shape} does not match {len(self.features)} features"
            )
        self.samples += int(values.shape[0])
        self._pending.append(values)
        self._pending_rows += int(values.shape[0])
        if self._pending_rows >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            self._pending.clear()
            return
        x = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending.clear()
        self._pending_rows = 0
        columns = np.ascontiguousarray(x.T)
        idx = np.empty(columns.shape, dtype=np.int64)
        for j, inner in enumerate(self._inner):
            idx[j] = np.searchsorted(inner, columns[j], side="right")
        # NaN sorts last in searchsorted, so it would land in the top bin: give it its slot.
        nan = np.isnan(columns)
        if nan.any():
            idx[nan] = (np.asarray(self._sizes, dtype=np.int64) - 1)[np.nonzero(nan)[0]]
        idx += self._offsets[:, None]
        self._counts += np.bincount(idx.ravel(), minlength=self._counts.size)

    def take(self) -> tuple[Histogram, ...]:
        """The histograms so far; the counts start again from zero."""
        self._flush()
        out = []
        for name, edges, start, size in zip(
            self.features, self._edge_tuples, self._offsets.tolist(), self._sizes, strict=True
        ):
            counts = self._counts[start : start + size - 1]
            missing = int(self._counts[start + size - 1])
            out.append(Histogram(name, edges, tuple(counts.tolist()), missing))
        self._counts[:] = 0
        self.samples = 0
        return tuple(out)


def _finite(values: npt.ArrayLike) -> FloatArray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]
