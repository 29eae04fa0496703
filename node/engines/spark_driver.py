"""The spark engine's driver program: ``spark-submit ... spark_driver.py --spec FILE --info FILE``.

It is the python runner (``node.runner``) with more built-in components: the python engine's
plus the Spark ones (``node.components.spark``, when that package is there).  Components get their
session with ``SparkSession.builder.getOrCreate()``, which picks up spark-submit's settings;
the driver creates none itself, so a pipeline that fails its checks never waits for a Spark
session.

What it does besides running the pipeline:

- writes ``--info`` (JSON: its pid, then the application id and UI address once a component
  has created the Spark context), so the engine can signal the driver alone on stop (a drain;
  the JVM follows when the driver exits) and find the event log and the REST API;
- asks to be sent SIGTERM when its parent JVM dies (PR_SET_PDEATHSIG), so it never outlives
  the job's JVM;
- puts the stop signals behind a gate (``spark_signals.StopGate``): a stop request never
  raises inside py4j, and one that interrupts cancels the running Spark jobs;
- stops the Spark context at the end, so the event log is complete and renamed before exit.

spark-submit runs this file as a script: its directory (``node/engines``) would be first on
``sys.path`` and shadow top-level modules with names like ``process``; it is removed first.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).parent:
    del sys.path[0]

from ion.model.definition import PipelineMode
from node.engines.spark_signals import StopGate, active_context
from node.runner.registry import Registry
from node.runner.spec import ERROR_PREFIX, EXIT_SPEC_ERROR, SpecError
from node.runner.spec import read as read_spec

SPARK_COMPONENTS = "node.components.spark"
INFO_POLL_S = 0.2
STOP_TIMEOUT_S = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spark_driver.py", add_help=False)
    parser.add_argument("--info", type=Path, required=True)
    parser.add_argument("--spec", type=Path)
    ns, rest = parser.parse_known_args(argv)
    _die_with_parent(os.getppid())
    info = _InfoWriter(ns.info)
    if importlib.util.find_spec("pyspark") is None:
        print(
            f"{ERROR_PREFIX}pyspark is not installed for {sys.executable}; "
            "pip install 'ion-runtime[spark]'",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_SPEC_ERROR
    # py4j logs every connection it closes at INFO: after a failure those lines would bury
    # the runner's own last line, which is what the job's error report shows.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    StopGate(interrupt_on=1 if _batch(ns.spec) else 2).install()
    watcher = threading.Thread(target=info.watch, name="spark-info", daemon=True)
    watcher.start()
    from node.runner.__main__ import main as run_pipeline

    if ns.spec is not None:
        rest = ["--spec", str(ns.spec), *rest]
    try:
        return run_pipeline(rest, registry=registry(), engine="spark")
    finally:
        info.done.set()
        _stop_spark()


def _batch(spec: Path | None) -> bool:
    """Is the pipeline a batch one (a stop request interrupts it at once)?  When the spec
    cannot be read, the runner rejects it anyway; batch is the safe answer meanwhile."""
    try:
        return spec is None or read_spec(spec).pipeline.mode is PipelineMode.BATCH
    except SpecError:
        return True


def registry() -> Registry:
    """The components this engine runs: the python engine's built-ins, then the Spark ones
    (which replace python ones of the same name, e.g. ``csv_source`` gives a DataFrame)."""
    from node.runner.registry import default_builtins

    return Registry({**default_builtins(), **spark_builtins()})


def spark_builtins() -> Mapping[str, Any]:
    """``node.components.spark.BUILTINS``, or nothing when that package is not there."""
    try:
        module = importlib.import_module(SPARK_COMPONENTS)
    except ModuleNotFoundError as e:
        if e.name is not None and SPARK_COMPONENTS.startswith(e.name):
            return {}  # not part of this installation
        raise  # the package is there but one of its own imports is missing: say so
    builtins = getattr(module, "BUILTINS", None)
    if not isinstance(builtins, Mapping):
        print(f"WARNING: {SPARK_COMPONENTS} has no BUILTINS mapping", file=sys.stderr)
        return {}
    return builtins


class _InfoWriter:
    """Writes the driver's info file; ``watch`` adds the app id and UI once Spark is up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done = threading.Event()
        self._info: dict[str, object] = {"pid": os.getpid()}
        self._write()

    def watch(self) -> None:
        # Polls rather than hooking SparkContext: a component creates the context whenever it
        # likes, and reading one class attribute five times a second costs nothing.
        seen = ""
        while not self.done.wait(INFO_POLL_S):
            sc = active_context()  # never imports pyspark: it may not be needed at all
            if sc is None:
                continue
            try:
                app_id = str(sc.applicationId)
                ui_url = sc.uiWebUrl or ""
            except Exception:  # noqa: BLE001, S112 - stopping or half-built: try again later
                continue
            if app_id != seen:
                seen = app_id
                self._info.update(app_id=app_id, ui_url=ui_url)
                self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self._info))
            tmp.replace(self.path)
        except OSError as e:
            print(f"WARNING: cannot write {self.path}: {e}", file=sys.stderr, flush=True)


def _stop_spark() -> None:
    """Stop the Spark context, if a component created one, so the event log is complete.

    From a thread of its own (a py4j connection of its own): a stop request may have
    interrupted the main thread in the middle of a py4j exchange, leaving its connection out
    of step.  Bounded: the JVM may be going away already.
    """
    sc = active_context()
    if sc is None:
        return

    def stop() -> None:
        with contextlib.suppress(Exception):
            sc.stop()

    stopper = threading.Thread(target=stop, name="spark-stop", daemon=True)
    stopper.start()
    stopper.join(STOP_TIMEOUT_S)


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent (the JVM) dies, so a driver is never orphaned."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call took effect
            os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
