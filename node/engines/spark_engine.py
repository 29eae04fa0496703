"""The ``spark`` engine: a pipeline submitted with spark-submit, driven by our runner.

The child is ``spark-submit --master M --conf ... node/engines/spark_driver.py --spec FILE``
(see ``spark_submit`` for the command and ``spark_driver`` for the program), in its own process
group like every job: spark-submit execs the driver's JVM, which starts the Python driver; in
local mode the executors are threads of that JVM, on a cluster they are the cluster's.

Exit statuses are the Python driver's (spark-submit passes them through) and map like the
python engine's: 0 succeeded, 2 start_failed (the runner rejected the spec; its
``ion-runner: error:`` lines are the reason), a signal killed, anything else failed.

Stop: SIGTERM to the Python driver alone first, so a streaming pipeline drains and the driver
stops Spark cleanly (the JVM exits by itself when its Python program ends); if the job has
not ended within the grace period, the whole group is killed (SIGKILL).  Signalling the JVM
together with the driver would run Spark's shutdown hooks under a draining pipeline.  Before
the driver has started (the JVM takes seconds), the group gets SIGTERM, grace, SIGKILL.

Statistics (``stats()``): the event log, the driver's REST API and the process tree, merged by
a watcher thread (``spark_monitor``); the names are listed in docs/engines.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from pathlib import Path

from node.runner import spec as runner_spec

from .base import JobExit, JobSpec, JobStartError, JobStats
from .jobfiles import child_env, write_runner_spec
from .process import ChildProcess, exit_from_status
from .spark_monitor import DEFAULT_INTERVAL_S, SparkMonitor
from .spark_submit import (
    Submission,
    check_java,
    command,
    driver_env,
    find_spark_submit,
    log4j_properties,
    parse_engine_config,
)

log = logging.getLogger(__name__)

SPEC_FILE = "pipeline.json"
INFO_FILE = "spark-driver.json"
LOG4J_FILE = "spark-log4j2.properties"
EVENT_DIR = "spark-events"
KEEP_EVENT_LOGS = 5
"""Event logs kept in a work dir: a restarting pipeline must not fill the disk with them."""


class SparkEngine:
    """Runs ``spark`` pipelines.

    ``spark_submit``: the spark-submit to run (default: ``$SPARK_HOME/bin/spark-submit``, else
    pyspark's own).  ``python``: the driver's interpreter (default: the agent's, so the driver
    sees the same installed components).  ``poll_interval_s``: how often statistics are read.
    """

    def __init__(
        self,
        spark_submit: str | os.PathLike[str] | None = None,
        *,
        python: str | os.PathLike[str] | None = None,
        poll_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._spark_submit = os.fspath(spark_submit) if spark_submit is not None else None
        self._python = os.fspath(python) if python is not None else sys.executable
        self._poll_interval_s = poll_interval_s

    @property
    def name(self) -> str:
        return "spark"

    def check_available(self) -> str | None:
        _, reason = find_spark_submit(self._spark_submit, os.environ)
        return reason or check_java(os.environ)

    async def start(self, job: JobSpec) -> SparkJob:
        if job.pipeline.engine != self.name:
            raise JobStartError(
                f"pipeline {job.pipeline.name!r} is for engine {job.pipeline.engine!r}, "
                f"not {self.name!r}"
            )
        try:
            settings = parse_engine_config(job.pipeline.engine_config)
        except ValueError as e:
            raise JobStartError(str(e)) from e
        env = child_env(job)
        spark_submit, reason = find_spark_submit(self._spark_submit, env)
        if spark_submit is None:
            raise JobStartError(reason)
        if (java_problem := check_java(env)) is not None:
            raise JobStartError(java_problem)
        env = driver_env(env, job.env, self._python)
        # Absolute: the child runs in the work dir, where a relative path would mean another.
        job = dataclasses.replace(job, work_dir=job.work_dir.absolute())
        work = job.work_dir
        sub = Submission(
            spark_submit=spark_submit,
            settings=settings,
            app_name=job.job_id,
            spec_path=work / SPEC_FILE,
            info_path=work / INFO_FILE,
            event_dir=work / EVENT_DIR,
            log4j_path=work / LOG4J_FILE,
            work_dir=work,
            loopback=env.get("SPARK_LOCAL_IP") == "127.0.0.1",
        )
        await asyncio.to_thread(_prepare, job, sub)
        started_ns = time.time_ns()
        child = await ChildProcess.spawn(
            command(sub),
            job_id=job.job_id,
            node_id=job.node_id,
            cwd=work,
            env=env,
            tail_lines=job.log_tail_lines,
        )
        monitor = SparkMonitor(
            leader_pid=child.pid,
            info_path=sub.info_path,
            event_dir=sub.event_dir,
            started_ns=started_ns,
            interval_s=self._poll_interval_s,
            job_id=job.job_id,
            node_id=job.node_id,
        )
        return SparkJob(child, monitor)


def _prepare(job: JobSpec, sub: Submission) -> None:
    """The job's files: runner spec, log4j config, event-log dir (Spark refuses to start
    without it), no stale driver info.  Blocking."""
    write_runner_spec(job, SPEC_FILE)
    try:
        sub.log4j_path.write_text(log4j_properties(sub.settings.log_level))
        sub.event_dir.mkdir(parents=True, exist_ok=True)
        sub.info_path.unlink(missing_ok=True)
        _prune_event_logs(sub.event_dir, KEEP_EVENT_LOGS - 1)
    except OSError as e:
        raise JobStartError(f"cannot prepare {sub.work_dir}: {e}") from e


def _prune_event_logs(directory: Path, keep: int) -> None:
    logs = sorted(
        (p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime_ns,
    )
    for old in logs[: max(len(logs) - keep, 0)]:
        with contextlib.suppress(OSError):
            old.unlink()
            old.with_name(f".{old.name}.crc").unlink(missing_ok=True)


class SparkJob:
    """A running Spark pipeline (implements ``RunningJob``)."""

    def __init__(self, child: ChildProcess, monitor: SparkMonitor) -> None:
        self._child = child
        self._monitor = monitor
        monitor.start()
        # Owns the end of the job: waits for the leader, then finishes the statistics and
        # reaps what is left.  It ends by itself with the job; wait() and stop() await it.
        self._ended = asyncio.get_running_loop().create_task(
            self._finish(), name=f"spark-job-end {child.job_id}"
        )

    @property
    def pid(self) -> int:
        return self._child.pid

    @property
    def app_id(self) -> str:
        """The Spark application id, once the driver created its context ("" before)."""
        return self._monitor.app_id

    async def wait(self) -> JobExit:
        return self._exit(await asyncio.shield(self._ended))

    async def stop(self, grace_s: float) -> JobExit:
        if not self._ended.done() and self._child.returncode is None:
            grace_s = max(grace_s, 0.0)
            deadline = time.monotonic() + grace_s
            try:
                driver = await asyncio.to_thread(self._monitor.driver_pid)
                if driver is not None:
                    signal_driver(driver, signal.SIGTERM)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(grace_s):
                            await asyncio.shield(self._ended)
            except asyncio.CancelledError:
                # Whoever cancels us will not wait out the grace period: make sure it dies.
                self._child.kill()
                raise
            if not self._ended.done():
                # The driver is known and overstayed: SIGKILL (a job that ignores its stop
                # request is killed, like any engine's).  Not known yet (the JVM is still
                # starting): the whole group gets SIGTERM and the grace period.
                await self._child.stop(max(deadline - time.monotonic(), 0.0))
        return self._exit(await asyncio.shield(self._ended))

    def stats(self) -> JobStats | None:
        return self._monitor.snapshot()

    async def _finish(self) -> int:
        status = await self._child.wait()
        try:
            await asyncio.to_thread(self._monitor.close)
        except Exception:
            log.exception(
                "%s: finishing the Spark statistics failed",
                self._child.job_id,
                extra={"pipeline_id": self._child.job_id, "node_id": self._child.node_id},
            )
        return status

    def _exit(self, status: int) -> JobExit:
        tail = self._child.tail()
        if status == runner_spec.EXIT_SPEC_ERROR:
            prefix = runner_spec.ERROR_PREFIX
            reasons = [line[len(prefix) :] for line in tail if line.startswith(prefix)]
            if not reasons:  # spark-submit's own complaint (a bad option, a missing file)
                reasons = [line for line in tail if line.strip()][-1:] or ["spec rejected"]
            return JobExit.start_failed("; ".join(reasons), tail)
        return exit_from_status(status, tail)


def signal_driver(pid: int, sig: signal.Signals) -> None:
    """Signal one process (the driver, checked to be in the job's group), and SIGCONT it, so
    a stopped driver gets to handle the signal."""
    for s in (sig, signal.SIGCONT):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, s)
