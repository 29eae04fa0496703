"""The conformance suite every engine adapter passes, with real child processes.

To add an adapter, subclass ``EngineConformance`` in its test module and give it a ``case``
fixture returning an ``EngineCase`` (parametrise the fixture to run several configurations)::

    class TestSparkConformance(EngineConformance):
        @pytest.fixture
        def case(self, tmp_path): return SparkCase(tmp_path)

An ``EngineCase`` supplies the adapter, the same adapter pointed at an engine that is not
installed, and pipelines for each scenario in that engine's own terms.  Every job a test
starts must be gone, with its whole process group, by the end of the test.

How long a job may take to start and show its first output is the case's
``start_timeout_s`` (default ``START_TIMEOUT_S``): a python child prints within a second, a
Spark driver first creates its session, which takes 4-15 s on a small shared machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest
import pytest_asyncio

from ion.model.definition import Pipeline
from node.engines.base import Engine, JobExit, JobSpec, JobStartError, Outcome, RunningJob
from node.engines.process import output_log

START_TIMEOUT_S = 15.0
"""The default ``EngineCase.start_timeout_s``."""


class EngineCase(Protocol):
    """One engine adapter, described for the suite."""

    name: str
    work_root: Path
    env: Mapping[str, str]
    """Environment for every job (for example where test components are installed)."""
    stop_grace_s: float
    """Enough for the engine to shut down cleanly on SIGTERM."""
    # start_timeout_s: float, optional (see ``start_timeout``): not declared here, so cases
    # that do not need it stay valid implementations of the protocol.

    def engine(self) -> Engine: ...

    def missing_engine(self) -> Engine:
        """The same adapter configured with an engine program that does not exist."""
        ...

    def printing(self, marker: str) -> Pipeline:
        """A batch pipeline that writes ``marker`` to its output and exits 0."""
        ...

    def long_running(self, marker: str) -> Pipeline:
        """A pipeline that keeps writing ``marker`` lines until it is stopped."""
        ...

    def crashing(self, code: int, marker: str) -> Pipeline:
        """A pipeline that writes ``marker`` and exits with status ``code``."""
        ...

    def bad_arguments(self) -> tuple[Pipeline, str]:
        """A pipeline with an invalid argument, and text the failure must mention."""
        ...

    def unknown_component(self) -> tuple[Pipeline, str]:
        """A pipeline naming a component that does not exist, and text the failure mentions."""
        ...

    def ignoring_sigterm(self) -> Pipeline:
        """A pipeline that ignores SIGTERM and then writes ``ignoring SIGTERM``."""
        ...


def group_alive(pgid: int) -> bool:
    """Does any process of the group still run?  Zombies do not count: once killed, a
    grandchild is reaped by whoever inherits it, which may take a moment."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: the kernel's answer, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            return True
    return False


def gone(pid: int) -> bool:
    """Not running.  A killed grandchild is a zombie until whoever inherited it reaps it: when
    that is us (the test session may be a subreaper), reap it here; init's zombies count as
    gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] != "Z":
        return False
    # A zombie: reap it when it is ours (waitpid after reading the state: reaping first and
    # then finding it a zombie left ours unreaped for the session's leak check).
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return int(fields[1]) != os.getpid()  # init's (or someone's) zombie: gone for us
    with contextlib.suppress(FileNotFoundError):
        Path(f"/proc/{pid}/stat").read_text()
        return False  # not reaped yet: look again
    return True


def start_timeout(case: object) -> float:
    """The case's ``start_timeout_s``, or ``START_TIMEOUT_S`` when it sets none."""
    value = getattr(case, "start_timeout_s", START_TIMEOUT_S)
    return float(value)


class Jobs:
    """Starts jobs for a test and guarantees none survives it."""

    def __init__(self, case: EngineCase) -> None:
        self.case = case
        self.started: list[RunningJob] = []
        self._n = 0

    @property
    def start_timeout_s(self) -> float:
        return start_timeout(self.case)

    def spec(self, pipeline: Pipeline, **kw: Any) -> JobSpec:
        """The job's spec in the next work dir; ``kw`` are more ``JobSpec`` fields (``edges``,
        ``env`` added to the case's)."""
        self._n += 1
        work_dir = self.case.work_root / f"job{self._n}"
        env = {**self.case.env, **kw.pop("env", {})}
        return JobSpec(
            ion="conformance",
            pipeline=pipeline,
            node_id="node-1",
            work_dir=work_dir,
            env=env,
            **kw,
        )

    def next_work_dir(self) -> Path:
        """Where the next job started will run (to put its input files there first)."""
        return self.case.work_root / f"job{self._n + 1}"

    async def start(
        self, pipeline: Pipeline, engine: Engine | None = None, **kw: Any
    ) -> RunningJob:
        job = await (engine or self.case.engine()).start(self.spec(pipeline, **kw))
        self.started.append(job)
        return job

    async def run(self, pipeline: Pipeline, **kw: Any) -> JobExit:
        """Start ``pipeline`` and wait for it to end, within the case's start timeout."""
        job = await self.start(pipeline, **kw)
        async with asyncio.timeout(self.start_timeout_s):
            return await job.wait()

    async def cleanup(self) -> list[int]:
        """Stop everything still running; the pids whose process group outlived its job."""
        leaked = []
        for job in self.started:
            await job.stop(0.5)
            if group_alive(job.pid):
                leaked.append(job.pid)
                os.killpg(job.pid, signal.SIGKILL)
        return leaked


async def until(predicate: Callable[[], object], within_s: float = START_TIMEOUT_S) -> None:
    """Poll an outside process's visible effects until ``predicate()`` holds."""
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - the condition lives in another process
            await asyncio.sleep(0.02)


