"""What pipeline components call: ``Client``, the SDK's API, whatever is behind it.

Every ``emit*`` returns once the agent holds the message durably (its outbox), or raises:
``UnavailableError`` when trying again later may work (outbox full, agent gone, no answer in
time), ``InputError`` when it will not (unknown edge, a body that does not belong there).  Each
message gets its message id here, so re-emitting the same envelope after a timeout is
deduplicated downstream.  ``emit_nowait`` pipelines instead: it returns an ``EmitHandle`` at
once, and ``flush()`` waits for everything sent so far and raises the first failure among the
handles nobody waited for.  The helpers take ``wait=False`` for the same.

Two implementations: ``node.sdk.socket_client.AgentClient`` (the agent's Unix socket) and
``node.sdk.standalone.StandaloneClient`` (JSON lines, no agent); ``node.sdk.connect()`` picks.

Extension point for models (a later issue): publishing a model is ``emit`` of a manifest and
its chunks on the model edge, and receiving updates is a subscription to model edges, so the
methods to come (publish a file or directory, the current model path, an update callback or
iterator for hot swap) belong in ``Client``, built on ``emit_nowait`` and ``subscribe``, with
no change to either transport or to the frames.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from ion.errors import IonError, UnavailableError
from ion.model.event import DataRecords, Event, Severity
from ion.model.health import HealthReport, Metric, StatsReport, Table, TimeSeries
from ion.model.messages import Body, Envelope, MessageIds, new_envelope
from node.models.artifact import ModelArtifact, ModelFeed

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_WINDOW",
    "Client",
    "EmitHandle",
    "Identity",
    "StopFlag",
]

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_WINDOW = 64


@dataclass(frozen=True, slots=True)
class Identity:
    """Which component this is (from the environment the agent gave the pipeline)."""

    ion: str = ""
    pipeline: str = ""
    component: str = ""
    node_id: str = ""


class StopFlag(Protocol):
    """Anything with ``is_set()``, e.g. the runner's ``ctx.stop_signal``."""

    def is_set(self) -> bool: ...


