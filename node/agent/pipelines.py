"""Carries out the pipeline lifecycles' actions: the asyncio shell around ``Lifecycle``.

One ``Lifecycle`` (pure) per (ION, pipeline) placed on this node.  The supervisor feeds it the
reconciler's wishes and the jobs' events, and does what it answers: start a job through the
pipeline's engine, stop it, arm a timer, report the state.  Every job task is owned by the
agent's TaskGroup; every child process is reaped by its engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ion.model.definition import Pipeline
from node.engines.base import Engine, JobSpec, JobStartError, RunningJob
from node.pipelines.lifecycle import (
    Action,
    DesireRun,
    DesireStop,
    Event,
    Exited,
    Lifecycle,
    ReportState,
    Restart,
    ScheduleTimer,
    Started,
    StartFailed,
    StartJob,
    State,
    StateReport,
    StopJob,
    Tick,
    Trigger,
)
from node.reconcile import PipelineKey
from node.runner.spec import EdgePort

log = logging.getLogger(__name__)

ReportCallback = Callable[[PipelineKey, Pipeline | None, StateReport], None]
JobEnv = Callable[[PipelineKey], Mapping[str, str]]
"""Extra environment for a job about to start (e.g. its local-socket token)."""
JobEdges = Callable[[PipelineKey], tuple[EdgePort, ...]]
JobEnded = Callable[[PipelineKey], None]
_DONE = {State.STOPPED, State.KILLED, State.PENDING}


@dataclass(slots=True)
class _Entry:
    lifecycle: Lifecycle
    spec: Pipeline | None = None
    job: RunningJob | None = None
    job_run: int = 0
    timer: float | None = None
    desired: bool = True


class PipelineSupervisor:
    def __init__(
        self,
        *,
        node_id: str,
        work_root: Path,
        engines: Mapping[str, Engine],
        task_group: asyncio.TaskGroup,
        on_report: ReportCallback,
        agent_socket: Path | None = None,
        job_env: JobEnv | None = None,
        job_edges: JobEdges | None = None,
        on_job_end: JobEnded | None = None,
        stop_grace_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._job_env = job_env
        self._job_edges = job_edges
        self._on_job_end = on_job_end
        self._node_id = node_id
        self._work_root = work_root
        self._engines = engines
        self._tg = task_group
        self._on_report = on_report
        self._socket = agent_socket
        self._grace = stop_grace_s
        self._clock = clock
        self._entries: dict[PipelineKey, _Entry] = {}
        self._timer_changed = asyncio.Event()

    # -- what the agent asks -------------------------------------------------------------------

    def apply(self, desired: Mapping[PipelineKey, tuple[Pipeline, int]]) -> None:
        """Make the running set match ``desired`` (pipeline spec and ION version per key)."""
        for key, (spec, version) in desired.items():
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(Lifecycle(stop_grace_s=self._grace))
            entry.desired = True
            entry.spec = spec
            self._feed(key, DesireRun(spec, version))
        for key, entry in list(self._entries.items()):
            if key not in desired and entry.desired:
                entry.desired = False
                self._feed(key, DesireStop())

    def restart(self, key: PipelineKey) -> bool:
        if key not in self._entries:
            return False
        self._feed(key, Restart())
        return True

    def trigger(self, key: PipelineKey) -> bool:
        if key not in self._entries:
            return False
        self._feed(key, Trigger())
        return True

    def reports(self) -> dict[PipelineKey, tuple[Pipeline | None, StateReport]]:
        return {k: (e.spec, e.lifecycle.report()) for k, e in self._entries.items()}

    def running_jobs(self) -> dict[PipelineKey, RunningJob]:
        return {k: e.job for k, e in self._entries.items() if e.job is not None}

    async def stop_all(self) -> None:
        """Stop every pipeline and wait (bounded by the grace period) for their jobs to end."""
        self.apply({})
        deadline = self._clock() + self._grace + 5.0
        while any(e.job is not None for e in self._entries.values()):
            if self._clock() > deadline:
                log.warning("pipelines still running after the stop grace period")
                break
            await asyncio.sleep(0.05)

    async def run_timers(self) -> None:
        """The supervisor's timer task: ticks lifecycles whose backoff timer is due."""
        while True:
            now = self._clock()
            due = [k for k, e in self._entries.items() if e.timer is not None and e.timer <= now]
            for key in due:
                self._entries[key].timer = None
                self._feed(key, Tick())
            pending = [e.timer for e in self._entries.values() if e.timer is not None]
            self._timer_changed.clear()
            timeout = max(0.0, min(pending) - self._clock()) if pending else None
            with contextlib.suppress(TimeoutError):
                # Not ``wait_for``: see ``Sender._wait`` (a cancellation could be swallowed).
                async with asyncio.timeout(timeout):
                    await self._timer_changed.wait()

    # -- carrying out actions ------------------------------------------------------------------

    def _feed(self, key: PipelineKey, event: Event) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        for action in entry.lifecycle.handle(event, self._clock()):
            self._do(key, entry, action)
        if not entry.desired and entry.job is None and entry.lifecycle.state in _DONE:
            del self._entries[key]

    def _do(self, key: PipelineKey, entry: _Entry, action: Action) -> None:
        match action:
            case StartJob(run=run, spec=spec, version=version):
                entry.job_run = run
                self._tg.create_task(
                    self._run_job(key, run, spec, version), name=f"job {key[0]}/{key[1]}#{run}"
                )
            case StopJob(run=run, grace_s=grace):
                if entry.job is not None and entry.job_run == run:
                    job = entry.job
                    self._tg.create_task(self._stop_job(job, grace), name=f"stop {key[0]}/{key[1]}")
            case ScheduleTimer(at=at):
                entry.timer = at
                self._timer_changed.set()
            case ReportState(report=report):
                self._on_report(key, entry.spec, report)

    async def _run_job(self, key: PipelineKey, run: int, spec: Pipeline, version: int) -> None:
        engine = self._engines.get(spec.engine)
        reason = None
        if engine is None:
            reason = f"no {spec.engine!r} engine on node {self._node_id}"
        else:
            reason = engine.check_available()
        if reason is not None or engine is None:
            self._feed(key, StartFailed(run, reason or "engine unavailable"))
            return
        work_dir = self._work_root / key[0] / key[1]
        job_spec = JobSpec(
            ion=key[0],
            pipeline=spec,
            node_id=self._node_id,
            work_dir=work_dir,
            version=version,
            agent_socket=self._socket,
            env=dict(self._job_env(key)) if self._job_env is not None else {},
            edges=self._job_edges(key) if self._job_edges is not None else (),
        )
        try:
            job = await engine.start(job_spec)
        except JobStartError as exc:
            self._job_ended(key)
            self._feed(key, StartFailed(run, exc.reason))
            return
        entry = self._entries.get(key)
        if entry is not None and entry.job_run == run:
            entry.job = job
        self._feed(key, Started(run, job.pid))
        try:
            exit_ = await job.wait()
        except asyncio.CancelledError:
            # The agent is going away: the job must not outlive it.
            await asyncio.shield(job.stop(min(self._grace, 5.0)))
            raise
        finally:
            self._job_ended(key)
        entry = self._entries.get(key)
        if entry is not None and entry.job is job:
            entry.job = None
        log.info("pipeline %s/%s run %d ended: %s", key[0], key[1], run, exit_.describe())
        self._feed(key, Exited(run, exit_))

    def _job_ended(self, key: PipelineKey) -> None:
        if self._on_job_end is not None:
            self._on_job_end(key)

    async def _stop_job(self, job: RunningJob, grace: float) -> None:
        await job.stop(grace)
