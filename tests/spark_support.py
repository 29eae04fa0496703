"""Helpers for the spark engine's tests: test components made installable, pipelines, and a
Spark standalone cluster (master and one worker) on loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spark_support_components
from support.pipelines import comp, install_plugin, pipe

from ion.model.definition import (
    Component,
    Pipeline,
    PipelineMode,
)
from node.engines.spark_engine import INFO_FILE, SparkEngine
from node.engines.spark_submit import find_spark_submit

BATCH = PipelineMode.BATCH
STREAMING = PipelineMode.STREAMING
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# Start-up dominates these tiny jobs: the quick JIT tier only, the simplest collector.
QUICK_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
# Small and quick: one or two cores at most (the test machine is shared), little memory.
SMALL = {
    "master": "local[1]",
    "spark.driver.memory": "512m",
    "spark.sql.shuffle.partitions": "2",
    "spark.driver.defaultJavaOptions": QUICK_JVM,
}


def plugin_dir(root: Path) -> Path:
    """A directory holding a dist-info that declares the test components as entry points
    (their module is tests/spark_support_components.py); put it and tests/ on PYTHONPATH."""
    module = spark_support_components.__name__
    entries = {n: f"{module}:{cls}" for n, cls in spark_support_components.ENTRY_POINTS.items()}
    return install_plugin(root, "ion-spark-testplug", entries)


def child_pythonpath(plugins: Path) -> str:
    return os.pathsep.join([str(plugins), str(TESTS), str(REPO)])


def spark_pipe(
    name: str,
    mode: PipelineMode,
    *components: Component,
    config: Mapping[str, str] | None = None,
) -> Pipeline:
    return pipe(name, mode, *components, engine="spark", config=SMALL if config is None else config)


def spark_bin(tool: str) -> Path:
    """A tool of the installed pyspark (spark-class, ...), next to its spark-submit."""
    submit, reason = find_spark_submit(None, os.environ)
    assert submit is not None, reason
    return Path(submit).with_name(tool)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


# -- the conformance case and job helpers ------------------------------------------------

SPARK_TIMEOUT_S = 120.0
"""A Spark session takes 4-15 s to create on a small shared machine; jobs are tiny."""


@dataclass
class SparkCase:
    """The conformance scenarios for spark.  Pipelines that only print use the python
    built-ins (the suite waits 15 s for output, about what creating a Spark session takes on
    a busy machine); Spark jobs proper have tests of their own, with longer time limits."""

    work_root: Path
    env: Mapping[str, str] = field(default_factory=dict)
    name: str = "spark"
    stop_grace_s: float = 20.0

    def engine(self) -> SparkEngine:
        return SparkEngine(poll_interval_s=0.25)

    def missing_engine(self) -> SparkEngine:
        return SparkEngine(spark_submit=self.work_root / "no-such-spark-submit")

    def printing(self, marker: str) -> Pipeline:
        return spark_pipe(
            "printing",
            BATCH,
            comp("src", "counter_source", {"count": 2}),
            comp("out", "log_sink", {"prefix": f"{marker} "}, "src"),
        )

    def long_running(self, marker: str) -> Pipeline:
        return spark_pipe(
            "long-running",
            STREAMING,
            comp("src", "counter_source", {"rate": 20.0}),
            comp("out", "log_sink", {"prefix": f"{marker} "}, "src"),
        )

    def crashing(self, code: int, marker: str) -> Pipeline:
        return spark_pipe(
            "crashing", BATCH, comp("boom", "fail", {"code": code, "message": marker})
        )

    def bad_arguments(self) -> tuple[Pipeline, str]:
        bad = comp("sum", "spark_sum", {"count": "many"})
        return spark_pipe("bad-args", BATCH, bad), "argument 'count' must be an integer"

    def unknown_component(self) -> tuple[Pipeline, str]:
        return spark_pipe("unknown", BATCH, comp("x", "no_such_thing")), "'no_such_thing'"

    def ignoring_sigterm(self) -> Pipeline:
        return spark_pipe("stubborn", STREAMING, comp("x", "ignores_term"))


def info_of(work_dir: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((work_dir / INFO_FILE).read_text())
    return info


# -- a standalone cluster -------------------------------------------------------------------


@dataclass
class Daemon:
    """A Spark daemon (master or worker) in its own process group, output in a file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the group, wait, SIGKILL; reap the daemon and what it left to us."""
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # executors the worker left behind
        reap_group(pgid)


def reap_group(pgid: int, within_s: float = 5.0) -> None:
    """Reap members of ``pgid`` that were re-parented to us (the test session is a
    subreaper) once they exit; give up after ``within_s``."""
    from node.engines.spark_monitor import process_tree

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        members = [p for p in process_tree(pgid) if p.pgrp == pgid]
        if not members:
            return
        for p in members:
            if p.ppid == os.getpid() and p.state == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p.pid, os.WNOHANG)
        time.sleep(0.05)


@dataclass
class StandaloneCluster:
    """One master and one worker on 127.0.0.1."""

    root: Path
    master_port: int = field(default_factory=free_port)
    master_ui_port: int = field(default_factory=free_port)
    worker_port: int = field(default_factory=free_port)
    worker_ui_port: int = field(default_factory=free_port)
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    @property
    def master_json_url(self) -> str:
        return f"http://127.0.0.1:{self.master_ui_port}/json/"

    def _spawn(self, name: str, *args: str) -> Daemon:
        log_path = self.root / f"{name}.log"
        env = {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_NO_DAEMONIZE": "1",
            "SPARK_LOG_DIR": str(self.root / "logs"),
            "SPARK_DAEMON_MEMORY": "256m",
            "SPARK_DAEMON_JAVA_OPTS": QUICK_JVM,
        }
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [str(spark_bin("spark-class")), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
                start_new_session=True,
            )
        daemon = Daemon(name, process, log_path)
        self.daemons.append(daemon)
        return daemon

    def start(self, timeout_s: float = 90.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.master_port),
            "--webui-port",
            str(self.master_ui_port),
        )
        self._spawn(
            "worker",
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.worker_port),
            "--webui-port",
            str(self.worker_ui_port),
            "--cores",
            "1",
            "--memory",
            "1g",
            "--work-dir",
            str(self.root / "work"),
            self.master_url,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for daemon in self.daemons:
                if daemon.process.poll() is not None:
                    raise RuntimeError(f"{daemon.name} exited:\n{self.logs()}")
            with contextlib.suppress(OSError, ValueError):
                state = get_json(self.master_json_url)
                if any(w.get("state") == "ALIVE" for w in state.get("workers", [])):
                    return
            time.sleep(0.25)
        raise TimeoutError(f"the cluster did not come up in {timeout_s}s:\n{self.logs()}")

    def state(self) -> Any:
        return get_json(self.master_json_url)

    def logs(self) -> str:
        return "\n".join(
            f"--- {d.name} ---\n{d.log_path.read_text(errors='replace')[-4000:]}"
            for d in self.daemons
            if d.log_path.exists()
        )

    def stop(self) -> None:
        for daemon in reversed(self.daemons):  # the worker first: it kills its executors
            daemon.stop()


@contextlib.contextmanager
def standalone_cluster(root: Path) -> Iterator[StandaloneCluster]:
    cluster = StandaloneCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
