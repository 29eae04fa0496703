"""Engine statistics of running jobs, published as the pipelines' stats telemetry.

Each engine adapter collects what its jobs report on their own (Spark: event log, REST API,
process tree; TensorFlow: TensorBoard scalars; every engine: CPU and memory of the job's
processes).  This loop samples them every few seconds and publishes what changed as a
``StatsReport`` from component ``engine`` on the pipeline's stats topic, so the monitor,
``ion events`` and the demo see a Spark job's progress while it runs, with no component code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from ion import topics
from ion.errors import IonError
from ion.model.health import JobProgress, Metric, StatsReport
from ion.topics import Channel
from node.engines.base import JobStats, RunningJob
from node.reconcile import PipelineKey

log = logging.getLogger(__name__)

ENGINE_COMPONENT = "engine"
DEFAULT_INTERVAL_S = 5.0

Publish = Callable[[str, StatsReport], Awaitable[None]]


def _int(values: Mapping[str, float], key: str) -> int:
    return int(values.get(key, 0.0))


def progress_of(values: Mapping[str, float]) -> JobProgress | None:
    """Spark's job/stage/task counts or TensorFlow's step, as a ``JobProgress``."""
    if any(k.startswith("spark.") for k in values):
        started = _int(values, "spark.jobs.started")
        finished = _int(values, "spark.jobs.succeeded") + _int(values, "spark.jobs.failed")
        stages = _int(values, "spark.stages.submitted")
        stages_done = _int(values, "spark.stages.completed") + _int(values, "spark.stages.failed")
        return JobProgress(
            jobs_total=started,
            jobs_done=finished,
            stages_total=stages,
            stages_done=stages_done,
            # The active jobs' tasks (REST API) when known, else the tasks the log has seen.
            tasks_total=_int(values, "spark.active.tasks_total")
            or _int(values, "spark.tasks.completed"),
            tasks_done=_int(values, "spark.active.tasks_completed")
            or _int(values, "spark.tasks.completed"),
        )
    if "step" in values:
        return JobProgress(step=_int(values, "step"))
    return None


def engine_report(pipeline: str, stats: JobStats) -> StatsReport:
    """One sample of a job's engine statistics as the pipeline's stats report."""
    scalars = tuple(Metric(name, float(value)) for name, value in sorted(stats.values.items()))
    return StatsReport(
        pipeline=pipeline,
        component=ENGINE_COMPONENT,
        scalars=scalars,
        progress=progress_of(stats.values),
    )


class JobStatsLoop:
    """Publishes each running job's engine statistics when they changed since the last look."""

    def __init__(
        self,
        *,
        node_id: str,
        jobs: Callable[[], Mapping[PipelineKey, RunningJob]],
        publish: Publish,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._node_id = node_id
        self._jobs = jobs
        self._publish = publish
        self._interval = interval_s
        self._sent: dict[PipelineKey, int] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.publish_changed()

    async def publish_changed(self) -> int:
        """One round; returns how many reports went out."""
        jobs = self._jobs()
        for gone in set(self._sent) - set(jobs):
            del self._sent[gone]
        sent = 0
        for (ion, pipeline), job in jobs.items():
            stats = job.stats()
            if stats is None or not stats.values:
                continue
            if self._sent.get((ion, pipeline)) == stats.updated_ms:
                continue
            self._sent[(ion, pipeline)] = stats.updated_ms
            topic = topics.pipeline(ion, pipeline, Channel.STATS, self._node_id)
            try:
                await self._publish(topic, engine_report(pipeline, stats))
            except IonError as exc:  # a full outbox class, a stopping agent: next round
                log.debug("engine stats of %s/%s not published: %s", ion, pipeline, exc)
                continue
            sent += 1
        return sent