async def wait_for_output(
    caplog: pytest.LogCaptureFixture, job_id: str, text: str, within_s: float = START_TIMEOUT_S
) -> None:
    """Until a line containing ``text`` was logged for the job (its pipeline id)."""

    def seen() -> bool:
        return any(
            getattr(r, "pipeline_id", None) == job_id and text in r.getMessage()
            for r in caplog.records
        )

    try:
        await until(seen, within_s)
    except TimeoutError:
        pytest.fail(f"no output containing {text!r} from {job_id} within {within_s:g}s")


@pytest.mark.integration
class EngineConformance:
    @pytest.fixture
    def case(self) -> EngineCase:
        raise NotImplementedError("an adapter's test module provides the case fixture")

    @pytest_asyncio.fixture
    async def jobs(self, case: EngineCase, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Jobs]:
        caplog.set_level(logging.INFO, logger=output_log.name)
        jobs = Jobs(case)
        try:
            yield jobs
        finally:
            leaked = await jobs.cleanup()
        assert not leaked, f"process groups outlived their jobs: {leaked}"

    def test_available(self, case: EngineCase) -> None:
        engine = case.engine()
        assert isinstance(engine, Engine)
        assert engine.check_available() is None
        assert engine.name == case.name

    @pytest.mark.asyncio
    async def test_missing_engine_is_a_clear_error(self, case: EngineCase, jobs: Jobs) -> None:
        missing = case.missing_engine()
        reason = missing.check_available()
        assert reason, "check_available must say why the engine cannot run"
        with pytest.raises(JobStartError) as failure:
            await jobs.start(case.printing("never"), engine=missing)
        assert failure.value.reason

    @pytest.mark.asyncio
    async def test_job_runs_and_its_output_is_logged_with_its_id(
        self, case: EngineCase, jobs: Jobs, caplog: pytest.LogCaptureFixture
    ) -> None:
        pipeline = case.printing("hello-conformance")
        job = await jobs.start(pipeline)
        assert isinstance(job, RunningJob)
        assert job.pid > 0
        async with asyncio.timeout(jobs.start_timeout_s):
            exit = await job.wait()
        assert exit.outcome is Outcome.SUCCEEDED, exit.describe()
        assert exit.code == 0
        assert any("hello-conformance" in line for line in exit.tail)
        job_id = f"conformance/{pipeline.name}"
        lines = [r for r in caplog.records if getattr(r, "pipeline_id", None) == job_id]
        assert any("hello-conformance" in r.getMessage() for r in lines)
        assert all(getattr(r, "node_id", None) == "node-1" for r in lines)

    @pytest.mark.asyncio
    async def test_stop_ends_a_running_job_and_reaps_it(
        self, case: EngineCase, jobs: Jobs, caplog: pytest.LogCaptureFixture
    ) -> None:
        pipeline = case.long_running("tick-tock")
        job = await jobs.start(pipeline)
        await wait_for_output(
            caplog, f"conformance/{pipeline.name}", "tick-tock", jobs.start_timeout_s
        )
        assert group_alive(job.pid)
        exit = await job.stop(case.stop_grace_s)
        assert exit.outcome in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.KILLED)
        assert not group_alive(job.pid)
        assert await job.wait() == exit  # the exit is remembered
        assert await job.stop(1.0) == exit  # stopping again changes nothing

    @pytest.mark.asyncio
    async def test_stop_kills_a_job_that_ignores_sigterm(
        self, case: EngineCase, jobs: Jobs, caplog: pytest.LogCaptureFixture
    ) -> None:
        pipeline = case.ignoring_sigterm()
        job = await jobs.start(pipeline)
        await wait_for_output(
            caplog, f"conformance/{pipeline.name}", "ignoring SIGTERM", jobs.start_timeout_s
        )
        began = time.monotonic()
        exit = await job.stop(0.5)
        took = time.monotonic() - began
        assert exit.outcome is Outcome.KILLED, exit.describe()
        assert exit.signal == signal.SIGKILL
        assert 0.5 <= took < 3.0
        assert not group_alive(job.pid)

    @pytest.mark.asyncio
    async def test_crash_is_failed_with_code_and_tail(self, case: EngineCase, jobs: Jobs) -> None:
        exit = await jobs.run(case.crashing(3, "it-broke"))
        assert exit.outcome is Outcome.FAILED, exit.describe()
        assert exit.code == 3
        assert any("it-broke" in line for line in exit.tail)
        assert "exit code 3" in exit.describe()

    @pytest.mark.asyncio
    async def test_bad_arguments_fail_clearly(self, case: EngineCase, jobs: Jobs) -> None:
        pipeline, mentions = case.bad_arguments()
        exit = await jobs.run(pipeline)
        assert exit.outcome in (Outcome.START_FAILED, Outcome.FAILED), exit.describe()
        assert mentions in exit.describe()

    @pytest.mark.asyncio
    async def test_unknown_component_fails_clearly(self, case: EngineCase, jobs: Jobs) -> None:
        pipeline, mentions = case.unknown_component()
        exit = await jobs.run(pipeline)
        assert exit.outcome in (Outcome.START_FAILED, Outcome.FAILED), exit.describe()
        assert mentions in exit.describe()

    @pytest.mark.asyncio
    async def test_stats_arrive_while_running(
        self, case: EngineCase, jobs: Jobs, caplog: pytest.LogCaptureFixture
    ) -> None:
        job = await jobs.start(case.long_running("stats"))
        await until(lambda: job.stats() is not None, jobs.start_timeout_s)
        stats = job.stats()
        assert stats is not None
        assert stats.values
        await job.stop(case.stop_grace_s)
