"""Health components for the python engine: ``feature_histograms`` and ``health_reporter``.

- ``feature_histograms`` (batch): baseline histograms of a ``Batch`` (numpy; the Spark version
  lives in ``node.components.spark``), one ``HealthReport`` named ``baseline``: quantile or
  uniform bins with ``-inf``/``+inf`` outer edges.
- ``health_reporter`` (streaming): merges the windowed ``HealthReport`` values it receives
  (histograms exactly, per pipeline/component/model version) and emits the merged reports
  every ``interval``, and once more when its input ends.  Scalars are merged as means
  weighted by ``sample_count``.  Drift scores are not carried over: they belong to one window
  and do not add up; the agent scores drift on the merged histograms
  (``node.health.drift.DriftMonitor``).

Pulled in one thread, the reporter can only act when a report arrives; ``kmeans_score`` closes
its windows on ticks, so reports keep arriving while the data is quiet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ion.model.health import HealthReport, Histogram, Metric
from node.health.histograms import BinMethod, baseline, merge_all
from node.runner.component import Args, ArgsError, Component, Context

from .common import duration_s, str_list
from .values import Batch


class FeatureHistograms(Component):
    input_ports = ("data",)
    output_ports = ("health",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.bins = args.get_int("bins", 10, min=1, max=10_000)
        method = args.get_str("method", "quantile", choices=("quantile", "uniform"))
        self.method: BinMethod = "quantile" if method == "quantile" else "uniform"
        self.columns = str_list(args, "columns")

    def run(self, inputs: Mapping[str, Any]) -> HealthReport:
        data = inputs["data"]
        if not isinstance(data, Batch):
            raise TypeError(f"feature_histograms takes a Batch, not {type(data).__name__}")
        features = self.columns or data.features
        unknown = [c for c in features if c not in data.features]
        if unknown:
            raise ArgsError(f"columns not in the data: {', '.join(unknown)}")
        histograms = baseline(features, data.columns(features), self.bins, self.method)
        return HealthReport(
            pipeline=self.ctx.pipeline,
            component=self.ctx.component,
            name="baseline",
            sample_count=data.rows,
            histograms=histograms,
        )


_Key = tuple[str, str, str, str, str]


def _key(r: HealthReport) -> _Key:
    return (r.pipeline, r.component, r.name, r.model_id, r.model_version)


@dataclass(slots=True)
class _Merged:
    first: HealthReport
    start_ms: int
    end_ms: int
    samples: int = 0
    histograms: list[Histogram] = field(default_factory=list)
    weighted: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def add(self, r: HealthReport) -> None:
        self.start_ms = (
            min(self.start_ms, r.window_start_ms) if r.window_start_ms else self.start_ms
        )
        self.end_ms = max(self.end_ms, r.window_end_ms)
        self.samples += r.sample_count
        # Merging as we go keeps memory flat however many windows an interval holds.
        self.histograms = list(merge_all([*self.histograms, *r.histograms]))
        w = float(max(r.sample_count, 1))
        for m in r.scalars:
            self.weighted[m.name] = self.weighted.get(m.name, 0.0) + m.value * w
            self.weights[m.name] = self.weights.get(m.name, 0.0) + w

    def report(self) -> HealthReport:
        r = self.first
        return HealthReport(
            pipeline=r.pipeline,
            component=r.component,
            name=r.name,
            window_start_ms=self.start_ms,
            window_end_ms=self.end_ms,
            model_id=r.model_id,
            model_version=r.model_version,
            sample_count=self.samples,
            histograms=tuple(self.histograms),
            categorical=r.categorical,
            scalars=tuple(Metric(k, v / self.weights[k]) for k, v in self.weighted.items()),
        )


def merge_reports(reports: Iterable[HealthReport]) -> list[HealthReport]:
    """Reports merged per (pipeline, component, name, model id, model version)."""
    merged: dict[_Key, _Merged] = {}
    for r in reports:
        m = merged.get(_key(r))
        if m is None:
            m = merged[_key(r)] = _Merged(r, r.window_start_ms, r.window_end_ms)
        m.add(r)
    return [m.report() for m in merged.values()]


class HealthReporter(Component):
    input_ports = ("health",)
    output_ports = ("health",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.interval_s = duration_s(args, "interval", "30s")
        self.clock: Callable[[], float] = time.monotonic

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[HealthReport]:
        pending: list[HealthReport] = []
        last = self.clock()
        for report in inputs["health"]:
            if not isinstance(report, HealthReport):
                raise TypeError(f"health_reporter takes HealthReport values, not {report!r}")
            pending.append(report)
            now = self.clock()
            if now - last >= self.interval_s:
                yield from merge_reports(pending)
                pending.clear()
                last = now
        yield from merge_reports(pending)

    def run(self, inputs: Mapping[str, Any]) -> list[HealthReport]:
        value = inputs["health"]
        reports = value if isinstance(value, list | tuple) else [value]
        return merge_reports(reports)
