"""The spark engine against a Spark standalone cluster: a master and one worker from the
installed pyspark, on loopback ports, started and stopped by the test."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from engine_conformance import Jobs
from spark_support import (
    QUICK_JVM,
    SMALL,
    SPARK_TIMEOUT_S,
    SparkCase,
    StandaloneCluster,
    child_pythonpath,
    comp,
    info_of,
    plugin_dir,
    spark_pipe,
    standalone_cluster,
)

from ion.model.definition import PipelineMode
from node.engines.base import Outcome
from node.engines.process import output_log
from node.engines.spark_engine import EVENT_DIR, SparkJob

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[StandaloneCluster]:
    with standalone_cluster(tmp_path / "cluster") as running:
        yield running


@pytest_asyncio.fixture
async def jobs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Jobs]:
    caplog.set_level(logging.INFO, logger=output_log.name)
    plugins = plugin_dir(tmp_path / "plugins")
    jobs = Jobs(SparkCase(tmp_path / "jobs", env={"PYTHONPATH": child_pythonpath(plugins)}))
    try:
        yield jobs
    finally:
        leaked = await jobs.cleanup()
    assert not leaked, f"process groups outlived their jobs: {leaked}"


@pytest.mark.asyncio
async def test_a_pipeline_runs_on_a_standalone_cluster(
    cluster: StandaloneCluster, jobs: Jobs
) -> None:
    config = {
        **SMALL,
        "master": cluster.master_url,
        "spark.executor.memory": "512m",
        "spark.cores.max": "1",
        "spark.executor.defaultJavaOptions": QUICK_JVM,
    }
    pipeline = spark_pipe(
        "on-cluster",
        PipelineMode.BATCH,
        comp("sum", "spark_sum", {"count": 5000, "partitions": 2, "echo_conf": "spark.master"}),
        config=config,
    )
    job = await jobs.start(pipeline)
    assert isinstance(job, SparkJob)
    async with asyncio.timeout(SPARK_TIMEOUT_S):
        exit = await job.wait()
    assert exit.outcome is Outcome.SUCCEEDED, f"{exit.describe()}\n{cluster.logs()}"
    assert f"conf spark.master={cluster.master_url}" in exit.tail
    assert "sum 12497500" in exit.tail
    app_id = info_of(jobs.case.work_root / "job1")["app_id"]
    assert app_id.startswith("app-")  # a standalone application, not local-...
    # The master ran it: it lists the application as completed, with our name.
    state = await asyncio.to_thread(cluster.state)
    completed = {app["id"]: app for app in state.get("completedapps", [])}
    assert app_id in completed, state
    assert completed[app_id]["name"] == "conformance/on-cluster"
    # Its tasks ran on the worker's executor, not in the driver (as they do in local mode).
    events = [json.loads(line) for line in event_log(jobs.case.work_root / "job1", app_id)]
    executors = {e["Executor ID"] for e in events if e["Event"] == "SparkListenerExecutorAdded"}
    ran_on = {e["Task Info"]["Executor ID"] for e in events if e["Event"] == "SparkListenerTaskEnd"}
    assert executors and "driver" not in executors
    assert ran_on and ran_on <= executors
    stats = job.stats()
    assert stats is not None
    assert stats.values["spark.executors.added"] == len(executors)
    assert stats.values["spark.tasks.completed"] >= 2
    assert stats.values["spark.records.read"] == 5000


def event_log(work_dir: Path, app_id: str) -> list[str]:
    return (work_dir / EVENT_DIR / app_id).read_text().splitlines()
