"""ML health objects and pipeline statistics.

Mirrors proto/ion/v1/health.proto (and ``Metric`` from common.proto).  Histograms check their
shape when built: a histogram whose counts do not fit its bins cannot be merged exactly up the
hierarchy, so it is refused where it is made rather than where it is merged.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metric:
    """A named number (a model metric, a scalar statistic)."""

    name: str
    value: float


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts per bin; bin i covers ``[bin_edges[i], bin_edges[i+1])``.

    Edges strictly increase (they may start with -inf and end with +inf), so there is one count
    fewer than edges.  Histograms with the same edges merge exactly by adding counts.
    """

    feature: str
    bin_edges: tuple[float, ...]
    counts: tuple[int, ...]
    missing: int = 0  # NaN or absent values

    def __post_init__(self) -> None:
        bins = max(len(self.bin_edges) - 1, 0)
        if len(self.counts) != bins:
            raise ValueError(
                f"histogram {self.feature!r} has {len(self.bin_edges)} edges but "
                f"{len(self.counts)} counts (want {bins})"
            )
        # `not a < b` (rather than `a >= b`) also refuses NaN edges.
        if any(not a < b for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
            raise ValueError(f"histogram {self.feature!r} has edges that do not strictly increase")

    @property
    def total(self) -> int:
        """Values counted in bins plus missing ones."""
        return sum(self.counts) + self.missing


@dataclass(frozen=True, slots=True)
class CategoricalCounts:
    feature: str
    categories: tuple[str, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.categories) != len(self.counts):
            raise ValueError(
                f"categorical counts {self.feature!r} have {len(self.categories)} categories but "
                f"{len(self.counts)} counts"
            )
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categorical counts {self.feature!r} repeat a category")


@dataclass(frozen=True, slots=True)
class TimeSeriesPoint:
    time_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class TimeSeries:
    name: str
    points: tuple[TimeSeriesPoint, ...] = ()


@dataclass(frozen=True, slots=True)
class DriftScore:
    feature: str  # "" for the score over all features
    metric: str  # "psi" | "jensen_shannon" | "overlap" (free text on the wire)
    score: float
    threshold: float = 0.0
    model_version: str = ""


@dataclass(frozen=True, slots=True)
class HealthReport:
    """One window of health objects from one component of one pipeline."""

    pipeline: str
    component: str = ""
    name: str = ""
    window_start_ms: int = 0
    window_end_ms: int = 0
    model_id: str = ""
    model_version: str = ""
    sample_count: int = 0
    histograms: tuple[Histogram, ...] = ()
    categorical: tuple[CategoricalCounts, ...] = ()
    scalars: tuple[Metric, ...] = ()
    series: tuple[TimeSeries, ...] = ()
    drift: tuple[DriftScore, ...] = ()


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table {self.name!r} row {i} has {len(row)} cells but "
                    f"{len(self.columns)} columns"
                )


@dataclass(frozen=True, slots=True)
class JobProgress:
    """Engine-level progress of a job (Spark jobs/stages/tasks, TensorFlow steps)."""

    engine_job_id: str = ""
    jobs_total: int = 0
    jobs_done: int = 0
    stages_total: int = 0
    stages_done: int = 0
    tasks_total: int = 0
    tasks_done: int = 0
    step: int = 0
    elapsed_ms: int = 0


@dataclass(frozen=True, slots=True)
class StatsReport:
    pipeline: str
    component: str = ""
    scalars: tuple[Metric, ...] = ()
    series: tuple[TimeSeries, ...] = ()
    tables: tuple[Table, ...] = ()
    progress: JobProgress | None = None
