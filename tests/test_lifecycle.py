"""The pipeline lifecycle state machine: every path, by feeding events; nothing sleeps."""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ion.model.definition import (
    Component,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    RestartPolicy,
)
from node.engines.base import JobExit
from node.pipelines.lifecycle import (
    TRANSITIONS,
    WITH_JOB,
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
    StopJob,
    Tick,
    Trigger,
    backoff_delay,
)

POLICY = RestartPolicy(
    max_restarts=3, window_ms=60_000, backoff_initial_ms=1_000, backoff_max_ms=5_000
)


def pipeline(mode: PipelineMode = PipelineMode.STREAMING, **kw: object) -> Pipeline:
    base = Pipeline(
        name="infer",
        engine="python",
        role=PipelineRole.INFERENCE,
        mode=mode,
        placement=Placement(nodes=("n1",)),
        components=(Component("src", "counter_source", {"rate": 1.0}),),
        restart=POLICY,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


STREAM = pipeline()
BATCH = pipeline(PipelineMode.BATCH)
CRASH = JobExit.failed(1, ("Traceback ...", "ValueError: boom"))
OK = JobExit.succeeded()


def make() -> Lifecycle:
    # unit_random 0.5 puts the jitter exactly in the middle: delays are the plain doubling.
    return Lifecycle(stop_grace_s=5.0, unit_random=lambda: 0.5)


def states(actions: list[Action]) -> list[State]:
    return [a.report.state for a in actions if isinstance(a, ReportState)]


def others(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, ReportState)]


def running(spec: Pipeline = STREAM, version: int = 1, now: float = 0.0) -> Lifecycle:
    lc = make()
    lc.handle(DesireRun(spec, version), now)
    lc.handle(Started(lc.run, pid=100), now)
    assert lc.state is State.RUNNING
    return lc


# Starting ---------------------------------------------------------------------------------


def test_starts_pending() -> None:
    lc = make()
    assert lc.state is State.PENDING
    report = lc.report()
    assert (report.version, report.run, report.restarts) == (0, 0, 0)


def test_desire_run_starts_and_started_runs() -> None:
    lc = make()
    actions = lc.handle(DesireRun(STREAM, 7), 0.0)
    assert states(actions) == [State.STARTING]
    assert others(actions) == [StartJob(1, STREAM, 7)]
    actions = lc.handle(Started(1, pid=42), 0.1)
    assert states(actions) == [State.RUNNING]
    assert others(actions) == []
    assert lc.report().version == 7


def test_events_about_another_run_are_ignored() -> None:
    lc = make()
    lc.handle(DesireRun(STREAM, 1), 0.0)
    assert lc.handle(Started(0, pid=1), 0.0) == []
    assert lc.handle(Started(2, pid=1), 0.0) == []
    assert lc.handle(Exited(0, CRASH), 0.0) == []
    assert lc.handle(StartFailed(5, "nope"), 0.0) == []
    assert lc.state is State.STARTING


def test_repeated_desire_with_same_spec_and_version_does_nothing() -> None:
    lc = running()
    assert lc.handle(DesireRun(STREAM, 1), 1.0) == []
    assert lc.state is State.RUNNING


# Batch ------------------------------------------------------------------------------------


def test_batch_exit_zero_succeeds_and_stays_until_triggered() -> None:
    lc = running(BATCH)
    actions = lc.handle(Exited(1, OK), 5.0)
    assert states(actions) == [State.SUCCEEDED]
    assert others(actions) == []
    assert lc.handle(Tick(), 1e9) == []
    assert lc.handle(DesireRun(BATCH, 1), 6.0) == []  # same spec: no second run
    actions = lc.handle(Trigger(), 7.0)
    assert states(actions) == [State.STARTING]
    assert others(actions) == [StartJob(2, BATCH, 1)]


def test_batch_failure_is_failed_with_the_reason_and_no_retry() -> None:
    lc = running(BATCH)
    actions = lc.handle(Exited(1, CRASH), 5.0)
    assert states(actions) == [State.FAILED]
    assert others(actions) == []
    report = lc.report()
    assert "exit code 1" in report.detail
    assert "ValueError: boom" in report.detail
    assert report.last_exit == CRASH
    assert lc.handle(Tick(), 1e9) == []
    actions = lc.handle(Restart(), 6.0)
    assert others(actions) == [StartJob(2, BATCH, 1)]


