"""``data_sampler`` and ``window_recorder``: how fresh readings reach a retrained model."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ion.catalog import builtin_catalog
from ion.model.definition import PipelineMode
from ion.model.event import DataRecords
from node.components.csv_source import read_csv
from node.components.python_builtins import PYTHON_BUILTINS
from node.components.recording import DataSampler, WindowRecorder
from node.components.values import Batch
from node.runner.component import Args, ArgsError, Context, StopSignal

FEATURES = ("temperature", "vibration")


@pytest.fixture
def stop() -> Iterator[StopSignal]:
    with StopSignal() as signal:
        yield signal


def ctx(work_dir: Path, stop: StopSignal) -> Context:
    return Context(
        ion="kmeans-anomaly",
        pipeline="recorder",
        component="c",
        node_id="cloud-1",
        version=1,
        mode=PipelineMode.STREAMING,
        work_dir=work_dir,
        bound_inputs=frozenset(),
        log=logging.getLogger("test.recording"),
        stop_signal=stop,
    )


def build(cls: Any, args: dict[str, Any], c: Context) -> Any:
    a = Args(args)
    component = cls(a, c)
    assert a.unread() == []
    return component


def batch(rows: int, start: float = 0.0) -> Batch:
    values = np.arange(rows * 2, dtype=np.float64).reshape(rows, 2) + start
    return Batch.of(FEATURES, values, timestamps_ms=np.arange(rows, dtype=np.int64) + 1000)


def records(rows: list[list[float]], columns: tuple[str, ...] = FEATURES) -> DataRecords:
    return DataRecords(columns=columns, values=tuple(v for r in rows for v in r))


def test_registered_and_catalogued() -> None:
    assert PYTHON_BUILTINS["data_sampler"] is DataSampler
    assert PYTHON_BUILTINS["window_recorder"] is WindowRecorder
    types = set(builtin_catalog().types())
    assert {"data_sampler", "window_recorder"} <= types


# -- data_sampler -------------------------------------------------------------------------------


def test_the_sampler_keeps_about_its_share_with_times(tmp_path: Path, stop: StopSignal) -> None:
    s = build(DataSampler, {"share": 0.25, "seed": 3}, ctx(tmp_path, stop))
    out = [s.sample(batch(100, 1000.0 * i)) for i in range(40)]
    kept = [r for r in out if r is not None]
    total = sum(r.row_count for r in kept)
    assert 800 < total < 1200  # 25 % of 4000
    first = kept[0]
    assert first.columns == FEATURES
    assert len(first.timestamps_ms) == first.row_count
    # Every row sent is a row of the input, whole.
    row = first.row(0)
    assert row[1] == row[0] + 1


def test_the_sampler_passes_everything_at_share_1_and_nothing_on_ticks(
    tmp_path: Path, stop: StopSignal
) -> None:
    s = build(DataSampler, {"share": 1.0, "columns": ["vibration"]}, ctx(tmp_path, stop))
    out = s.sample(batch(3))
    assert out is not None
    assert out.columns == ("vibration",)
    assert out.values == (1.0, 3.0, 5.0)
    assert s.sample(Batch.empty(FEATURES)) is None
    # A tap: the batch passes through (after its sample), ticks pass with no sample.
    one, tick = batch(1), Batch.empty(FEATURES)
    streamed = list(s.stream({"data": iter([one, tick])}))
    assert [port for port, _ in streamed] == ["sample", "data", "data"]
    assert streamed[0][1].row_count == 1
    assert streamed[1][1] is one
    assert streamed[2][1] is tick
    assert s.run({"data": one})["data"] is one


def test_the_sampler_refuses_bad_arguments_and_values(tmp_path: Path, stop: StopSignal) -> None:
    c = ctx(tmp_path, stop)
    with pytest.raises(ArgsError, match="share"):
        build(DataSampler, {"share": 0.0}, c)
    with pytest.raises(ArgsError, match="share"):
        build(DataSampler, {"share": 1.5}, c)
    with pytest.raises(TypeError, match="Batch"):
        build(DataSampler, {}, c).sample([1, 2])
    with pytest.raises(ArgsError, match="not in the data"):
        build(DataSampler, {"columns": ["rpm"], "share": 1.0}, c).sample(batch(2))


# -- window_recorder ----------------------------------------------------------------------------


def test_the_window_starts_from_the_seed_and_slides(tmp_path: Path, stop: StopSignal) -> None:
    seed = tmp_path / "window.csv"
    seed.write_text("temperature,vibration\n" + "".join(f"{i},{-i}\n" for i in range(10)))
    r = build(WindowRecorder, {"rows": 8, "interval": "1ms"}, ctx(tmp_path, stop))
    assert len(r.window) == 8  # the newest 8 of the seed
    r.take(records([[100.0, 200.0], [101.0, 201.0], [102.0, 202.0]]))
    r.write()
    data = read_csv(seed)
    assert data.features == FEATURES
    assert data.rows == 8
    assert data.values[-1].tolist() == [102.0, 202.0]
    assert data.values[0].tolist() == [5.0, -5.0]  # seed rows 0-4 pushed out
    # Columns in another order are matched by name; missing ones are skipped, not fatal.
    r.take(records([[300.0, 3.0]], ("vibration", "temperature")))
    r.take(records([[1.0]], ("rpm",)))
    r.take(DataRecords(payload=b"{}", content_type="application/json"))
    assert r.window[-1].tolist() == [3.0, 300.0]
    assert r.skipped == 2
    assert r.recorded == 4


def test_the_recorder_writes_atomically_at_most_every_interval(
    tmp_path: Path, stop: StopSignal
) -> None:
    r = build(WindowRecorder, {"path": "data/w.csv", "interval": "1h"}, ctx(tmp_path, stop))
    path = tmp_path / "data" / "w.csv"
    items = iter([batch(5), batch(5, 100.0)])
    out = list(r.stream({"data": items}))
    assert out == [None, None]  # not yet: the interval has not passed
    assert not path.exists()
    r.close()  # the end of the job writes what is left
    assert read_csv(path).rows == 10
    assert not list(tmp_path.glob("data/.*.tmp"))
    fast = build(WindowRecorder, {"path": "data/w.csv", "interval": "1ms"}, ctx(tmp_path, stop))
    assert fast.window.shape == (10, 2)
    threading.Event().wait(0.005)  # the 1 ms interval passes (no clock to inject here)
    [stats] = list(fast.stream({"data": iter([batch(1)])}))
    assert stats == {"window_rows": 11.0, "recorded_rows": 1.0, "skipped_rows": 0.0}


def test_the_recorder_stays_in_its_work_dir(tmp_path: Path, stop: StopSignal) -> None:
    for bad in ("../training/x.csv", "/etc/x.csv"):
        with pytest.raises(ArgsError, match="inside the work dir"):
            build(WindowRecorder, {"path": bad}, ctx(tmp_path, stop))
    with pytest.raises(ArgsError, match="rows"):
        build(WindowRecorder, {"rows": 0}, ctx(tmp_path, stop))


def test_batch_mode_records_and_writes(tmp_path: Path, stop: StopSignal) -> None:
    r = build(WindowRecorder, {}, ctx(tmp_path, stop))
    stats = r.run({"data": [batch(2), batch(3)]})
    assert stats["window_rows"] == 5.0
    assert read_csv(tmp_path / "window.csv").rows == 5


def test_max_age_keeps_recent_readings_by_their_own_time(tmp_path: Path, stop: StopSignal) -> None:
    seed = tmp_path / "window.csv"
    seed.write_text("temperature,vibration\n" + "".join(f"{i},{i}\n" for i in range(10)))
    args = {"rows": 100, "max_age": "10s", "min_rows": 4}
    r = build(WindowRecorder, args, ctx(tmp_path, stop))

    def at(times: list[int], value: float) -> DataRecords:
        rows = [[value, value]] * len(times)
        return DataRecords(FEATURES, tuple(v for row in rows for v in row), tuple(times))

    r.take(at([100_000, 101_000], 1.0))
    # The seed is older than any reading: pushed out by age, but min_rows are kept.
    assert len(r.window) == 4
    assert r.window[:2, 0].tolist() == [8.0, 9.0]
    r.take(at([105_000] * 3, 2.0))
    assert r.window[:, 0].tolist() == [1.0, 1.0, 2.0, 2.0, 2.0]
    # A reading 20 s newer ages out everything but itself and min_rows - 1 others.
    r.take(at([125_000], 3.0))
    assert r.window[:, 0].tolist() == [2.0, 2.0, 2.0, 3.0]
    # A late arrival takes its place in time (then ages out like the rest).
    r.take(at([124_000], 4.0))
    assert r.window[-2:, 0].tolist() == [4.0, 3.0]
    # Rows without times are taken as read when they arrive.
    r.take(records([[5.0, 5.0]]), now_ms=126_000)
    assert r.window[-1, 0] == 5.0
    assert r.times[-1] == 126_000
