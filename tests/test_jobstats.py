"""Engine statistics of running jobs become the pipelines' stats telemetry."""

from __future__ import annotations

import asyncio

import pytest

from ion import topics
from ion.model.health import StatsReport
from ion.topics import Channel
from node.agent.jobstats import ENGINE_COMPONENT, JobStatsLoop, engine_report, progress_of
from node.engines.base import JobExit, JobStats


class _Job:
    def __init__(self, stats: JobStats | None) -> None:
        self.current = stats
        self.pid = 1

    async def wait(self) -> JobExit:
        raise NotImplementedError

    async def stop(self, grace_s: float) -> JobExit:
        raise NotImplementedError

    def stats(self) -> JobStats | None:
        return self.current


def test_spark_counts_become_progress() -> None:
    p = progress_of(
        {
            "spark.jobs.started": 3,
            "spark.jobs.succeeded": 2,
            "spark.stages.submitted": 5,
            "spark.stages.completed": 4,
            "spark.active.tasks_total": 8,
            "spark.active.tasks_completed": 6,
            "spark.tasks.completed": 40,
        }
    )
    assert p is not None
    assert (p.jobs_total, p.jobs_done, p.stages_total, p.stages_done) == (3, 2, 5, 4)
    assert (p.tasks_total, p.tasks_done) == (8, 6)


def test_tensorflow_step_and_plain_values() -> None:
    tf = progress_of({"step": 120.0, "epoch_loss": 0.3})
    assert tf is not None
    assert tf.step == 120
    assert progress_of({"process.cpu_seconds": 1.0}) is None


def test_report_carries_every_value_sorted() -> None:
    r = engine_report("training", JobStats(5, {"b": 2.0, "a": 1.0}))
    assert r.component == ENGINE_COMPONENT
    assert [(m.name, m.value) for m in r.scalars] == [("a", 1.0), ("b", 2.0)]


@pytest.mark.asyncio
async def test_loop_publishes_only_what_changed() -> None:
    job = _Job(JobStats(1, {"spark.jobs.started": 1.0}))
    quiet = _Job(None)
    sent: list[tuple[str, StatsReport]] = []

    async def publish(topic: str, body: StatsReport) -> None:
        sent.append((topic, body))

    jobs = {("kmeans", "training"): job, ("kmeans", "alerts"): quiet}
    loop = JobStatsLoop(node_id="cloud-1", jobs=lambda: jobs, publish=publish, interval_s=0.01)
    assert await loop.publish_changed() == 1
    assert sent[0][0] == topics.pipeline("kmeans", "training", Channel.STATS, "cloud-1")
    assert await loop.publish_changed() == 0  # same sample: nothing new
    job.current = JobStats(2, {"spark.jobs.started": 2.0})
    assert await loop.publish_changed() == 1
    assert sent[-1][1].progress is not None
    assert sent[-1][1].progress.jobs_total == 2
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
