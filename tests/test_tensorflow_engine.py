"""The tensorflow engine with real child processes: the conformance suite, TensorBoard scalars
tailed while a real Keras model trains, a missing TensorFlow, and engine_config."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from engine_conformance import EngineConformance, Jobs, group_alive, until
from tf_support import (
    BATCH,
    TINY_MODEL,
    TensorFlowCase,
    child_env,
    comp,
    normal_readings,
    plugin_dir,
    tf_pipe,
    write_csv,
)

from ion.model.definition import PipelineMode
from node.engines import tensorflow_engine, tf_driver
from node.engines.base import JobStartError, JobStats, Outcome
from node.engines.process import output_log
from node.engines.tensorflow_engine import (
    TENSORBOARD_ENV,
    TensorFlowEngine,
    TensorFlowJob,
    engine_config_env,
    new_run_dir,
)

pytestmark = pytest.mark.integration  # real child processes throughout


@pytest.fixture(scope="session")
def tf_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return plugin_dir(tmp_path_factory.mktemp("tf-plugins"))


@pytest.fixture
def tf_case(tmp_path: Path, tf_plugins: Path) -> TensorFlowCase:
    return TensorFlowCase(work_root=tmp_path, env=child_env(tf_plugins))


class TestTensorFlowConformance(EngineConformance):
    @pytest.fixture
    def case(self, tf_case: TensorFlowCase) -> TensorFlowCase:
        return tf_case


@pytest_asyncio.fixture
async def jobs(tf_case: TensorFlowCase, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Jobs]:
    caplog.set_level(logging.INFO, logger=output_log.name)
    jobs = Jobs(tf_case)
    try:
        yield jobs
    finally:
        leaked = await jobs.cleanup()
    assert not leaked, f"process groups outlived their jobs: {leaked}"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_tensorboard_scalars_arrive_while_a_model_trains(jobs: Jobs) -> None:
    pipeline = tf_pipe(
        "train",
        BATCH,
        comp("read", "test_csv", {"path": "data.csv"}),
        # Far more epochs than the test waits for: it stops the job mid-training.
        comp("fit", "keras_autoencoder_train", {**TINY_MODEL, "epochs": 100_000}, "data=read.data"),
    )
    spec = jobs.spec(pipeline)
    write_csv(spec.work_dir / "data.csv", normal_readings(400, np.random.default_rng(3)))
    job = await TensorFlowEngine().start(spec)
    jobs.started.append(job)
    assert isinstance(job, TensorFlowJob)

    def scalars() -> JobStats | None:
        stats = job.stats()
        return stats if stats is not None and "epoch_loss" in stats.values else None

    await until(scalars, within_s=90.0)
    first = scalars()
    assert first is not None
    assert {"epoch_loss", "epoch_val_loss", "step", "process.rss_bytes"} <= set(first.values)
    assert first.values["epoch_loss"] > 0
    # Incremental: later epochs show up in the same job's statistics, still training.
    await until(lambda: (s := scalars()) is not None and s.values["step"] > first.values["step"])
    assert job.tensorboard_dir.parent == spec.work_dir / "tensorboard"
    assert any(job.tensorboard_dir.glob("*tfevents*"))
    exit = await job.stop(5.0)
    assert exit.outcome in (Outcome.FAILED, Outcome.KILLED), exit.describe()  # interrupted
    assert not group_alive(job.pid)
    # The statistics stay readable after the end (the agent may ask once more).
    after = job.stats()
    assert after is not None
    assert after.values["step"] >= first.values["step"]


@pytest.mark.asyncio
async def test_a_pipeline_for_another_engine_is_refused(jobs: Jobs) -> None:
    pipeline = tf_pipe("other", BATCH, comp("src", "counter_source", {"count": 1}))
    with pytest.raises(JobStartError, match="is for engine 'python'"):
        await jobs.start(dataclasses.replace(pipeline, engine="python"))


@pytest.mark.asyncio
async def test_unknown_engine_config_is_refused_before_starting(jobs: Jobs) -> None:
    pipeline = tf_pipe(
        "config", BATCH, comp("src", "counter_source", {"count": 1}), config={"gpus": "2"}
    )
    with pytest.raises(JobStartError, match=r"unknown engine_config key.*gpus"):
        await jobs.start(pipeline)


@pytest.mark.asyncio
async def test_engine_config_and_tensorboard_dir_reach_the_child(jobs: Jobs) -> None:
    pipeline = tf_pipe(
        "env",
        BATCH,
        comp("e", "env_echo"),
        config={"intra_op_threads": "2", "inter_op_threads": "1", "log_level": "3"},
    )
    exit = await jobs.run(pipeline)
    assert exit.ok, exit.describe()
    env = dict(line.split("=", 1) for line in exit.tail if "=" in line)
    assert env["TF_NUM_INTRAOP_THREADS"] == "2"
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["TF_NUM_INTEROP_THREADS"] == "1"
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert env["KERAS_BACKEND"] == "tensorflow"
    board = Path(env[TENSORBOARD_ENV])
    assert board.parent == jobs.case.work_root / "job1" / "tensorboard"
    assert board.is_dir()


def test_engine_config_values_are_checked() -> None:
    assert engine_config_env({}) == {}
    assert engine_config_env({"log_level": "0"}) == {"TF_CPP_MIN_LOG_LEVEL": "0"}
    for bad in ({"intra_op_threads": "0"}, {"inter_op_threads": "many"}, {"log_level": "4"}):
        with pytest.raises(JobStartError, match="must be a whole number"):
            engine_config_env(bad)


def test_run_directories_are_fresh_and_old_ones_pruned(tmp_path: Path) -> None:
    runs = [new_run_dir(tmp_path, keep=2) for _ in range(4)]
    assert len(set(runs)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in runs[-2:])
    assert runs == sorted(runs)  # names sort in start order


def test_missing_tensorflow_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tf_case: TensorFlowCase
) -> None:
    monkeypatch.setattr(tensorflow_engine, "tensorflow_installed", lambda: False)
    reason = TensorFlowEngine().check_available()
    assert reason == "tensorflow is not installed; pip install 'ion-runtime[tensorflow]'"
    pipeline = tf_pipe("never", BATCH, comp("src", "counter_source", {"count": 1}))
    spec = Jobs(tf_case).spec(pipeline)
    with pytest.raises(JobStartError, match="tensorflow is not installed"):
        asyncio.run(TensorFlowEngine().start(spec))
    assert not spec.work_dir.exists()  # refused before anything was written


def test_the_child_rejects_the_job_when_tensorflow_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tf_driver.importlib.util, "find_spec", lambda name: None)
    assert tf_driver.main(["--spec", "never-read.json"]) == 2
    assert capsys.readouterr().err == (
        "ion-runner: error: tensorflow is not installed; pip install 'ion-runtime[tensorflow]'\n"
    )


@pytest.mark.asyncio
async def test_training_in_a_streaming_pipeline_is_refused_before_it_runs(jobs: Jobs) -> None:
    pipeline = tf_pipe(
        "streaming-fit",
        PipelineMode.STREAMING,
        comp("src", "counter_source", {"rate": 10.0}),
        comp("fit", "keras_autoencoder_train", {}, "data=src.out"),
    )
    exit = await jobs.run(pipeline)
    assert exit.outcome is Outcome.START_FAILED, exit.describe()
    assert "has no stream()" in exit.reason