def test_batch_start_failure_is_failed() -> None:
    lc = make()
    lc.handle(DesireRun(BATCH, 1), 0.0)
    actions = lc.handle(StartFailed(1, "pyspark is not installed"), 0.0)
    assert states(actions) == [State.FAILED]
    assert "could not start: pyspark is not installed" in lc.report().detail


def test_trigger_is_ignored_while_running_and_when_not_wanted() -> None:
    lc = running(BATCH)
    assert lc.handle(Trigger(), 1.0) == []
    lc.handle(DesireStop(), 1.0)
    lc.handle(Exited(1, OK), 1.5)
    assert lc.state is State.STOPPED
    assert lc.handle(Trigger(), 2.0) == []


def test_batch_changed_spec_after_success_runs_again() -> None:
    lc = running(BATCH)
    lc.handle(Exited(1, OK), 1.0)
    changed = replace(BATCH, description="v2")
    actions = lc.handle(DesireRun(changed, 2), 2.0)
    assert others(actions) == [StartJob(2, changed, 2)]


# Streaming restarts -----------------------------------------------------------------------


def test_streaming_exit_backs_off_then_restarts_on_the_tick() -> None:
    lc = running()
    actions = lc.handle(Exited(1, CRASH), 10.0)
    assert states(actions) == [State.BACKOFF]
    assert others(actions) == [ScheduleTimer(11.0)]
    report = lc.report()
    assert report.retry_at == 11.0
    assert report.restarts == 1
    assert "restart 1 of 3" in report.detail
    assert lc.handle(Tick(), 10.999) == []
    actions = lc.handle(Tick(), 11.0)
    assert states(actions) == [State.STARTING]
    assert others(actions) == [StartJob(2, STREAM, 1)]
    assert lc.report().retry_at is None


def test_streaming_exit_zero_is_restarted_too() -> None:
    lc = running()
    actions = lc.handle(Exited(1, OK), 10.0)
    assert states(actions) == [State.BACKOFF]


def test_streaming_start_failure_backs_off() -> None:
    lc = make()
    lc.handle(DesireRun(STREAM, 1), 0.0)
    actions = lc.handle(StartFailed(1, "cannot execute python"), 0.0)
    assert states(actions) == [State.BACKOFF]
    assert "could not start" in lc.report().detail


def test_backoff_doubles_up_to_the_cap_then_crash_loops() -> None:
    policy = RestartPolicy(
        max_restarts=5, window_ms=600_000, backoff_initial_ms=1_000, backoff_max_ms=5_000
    )
    spec = pipeline(restart=policy)
    lc = running(spec)
    now = 0.0
    delays = []
    for run in range(1, 6):
        actions = lc.handle(Exited(run, CRASH), now)
        (timer,) = others(actions)
        assert isinstance(timer, ScheduleTimer)
        delays.append(timer.at - now)
        now = timer.at
        lc.handle(Tick(), now)
        lc.handle(Started(run + 1, pid=run), now)
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    actions = lc.handle(Exited(6, CRASH), now)
    assert states(actions) == [State.CRASH_LOOP]
    assert others(actions) == []
    assert "ended 6 times" in lc.report().detail


def test_crash_loop_stays_until_the_spec_changes() -> None:
    lc = running()
    now = 0.0
    for run in range(1, 4):
        lc.handle(Exited(run, CRASH), now)
        now += 10.0
        lc.handle(Tick(), now)
        lc.handle(Started(run + 1, pid=run), now)
    lc.handle(Exited(4, CRASH), now)
    assert lc.state is State.CRASH_LOOP
    assert lc.handle(Tick(), now + 1e6) == []
    assert lc.handle(DesireRun(STREAM, 1), now) == []
    assert lc.handle(Trigger(), now) == []
    actions = lc.handle(DesireRun(STREAM, 2), now)  # newer version, same pipeline
    assert states(actions) == [State.CRASH_LOOP]
    assert lc.report().version == 2
    fixed = replace(STREAM, description="fixed")
    actions = lc.handle(DesireRun(fixed, 3), now)
    assert others(actions) == [StartJob(5, fixed, 3)]
    assert lc.report().restarts == 0


