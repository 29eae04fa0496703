"""What ``kmeans_score`` and ``tflite_score`` share: windowed anomaly scoring with hot swap.

A ``WindowedScorer`` takes ``data`` and ``model`` and gives ``data``, ``stats``, ``health`` and
``events``; a subclass says how to load a model artifact, score a batch with it and describe
one anomaly, and adds its own scalars to the window's stats.  The rest lives here:

- the model: in a streaming pipeline a ``ModelFeed``, asked for ``latest()`` once per batch (a
  new ``model_id``/``version``/path is loaded between two batches and reported with
  ``accepted``; one that cannot be loaded is refused once, remembered, and the previous model
  kept); in a batch pipeline a ``ModelArtifact``, whose refusal is fatal;
- windows: ``window`` long, ended by a batch (or an empty tick batch) arriving after the
  window's end, by a model swap (a window never mixes two models) and by the end of the stream.
  A closed window gives a ``StatsReport``, a ``HealthReport`` (histograms on the model's
  baseline edges) when a model is active, and an ``anomaly.suppressed`` event summing up the
  anomalies beyond ``max_events``, which are counted rather than reported one by one.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from ion.model.event import Event, Severity
from ion.model.health import HealthReport, Metric, StatsReport
from node.health.histograms import HistogramAccumulator
from node.models.artifact import ModelArtifact, ModelFeed
from node.runner.component import Args, Component, Context

from .common import duration_s
from .values import Batch, BoolArray, FloatArray

log = logging.getLogger(__name__)

Output = tuple[str, Any]
Rows = npt.NDArray[np.intp]


class LoadedModel(Protocol):
    """A subclass's active state: the artifact it came from and what every scorer needs."""

    @property
    def artifact(self) -> ModelArtifact: ...
    @property
    def threshold(self) -> float: ...
    @property
    def histograms(self) -> HistogramAccumulator | None: ...


class Scores(Protocol):
    """A scored batch: which rows are anomalies, and against which model."""

    @property
    def batch(self) -> Batch: ...
    @property
    def anomaly(self) -> BoolArray: ...
    @property
    def threshold(self) -> float: ...
    @property
    def model_version(self) -> str: ...
    @property
    def anomalies(self) -> int: ...


ActiveT = TypeVar("ActiveT", bound=LoadedModel)
ScoresT = TypeVar("ScoresT", bound=Scores)


@dataclass(slots=True)
class Window:
    """What one window has seen.  ``score_*`` is the per-row score (a distance, an error)
    over the scored rows; ``scoring_s`` the time spent scoring."""

    start_s: float
    records: int = 0
    scored: int = 0
    anomalies: int = 0
    unscored: int = 0
    missing: int = 0
    score_sum: float = 0.0
    score_max: float = 0.0
    scoring_s: float = 0.0
    events: int = 0
    suppressed: int = 0
    swaps: int = 0
    batches: int = 0

    def score_mean(self) -> float:
        return self.score_sum / self.scored if self.scored else math.nan


def scorable(x: FloatArray) -> BoolArray:
    """Which rows of ``x`` can be scored: those with no feature missing (NaN)."""
    return np.asarray(~np.isnan(x).any(axis=1), dtype=np.bool_)


def _key(artifact: ModelArtifact) -> tuple[str, str, str]:
    return (artifact.model_id, artifact.version, str(artifact.path))


