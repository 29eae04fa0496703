"""Fresh training data for a model that retrains itself: ``data_sampler`` and ``window_recorder``.

A model retrained on drift must learn the regime the edge sees now, so training needs recent
live readings, not the data set it started from.  The two halves:

- ``data_sampler`` (edge, streaming): a tap on the data path.  Every ``Batch`` it receives
  passes through unchanged on ``data`` (to the scorer), and a random ``share`` of its rows
  leaves on ``sample`` (as ``DataRecords``: columns, values, times), normally along an ION
  ``data`` edge to the cloud.  Raw readings leave the edge only in this deliberate, bounded
  sample.  A tap, not a second consumer beside the scorer: the runner pulls a pipeline's
  sinks in turn, and a sink that yields once per batch beside one that yields once per
  health window would be pulled ten times less often than its input arrives.
- ``window_recorder`` (cloud, streaming): the training set as a sliding window.  It keeps the
  newest ``rows`` rows of everything it receives in a CSV file (``path`` in its work dir), and
  with ``max_age`` only rows read within ``max_age`` of the newest one (by the readings' own
  times, else their arrival), but never fewer than ``min_rows``.  Reading time, not arrival
  time and not a row count, is what says "recent" when edges lag behind their sensors or
  report at rates nobody planned for.  The file holds the features only (the times stay in
  memory: a time column would become a feature), and is
  rewritten atomically (a temporary file renamed over it) at most every ``interval``, so a
  reader sees a whole file, old or new, never half of one.  A file already there when it
  starts (the seed data set, or the window of an earlier run) is the start of the window,
  older than any live row: live rows push it out.  The training pipeline reads that file
  (``csv_source`` with ``path: ../<recorder pipeline>/<path>``).  Rows whose columns do not
  match the window's are counted and skipped (a bad sender must not crash the recorder).
  It reports ``window_rows`` and ``recorded_rows`` as stats when it writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ion.model.event import DataRecords
from node.runner.component import Args, ArgsError, Component, Context

from .common import duration_s, output_path, str_list
from .csv_source import read_csv
from .values import Batch, FloatArray, IntArray

_OLDEST = np.iinfo(np.int64).min // 2  # rows of a file found at start: older than any reading


class DataSampler(Component):
    input_ports = ("data",)
    output_ports = ("data", "sample")

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.share = args.get_float("share", 0.1, min=0.0, max=1.0)
        if self.share <= 0.0:
            raise ArgsError("argument 'share' must be above 0")
        seed = args.get_int("seed", None)
        self.columns = str_list(args, "columns")
        self._rng = np.random.default_rng(seed)
        self.sampled = 0

    def sample(self, batch: Any) -> DataRecords | None:
        if not isinstance(batch, Batch):
            raise TypeError(f"data_sampler takes Batch values, not {type(batch).__name__}")
        if batch.rows == 0:
            return None  # a tick: nothing to send
        features = self.columns or batch.features
        unknown = [c for c in features if c not in batch.features]
        if unknown:
            raise ArgsError(f"columns not in the data: {', '.join(unknown)}")
        keep = self._rng.random(batch.rows) < self.share
        if not keep.any():
            return None
        values = batch.columns(features)[keep]
        times: tuple[int, ...] = ()
        if batch.timestamps_ms is not None:
            times = tuple(int(t) for t in batch.timestamps_ms[keep])
        self.sampled += int(keep.sum())
        return DataRecords(
            columns=tuple(features),
            values=tuple(float(v) for v in values.ravel()),
            timestamps_ms=times,
        )

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        batch = inputs["data"]
        return {"data": batch, "sample": self.sample(batch)}

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[tuple[str, Any]]:
        for batch in inputs["data"]:
            records = self.sample(batch)
            if records is not None:
                yield ("sample", records)
            yield ("data", batch)


def _rows_of(item: Any) -> tuple[tuple[str, ...], FloatArray]:
    if isinstance(item, Batch):
        return item.features, item.values
    if isinstance(item, DataRecords):
        if not item.columns:
            raise ValueError("data records without columns")
        width = len(item.columns)
        values = np.asarray(item.values, dtype=np.float64).reshape(item.row_count, width)
        return item.columns, values
    raise ValueError(
        f"window_recorder takes DataRecords or Batch values, not {type(item).__name__}"
    )


def _times_of(item: Any, rows: int, now_ms: int | None) -> IntArray:
    """When each row was read: its own time when it carries one, else now (its arrival)."""
    given = item.timestamps_ms if isinstance(item, Batch | DataRecords) else None
    if given is not None and len(given) == rows:
        return np.asarray(given, dtype=np.int64)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return np.full(rows, now, dtype=np.int64)


class WindowRecorder(Component):
    input_ports = ("data",)
    output_ports = ("stats",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.path = output_path(ctx, args.get_str("path", "window.csv"))
        self.max_rows = args.get_int("rows", 5000, min=1, max=10_000_000)
        self.interval_s = duration_s(args, "interval", "10s")
        # No max_age: no age limit (rows alone bound the window).
        age = args.get("max_age")
        self.max_age_ms = None if age is None else round(duration_s(args, "max_age", "1m") * 1000)
        self.min_rows = args.get_int("min_rows", 0, min=0, max=10_000_000)
        self.columns: tuple[str, ...] = ()
        self.window: FloatArray = np.zeros((0, 0))
        self.times: IntArray = np.zeros(0, dtype=np.int64)  # per row; loaded rows: _OLDEST
        self.recorded = 0
        self.skipped = 0
        self._dirty = False
        self._written_at = time.monotonic()
        if self.path.exists():
            start = read_csv(self.path)
            self.columns = start.features
            self.window = start.values[-self.max_rows :]
            self.times = np.full(len(self.window), _OLDEST, dtype=np.int64)
            self.log.info("window starts with %d rows of %s", len(self.window), self.path)

    def take(self, item: Any, now_ms: int | None = None) -> None:
        try:
            columns, values = _rows_of(item)
            times = _times_of(item, len(values), now_ms)
        except ValueError as exc:
            self.skipped += 1
            self.log.warning("skipped: %s", exc)
            return
        if not self.columns:
            self.columns = columns
            self.window = np.zeros((0, len(columns)))
        if columns != self.columns:
            index = {c: j for j, c in enumerate(columns)}
            missing = [c for c in self.columns if c not in index]
            if missing:
                self.skipped += len(values)
                self.log.warning("skipped %d rows without column(s) %s", len(values), missing)
                return
            values = values[:, [index[c] for c in self.columns]]
        if not len(values):
            return
        window = np.concatenate([self.window, values])
        stamps = np.concatenate([self.times, times])
        order = np.argsort(stamps, kind="stable")  # late arrivals take their place in time
        window, stamps = window[order][-self.max_rows :], stamps[order][-self.max_rows :]
        drop = 0
        if self.max_age_ms is not None:
            old = stamps < stamps[-1] - self.max_age_ms
            drop = min(int(old.sum()), max(len(stamps) - self.min_rows, 0))
        self.window, self.times = window[drop:], stamps[drop:]
        self.recorded += len(values)
        self._dirty = True

    def write(self) -> None:
        """The window to ``path``, atomically (write a temporary file, rename it over)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            np.savetxt(
                f, self.window, fmt="%.6g", delimiter=",", header=",".join(self.columns),
                comments="",
            )  # fmt: skip
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._dirty = False
        self._written_at = time.monotonic()

    def _stats(self) -> dict[str, float]:
        return {
            "window_rows": float(len(self.window)),
            "recorded_rows": float(self.recorded),
            "skipped_rows": float(self.skipped),
        }

    def run(self, inputs: Mapping[str, Any]) -> dict[str, float]:
        value = inputs["data"]
        for item in value if isinstance(value, list | tuple) else [value]:
            self.take(item)
        if self._dirty:
            self.write()
        return self._stats()

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[dict[str, float] | None]:
        for item in inputs["data"]:
            self.take(item)
            if self._dirty and time.monotonic() - self._written_at >= self.interval_s:
                self.write()
                yield self._stats()
            else:
                yield None

    def close(self) -> None:
        if self._dirty and self.columns:
            self.write()
