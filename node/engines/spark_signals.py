"""Stop requests in the Spark driver: SIGTERM must reach the pipeline, and never inside py4j.

The runner stops a pipeline from its SIGTERM handler (a flag, or ``Terminated`` raised to
interrupt), and Python runs signal handlers in the main thread, between bytecodes.  Two things
go wrong in a Spark driver that do not in a plain Python job:

1. A handler that raises while the main thread is inside py4j (waiting in ``collect()`` for a
   Spark job, typically) abandons a py4j exchange half-way: the connection stays out of step,
   and the next call reads the previous call's answer (``py4j does not exist in the JVM``),
   hiding the stop behind a confusing failure.
2. The kernel may deliver SIGTERM to one of py4j's threads; the main thread then sleeps on (in
   ``collect()`` or in a ``sleep``) and the request waits for it: a batch job would run to its
   end or to the SIGKILL after the grace period.

``StopGate`` therefore

- stands between the handlers and the signals: SIGTERM/SIGINT handlers registered in this
  process (the runner's, pyspark's) are installed behind a gate that, inside py4j, holds the
  request and delivers it the moment the main thread returns from py4j to the caller's code
  (a profile hook, set only while a request is held, raises it there: ``sys.setprofile``);
- learns of every request through ``signal.set_wakeup_fd`` in a thread of its own, whichever
  thread the kernel chose: when the request should interrupt (the first in a batch pipeline,
  the second in a streaming one, as the runner decides) it cancels the running Spark jobs, so
  a main thread waiting on one gets its answer; and when the main thread is not inside py4j it
  pokes it with a signal whose handler does nothing, which interrupts the system call it sleeps
  in so Python runs the pending handler.

Patching ``signal.signal`` is confined to the driver process (see spark_driver).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
POKE = signal.SIGURG
"""Ignored by default, so nothing relies on it; a no-op handler makes it interrupt."""

Handler = Callable[[int, FrameType | None], Any]


class StopGate:
    """Install once, from the main thread, before the runner registers its handlers."""

    def __init__(self, *, interrupt_on: int) -> None:
        """``interrupt_on``: which stop request interrupts the pipeline (1 batch, 2 streaming)."""
        self.interrupt_on = interrupt_on
        self.requests = 0
        self._handlers: dict[int, Handler] = {}
        self._held: list[int] = []
        self._real_signal = signal.signal
        self._main = threading.main_thread().ident
        self._read_fd, self._write_fd = os.pipe()
        self._thread = threading.Thread(target=self._watch, name="spark-stop-gate", daemon=True)

    def install(self) -> None:
        os.set_blocking(self._write_fd, False)  # set_wakeup_fd requires it
        self._real_signal(POKE, self._poked)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        signal.signal = self._register  # type: ignore[assignment]
        for signum in STOP_SIGNALS:  # handlers registered before us go behind the gate too
            current = signal.getsignal(signum)
            if callable(current):
                self._register(signum, current)
        self._thread.start()

    # -- the main thread ------------------------------------------------------------------------

    def _register(self, signum: int, handler: Any) -> Any:
        if signum not in STOP_SIGNALS or not callable(handler):
            self._handlers.pop(signum, None)
            return self._real_signal(signum, handler)
        previous = self._handlers.get(signum, signal.getsignal(signum))
        self._real_signal(signum, self._gate)  # first: it refuses calls from other threads
        self._handlers[signum] = handler
        return previous

    def _gate(self, signum: int, frame: FrameType | None) -> None:
        if not in_py4j(frame):
            self._deliver(signum, frame)
            return
        self._held.append(signum)
        if sys.getprofile() is None:
            sys.setprofile(self._on_return)

    def _on_return(self, frame: FrameType, event: str, arg: object) -> None:
        # Called for every call and return in the main thread, only while a request is held.
        if event != "return" or not _is_py4j(frame) or in_py4j(frame.f_back):
            return
        sys.setprofile(None)
        held, self._held = self._held, []
        for signum in held:  # raising here raises in the caller, after py4j returned
            self._deliver(signum, frame.f_back)

    def _poked(self, signum: int, frame: FrameType | None) -> None:
        # Interrupting the main thread's system call was the point; and should the profile
        # hook not be ours to set (someone is profiling), held requests go out from here.
        if self._held and not in_py4j(frame):
            held, self._held = self._held, []
            for held_signum in held:
                self._deliver(held_signum, frame)

    def _deliver(self, signum: int, frame: FrameType | None) -> None:
        handler = self._handlers.get(signum)
        if handler is not None:
            handler(signum, frame)

    # -- the watching thread ----------------------------------------------------------------

    def _watch(self) -> None:
        # Not this thread: a stop signal should go to the main thread where it can.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in STOP_SIGNALS:
                    self.requests += 1
                    self._relay()

    def _relay(self) -> None:
        if self.requests >= self.interrupt_on:
            cancel_spark_jobs()
        main = self._main
        if main is not None and not in_py4j(sys._current_frames().get(main)):
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pthread_kill(main, POKE)


def _is_py4j(frame: FrameType) -> bool:
    return "py4j" in frame.f_code.co_filename


def in_py4j(frame: FrameType | None) -> bool:
    """Is this frame, or one of its callers, py4j code?"""
    while frame is not None:
        if _is_py4j(frame):
            return True
        frame = frame.f_back
    return False


def cancel_spark_jobs() -> None:
    """Cancel whatever runs in the active Spark context (none: nothing to do)."""
    sc = active_context()
    if sc is None:
        return
    try:
        sc.cancelAllJobs()
        log.warning("stop requested: cancelled the running Spark jobs")
    except Exception as e:  # noqa: BLE001 - stopping anyway; the grace period is the bound
        log.warning("stop requested: cancelling the Spark jobs failed: %s", e)


def active_context() -> Any:
    """pyspark's active SparkContext, without importing pyspark when nothing did."""
    pyspark = sys.modules.get("pyspark")
    context = getattr(pyspark, "SparkContext", None)
    sc = getattr(context, "_active_spark_context", None)
    if sc is None or getattr(sc, "_jsc", None) is None:
        return None  # none, or still being built
    return sc