class WindowedScorer(Component, ABC, Generic[ActiveT, ScoresT]):
    """A scorer of ``data`` batches with a hot-swapped model (see the module docstring).

    A subclass names its ``model_format`` and ``format_error`` and says, in the methods below,
    how to load, score and describe; arguments ``threshold``, ``window`` and ``max_events``
    are read here."""

    input_ports = ("data", "model")
    output_ports = ("data", "stats", "health", "events")

    model_format: ClassVar[str]
    """The one ``ModelArtifact.format`` this scorer loads."""
    format_error: ClassVar[type[Exception]]
    """Raised for a model of another format; this (or an OSError) from ``_load`` refuses it."""
    times_scoring: ClassVar[bool] = False
    """Time each ``_score`` call (into ``Window.scoring_s``); off unless a scorer reports it."""

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.threshold = args.get_float("threshold", None, min=0.0)
        self.window_s = duration_s(args, "window", "1m")
        self.max_events = args.get_int("max_events", 100, min=0)
        self.active: ActiveT | None = None
        self._refused: set[tuple[str, str, str]] = set()
        self._window: Window | None = None
        self.subject = f"{ctx.ion}/{ctx.pipeline}@{ctx.node_id}"
        self.clock: Callable[[], float] = time.time
        """Seconds since the epoch; tests replace it."""

    # -- what a subclass says --------------------------------------------------------------

    @abstractmethod
    def _load(self, artifact: ModelArtifact) -> ActiveT:
        """The model of ``artifact`` (of ``model_format``), ready to score."""

    @abstractmethod
    def _model_summary(self, active: ActiveT) -> str:
        """What the log line of a model swap says about the model, before its threshold."""

    @abstractmethod
    def _batch(self, item: Any) -> Batch:
        """One item of the ``data`` stream as a batch (TypeError for what is not data)."""

    @abstractmethod
    def _batches(self, data: Any) -> list[Batch]:
        """The ``data`` input of a batch pipeline as the batches to score one by one."""

    @abstractmethod
    def _score(self, active: ActiveT, batch: Batch) -> tuple[ScoresT, FloatArray, BoolArray]:
        """``batch`` scored by ``active``, with its histograms fed: the scores, the score per
        row, and which rows were scored (no feature missing)."""

    @abstractmethod
    def _describe(self, scored: ScoresT, rows: Rows) -> list[tuple[str, dict[str, str]]]:
        """Per anomalous row: the event's message and its first attributes (the model
        version, source, features and timestamp follow)."""

    @abstractmethod
    def _scalars(self, window: Window) -> dict[str, float]:
        """This scorer's own stats of ``window``, between ``missing`` and
        ``events_suppressed``."""

    # -- models ----------------------------------------------------------------------------

    def _use(self, artifact: ModelArtifact, feed: ModelFeed | None) -> list[Output]:
        """Switch to ``artifact`` unless it is the active one or was refused; the window of
        the previous model is closed first."""
        key = _key(artifact)
        if (self.active is not None and _key(self.active.artifact) == key) or key in self._refused:
            return []
        try:
            loaded = self._load_checked(artifact)
        except (self.format_error, OSError) as e:
            self._refused.add(key)
            self.log.warning("model %s refused: %s", artifact.version or artifact.path, e)
            if feed is not None:
                feed.accepted(artifact, False, str(e))
            elif self.active is None:
                raise  # a batch pipeline with an unusable model has nothing to do
            return []
        out = self._close_window() if self.active is not None else []
        previous = self.active
        self.active = loaded
        if previous is not None:
            self._window_at(self.clock()).swaps += 1
        if feed is not None:
            feed.accepted(artifact, True)
        self.log.info(
            "model %s active (%s, threshold %.4g)%s",
            artifact.version or artifact.model_id or artifact.path,
            self._model_summary(loaded),
            loaded.threshold,
            f", replacing {previous.artifact.version}" if previous is not None else "",
        )
        return out

    def _load_checked(self, artifact: ModelArtifact) -> ActiveT:
        if artifact.format != self.model_format:
            raise self.format_error(
                f"unknown model format {artifact.format!r} (want {self.model_format})"
            )
        return self._load(artifact)

    # -- scoring ---------------------------------------------------------------------------

    def score(self, batch: Batch) -> ScoresT | None:
        """Score one batch with the active model (None when there is none yet)."""
        active = self.active
        window = self._window_at(self.clock())
        window.batches += 1
        window.records += batch.rows
        if active is None:
            window.unscored += batch.rows
            return None
        if self.times_scoring:
            began = time.perf_counter()
            scored, score, ok = self._score(active, batch)
            window.scoring_s += time.perf_counter() - began
        else:
            scored, score, ok = self._score(active, batch)
        n = batch.rows
        good = int(np.count_nonzero(ok))
        window.scored += good
        window.missing += n - good
        window.anomalies += scored.anomalies
        if good:
            s = score if good == n else score[ok]
            window.score_sum += float(s.sum())
            window.score_max = max(window.score_max, float(s.max()))
        return scored

    def _events(self, scored: ScoresT) -> list[Output]:
        window = self._window
        assert window is not None
        if not scored.anomalies:
            return []
        rows = np.flatnonzero(scored.anomaly)
        room = max(self.max_events - window.events, 0)
        window.suppressed += max(len(rows) - room, 0)
        take = rows[:room]
        window.events += len(take)
        # Plain Python numbers before formatting: formatting numpy scalars is several times
        # slower, and an anomaly burst formats thousands of them.
        batch = scored.batch
        values = batch.values[take].tolist()
        stamps = None if batch.timestamps_ms is None else batch.timestamps_ms[take].tolist()
        names = [f"feature.{f}" for f in batch.features]
        described = self._describe(scored, take)
        out: list[Output] = []
        for n, (i, (message, own)) in enumerate(zip(take.tolist(), described, strict=True)):
            source = batch.source(i)
            attributes = {
                **own,
                "model_version": scored.model_version,
                "source": source,
                **{name: f"{v:.6g}" for name, v in zip(names, values[n], strict=True)},
            }
            if stamps is not None:
                attributes["ts_ms"] = str(int(stamps[n]))
            subject = f"{self.subject}/{source}" if source else self.subject
            out.append(("events", self._event("anomaly.detected", subject, message, attributes)))
        return out

    def _event(self, type_: str, subject: str, message: str, attributes: dict[str, str]) -> Event:
        return Event(
            type=type_,
            severity=Severity.WARNING,
            subject=subject,
            message=message,
            attributes=attributes,
            pipeline=self.ctx.pipeline,
            component=self.ctx.component,
        )

    # -- windows ---------------------------------------------------------------------------

    def _window_at(self, now: float) -> Window:
        if self._window is None:
            self._window = Window(now)
        return self._window

    def _due(self, now: float) -> bool:
        return self._window is not None and now >= self._window.start_s + self.window_s

    def _close_window(self) -> list[Output]:
        window, self._window = self._window, None
        if window is None:
            return []
        end = self.clock()
        active = self.active
        rate = window.anomalies / window.scored if window.scored else 0.0
        scalars = {
            "records": float(window.records),
            "scored": float(window.scored),
            "anomalies": float(window.anomalies),
            "anomaly_rate": rate,
            "unscored": float(window.unscored),
            "missing": float(window.missing),
            **self._scalars(window),
            "events_suppressed": float(window.suppressed),
            "model_swaps": float(window.swaps),
            "window_s": end - window.start_s,
        }
        metrics = tuple(Metric(k, v) for k, v in scalars.items() if not math.isnan(v))
        out: list[Output] = [
            ("stats", StatsReport(self.ctx.pipeline, self.ctx.component, scalars=metrics))
        ]
        if active is not None:
            art = active.artifact
            histograms = active.histograms.take() if active.histograms is not None else ()
            health = HealthReport(
                pipeline=self.ctx.pipeline,
                component=self.ctx.component,
                name="features",
                window_start_ms=int(window.start_s * 1000),
                window_end_ms=int(end * 1000),
                model_id=art.model_id,
                model_version=art.version,
                sample_count=window.scored,
                histograms=histograms,
                scalars=(Metric("anomaly_rate", rate),),
            )
            out.append(("health", health))
        if window.suppressed:
            message = (
                f"{window.suppressed} more anomalies in this window than the "
                f"{self.max_events} reported one by one"
            )
            count = {"count": str(window.suppressed)}
            out.append(("events", self._event("anomaly.suppressed", self.subject, message, count)))
        return out

    # -- the contract ----------------------------------------------------------------------

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[Output]:
        model_input: Any = inputs["model"]
        feed: ModelFeed | None = None
        if isinstance(model_input, ModelArtifact):
            yield from self._use(model_input, None)
        elif isinstance(model_input, ModelFeed):
            feed = model_input
        else:
            raise TypeError(
                "the model input must be a ModelFeed (streaming) or a ModelArtifact, "
                f"not {type(model_input).__name__}"
            )
        for item in inputs["data"]:
            batch = self._batch(item)
            if feed is not None:
                artifact = feed.latest()
                if artifact is not None:
                    yield from self._use(artifact, feed)
            if self._due(self.clock()):
                yield from self._close_window()
            if batch.rows == 0:
                continue  # a tick: it only closed a window
            scored = self.score(batch)
            if scored is not None:
                yield ("data", scored)
                yield from self._events(scored)
        yield from self._close_window()

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        artifact = inputs["model"]
        if isinstance(artifact, ModelFeed):
            artifact = artifact.latest()
        if not isinstance(artifact, ModelArtifact):
            raise TypeError(f"the model input must be a ModelArtifact, not {artifact!r}")
        self._use(artifact, None)
        scored: list[ScoresT] = []
        events: list[Event] = []
        for batch in self._batches(inputs["data"]):
            s = self.score(batch)
            if s is not None:
                scored.append(s)
                events.extend(e for _, e in self._events(s))
        out: dict[str, Any] = {"data": scored[0] if len(scored) == 1 else scored}
        for port, value in self._close_window():
            if port == "events":
                events.append(value)
            else:
                out[port] = value
        out["events"] = events
        return out
