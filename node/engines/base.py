"""The one interface every engine adapter implements, and the values it trades in.

An engine turns a ``JobSpec`` (one pipeline of one ION on this node) into a ``RunningJob``: a
child process the adapter owns completely (see ``node.engines.process``), whose output goes to
the log, which ends in a ``JobExit`` and may report ``JobStats`` while it runs.

Expected outcomes are values: a job that crashes, is killed, or rejects its own spec ends in a
``JobExit``.  ``JobStartError`` is raised only when no job could be started at all (the engine
is not installed here, its program cannot be executed, the job's files cannot be written).
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ion.errors import IonError
from ion.model.definition import Pipeline
from node.runner.spec import EdgePort

DEFAULT_TAIL_LINES = 50
"""How many of a job's last output lines are kept for its error report."""


class JobStartError(IonError):
    """No job could be started.  ``reason`` is one line written for an operator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything an engine needs to run one pipeline on this node."""

    ion: str
    pipeline: Pipeline
    node_id: str
    work_dir: Path
    version: int = 0
    """The ION version the pipeline comes from (for logs and status)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to (and overriding) the agent's environment for the child."""
    agent_socket: Path | None = None
    """The agent's local component socket, when there is one (the SDK finds it here)."""
    log_tail_lines: int = DEFAULT_TAIL_LINES
    edges: tuple[EdgePort, ...] = ()
    """The pipeline's ports that are ends of ION edges (the runner binds them to the SDK)."""

    def __post_init__(self) -> None:
        if self.log_tail_lines < 0:
            raise ValueError("log_tail_lines must not be negative")
        for key in self.env:
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"invalid environment variable name {key!r}")

    @property
    def job_id(self) -> str:
        """``<ion>/<pipeline>``: the pipeline id carried on every log record of the job."""
        return f"{self.ion}/{self.pipeline.name}"


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    START_FAILED = "start_failed"


@dataclass(frozen=True, slots=True)
class JobExit:
    """How a job ended.  Build it with the class methods; ``tail`` is its last output lines."""

    outcome: Outcome
    code: int | None = None
    """The exit status (SUCCEEDED: 0; FAILED: non-zero)."""
    signal: int | None = None
    """The signal that ended it (KILLED)."""
    reason: str = ""
    """Why it could not start (START_FAILED)."""
    tail: tuple[str, ...] = ()

    @classmethod
    def succeeded(cls, tail: tuple[str, ...] = ()) -> JobExit:
        return cls(Outcome.SUCCEEDED, code=0, tail=tail)

    @classmethod
    def failed(cls, code: int, tail: tuple[str, ...] = ()) -> JobExit:
        if code == 0:
            raise ValueError("a failed job has a non-zero exit code")
        return cls(Outcome.FAILED, code=code, tail=tail)

    @classmethod
    def killed(cls, signal_number: int, tail: tuple[str, ...] = ()) -> JobExit:
        return cls(Outcome.KILLED, signal=signal_number, tail=tail)

    @classmethod
    def start_failed(cls, reason: str, tail: tuple[str, ...] = ()) -> JobExit:
        return cls(Outcome.START_FAILED, reason=reason, tail=tail)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCEEDED

    def describe(self) -> str:
        """One line for status reports: what happened and the last thing the job said."""
        if self.outcome is Outcome.SUCCEEDED:
            return "succeeded"
        if self.outcome is Outcome.START_FAILED:
            return f"could not start: {self.reason}"
        if self.outcome is Outcome.KILLED:
            text = f"killed by {_signal_name(self.signal)}"
        else:
            text = f"failed with exit code {self.code}"
        last = next((line for line in reversed(self.tail) if line.strip()), "")
        return f"{text}: {last.strip()}" if last else text


def _signal_name(number: int | None) -> str:
    if number is None:
        return "a signal"
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass(frozen=True, slots=True)
class JobStats:
    """The latest statistics a running job reported (Spark stages, TensorBoard scalars, ...)."""

    updated_ms: int
    """Wall-clock time of the newest value, in milliseconds since the epoch."""
    values: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class RunningJob(Protocol):
    """A started job.  Its process is reaped by the time ``wait`` or ``stop`` returns."""

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process group id."""
        ...

    async def wait(self) -> JobExit:
        """Wait for the job to end on its own; cancelling the wait leaves the job running."""
        ...

    async def stop(self, grace_s: float) -> JobExit:
        """SIGTERM the job's process group, SIGKILL it after ``grace_s``; return how it ended.
        Stopping a job that already ended just returns its exit."""
        ...

    def stats(self) -> JobStats | None:
        """The latest statistics, or None when the job has reported none (yet)."""
        ...


@runtime_checkable
class Engine(Protocol):
    """One way of running pipelines (``python``, ``spark``, ``tensorflow``)."""

    @property
    def name(self) -> str:
        """The engine name pipelines use (``Pipeline.engine``)."""
        ...

    def check_available(self) -> str | None:
        """None when the engine can run jobs here, else why not, with the fix, for example
        ``"pyspark is not installed; pip install 'ion-runtime[spark]'"``.  Cheap: no child."""
        ...

    async def start(self, job: JobSpec) -> RunningJob:
        """Start the job; raises ``JobStartError`` when it cannot be started at all."""
        ...
