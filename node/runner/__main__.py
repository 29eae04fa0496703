"""``python -m node.runner --spec FILE``: run one pipeline in this process (the python engine's
child, or by hand: a spec file and a directory are all it needs).

Signals: in a streaming pipeline the first SIGTERM (or SIGINT) asks the sources to stop and
the pipeline drains, then exits 0; a second one interrupts (status 143).  In a batch pipeline
SIGTERM interrupts the running component like Ctrl-C interrupts a script (status 143), since a
batch component has no natural point to stop at.  Exit statuses are listed in ``spec``.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from ion.model.definition import PipelineMode

from .component import StopSignal
from .edges import EdgeIO, SdkEdgeIO
from .graph import (
    ComponentFailedError,
    Plan,
    PlanError,
    Terminated,
    build_plan,
    close_all,
    run_batch,
    run_streaming,
)
from .registry import Registry
from .spec import (
    ERROR_PREFIX,
    EXIT_COMPONENT_FAILED,
    EXIT_OK,
    EXIT_SPEC_ERROR,
    EXIT_TERMINATED,
    SpecError,
    read,
)

log = logging.getLogger("node.runner")


def main(
    argv: Sequence[str] | None = None,
    registry: Registry | None = None,
    *,
    engine: str = "python",
    edge_io: EdgeIO | None = None,
) -> int:
    """Run the pipeline of ``--spec``; ``engine`` is what this runner runs (the spark and
    tensorflow drivers call this with their own registry and engine name).  Edges and
    telemetry go through ``edge_io`` (default: the SDK)."""
    parser = argparse.ArgumentParser(
        prog="python -m node.runner", description="Run one ION pipeline in this process."
    )
    parser.add_argument("--spec", required=True, type=Path, help="the pipeline spec (JSON)")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where components keep files (default: .)"
    )
    ns = parser.parse_args(argv)
    _configure_output()
    try:
        spec = read(ns.spec)
    except SpecError as e:
        return _rejected([str(e)])
    work_dir: Path = (ns.work_dir or Path.cwd()).resolve()
    with StopSignal() as stop:
        _on_stop_signals(stop, first=spec.pipeline.mode is PipelineMode.BATCH, again=True)
        try:
            plan = build_plan(spec, registry or Registry(), stop, work_dir, engine)
        except PlanError as e:
            return _rejected(e.problems)
        except Terminated:
            return EXIT_TERMINATED
        io = edge_io if edge_io is not None else SdkEdgeIO()
        try:
            return _execute(plan, stop, io)
        finally:
            try:
                io.close()
            except Exception:
                log.exception("closing the pipeline's SDK connection failed")


def _execute(plan: Plan, stop: StopSignal, io: EdgeIO) -> int:
    pipeline = plan.spec.pipeline
    log.info(
        "%s: running %s pipeline (ION version %d): %s",
        plan.spec.job_id,
        pipeline.mode.value,
        plan.spec.version,
        " -> ".join(s.name for s in plan.steps),
    )
    try:
        if pipeline.mode is PipelineMode.BATCH:
            run_batch(plan, stop, io)
        else:
            run_streaming(plan, stop, io)
    except Terminated:
        log.warning("%s: interrupted by a stop request", plan.spec.job_id)
        return EXIT_TERMINATED
    except ComponentFailedError as e:
        log.exception(
            "%s: component %s (%s) failed",
            plan.spec.job_id,
            e.component.name,
            e.component.type,
            exc_info=e.cause,
        )
        print(f"ion-runner: {e}", file=sys.stderr, flush=True)
        return EXIT_COMPONENT_FAILED
    except SystemExit as e:
        return _status_from_exit(e.code)
    finally:
        _on_stop_signals(stop, first=False, again=False)  # cleanup is not interrupted
        close_all(plan)
    if stop.is_set():
        log.info("%s: drained after a stop request", plan.spec.job_id)
    else:
        log.info("%s: finished", plan.spec.job_id)
    return EXIT_OK


def _rejected(problems: Sequence[str]) -> int:
    for problem in problems:
        print(f"{ERROR_PREFIX}{problem}", file=sys.stderr, flush=True)
    return EXIT_SPEC_ERROR


def _status_from_exit(code: object) -> int:
    """The status for a component's ``sys.exit(code)``; 2 is reserved for a rejected spec."""
    if code is None:
        return EXIT_OK
    if isinstance(code, int) and not isinstance(code, bool):
        if code == EXIT_SPEC_ERROR or not 0 <= code <= 255:
            log.warning("component asked for exit status %d; using %d", code, 1)
            return EXIT_COMPONENT_FAILED
        return code
    print(code, file=sys.stderr, flush=True)
    return EXIT_COMPONENT_FAILED


def _on_stop_signals(stop: StopSignal, *, first: bool, again: bool) -> None:
    """Handle SIGTERM/SIGINT: set the stop latch, and raise Terminated on the ``first`` request
    or only when it comes ``again``."""

    def handler(signum: int, frame: FrameType | None) -> None:
        repeated = stop.is_set()
        stop.set()
        if first or (again and repeated):
            raise Terminated

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _configure_output() -> None:
    # One line per record, no timestamps: the agent stamps each line with time and job id.
    level = os.environ.get("ION_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)


if __name__ == "__main__":
    sys.exit(main())
