from ion.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Histogram(_message.Message):
    __slots__ = ("feature", "bin_edges", "counts", "missing")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    BIN_EDGES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    feature: str
    bin_edges: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    missing: int
    def __init__(self, feature: _Optional[str] = ..., bin_edges: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ..., missing: _Optional[int] = ...) -> None: ...

class CategoricalCounts(_message.Message):
    __slots__ = ("feature", "categories", "counts")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    feature: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, feature: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class TimeSeriesPoint(_message.Message):
    __slots__ = ("time_ms", "value")
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    time_ms: int
    value: float
    def __init__(self, time_ms: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class TimeSeries(_message.Message):
    __slots__ = ("name", "points")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    points: _containers.RepeatedCompositeFieldContainer[TimeSeriesPoint]
    def __init__(self, name: _Optional[str] = ..., points: _Optional[_Iterable[_Union[TimeSeriesPoint, _Mapping]]] = ...) -> None: ...

class DriftScore(_message.Message):
    __slots__ = ("feature", "metric", "score", "threshold", "model_version")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    feature: str
    metric: str
    score: float
    threshold: float
    model_version: str
    def __init__(self, feature: _Optional[str] = ..., metric: _Optional[str] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., model_version: _Optional[str] = ...) -> None: ...

class HealthReport(_message.Message):
    __slots__ = ("pipeline", "component", "name", "window_start_ms", "window_end_ms", "model_id", "model_version", "sample_count", "histograms", "categorical", "scalars", "series", "drift")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAMS_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    SCALARS_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    component: str
    name: str
    window_start_ms: int
    window_end_ms: int
    model_id: str
    model_version: str
    sample_count: int
    histograms: _containers.RepeatedCompositeFieldContainer[Histogram]
    categorical: _containers.RepeatedCompositeFieldContainer[CategoricalCounts]
    scalars: _containers.RepeatedCompositeFieldContainer[_common_pb2.Metric]
    series: _containers.RepeatedCompositeFieldContainer[TimeSeries]
    drift: _containers.RepeatedCompositeFieldContainer[DriftScore]
    def __init__(self, pipeline: _Optional[str] = ..., component: _Optional[str] = ..., name: _Optional[str] = ..., window_start_ms: _Optional[int] = ..., window_end_ms: _Optional[int] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., sample_count: _Optional[int] = ..., histograms: _Optional[_Iterable[_Union[Histogram, _Mapping]]] = ..., categorical: _Optional[_Iterable[_Union[CategoricalCounts, _Mapping]]] = ..., scalars: _Optional[_Iterable[_Union[_common_pb2.Metric, _Mapping]]] = ..., series: _Optional[_Iterable[_Union[TimeSeries, _Mapping]]] = ..., drift: _Optional[_Iterable[_Union[DriftScore, _Mapping]]] = ...) -> None: ...

class Table(_message.Message):
    __slots__ = ("name", "columns", "rows")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    name: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[TableRow]
    def __init__(self, name: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[TableRow, _Mapping]]] = ...) -> None: ...

class TableRow(_message.Message):
    __slots__ = ("cells",)
    CELLS_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cells: _Optional[_Iterable[str]] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("engine_job_id", "jobs_total", "jobs_done", "stages_total", "stages_done", "tasks_total", "tasks_done", "step", "elapsed_ms")
    ENGINE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOBS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    JOBS_DONE_FIELD_NUMBER: _ClassVar[int]
    STAGES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STAGES_DONE_FIELD_NUMBER: _ClassVar[int]
    TASKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TASKS_DONE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    engine_job_id: str
    jobs_total: int
    jobs_done: int
    stages_total: int
    stages_done: int
    tasks_total: int
    tasks_done: int
    step: int
    elapsed_ms: int
    def __init__(self, engine_job_id: _Optional[str] = ..., jobs_total: _Optional[int] = ..., jobs_done: _Optional[int] = ..., stages_total: _Optional[int] = ..., stages_done: _Optional[int] = ..., tasks_total: _Optional[int] = ..., tasks_done: _Optional[int] = ..., step: _Optional[int] = ..., elapsed_ms: _Optional[int] = ...) -> None: ...

class StatsReport(_message.Message):
    __slots__ = ("pipeline", "component", "scalars", "series", "tables", "progress")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    SCALARS_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    component: str
    scalars: _containers.RepeatedCompositeFieldContainer[_common_pb2.Metric]
    series: _containers.RepeatedCompositeFieldContainer[TimeSeries]
    tables: _containers.RepeatedCompositeFieldContainer[Table]
    progress: JobProgress
    def __init__(self, pipeline: _Optional[str] = ..., component: _Optional[str] = ..., scalars: _Optional[_Iterable[_Union[_common_pb2.Metric, _Mapping]]] = ..., series: _Optional[_Iterable[_Union[TimeSeries, _Mapping]]] = ..., tables: _Optional[_Iterable[_Union[Table, _Mapping]]] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ...) -> None: ...
