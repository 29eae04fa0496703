"""Drift scores between a baseline histogram and a live one, and when drift becomes an event.

Scores (each compares bin probabilities ``p`` = baseline and ``q`` = live, same edges):

- ``psi``: population stability index ``sum((q - p) * ln(q / p))``.  0 when identical, no
  upper bound; empty bins are floored at ``EPSILON`` (then renormalised) because one empty bin
  would otherwise make it infinite.  Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 big.
- ``jensen_shannon``: the Jensen-Shannon *distance* (square root of the divergence), base 2, so
  it lies in [0, 1]: 0 identical, 1 disjoint.  Needs no smoothing (the mixture is never 0 where
  either side has mass).
- ``overlap``: MCenter's overlap score ``sum(p * q) / sum(p * p)``, kept for comparison.  A
  *similarity*: 1 when identical, 0 when disjoint (it can exceed 1 when the live data piles up
  in the baseline's most frequent bins).  For this metric "beyond the threshold" means *below*.
  Beware: against a baseline with equally likely bins (our quantile bins) it is exactly 1
  whatever the live data, since ``sum(q * 1/B) / sum(1/B^2) = 1``; it only sees drift with
  uneven baselines (uniform bins).  PSI or Jensen-Shannon are the ones to gate on.

Aggregation over features: ``worst`` is the max score (for ``overlap`` the min), ``mean`` the
average; a drifting model usually shows in one or two features, so decisions use ``worst``.

``DriftMonitor`` is a pure state machine (no clock, no I/O): it keeps the live histograms of the
last ``window_ms`` per (pipeline, model), merges them exactly, scores them against the model's
baseline, and decides.  States per key: *unknown* (fewer than ``min_samples`` samples in the
window) -> *ok* or *drifting*; an event is produced only on a change between *ok* and
*drifting* (``health.drift`` / ``health.drift_cleared``), never for every report, and never
while there are too few samples to tell.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ion.model.definition import DriftMetric, DriftSettings
from ion.model.event import Event, Severity
from ion.model.health import DriftScore, HealthReport, Histogram

from .histograms import merge_all

log = logging.getLogger(__name__)

EPSILON = 1e-4
"""Floor for empty bins in PSI (as a probability)."""

FloatArray = npt.NDArray[np.float64]


def probabilities(h: Histogram) -> FloatArray:
    """Bin probabilities (missing values left out); ValueError when no value was counted."""
    counts = np.asarray(h.counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError(f"histogram {h.feature!r} is empty")
    out: FloatArray = counts / total
    return out


def _pair(baseline: Histogram, live: Histogram) -> tuple[FloatArray, FloatArray]:
    if baseline.bin_edges != live.bin_edges:
        raise ValueError(
            f"histograms of {baseline.feature!r} and {live.feature!r} have different bin edges "
            f"({len(baseline.bin_edges)} vs {len(live.bin_edges)} edges): a live histogram must "
            "be counted on its baseline's edges"
        )
    return probabilities(baseline), probabilities(live)


def _smooth(p: FloatArray, epsilon: float) -> FloatArray:
    floored = np.maximum(p, epsilon)
    out: FloatArray = floored / floored.sum()
    return out


def psi(baseline: Histogram, live: Histogram, epsilon: float = EPSILON) -> float:
    """Population stability index of ``live`` against ``baseline``."""
    p, q = _pair(baseline, live)
    p, q = _smooth(p, epsilon), _smooth(q, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(baseline: Histogram, live: Histogram) -> float:
    """Jensen-Shannon distance, base 2, in [0, 1]."""
    p, q = _pair(baseline, live)
    m = 0.5 * (p + q)
    divergence = 0.5 * _kl2(p, m) + 0.5 * _kl2(q, m)
    # Rounding can leave a tiny negative divergence or one a hair above 1.
    return float(math.sqrt(min(max(divergence, 0.0), 1.0)))


def _kl2(a: FloatArray, m: FloatArray) -> float:
    mask = a > 0  # 0 * log 0 = 0; m > 0 wherever a > 0
    return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))


def overlap(baseline: Histogram, live: Histogram) -> float:
    """MCenter's overlap score ``sum(p*q) / sum(p*p)``: 1 identical, 0 disjoint."""
    p, q = _pair(baseline, live)
    return float(np.dot(p, q) / np.dot(p, p))