class EmitHandle:
    """The outcome of one pipelined emit."""

    __slots__ = ("_cond", "_done", "_error", "_record", "request_id")

    def __init__(self, request_id: int, cond: threading.Condition | None, *, record: bool) -> None:
        self.request_id = request_id
        self._cond = cond
        self._done = cond is None
        self._error: IonError | None = None
        self._record = record  # failures nobody waits for are raised by flush()

    @classmethod
    def completed(cls, error: IonError | None = None) -> EmitHandle:
        h = cls(0, None, record=False)
        h._error = error
        return h

    def done(self) -> bool:
        return self._done

    def settle(self, error: IonError | None) -> bool:
        """For transports: the answer came (under the transport's condition).  True when it
        is a failure that ``flush`` must report unless someone waits on this handle."""
        self._error = error
        self._done = True
        return error is not None and self._record

    @property
    def unobserved_error(self) -> IonError | None:
        """The failure, if nobody has called ``result`` (what ``flush`` raises)."""
        return self._error if self._record else None

    def result(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        """Wait for the agent's answer; raise what it refused with."""
        if not self._done:
            assert self._cond is not None
            with self._cond:
                if not self._cond.wait_for(self.done, timeout):
                    raise UnavailableError(
                        f"no answer from the agent within {timeout:g}s "
                        "(the message may still have been stored; emitting it again is safe)"
                    )
        self._record = False  # whoever waited has seen the outcome
        if self._error is not None:
            raise self._error


class _MessageIds:
    """``ion.model.messages.MessageIds`` (ids that grow, as the agent makes its own) for the
    SDK: thread-safe, on the client's clock, started afresh in a forked child."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._ids = MessageIds()
        self._pid = os.getpid()

    def next(self) -> str:
        with self._lock:
            if self._pid != os.getpid():  # a forked child starts afresh, not after its parent
                self._pid, self._ids = os.getpid(), MessageIds()
            return self._ids.take(int(self._clock() * 1000))[0]


class Client(abc.ABC):
    """The SDK's API (see the module docstring); ``node.sdk.connect()`` picks the kind."""

    def __init__(self, identity: Identity, *, clock: Callable[[], float] = time.time) -> None:
        self.identity = identity
        self._clock = clock
        self._message_ids = _MessageIds(clock)

    # -- what subclasses provide --------------------------------------------------------

    @abc.abstractmethod
    def _submit(self, edge: str, envelope: Envelope, *, record: bool) -> EmitHandle: ...

    @abc.abstractmethod
    def flush(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        """Wait for every emit made so far; raise the first failure no handle reported."""

    @abc.abstractmethod
    def subscribe(
        self,
        edges: Iterable[str] = (),
        *,
        window: int = DEFAULT_WINDOW,
        stop: StopFlag | None = None,
    ) -> Iterator[tuple[str, Envelope]]:
        """Iterate over ``(edge, envelope)`` arriving on ``edges`` (empty: all into this
        pipeline).  Taking the next item acknowledges the previous one (at least once: an
        item the component did not finish comes again after a crash).  Ends when ``stop`` is
        set or the client is closed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush (bounded by the timeout), then release the connection or file."""

    # -- the API ------------------------------------------------------------------------

    def envelope(self, body: Body, *, correlation_id: str = "") -> Envelope:
        """``body`` in an envelope stamped now, with a fresh message id."""
        return new_envelope(
            body,
            source_node=self.identity.node_id,
            now_ms=int(self._clock() * 1000),
            ion=self.identity.ion,
            correlation_id=correlation_id,
            message_id=self._message_ids.next(),
        )

    def emit(
        self,
        edge: str,
        body: Body | Envelope,
        *,
        correlation_id: str = "",
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Send ``body`` along ``edge`` ("" = pipeline telemetry); return once it is stored.

        Pass an ``Envelope`` (from ``envelope()``) to control the message id, e.g. to retry."""
        env = (
            body
            if isinstance(body, Envelope)
            else self.envelope(body, correlation_id=correlation_id)
        )
        self._submit(edge, env, record=False).result(timeout)

    def emit_many(
        self,
        edge: str,
        bodies: Iterable[Body | Envelope],
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        """``emit`` of every body, in order, pipelined: returns once all of them are stored,
        or raises the first refusal after the agent answered for all (the others may have
        been stored; emitting the same envelopes again is safe).  The agent stores what
        reaches it together in one commit, as runs of one outbox item per batch of messages
        (``node.agent.service.Agent.publish_many``), so this costs the agent much less per
        message than ``emit`` in a loop.  ``timeout`` bounds the whole call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        handles = [
            self._submit(edge, b if isinstance(b, Envelope) else self.envelope(b), record=False)
            for b in bodies
        ]
        first: IonError | None = None
        for handle in handles:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                handle.result(left)
            except IonError as exc:
                first = first or exc
        if first is not None:
            raise first

    def emit_nowait(
        self, edge: str, body: Body | Envelope, *, correlation_id: str = ""
    ) -> EmitHandle:
        """Send without waiting for the agent; see ``EmitHandle`` and ``flush``."""
        env = (
            body
            if isinstance(body, Envelope)
            else self.envelope(body, correlation_id=correlation_id)
        )
        return self._submit(edge, env, record=True)

    def emit_stats(
        self,
        scalars: Mapping[str, float],
        *,
        series: Sequence[TimeSeries] = (),
        tables: Sequence[Table] = (),
        edge: str = "",
        wait: bool = True,
    ) -> None:
        """Scalar statistics (and optional time series and tables) of this component."""
        body = StatsReport(
            pipeline=self.identity.pipeline,
            component=self.identity.component,
            scalars=tuple(Metric(str(k), float(v)) for k, v in scalars.items()),
            series=tuple(series),
            tables=tuple(tables),
        )
        self._send(edge, body, wait=wait)

    def emit_event(
        self,
        type: str,
        message: str,
        severity: Severity | str = Severity.INFO,
        attributes: Mapping[str, str] | None = None,
        edge: str = "",
        *,
        subject: str = "",
        wait: bool = True,
    ) -> None:
        """An event (``type`` dotted, e.g. ``"model.loaded"``) for people and for rules."""
        body = Event(
            type=type,
            severity=Severity(severity),
            subject=subject,
            message=message,
            attributes=dict(attributes or {}),
            pipeline=self.identity.pipeline,
            component=self.identity.component,
        )
        self._send(edge, body, wait=wait)

    def emit_health(self, report: HealthReport, edge: str = "", *, wait: bool = True) -> None:
        """Health objects (histograms, drift, ...); an empty pipeline/component is filled in."""
        if not report.pipeline or not report.component:
            report = dataclasses.replace(
                report,
                pipeline=report.pipeline or self.identity.pipeline,
                component=report.component or self.identity.component,
            )
        self._send(edge, report, wait=wait)

    def emit_data(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[float]],
        edge: str,
        *,
        timestamps_ms: Sequence[int] = (),
        wait: bool = True,
    ) -> None:
        """Rows of numbers along a data edge (``rows`` may be a 2-D numpy array)."""
        tolist = getattr(rows, "tolist", None)
        if callable(tolist):
            rows = tolist()
        width = len(columns)
        values: list[float] = []
        for i, row in enumerate(rows):
            if len(row) != width:
                raise ValueError(f"row {i} has {len(row)} values for {width} columns")
            values.extend(float(v) for v in row)
        body = DataRecords(
            columns=tuple(columns), values=tuple(values), timestamps_ms=tuple(timestamps_ms)
        )
        self._send(edge, body, wait=wait)

    def publish_model(
        self, edge: str, artifact: ModelArtifact, *, timeout: float | None = DEFAULT_TIMEOUT_S
    ) -> None:
        """Publish a trained model (a file or directory on this machine) along the model edge
        ``edge``; returns once the agent has packed and queued it."""
        from node.models.artifact import manifest_for

        body = manifest_for(
            artifact, ion=self.identity.ion, edge=edge, pipeline=self.identity.pipeline
        )
        self.emit(edge, body, timeout=timeout)

    def model_feed(self, edge: str, *, stop: StopFlag | None = None) -> ModelFeed:
        """Follow the model versions the agent activates on the model edge ``edge`` (see
        ``node.sdk.models``)."""
        from .models import FeedFollower

        return FeedFollower(self, edge, stop)

    def _send(self, edge: str, body: Body, *, wait: bool) -> None:
        if wait:
            self.emit(edge, body)
        else:
            self.emit_nowait(edge, body)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