def test_crash_loop_left_by_an_explicit_restart_with_history_forgotten() -> None:
    lc = running(pipeline(restart=replace(POLICY, max_restarts=0)))
    actions = lc.handle(Exited(1, CRASH), 0.0)
    assert states(actions) == [State.CRASH_LOOP]  # max_restarts 0: no restart at all
    actions = lc.handle(Restart(), 1.0)
    assert states(actions) == [State.STARTING]
    assert lc.report().restarts == 0


def test_ends_outside_the_window_do_not_count() -> None:
    lc = running()  # window 60 s, 3 restarts
    now = 0.0
    for run in range(1, 10):
        actions = lc.handle(Exited(run, CRASH), now)
        (timer,) = others(actions)
        assert isinstance(timer, ScheduleTimer)
        assert timer.at - now == 1.0  # the first failure in the window every time
        lc.handle(Tick(), timer.at)
        lc.handle(Started(run + 1, pid=run), timer.at)
        now += 61.0
    assert lc.state is State.RUNNING


def test_jitter_spreads_delays_within_bounds() -> None:
    assert backoff_delay(POLICY, 1, 0.0) == pytest.approx(0.9)
    assert backoff_delay(POLICY, 1, 0.999999) == pytest.approx(1.1, abs=1e-5)
    assert backoff_delay(POLICY, 2, 0.5) == pytest.approx(2.0)
    assert backoff_delay(POLICY, 30, 0.999999) <= 5.0  # never over the cap
    assert backoff_delay(POLICY, 0, 0.5) == pytest.approx(1.0)


def test_seeded_jitter_is_reproducible() -> None:
    def first_delay(seed: int) -> float:
        lc = Lifecycle(seed=seed)
        lc.handle(DesireRun(STREAM, 1), 0.0)
        lc.handle(Started(1, pid=1), 0.0)
        (timer,) = others(lc.handle(Exited(1, CRASH), 0.0))
        assert isinstance(timer, ScheduleTimer)
        return timer.at

    assert first_delay(7) == first_delay(7)
    assert 0.9 <= first_delay(7) <= 1.1
    assert len({first_delay(s) for s in range(20)}) > 1


# Stopping ---------------------------------------------------------------------------------


def test_stop_while_running_sends_stop_and_ends_stopped() -> None:
    lc = running()
    actions = lc.handle(DesireStop(), 1.0)
    assert states(actions) == [State.STOPPING]
    assert others(actions) == [StopJob(1, 5.0)]
    actions = lc.handle(Exited(1, OK), 2.0)
    assert states(actions) == [State.STOPPED]
    assert others(actions) == []


@pytest.mark.parametrize(
    ("exit", "state"),
    [
        (JobExit.killed(signal.SIGKILL), State.KILLED),
        (JobExit.killed(signal.SIGTERM), State.STOPPED),  # no handler: SIGTERM did its job
        (JobExit.failed(143), State.STOPPED),
    ],
)
def test_how_a_stopped_job_ended_picks_stopped_or_killed(exit: JobExit, state: State) -> None:
    lc = running()
    lc.handle(DesireStop(), 1.0)
    assert states(lc.handle(Exited(1, exit), 2.0)) == [state]


def test_stop_while_starting_waits_for_started() -> None:
    lc = make()
    lc.handle(DesireRun(STREAM, 1), 0.0)
    actions = lc.handle(DesireStop(), 0.1)
    assert states(actions) == [State.STOPPING]
    assert others(actions) == []  # nothing to signal yet
    actions = lc.handle(Started(1, pid=9), 0.2)
    assert states(actions) == []
    assert others(actions) == [StopJob(1, 5.0)]
    assert states(lc.handle(Exited(1, OK), 0.3)) == [State.STOPPED]