SCORERS: dict[DriftMetric, Callable[[Histogram, Histogram], float]] = {
    DriftMetric.PSI: psi,
    DriftMetric.JENSEN_SHANNON: jensen_shannon,
    DriftMetric.OVERLAP: overlap,
}


def score(metric: DriftMetric, baseline: Histogram, live: Histogram) -> float:
    return SCORERS[metric](baseline, live)


def beyond(metric: DriftMetric, value: float, threshold: float) -> bool:
    """Is ``value`` on the drifting side of ``threshold`` (below it for ``overlap``)?"""
    if math.isnan(value):
        return False
    return value < threshold if metric is DriftMetric.OVERLAP else value > threshold


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """Per-feature scores of one metric and their aggregates (NaN when nothing was scored)."""

    metric: DriftMetric
    scores: tuple[DriftScore, ...]
    worst: float
    mean: float
    skipped: tuple[str, ...] = ()
    """Live features that could not be scored: not in the baseline, other edges, or empty."""

    def summary(self, threshold: float = 0.0, model_version: str = "") -> DriftScore:
        """The aggregate as a ``DriftScore`` over all features (feature "")."""
        return DriftScore("", self.metric.value, self.worst, threshold, model_version)


def feature_drift(
    baseline: Sequence[Histogram],
    live: Sequence[Histogram],
    metric: DriftMetric = DriftMetric.PSI,
    *,
    threshold: float = 0.0,
    model_version: str = "",
) -> FeatureDrift:
    """Score every live feature that has a baseline with the same edges and some counts."""
    by_feature = {h.feature: h for h in baseline}
    scores: list[DriftScore] = []
    skipped: list[str] = []
    for h in live:
        base = by_feature.get(h.feature)
        if base is None or base.bin_edges != h.bin_edges or sum(h.counts) == 0:
            skipped.append(h.feature)
            continue
        try:
            value = score(metric, base, h)
        except ValueError:  # an empty baseline: nothing to compare against
            skipped.append(h.feature)
            continue
        scores.append(DriftScore(h.feature, metric.value, value, threshold, model_version))
    values = [s.score for s in scores]
    if not values:
        worst = mean = math.nan
    else:
        worst = min(values) if metric is DriftMetric.OVERLAP else max(values)
        mean = sum(values) / len(values)
    return FeatureDrift(metric, tuple(scores), worst, mean, tuple(skipped))


# -- the monitor ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DriftVerdict:
    """The monitor's view of one (pipeline, model) after a report."""

    pipeline: str
    model_id: str
    model_version: str
    metric: DriftMetric
    samples: int
    """Live samples in the window."""
    drift: FeatureDrift
    threshold: float
    known: bool
    """At least ``min_samples`` samples: ``over`` means something."""
    over: bool
    """Known, and the worst feature is beyond the threshold."""
    event: Event | None = None
    """Set when the state changed between ok and drifting: raise it."""

    @property
    def scores(self) -> tuple[DriftScore, ...]:
        """The aggregate (feature "") first, then one per feature: for a ``HealthReport``."""
        return (self.drift.summary(self.threshold, self.model_version), *self.drift.scores)


@dataclass(slots=True)
class _Window:
    reports: deque[tuple[int, int, tuple[Histogram, ...]]] = field(default_factory=deque)
    """(time_ms, samples, histograms) per report, oldest first."""
    drifting: bool | None = None  # None: not known yet


