"""The ``python`` engine: a pipeline's components in a child Python process.

The child is ``<python> -m node.runner --spec <work_dir>/pipeline.json`` with the agent's own
interpreter by default, so it sees the same installed components as the agent.  Its exit
status maps to a ``JobExit``: 0 succeeded, 2 start_failed (the runner rejected the spec before
running anything; its ``ion-runner: error:`` lines are the reason), a signal killed, anything
else failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sys

from node.runner import spec as runner_spec

from .base import JobExit, JobSpec, JobStartError, JobStats
from .jobfiles import child_env, write_runner_spec
from .process import ChildProcess, exit_from_status
from .procstats import read_process_stats

SPEC_FILE = "pipeline.json"


class PythonEngine:
    """Runs ``python`` pipelines; ``python`` is the interpreter (default: the agent's)."""

    def __init__(self, python: str | os.PathLike[str] | None = None) -> None:
        self._python = os.fspath(python) if python is not None else sys.executable

    @property
    def name(self) -> str:
        return "python"

    def check_available(self) -> str | None:
        if not self._interpreter():
            return f"Python interpreter {self._python!r} not found or not executable"
        return None

    async def start(self, job: JobSpec) -> PythonJob:
        if job.pipeline.engine != self.name:
            raise JobStartError(
                f"pipeline {job.pipeline.name!r} is for engine {job.pipeline.engine!r}, "
                f"not {self.name!r}"
            )
        python = self._interpreter()
        if python is None:
            raise JobStartError(f"Python interpreter {self._python!r} not found or not executable")
        # Absolute: the child runs in the work dir, where a relative path would mean another.
        job = dataclasses.replace(job, work_dir=job.work_dir.absolute())
        spec_path = await asyncio.to_thread(write_runner_spec, job, SPEC_FILE)
        argv = [python, "-m", "node.runner", "--spec", str(spec_path)]
        child = await ChildProcess.spawn(
            argv,
            job_id=job.job_id,
            node_id=job.node_id,
            cwd=job.work_dir,
            env=child_env(job),
            tail_lines=job.log_tail_lines,
        )
        return PythonJob(child)

    def _interpreter(self) -> str | None:
        return shutil.which(self._python)


class PythonJob:
    """A running python pipeline (implements ``RunningJob``)."""

    def __init__(self, child: ChildProcess) -> None:
        self._child = child

    @property
    def pid(self) -> int:
        return self._child.pid

    async def wait(self) -> JobExit:
        return self._exit(await self._child.wait())

    async def stop(self, grace_s: float) -> JobExit:
        return self._exit(await self._child.stop(grace_s))

    def stats(self) -> JobStats | None:
        # The process's own resource use; components report theirs through the SDK socket.
        return read_process_stats(self._child.pid)

    def _exit(self, status: int) -> JobExit:
        tail = self._child.tail()
        if status == runner_spec.EXIT_SPEC_ERROR:
            prefix = runner_spec.ERROR_PREFIX
            reasons = [line[len(prefix) :] for line in tail if line.startswith(prefix)]
            if not reasons:  # e.g. a bad command line: argparse's own message
                reasons = [line for line in tail if line.strip()][-1:] or ["spec rejected"]
            return JobExit.start_failed("; ".join(reasons), tail)
        return exit_from_status(status, tail)