def test_stop_while_starting_then_start_fails() -> None:
    lc = make()
    lc.handle(DesireRun(STREAM, 1), 0.0)
    lc.handle(DesireStop(), 0.1)
    actions = lc.handle(StartFailed(1, "no interpreter"), 0.2)
    assert states(actions) == [State.STOPPED]
    assert others(actions) == []


@pytest.mark.parametrize(
    "state", [State.SUCCEEDED, State.FAILED, State.BACKOFF, State.CRASH_LOOP, State.PENDING]
)
def test_stop_without_a_job_is_immediate(state: State) -> None:
    lc = make()
    if state is not State.PENDING:
        spec = BATCH if state in (State.SUCCEEDED, State.FAILED) else STREAM
        if state is State.CRASH_LOOP:
            spec = pipeline(restart=replace(POLICY, max_restarts=0))
        lc.handle(DesireRun(spec, 1), 0.0)
        lc.handle(Started(1, pid=1), 0.0)
        lc.handle(Exited(1, OK if state is State.SUCCEEDED else CRASH), 0.0)
    assert lc.state is state
    actions = lc.handle(DesireStop(), 1.0)
    assert states(actions) == [State.STOPPED]
    assert others(actions) == []
    assert lc.handle(Tick(), 1e9) == []  # a backoff timer that still fires does nothing


def test_stop_when_already_stopped_or_killed_does_nothing() -> None:
    lc = running()
    lc.handle(DesireStop(), 1.0)
    assert lc.handle(DesireStop(), 1.1) == []  # STOPPING
    lc.handle(Exited(1, JobExit.killed(signal.SIGKILL)), 2.0)
    assert lc.state is State.KILLED
    assert lc.handle(DesireStop(), 3.0) == []


def test_run_wanted_again_while_stopping_restarts_after_the_exit() -> None:
    lc = running()
    lc.handle(DesireStop(), 1.0)
    assert lc.handle(DesireRun(STREAM, 1), 1.5) == []
    actions = lc.handle(Exited(1, OK), 2.0)
    assert states(actions) == [State.STOPPED, State.STARTING]
    assert others(actions) == [StartJob(2, STREAM, 1)]


def test_desire_run_after_killed_starts_again() -> None:
    lc = running()
    lc.handle(DesireStop(), 1.0)
    lc.handle(Exited(1, JobExit.killed(signal.SIGKILL)), 2.0)
    actions = lc.handle(DesireRun(STREAM, 1), 3.0)
    assert others(actions) == [StartJob(2, STREAM, 1)]


# Spec changes and restarts ----------------------------------------------------------------


def test_changed_spec_while_running_stops_then_starts_the_new_one() -> None:
    lc = running()
    new = replace(STREAM, components=(Component("src", "counter_source", {"rate": 2.0}),))
    actions = lc.handle(DesireRun(new, 2), 5.0)
    assert states(actions) == [State.STOPPING]
    assert others(actions) == [StopJob(1, 5.0)]
    actions = lc.handle(Exited(1, OK), 6.0)
    assert states(actions) == [State.STOPPED, State.STARTING]
    assert others(actions) == [StartJob(2, new, 2)]
    assert lc.report().version == 2


def test_new_version_with_the_same_pipeline_only_updates_the_version() -> None:
    lc = running()
    actions = lc.handle(DesireRun(STREAM, 2), 5.0)
    assert others(actions) == []
    assert states(actions) == [State.RUNNING]
    assert lc.report().version == 2


def test_changed_spec_while_starting_stops_once_started() -> None:
    lc = make()
    lc.handle(DesireRun(STREAM, 1), 0.0)
    new = replace(STREAM, description="v2")
    actions = lc.handle(DesireRun(new, 2), 0.1)
    assert states(actions) == [State.STOPPING]
    assert others(actions) == []
    assert others(lc.handle(Started(1, pid=3), 0.2)) == [StopJob(1, 5.0)]
    assert others(lc.handle(Exited(1, OK), 0.3)) == [StartJob(2, new, 2)]