class DriftMonitor:
    """Windowed live histograms per (pipeline, model), scored against the model's baseline.

    ``observe`` is called with each live ``HealthReport`` (counted on the baseline's edges), the
    baseline of the report's model, the edge's ``DriftSettings`` and the current time; it
    returns a ``DriftVerdict``.  Keys with no report for a whole window are forgotten, so a
    replaced model leaves nothing behind.
    """

    def __init__(self, subject: str = "") -> None:
        self.subject = subject
        self._windows: dict[tuple[str, str], _Window] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def observe(
        self,
        report: HealthReport,
        baseline: Sequence[Histogram],
        settings: DriftSettings,
        now_ms: int,
    ) -> DriftVerdict:
        key = (report.pipeline, report.model_id or report.model_version)
        self._expire(now_ms, settings.window_ms, keep=key)
        window = self._windows.setdefault(key, _Window())
        at = report.window_end_ms or now_ms
        samples = report.sample_count or max((h.total for h in report.histograms), default=0)
        window.reports.append((at, samples, report.histograms))
        _evict(window, now_ms, settings.window_ms)

        total = sum(s for _, s, _ in window.reports)
        try:
            merged = merge_all(h for _, _, hs in window.reports for h in hs)
        except ValueError:
            # Edges changed within one model's window (a component restarted with other
            # edges): start the window again rather than mix incomparable counts.
            log.warning("drift window of %s/%s restarted: histogram edges changed", *key)
            window.reports = deque([window.reports[-1]])
            total = samples
            merged = merge_all(report.histograms)
        drift = feature_drift(
            baseline,
            merged,
            settings.metric,
            threshold=settings.threshold,
            model_version=report.model_version,
        )
        known = total >= settings.min_samples and not math.isnan(drift.worst)
        over = known and beyond(settings.metric, drift.worst, settings.threshold)
        event = None
        if known and window.drifting is not over:
            # The first known state raises an event only when it is drift: "no drift" after
            # start-up is not news.
            if over or window.drifting is not None:
                event = self._event(report, drift, settings, total, over)
            window.drifting = over
        return DriftVerdict(
            report.pipeline,
            report.model_id,
            report.model_version,
            settings.metric,
            total,
            drift,
            settings.threshold,
            known,
            over,
            event,
        )

    def _expire(self, now_ms: int, window_ms: int, keep: tuple[str, str]) -> None:
        # The key being reported keeps its state (ok/drifting) however long the gap was.
        stale = [
            k
            for k, w in self._windows.items()
            if k != keep and (not w.reports or w.reports[-1][0] <= now_ms - window_ms)
        ]
        for key in stale:
            del self._windows[key]

    def _event(
        self,
        report: HealthReport,
        drift: FeatureDrift,
        settings: DriftSettings,
        samples: int,
        over: bool,
    ) -> Event:
        ranked = sorted(
            drift.scores,
            key=lambda s: s.score,
            reverse=settings.metric is not DriftMetric.OVERLAP,
        )
        top = ", ".join(f"{s.feature}={s.score:.3f}" for s in ranked[:3])
        what = "beyond" if over else "back within"
        return Event(
            type="health.drift" if over else "health.drift_cleared",
            severity=Severity.WARNING if over else Severity.INFO,
            subject=self.subject or report.pipeline,
            message=(
                f"{settings.metric.value} {drift.worst:.3f} {what} threshold "
                f"{settings.threshold:g} over {samples} samples ({top})"
            ),
            attributes={
                "metric": settings.metric.value,
                "score": f"{drift.worst:.6g}",
                "mean": f"{drift.mean:.6g}",
                "threshold": f"{settings.threshold:g}",
                "samples": str(samples),
                "model_id": report.model_id,
                "model_version": report.model_version,
                "features": ",".join(s.feature for s in ranked[:3]),
            },
            pipeline=report.pipeline,
            component=report.component,
        )


def _evict(window: _Window, now_ms: int, window_ms: int) -> None:
    # Keep the newest report even when it is stamped old: it is what we were just given.
    while len(window.reports) > 1 and window.reports[0][0] <= now_ms - window_ms:
        window.reports.popleft()
