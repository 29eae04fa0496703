"""Drift scores and the drift monitor (node/health): pure numpy, known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ion.model.definition import DriftMetric, DriftSettings
from ion.model.event import Severity
from ion.model.health import HealthReport, Histogram
from node.health import drift, histograms

INF = math.inf
EDGES2 = (-INF, 0.0, INF)
EDGES3 = (-INF, 0.0, 1.0, INF)


def h(
    counts: tuple[int, ...], edges: tuple[float, ...] | None = None, name: str = "x"
) -> Histogram:
    if edges is None:
        edges = (-INF, *[float(i) for i in range(len(counts) - 1)], INF)
    return Histogram(name, edges, counts)


# -- scores ------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", list(DriftMetric))
def test_identical_histograms(metric: DriftMetric) -> None:
    a = h((10, 30, 60))
    b = h((1, 3, 6))  # same shape, other total
    expected = 1.0 if metric is DriftMetric.OVERLAP else 0.0
    assert drift.score(metric, a, b) == pytest.approx(expected, abs=1e-12)


def test_psi_by_hand() -> None:
    # p = (0.5, 0.5), q = (0.25, 0.75): (0.25-0.5) ln(0.5) + (0.75-0.5) ln(1.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert drift.psi(h((50, 50)), h((25, 75))) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.274653, rel=1e-5)
    # PSI is symmetric.
    assert drift.psi(h((25, 75)), h((50, 50))) == pytest.approx(expected, rel=1e-12)


def test_psi_disjoint_is_large_and_finite() -> None:
    eps = drift.EPSILON
    # Floored at eps then renormalised: p = (1, eps) / (1 + eps), q the mirror image.
    p = np.array([1.0, eps]) / (1 + eps)
    q = p[::-1]
    expected = float(np.sum((q - p) * np.log(q / p)))
    value = drift.psi(h((100, 0)), h((0, 100)))
    assert value == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(value)
    assert value > 18  # 2 * ln(1/eps) ~ 18.4: far beyond any threshold


def test_psi_empty_live_bin_stays_finite() -> None:
    value = drift.psi(h((30, 30, 40)), h((50, 50, 0)))
    assert math.isfinite(value)
    assert value > 0.25


def test_jensen_shannon_by_hand() -> None:
    # p = (0.5, 0.5), q = (1, 0), m = (0.75, 0.25)
    kl_pm = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_qm = math.log2(1 / 0.75)
    expected = math.sqrt(0.5 * kl_pm + 0.5 * kl_qm)
    assert drift.jensen_shannon(h((5, 5)), h((8, 0))) == pytest.approx(expected, rel=1e-12)


def test_jensen_shannon_disjoint_is_one() -> None:
    assert drift.jensen_shannon(h((7, 0, 0)), h((0, 3, 9))) == pytest.approx(1.0, abs=1e-12)


def test_overlap_by_hand() -> None:
    # p = (0.8, 0.2), q = (0.5, 0.5): (0.4 + 0.1) / (0.64 + 0.04)
    assert drift.overlap(h((80, 20)), h((5, 5))) == pytest.approx(0.5 / 0.68, rel=1e-12)
    assert drift.overlap(h((10, 0)), h((0, 10))) == 0.0


def test_overlap_is_blind_against_equally_likely_bins() -> None:
    # Quantile baselines have equally likely bins: overlap is 1 whatever the live data does,
    # while PSI and Jensen-Shannon see the shift.
    base = h((25, 25, 25, 25))
    piled = h((0, 0, 0, 100))
    assert drift.overlap(base, piled) == pytest.approx(1.0)
    assert drift.psi(base, piled) > 1
    assert drift.jensen_shannon(base, piled) > 0.5


def test_different_edges_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="different bin edges"):
        drift.psi(Histogram("x", EDGES2, (1, 1)), Histogram("x", (-INF, 0.5, INF), (1, 1)))


def test_empty_histogram_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        drift.jensen_shannon(h((0, 0)), h((1, 1)))


def test_feature_drift_aggregates_and_skips() -> None:
    base = (h((50, 50), name="a"), h((50, 50), name="b"), h((50, 50), name="c"))
    live = (
        h((50, 50), name="a"),  # 0
        h((25, 75), name="b"),  # 0.2747
        Histogram("c", (-INF, 9.0, INF), (1, 1)),  # other edges: skipped
        h((1, 1), name="new"),  # no baseline: skipped
        h((0, 0), name="a2"),
    )
    fd = drift.feature_drift(base, live, DriftMetric.PSI, threshold=0.2, model_version="v1")
    assert [s.feature for s in fd.scores] == ["a", "b"]
    assert fd.worst == pytest.approx(0.274653, rel=1e-5)
    assert fd.mean == pytest.approx(0.274653 / 2, rel=1e-5)
    assert set(fd.skipped) == {"c", "new", "a2"}
    summary = fd.summary(0.2, "v1")
    assert (summary.feature, summary.metric, summary.threshold) == ("", "psi", 0.2)

    ov = drift.feature_drift(base, live[:2], DriftMetric.OVERLAP)
    assert ov.worst == min(s.score for s in ov.scores)  # a similarity: the worst is the min
    assert math.isnan(drift.feature_drift(base, (), DriftMetric.PSI).worst)


# -- histograms -------------------------------------------------------------------------------


def test_quantile_edges_have_open_ends_and_catch_everything() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=1000)
    edges = histograms.quantile_edges(x, 10)
    assert edges[0] == -INF
    assert edges[-1] == INF
    assert len(edges) == 11
    live = np.array([-1e9, 1e9, INF, -INF, np.nan, 0.0])
    counts, missing = histograms.bin_counts(live, edges)
    assert counts.sum() == 5
    assert missing == 1
    assert counts[0] == 2  # -1e9 and -inf
    assert counts[-1] == 2  # +1e9 and +inf
    base = histograms.histogram("x", x, edges)
    assert sum(base.counts) == 1000
    # Quantile bins hold about the same count each.
    assert max(base.counts) - min(base.counts) <= 2


def test_constant_and_empty_columns() -> None:
    assert histograms.quantile_edges(np.full(50, 3.0), 10) == (-INF, 3.0, INF)
    assert histograms.quantile_edges(np.array([np.nan]), 10) == (-INF, INF)
    assert histograms.uniform_edges(np.array([0.0, 10.0]), 5) == (-INF, 2.0, 4.0, 6.0, 8.0, INF)


def test_merge_is_exact_and_checks_edges() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=300), rng.normal(1.0, size=200)
    edges = histograms.quantile_edges(a, 8)
    merged = histograms.merge(
        histograms.histogram("x", a, edges), histograms.histogram("x", b, edges)
    )
    assert merged == histograms.histogram("x", np.concatenate([a, b]), edges)
    with pytest.raises(ValueError, match="edges differ"):
        histograms.merge(merged, histograms.histogram("x", a, histograms.uniform_edges(a, 8)))
    with pytest.raises(ValueError, match="cannot merge"):
        histograms.merge(merged, histograms.histogram("y", a, edges))


def test_accumulator_matches_one_shot_counting() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 3))
    x[7, 1] = np.nan
    base = histograms.baseline(("a", "b", "c"), x, 5, "quantile")
    acc = histograms.HistogramAccumulator(base)
    for part in np.array_split(x, 7):
        acc.add(part)
    assert acc.samples == 500
    assert acc.take() == tuple(
        histograms.histogram(b.feature, x[:, j], b.bin_edges) for j, b in enumerate(base)
    )
    assert acc.samples == 0
    assert all(sum(hh.counts) == 0 for hh in acc.take())


# -- the monitor -------------------------------------------------------------------------------

SETTINGS = DriftSettings(DriftMetric.PSI, threshold=0.2, window_ms=60_000, min_samples=100)
BASE = (Histogram("x", EDGES3, (40, 40, 20)),)


def report(counts: tuple[int, int, int], end_ms: int, model: str = "m1") -> HealthReport:
    return HealthReport(
        pipeline="inference",
        component="score",
        window_end_ms=end_ms,
        model_id=model,
        model_version=model,
        sample_count=sum(counts),
        histograms=(Histogram("x", EDGES3, counts),),
    )


def test_monitor_waits_for_enough_samples() -> None:
    mon = drift.DriftMonitor("edge-1")
    v = mon.observe(report((0, 0, 50), 1_000), BASE, SETTINGS, 1_000)
    assert v.samples == 50
    assert not v.known
    assert not v.over
    assert v.event is None
    assert v.drift.worst > 1  # scored anyway, for display


def test_monitor_raises_once_then_clears() -> None:
    mon = drift.DriftMonitor("edge-1")
    calm = (40, 40, 20)
    hot = (5, 15, 80)
    v = mon.observe(report(calm, 1_000), BASE, SETTINGS, 1_000)
    assert v.known
    assert not v.over
    assert v.event is None  # "no drift" at start-up is not news
    # Within the window the calm report still counts: merged, the drift is moderate.
    v = mon.observe(report(hot, 30_000), BASE, SETTINGS, 30_000)
    assert v.samples == 200
    assert v.over
    assert v.event is not None
    assert v.event.type == "health.drift"
    assert v.event.severity is Severity.WARNING
    assert v.event.attributes["metric"] == "psi"
    assert v.event.attributes["model_version"] == "m1"
    assert v.scores[0].feature == ""
    assert v.scores[0].score == v.drift.worst
    # Still drifting: no second event.
    v = mon.observe(report(hot, 80_000), BASE, SETTINGS, 80_000)
    assert v.over
    assert v.event is None
    assert v.samples == 200  # the report at 1_000 left the window
    # Two calm windows later the hot one has left the window: cleared, once.
    mon.observe(report(calm, 100_000), BASE, SETTINGS, 100_000)
    v = mon.observe(report(calm, 145_000), BASE, SETTINGS, 145_000)
    assert not v.over
    assert v.event is not None
    assert v.event.type == "health.drift_cleared"
    assert v.event.severity is Severity.INFO
    v = mon.observe(report(calm, 150_000), BASE, SETTINGS, 150_000)
    assert v.event is None


def test_monitor_keeps_models_apart_and_forgets_old_ones() -> None:
    mon = drift.DriftMonitor()
    mon.observe(report((5, 15, 80), 1_000, "m1"), BASE, SETTINGS, 1_000)
    v = mon.observe(report((40, 40, 20), 2_000, "m2"), BASE, SETTINGS, 2_000)
    assert v.samples == 100  # m1's counts are not mixed in
    assert not v.over
    assert len(mon) == 2
    mon.observe(report((40, 40, 20), 70_000, "m2"), BASE, SETTINGS, 70_000)
    assert len(mon) == 1  # m1 sent nothing for a whole window


def test_monitor_overlap_drifts_below_threshold() -> None:
    settings = DriftSettings(DriftMetric.OVERLAP, threshold=0.6, window_ms=60_000, min_samples=10)
    mon = drift.DriftMonitor()
    assert not mon.observe(report((40, 40, 20), 1, "a"), BASE, settings, 1).over
    v = mon.observe(report((0, 0, 100), 1, "b"), BASE, settings, 1)
    assert v.drift.worst == pytest.approx(0.2 * 1.0 / (0.16 + 0.16 + 0.04))
    assert v.over


def test_monitor_survives_changed_edges() -> None:
    mon = drift.DriftMonitor()
    mon.observe(report((40, 40, 20), 1_000), BASE, SETTINGS, 1_000)
    odd = HealthReport(
        "inference",
        window_end_ms=2_000,
        model_id="m1",
        sample_count=100,
        histograms=(Histogram("x", (-INF, 5.0, INF), (50, 50)),),
    )
    v = mon.observe(odd, BASE, SETTINGS, 2_000)
    assert v.samples == 100
    assert v.drift.skipped == ("x",)
    assert not v.known