def test_changed_spec_during_backoff_starts_at_once() -> None:
    lc = running()
    lc.handle(Exited(1, CRASH), 1.0)
    assert lc.state is State.BACKOFF
    new = replace(STREAM, description="v2")
    actions = lc.handle(DesireRun(new, 2), 1.1)
    assert others(actions) == [StartJob(2, new, 2)]
    assert lc.report().restarts == 0
    assert lc.handle(Tick(), 2.0) == []  # the old timer fires into STARTING: ignored


def test_restart_while_running_stops_then_starts_fresh() -> None:
    lc = running()
    lc.handle(Exited(1, CRASH), 0.0)
    lc.handle(Tick(), 1.0)
    lc.handle(Started(2, pid=2), 1.0)
    assert lc.report().restarts == 1
    actions = lc.handle(Restart(), 2.0)
    assert others(actions) == [StopJob(2, 5.0)]
    actions = lc.handle(Exited(2, OK), 2.5)
    assert others(actions) == [StartJob(3, STREAM, 1)]
    assert lc.report().restarts == 0


def test_restart_of_an_unwanted_pipeline_does_nothing() -> None:
    lc = make()
    assert lc.handle(Restart(), 0.0) == []
    lc = running()
    lc.handle(DesireStop(), 1.0)
    assert lc.handle(Restart(), 1.1) == []
    lc.handle(Exited(1, OK), 1.2)
    assert lc.state is State.STOPPED


def test_restart_while_stopping_for_a_change_is_absorbed() -> None:
    lc = running()
    lc.handle(DesireRun(replace(STREAM, description="v2"), 2), 1.0)
    assert lc.handle(Restart(), 1.1) == []
    actions = lc.handle(Exited(1, OK), 1.2)
    assert [a.run for a in others(actions) if isinstance(a, StartJob)] == [2]


def test_the_transition_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(State)
    for targets in TRANSITIONS.values():
        assert State.PENDING not in targets


# Any sequence of events -------------------------------------------------------------------

OUTCOMES = [
    JobExit.succeeded(),
    JobExit.failed(1),
    JobExit.killed(signal.SIGKILL),
    JobExit.killed(signal.SIGTERM),
]
SPECS = [STREAM, replace(STREAM, description="b"), BATCH]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 3)), max_size=80))
def test_any_event_sequence_keeps_the_invariants(steps: list[tuple[int, int]]) -> None:
    """A simulated shell carries out the actions; whatever happens, there is never more than
    one job, a stop names the live job, and a job exists exactly in the job states."""
    lc = make()
    job: dict[str, int | bool] | None = None  # the simulated engine's one job
    now = 0.0
    timer: float | None = None

    def feed(event: Event) -> None:
        nonlocal job, timer
        for action in lc.handle(event, now):
            if isinstance(action, StartJob):
                assert job is None, "a second job was started"
                job = {"run": action.run, "started": False}
            elif isinstance(action, StopJob):
                assert job is not None
                assert action.run == job["run"]
            elif isinstance(action, ScheduleTimer):
                assert lc.state is State.BACKOFF
                timer = action.at
        assert (job is not None) == (lc.state in WITH_JOB), lc.state

    for kind, arg in steps:
        now += 0.5 * arg
        if kind == 0:
            feed(DesireRun(SPECS[arg % len(SPECS)], 1 + arg))
        elif kind == 1:
            feed(DesireStop())
        elif kind == 2:
            feed(Restart())
        elif kind == 3:
            feed(Trigger())
        elif kind == 4:
            if timer is not None:
                now = max(now, timer)
            feed(Tick())
        elif kind == 5 and job is not None and not job["started"]:
            job["started"] = True
            feed(Started(int(job["run"]), pid=1))
        elif kind == 6 and job is not None and not job["started"]:
            run, job = int(job["run"]), None
            feed(StartFailed(run, "no"))
        elif kind == 7 and job is not None and job["started"]:
            run, job = int(job["run"]), None
            feed(Exited(run, OUTCOMES[arg]))
        else:
            before = lc.report()
            stale = lc.run - 1
            assert lc.handle(Exited(stale, OUTCOMES[arg]), now) == []
            assert lc.handle(Started(stale, pid=1), now) == []
            assert lc.report() == before
