"""The ``tensorflow`` engine: a pipeline's components in a child Python process that can train
and convert TensorFlow models, with its training statistics tailed from TensorBoard files.

The child is ``<python> -m node.engines.tf_driver --spec <work_dir>/pipeline.json``: the python
runner with the TensorFlow built-ins added (see ``tf_driver``).  It is owned like every job
(``node.engines.process``: own process group, output to the log with a tail, SIGTERM, grace,
SIGKILL, always reaped), and its exit maps like the python engine's: 0 succeeded, 2 start_failed
(spec rejected, or TensorFlow missing in the child's interpreter), a signal killed, else failed.

Each start gets a fresh TensorBoard run directory, ``<work_dir>/tensorboard/run-<time>``, passed
to the child as ``ION_TENSORBOARD_DIR``; training components write their scalars there, and
``stats()`` reads them back incrementally with ``tfevents`` (no TensorFlow in the agent).  A
fresh directory per run keeps the previous run's values from passing for this one's, while
TensorBoard pointed at ``<work_dir>/tensorboard`` still shows the last ``KEEP_RUNS`` runs.

``engine_config`` keys (all optional; values are strings in the ION):

- ``intra_op_threads``: threads one TensorFlow op may use (``TF_NUM_INTRAOP_THREADS`` and
  ``OMP_NUM_THREADS``); default: TensorFlow's (every core).
- ``inter_op_threads``: ops run in parallel (``TF_NUM_INTEROP_THREADS``).
- ``log_level``: ``TF_CPP_MIN_LOG_LEVEL`` 0-3 [2: TensorFlow's C++ info and warnings, such as
  the CPU-feature banner, stay out of the job log; errors still show].
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from .base import JobSpec, JobStartError, JobStats
from .jobfiles import child_env, write_runner_spec
from .process import ChildProcess
from .procstats import read_process_stats
from .python_engine import PythonJob
from .tf_driver import MISSING_TENSORFLOW, tensorflow_installed
from .tfevents import EventTailer

SPEC_FILE = "pipeline.json"
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_ENV = "ION_TENSORBOARD_DIR"
KEEP_RUNS = 5
"""TensorBoard runs kept per work dir (older ones are removed when a job starts)."""

# Defaults for the child, unless the agent's environment or the job sets them already.
DEFAULT_ENV: Mapping[str, str] = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # Keras 3 may be configured for another backend in ~/.keras; these jobs need TensorFlow.
    "KERAS_BACKEND": "tensorflow",
}
_THREAD_KEYS = {
    "intra_op_threads": ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"),
    "inter_op_threads": ("TF_NUM_INTEROP_THREADS",),
}
CONFIG_KEYS = (*_THREAD_KEYS, "log_level")
_RUN_NAME = re.compile(r"^run-\d{8}T\d{6}-\d{4}$")


class TensorFlowEngine:
    """Runs ``tensorflow`` pipelines; ``python`` is the interpreter (default: the agent's)."""

    def __init__(self, python: str | os.PathLike[str] | None = None) -> None:
        self._python = os.fspath(python) if python is not None else sys.executable

    @property
    def name(self) -> str:
        return "tensorflow"

    def check_available(self) -> str | None:
        python = self._interpreter()
        if python is None:
            return f"Python interpreter {self._python!r} not found or not executable"
        # Only the agent's own interpreter can be asked without starting a process; for another
        # one the child checks at start and the job ends start_failed with the same message.
        if _same_file(python, sys.executable) and not tensorflow_installed():
            return MISSING_TENSORFLOW
        return None

    async def start(self, job: JobSpec) -> TensorFlowJob:
        if job.pipeline.engine != self.name:
            raise JobStartError(
                f"pipeline {job.pipeline.name!r} is for engine {job.pipeline.engine!r}, "
                f"not {self.name!r}"
            )
        reason = self.check_available()
        if reason is not None:
            raise JobStartError(reason)
        python = self._interpreter()
        assert python is not None
        config_env = engine_config_env(job.pipeline.engine_config)
        job = dataclasses.replace(job, work_dir=job.work_dir.absolute())
        run_dir = await asyncio.to_thread(new_run_dir, job.work_dir / TENSORBOARD_DIR)
        spec_path = await asyncio.to_thread(write_runner_spec, job, SPEC_FILE)
        env = child_env(job)
        for key, value in DEFAULT_ENV.items():
            if key not in os.environ and key not in job.env:
                env[key] = value
        env.setdefault("KERAS_HOME", str(job.work_dir / ".keras"))  # not the agent's home
        env.update(config_env)
        env[TENSORBOARD_ENV] = str(run_dir)
        argv = [python, "-m", "node.engines.tf_driver", "--spec", str(spec_path)]
        child = await ChildProcess.spawn(
            argv,
            job_id=job.job_id,
            node_id=job.node_id,
            cwd=job.work_dir,
            env=env,
            tail_lines=job.log_tail_lines,
        )
        return TensorFlowJob(child, EventTailer(run_dir))

    def _interpreter(self) -> str | None:
        return shutil.which(self._python)


class TensorFlowJob(PythonJob):
    """A running tensorflow pipeline: exits map like the python engine's; ``stats`` adds the
    latest TensorBoard scalars (e.g. ``epoch_loss``, ``epoch_val_loss``, ``step``) to the
    process's CPU and memory."""

    def __init__(self, child: ChildProcess, tailer: EventTailer) -> None:
        super().__init__(child)
        self._tailer = tailer

    @property
    def tensorboard_dir(self) -> Path:
        return self._tailer.directory

    def stats(self) -> JobStats | None:
        # Polled on demand rather than by a background task: the read per call is bounded
        # (tfevents.DEFAULT_POLL_BUDGET_BYTES) and there is no task to own or cancel.
        self._tailer.poll()
        scalars = self._tailer.values()
        process = read_process_stats(self.pid)
        if process is None and not scalars:
            return None
        values = dict(process.values) if process is not None else {}
        values.update(scalars)
        newest = self._tailer.newest_wall_time()
        updated_ms = process.updated_ms if process is not None else int((newest or 0) * 1000)
        return JobStats(updated_ms=updated_ms, values=values)


def engine_config_env(config: Mapping[str, str]) -> dict[str, str]:
    """The child environment for a pipeline's ``engine_config``; JobStartError if it is wrong."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise JobStartError(
            f"unknown engine_config key(s) for tensorflow: {', '.join(unknown)} "
            f"(known: {', '.join(CONFIG_KEYS)})"
        )
    env: dict[str, str] = {}
    for key, names in _THREAD_KEYS.items():
        if key in config:
            count = _int_in(config, key, 1, 1024)
            env.update(dict.fromkeys(names, str(count)))
    if "log_level" in config:
        env["TF_CPP_MIN_LOG_LEVEL"] = str(_int_in(config, "log_level", 0, 3))
    return env


def _int_in(config: Mapping[str, str], key: str, low: int, high: int) -> int:
    text = config[key].strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise JobStartError(
            f"engine_config {key} must be a whole number from {low} to {high}, not {text!r}"
        )
    return int(text)


def new_run_dir(base: Path, keep: int = KEEP_RUNS) -> Path:
    """A new, empty ``run-<time>`` directory under ``base``; older runs beyond ``keep`` are
    removed.  JobStartError when the directory cannot be made.  Blocking: call in a thread."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    try:
        base.mkdir(parents=True, exist_ok=True)
        runs = sorted(p for p in base.iterdir() if p.is_dir() and _RUN_NAME.match(p.name))
        # Names sort in start order: within one second, count on from the newest run of that
        # second (never reuse a pruned name, which would sort before the runs it follows).
        taken = [int(p.name[-4:]) for p in runs if p.name.split("-")[1] == stamp]
        n = max(taken, default=-1) + 1
        while True:
            path = base / f"run-{stamp}-{n:04d}"
            try:
                path.mkdir()
                break
            except FileExistsError:  # another job of this work dir started this instant
                n += 1
        for old in runs[: max(len(runs) + 1 - keep, 0)]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise JobStartError(f"cannot make a TensorBoard directory under {base}: {e}") from e
    return path


def _same_file(a: str, b: str) -> bool:
    # Not resolving symlinks: a venv's python links to the system one but has other packages.
    return os.path.abspath(a) == os.path.abspath(b)
