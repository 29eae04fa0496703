"""The lifecycle of one pipeline on this node, as a pure state machine.

States
    PENDING     nothing has been asked of this pipeline yet.
    STARTING    a StartJob action is out; waiting for Started or StartFailed.
    RUNNING     the job runs.
    SUCCEEDED   a batch job exited 0.  It runs again on Trigger, Restart or a changed spec.
    FAILED      a batch job failed, was killed or could not start.  Same ways out as SUCCEEDED.
    BACKOFF     a streaming job ended (streaming jobs are meant to run until stopped, so any
                end counts); a timer starts it again after an exponential, jittered delay.
    CRASH_LOOP  a streaming job ended more than ``max_restarts`` times within ``window_ms``.
                It stays here until the spec changes or an explicit Restart.
    STOPPING    asked to stop (or to restart); a StopJob action is out, or will be as soon as
                the job has started (a stop while STARTING waits for Started).
    STOPPED     stopped on request.
    KILLED      stopped on request, but it ignored SIGTERM for the grace period: SIGKILLed.

Invariants
    - At most one job per pipeline: StartJob is emitted only from a state with no job
      (never from STARTING, RUNNING or STOPPING).
    - Every StartJob carries a new run number; events name the run they are about, and an
      event about another run than the current one is ignored, so nothing late or duplicated
      can move a newer job.
    - A timer is wanted only in BACKOFF; a Tick elsewhere or before the deadline does nothing.
    - A job runs the spec that was desired when it started.  A different desired spec (a new
      ION version that changed this pipeline) stops it and starts the new one; a new version
      that left the pipeline as it was changes nothing but the reported version.
    - Every change of state is reported, once, by a ReportState action.

Inputs are events plus ``now`` (monotonic seconds); outputs are actions for the shell to carry
out (start or stop the job through its engine, arm a timer, publish the state).  Nothing here
sleeps, awaits or reads a clock, so every path is tested by feeding events.
"""

from __future__ import annotations

import enum
import random
import signal
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ion.model.definition import Pipeline, PipelineMode, RestartPolicy
from node.engines.base import JobExit, Outcome


class State(enum.Enum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BACKOFF = "backoff"
    CRASH_LOOP = "crash_loop"
    STOPPING = "stopping"
    STOPPED = "stopped"
    KILLED = "killed"


S = State
TRANSITIONS: Mapping[State, frozenset[State]] = {
    S.PENDING: frozenset({S.STARTING, S.STOPPED}),
    S.STARTING: frozenset({S.RUNNING, S.STOPPING, S.SUCCEEDED, S.FAILED, S.BACKOFF, S.CRASH_LOOP}),
    S.RUNNING: frozenset({S.STOPPING, S.SUCCEEDED, S.FAILED, S.BACKOFF, S.CRASH_LOOP}),
    S.STOPPING: frozenset({S.STOPPED, S.KILLED}),
    S.STOPPED: frozenset({S.STARTING}),
    S.KILLED: frozenset({S.STARTING}),
    S.SUCCEEDED: frozenset({S.STARTING, S.STOPPED}),
    S.FAILED: frozenset({S.STARTING, S.STOPPED}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED}),
    S.CRASH_LOOP: frozenset({S.STARTING, S.STOPPED}),
}
"""Every legal change of state; anything else is a bug (asserted on every change)."""

WITH_JOB = frozenset({S.STARTING, S.RUNNING, S.STOPPING})
"""States in which a job process may exist."""


# Inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DesireRun:
    """The reconciler wants this pipeline to run ``spec`` (from ION version ``version``)."""

    spec: Pipeline
    version: int


@dataclass(frozen=True, slots=True)
class DesireStop:
    """The reconciler wants this pipeline not to run (removed from the ION, ION deleted)."""


