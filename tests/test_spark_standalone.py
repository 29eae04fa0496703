"""Scale-out: the KMeans example's training pipeline on a Spark standalone cluster (a master
and one worker from the installed pyspark, on loopback ports, started and stopped by the
test), through the same spark engine adapter as in local mode; only ``master`` changes.

No agent: the SDK runs standalone and writes the publisher's request (the model directory
and its baseline) to ``ION_SDK_OUTPUT``, which then feeds the example's inference pipeline run
alone, as docs/engines.md shows."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
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
    info_of,
    plugin_dir,
    standalone_cluster,
)
from standalone_support import (
    REPO,
    bodies,
    emitted,
    example_pipeline,
    generate,
    stats_of,
    write_spec,
)

from ion.model.event import Event
from ion.model.manifest import ModelManifest
from node.components.kmeans_model import MODEL_FILE, KMeansModel
from node.engines.base import Outcome
from node.engines.process import output_log
from node.engines.spark_engine import EVENT_DIR, SparkJob
from node.models.artifact import artifact_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN_ROWS = 4000


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
async def test_the_examples_training_pipeline_runs_on_a_standalone_cluster(
    cluster: StandaloneCluster, jobs: Jobs, tmp_path: Path
) -> None:
    # examples/kmeans/ion.yaml's training pipeline as written (csv_source -> feature_histograms
    # + kmeans_train -> model_publisher), sized for a shared 2-core machine; only the master
    # and the memory differ from the example's engine_config.
    config = {
        **SMALL,
        "master": cluster.master_url,
        "spark.executor.memory": "512m",
        "spark.cores.max": "1",
        "spark.executor.defaultJavaOptions": QUICK_JVM,
    }
    pipeline, edges = example_pipeline("training", engine_config=config)
    assert [c.type for c in pipeline.components] == [
        "csv_source",
        "feature_histograms",
        "kmeans_train",
        "model_publisher",
    ]
    work = jobs.next_work_dir()
    # The example trains on the recorder pipeline's window of recent readings (its seed here).
    generate(work.parent / "recorder", "window", TRAIN_ROWS, seed=7)
    published = tmp_path / "published.jsonl"
    job = await jobs.start(pipeline, edges=edges, env={"ION_SDK_OUTPUT": str(published)})
    assert isinstance(job, SparkJob)
    async with asyncio.timeout(2 * SPARK_TIMEOUT_S):
        exit = await job.wait()
    assert exit.outcome is Outcome.SUCCEEDED, f"{exit.describe()}\n{cluster.logs()}"

    # It ran on the cluster: a standalone application the master lists as completed...
    app_id = info_of(work)["app_id"]
    assert app_id.startswith("app-"), app_id  # not local-...
    state = await asyncio.to_thread(cluster.state)
    completed = {app["id"]: app for app in state.get("completedapps", [])}
    assert app_id in completed, state
    assert completed[app_id]["name"] == "conformance/training"
    # ... whose tasks ran on the worker's executor, not in the driver (as in local mode).
    events = [json.loads(line) for line in (work / EVENT_DIR / app_id).read_text().splitlines()]
    executors = {e["Executor ID"] for e in events if e["Event"] == "SparkListenerExecutorAdded"}
    ran_on = {e["Task Info"]["Executor ID"] for e in events if e["Event"] == "SparkListenerTaskEnd"}
    assert executors and "driver" not in executors
    assert ran_on and ran_on <= executors
    stats = job.stats()
    assert stats is not None
    assert stats.values["spark.jobs.succeeded"] >= 3  # histograms, KMeans, silhouette, ...
    assert stats.values["spark.jobs.failed"] == 0
    assert stats.values["spark.executors.added"] == len(executors)

    # The publisher's output went to the SDK: one request naming a kmeans-json/1 model
    # directory, with the baseline histograms and the metrics the example's gate reads.
    ((edge, envelope),) = emitted(published)
    assert edge == "model"
    manifest = envelope.body
    assert isinstance(manifest, ModelManifest)
    assert manifest.format == "kmeans-json/1"
    model = artifact_of(manifest)
    assert model is not None
    assert model.path.is_dir() and model.path.parent == work / "models"
    loaded = KMeansModel.load(model.path / MODEL_FILE)
    assert loaded.k == 4
    assert len(loaded.features) == 6
    assert model.metrics["rows"] == TRAIN_ROWS
    assert model.metrics["silhouette"] > 0.2  # the example's gate
    assert [h.feature for h in model.baseline] == list(loaded.features)
    assert all(sum(h.counts) == TRAIN_ROWS for h in model.baseline)

    # That output is the inference pipeline's model input when it runs alone.
    generate(tmp_path / "alone" / "data", "test", 2000, seed=8)
    inference, ports = example_pipeline(
        "inference", replace={"sensors": ("csv_source", {"path": "data/test.csv"})}
    )
    spec = write_spec(tmp_path / "alone" / "inference.json", inference, ports)
    scores = tmp_path / "alone" / "scores.jsonl"
    env = {**os.environ, "ION_SDK_INPUT": str(published), "ION_SDK_OUTPUT": str(scores)}
    env["PYTHONPATH"] = str(REPO)
    env.pop("ION_AGENT_SOCKET", None)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "node.runner", "--spec", str(spec)],
        cwd=tmp_path / "alone",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    scored = stats_of(scores)
    assert scored["scored"] == 2000, scored
    assert 0.005 <= scored["anomaly_rate"] <= 0.03, scored
    assert "model.accepted" in {e.type for e in bodies(scores, Event)}
