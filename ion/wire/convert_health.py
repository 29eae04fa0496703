"""Health reports and stats reports <-> protobuf (proto/ion/v1/health.proto)."""

from __future__ import annotations

from collections.abc import Iterable

from ion.model.health import (
    CategoricalCounts,
    DriftScore,
    HealthReport,
    Histogram,
    JobProgress,
    Metric,
    StatsReport,
    Table,
    TimeSeries,
    TimeSeriesPoint,
)
from ion.v1 import common_pb2, health_pb2
from ion.wire.convert_common import decoding

# Sub-values: shared with convert_model; they raise ValueError on bad input, which the
# body-level functions below (and in convert_model) turn into DecodeError.


def metrics_to_proto(metrics: Iterable[Metric]) -> list[common_pb2.Metric]:
    return [common_pb2.Metric(name=m.name, value=m.value) for m in metrics]


def metrics_from_proto(metrics: Iterable[common_pb2.Metric]) -> tuple[Metric, ...]:
    return tuple(Metric(name=m.name, value=m.value) for m in metrics)


def histogram_to_proto(h: Histogram) -> health_pb2.Histogram:
    return health_pb2.Histogram(
        feature=h.feature, bin_edges=h.bin_edges, counts=h.counts, missing=h.missing
    )


def histogram_from_proto(m: health_pb2.Histogram) -> Histogram:
    return Histogram(
        feature=m.feature,
        bin_edges=tuple(m.bin_edges),
        counts=tuple(m.counts),
        missing=m.missing,
    )


def series_to_proto(s: TimeSeries) -> health_pb2.TimeSeries:
    return health_pb2.TimeSeries(
        name=s.name,
        points=[health_pb2.TimeSeriesPoint(time_ms=p.time_ms, value=p.value) for p in s.points],
    )


def series_from_proto(m: health_pb2.TimeSeries) -> TimeSeries:
    return TimeSeries(
        name=m.name,
        points=tuple(TimeSeriesPoint(time_ms=p.time_ms, value=p.value) for p in m.points),
    )


def health_report_to_proto(r: HealthReport) -> health_pb2.HealthReport:
    return health_pb2.HealthReport(
        pipeline=r.pipeline,
        component=r.component,
        name=r.name,
        window_start_ms=r.window_start_ms,
        window_end_ms=r.window_end_ms,
        model_id=r.model_id,
        model_version=r.model_version,
        sample_count=r.sample_count,
        histograms=[histogram_to_proto(h) for h in r.histograms],
        categorical=[
            health_pb2.CategoricalCounts(
                feature=c.feature, categories=c.categories, counts=c.counts
            )
            for c in r.categorical
        ],
        scalars=metrics_to_proto(r.scalars),
        series=[series_to_proto(s) for s in r.series],
        drift=[
            health_pb2.DriftScore(
                feature=d.feature,
                metric=d.metric,
                score=d.score,
                threshold=d.threshold,
                model_version=d.model_version,
            )
            for d in r.drift
        ],
    )


def health_report_from_proto(m: health_pb2.HealthReport) -> HealthReport:
    with decoding("health report"):
        return HealthReport(
            pipeline=m.pipeline,
            component=m.component,
            name=m.name,
            window_start_ms=m.window_start_ms,
            window_end_ms=m.window_end_ms,
            model_id=m.model_id,
            model_version=m.model_version,
            sample_count=m.sample_count,
            histograms=tuple(histogram_from_proto(h) for h in m.histograms),
            categorical=tuple(
                CategoricalCounts(
                    feature=c.feature, categories=tuple(c.categories), counts=tuple(c.counts)
                )
                for c in m.categorical
            ),
            scalars=metrics_from_proto(m.scalars),
            series=tuple(series_from_proto(s) for s in m.series),
            drift=tuple(
                DriftScore(
                    feature=d.feature,
                    metric=d.metric,
                    score=d.score,
                    threshold=d.threshold,
                    model_version=d.model_version,
                )
                for d in m.drift
            ),
        )


def stats_report_to_proto(r: StatsReport) -> health_pb2.StatsReport:
    m = health_pb2.StatsReport(
        pipeline=r.pipeline,
        component=r.component,
        scalars=metrics_to_proto(r.scalars),
        series=[series_to_proto(s) for s in r.series],
        tables=[
            health_pb2.Table(
                name=t.name,
                columns=t.columns,
                rows=[health_pb2.TableRow(cells=row) for row in t.rows],
            )
            for t in r.tables
        ],
    )
    if (p := r.progress) is not None:
        m.progress.CopyFrom(
            health_pb2.JobProgress(
                engine_job_id=p.engine_job_id,
                jobs_total=p.jobs_total,
                jobs_done=p.jobs_done,
                stages_total=p.stages_total,
                stages_done=p.stages_done,
                tasks_total=p.tasks_total,
                tasks_done=p.tasks_done,
                step=p.step,
                elapsed_ms=p.elapsed_ms,
            )
        )
    return m


def stats_report_from_proto(m: health_pb2.StatsReport) -> StatsReport:
    with decoding("stats report"):
        progress = None
        if m.HasField("progress"):
            p = m.progress
            progress = JobProgress(
                engine_job_id=p.engine_job_id,
                jobs_total=p.jobs_total,
                jobs_done=p.jobs_done,
                stages_total=p.stages_total,
                stages_done=p.stages_done,
                tasks_total=p.tasks_total,
                tasks_done=p.tasks_done,
                step=p.step,
                elapsed_ms=p.elapsed_ms,
            )
        return StatsReport(
            pipeline=m.pipeline,
            component=m.component,
            scalars=metrics_from_proto(m.scalars),
            series=tuple(series_from_proto(s) for s in m.series),
            tables=tuple(
                Table(
                    name=t.name,
                    columns=tuple(t.columns),
                    rows=tuple(tuple(row.cells) for row in t.rows),
                )
                for t in m.tables
            ),
            progress=progress,
        )