@dataclass(frozen=True, slots=True)
class Restart:
    """An explicit restart (operator command): a fresh start, forgetting past crashes."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """Run a finished batch pipeline again (its schedule or a trigger edge fired)."""


@dataclass(frozen=True, slots=True)
class Started:
    run: int
    pid: int


@dataclass(frozen=True, slots=True)
class Exited:
    run: int
    exit: JobExit


@dataclass(frozen=True, slots=True)
class StartFailed:
    """The engine could not start the job at all (``JobStartError``)."""

    run: int
    reason: str


@dataclass(frozen=True, slots=True)
class Tick:
    """A timer the machine asked for has fired (early or spurious ticks are harmless)."""


Event = DesireRun | DesireStop | Restart | Trigger | Started | Exited | StartFailed | Tick


# Outputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartJob:
    run: int
    spec: Pipeline
    version: int


@dataclass(frozen=True, slots=True)
class StopJob:
    run: int
    grace_s: float


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    """Deliver a Tick at monotonic time ``at`` (replacing any earlier request)."""

    at: float


@dataclass(frozen=True, slots=True)
class StateReport:
    state: State
    version: int
    """The ION version of the spec the job runs (or last ran); 0 before any."""
    run: int
    detail: str = ""
    restarts: int = 0
    """Ends of a streaming job counted within the restart window."""
    retry_at: float | None = None
    last_exit: JobExit | None = None


@dataclass(frozen=True, slots=True)
class ReportState:
    report: StateReport


Action = StartJob | StopJob | ScheduleTimer | ReportState


# The machine --------------------------------------------------------------------------------

JITTER = 0.1
"""Backoff delays vary by up to this fraction either way, so restarts of many pipelines that
failed together (a broker restart) do not stay in step."""


def backoff_delay(policy: RestartPolicy, failures: int, unit_random: float) -> float:
    """Seconds to wait before restart number ``failures`` (1, 2, ...): the initial delay
    doubled per failure, capped, times a jitter factor from ``unit_random`` in [0, 1)."""
    base = policy.backoff_initial_ms * 2.0 ** max(failures - 1, 0)
    base = min(base, float(policy.backoff_max_ms))
    jittered = base * (1.0 + JITTER * (2.0 * unit_random - 1.0))
    return max(0.0, min(jittered, float(policy.backoff_max_ms))) / 1000.0


class Lifecycle:
    """One pipeline's lifecycle.  ``handle(event, now)`` returns the actions to carry out."""

    def __init__(
        self,
        *,
        stop_grace_s: float = 10.0,
        unit_random: Callable[[], float] | None = None,
        seed: int | None = None,
    ) -> None:
        self.stop_grace_s = stop_grace_s
        self._random = unit_random or random.Random(seed).random  # noqa: S311 - jitter only
        self._state = State.PENDING
        self._wanted: DesireRun | None = None  # None: the pipeline should not run
        self._job: DesireRun | None = None  # what the current or last job runs
        self._run = 0
        self._stop_sent = False
        self._ends: deque[float] = deque()  # when streaming jobs ended, within the window
        self._retry_at: float | None = None
        self._last_exit: JobExit | None = None
        self._detail = ""
        self._actions: list[Action] = []

    @property
    def state(self) -> State:
        return self._state

    @property
    def run(self) -> int:
        return self._run

    def report(self) -> StateReport:
        return StateReport(
            state=self._state,
            version=self._job.version if self._job else 0,
            run=self._run,
            detail=self._detail,
            restarts=len(self._ends),
            retry_at=self._retry_at,
            last_exit=self._last_exit,
        )

    def handle(self, event: Event, now: float) -> list[Action]:
        self._actions = []
        match event:
            case DesireRun():
                self._on_desire_run(event)
            case DesireStop():
                self._on_desire_stop()
            case Restart():
                self._on_restart()
            case Trigger():
                self._on_trigger()
            case Started(run=run) if run == self._run:
                self._on_started()
            case Exited(run=run) if run == self._run:
                self._on_ended(event.exit, now)
            case StartFailed(run=run) if run == self._run:
                self._on_ended(JobExit.start_failed(event.reason), now)
            case Tick():
                self._on_tick(now)
            case _:
                pass  # an event about an older run: already dealt with
        actions, self._actions = self._actions, []
        return actions

    # Event handlers -----------------------------------------------------------------------

    def _on_desire_run(self, desired: DesireRun) -> None:
        self._wanted = desired
        state = self._state
        if state in (S.PENDING, S.STOPPED, S.KILLED):
            self._start(fresh=True)
        elif state is S.STOPPING:
            pass  # the job's exit starts whatever is wanted then
        elif self._job is None or desired.spec != self._job.spec:
            if state in WITH_JOB:
                self._begin_stop("stopping to start a changed spec")
            else:
                self._start(fresh=True)
        elif desired.version != self._job.version:
            self._job = desired  # the same pipeline in a newer ION version: nothing to redo
            self._report()

    def _on_desire_stop(self) -> None:
        self._wanted = None
        state = self._state
        if state in (S.PENDING, S.SUCCEEDED, S.FAILED, S.BACKOFF, S.CRASH_LOOP):
            self._enter(S.STOPPED, "stopped")
        elif state in (S.STARTING, S.RUNNING):
            self._begin_stop("stopping on request")
        # STOPPING, STOPPED, KILLED: nothing more to do.

    def _on_restart(self) -> None:
        if self._wanted is None:
            return  # nothing to restart: the pipeline is not wanted here
        self._ends.clear()
        if self._state in (S.STARTING, S.RUNNING):
            self._begin_stop("restarting on request")
        elif self._state not in WITH_JOB:
            self._start(fresh=True)

    def _on_trigger(self) -> None:
        if self._wanted is not None and self._state in (S.SUCCEEDED, S.FAILED):
            self._start(fresh=True)

    def _on_started(self) -> None:
        if self._state is S.STARTING:
            self._enter(S.RUNNING, "running")
        elif self._state is S.STOPPING and not self._stop_sent:
            self._send_stop()

    def _on_ended(self, exit: JobExit, now: float) -> None:
        self._last_exit = exit
        if self._state is S.STOPPING:
            killed = exit.outcome is Outcome.KILLED and exit.signal == signal.SIGKILL
            if killed:
                self._enter(S.KILLED, f"stopped, but had to be killed: {exit.describe()}")
            else:
                self._enter(S.STOPPED, "stopped")
            if self._wanted is not None:
                self._start(fresh=True)
            return
        if self._state not in (S.STARTING, S.RUNNING):
            return
        assert self._job is not None
        if self._job.spec.mode is PipelineMode.BATCH:
            if exit.ok:
                self._enter(S.SUCCEEDED, "succeeded")
            else:
                self._enter(S.FAILED, exit.describe())
            return
        policy = self._job.spec.restart
        window_s = policy.window_ms / 1000.0
        while self._ends and self._ends[0] <= now - window_s:
            self._ends.popleft()
        self._ends.append(now)
        ended = len(self._ends)
        if ended > policy.max_restarts:
            self._enter(
                S.CRASH_LOOP,
                f"ended {ended} times within {window_s:g}s "
                f"(at most {policy.max_restarts} restarts): {exit.describe()}",
            )
            return
        delay = backoff_delay(policy, ended, self._random())
        self._retry_at = now + delay
        self._enter(
            S.BACKOFF,
            f"{exit.describe()}; restart {ended} of {policy.max_restarts} in {delay:.1f}s",
        )
        self._emit(ScheduleTimer(self._retry_at))

    def _on_tick(self, now: float) -> None:
        if self._state is S.BACKOFF and self._retry_at is not None and now >= self._retry_at:
            self._start(fresh=False)

    # Moves ---------------------------------------------------------------------------------

    def _start(self, *, fresh: bool) -> None:
        assert self._wanted is not None
        if fresh:
            self._ends.clear()
        self._job = self._wanted
        self._run += 1
        self._stop_sent = False
        self._retry_at = None
        self._enter(S.STARTING, "starting")
        self._emit(StartJob(self._run, self._job.spec, self._job.version))

    def _begin_stop(self, why: str) -> None:
        running = self._state is S.RUNNING
        self._enter(S.STOPPING, why)
        if running:  # else STARTING: the stop goes out once the job has started
            self._send_stop()

    def _send_stop(self) -> None:
        self._stop_sent = True
        self._emit(StopJob(self._run, self.stop_grace_s))

    def _enter(self, state: State, detail: str) -> None:
        assert state in TRANSITIONS[self._state], f"{self._state} -> {state}"
        self._state = state
        self._detail = detail
        if state is not S.BACKOFF:
            self._retry_at = None
        self._report()

    def _report(self) -> None:
        self._emit(ReportState(self.report()))

    def _emit(self, action: Action) -> None:
        self._actions.append(action)
