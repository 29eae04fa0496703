"""Stand-ins and recorded data for the spark engine's unit tests: a recorded event log and
its totals, canned REST answers and a fake driver UI, fake JDKs, a stop-gate script."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from spark_support import TESTS

from node.engines.spark_eventlog import EventLogStats
from node.engines.spark_submit import SparkSettings, Submission

SAMPLE = TESTS / "spark_support_eventlog.jsonl"
"""A real event log (Spark 4.3, local[2]: a shuffle, a parquet write and read, a failing job),
with stack traces, plans and accumulables cut to keep it small."""
SAMPLE_APP = "local-1795482738405"
SAMPLE_TOTALS = {
    "spark.jobs.started": 7,
    "spark.jobs.succeeded": 6,
    "spark.jobs.failed": 1,
    "spark.jobs.active": 0,
    "spark.stages.submitted": 7,
    "spark.stages.completed": 6,
    "spark.stages.failed": 1,
    "spark.tasks.completed": 9,
    "spark.tasks.failed": 2,
    "spark.tasks.killed": 0,
    "spark.executors.added": 1,
    "spark.executors.active": 1,
    "spark.records.read": 600,
    "spark.records.written": 200,
    "spark.bytes.written": 2418,
    "spark.shuffle.records_written": 12,
    "spark.shuffle.bytes_written": 740,
    "spark.shuffle.bytes_read": 740,
}


def sample_lines() -> list[bytes]:
    return SAMPLE.read_bytes().splitlines()


def folded(lines: list[bytes]) -> EventLogStats:
    stats = EventLogStats()
    for line in lines:
        stats.feed_line(line)
    return stats


def assert_sample_totals(values: Mapping[str, float]) -> None:
    for name, expected in SAMPLE_TOTALS.items():
        assert values[name] == expected, name
    assert values["spark.executor.run_time_s"] == pytest.approx(3.051)


RUNNING_JOBS = [
    {"jobId": 3, "status": "RUNNING", "numTasks": 8, "numActiveTasks": 2,
     "numCompletedTasks": 5, "numSkippedTasks": 1, "numFailedTasks": 1},
    {"jobId": 4, "status": "RUNNING", "numTasks": 2, "numActiveTasks": 0,
     "numCompletedTasks": 0, "numSkippedTasks": 0, "numFailedTasks": 0},
    {"jobId": 2, "status": "SUCCEEDED", "numTasks": 100, "numCompletedTasks": 100},
]  # fmt: skip
ACTIVE_STAGES = [{"stageId": 7, "status": "ACTIVE", "numTasks": 8}]


@dataclass
class FakeDriver:
    """A stand-in for the driver's UI: canned JSON per path, or a scripted misbehaviour."""

    routes: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None
    requests: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serve_fake_driver() -> Iterator[tuple[FakeDriver, str]]:
    state = FakeDriver()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body = state.raw
            if body is None:
                if self.path not in state.routes:
                    self.send_error(404)
                    return
                body = json.dumps(state.routes[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def submission(tmp_path: Path, **conf: str) -> Submission:
    return Submission(
        spark_submit="/opt/spark/bin/spark-submit",
        settings=SparkSettings(master="local[2]", conf=conf),
        app_name="ion/train",
        spec_path=tmp_path / "pipeline.json",
        info_path=tmp_path / "info.json",
        event_dir=tmp_path / "events",
        log4j_path=tmp_path / "log4j2.properties",
        work_dir=tmp_path,
        loopback=True,
    )


def fake_jdk(root: Path, version: str | None) -> Path:
    (root / "bin").mkdir(parents=True)
    java = root / "bin" / "java"
    java.write_text("#!/bin/sh\nexit 1\n")
    java.chmod(0o755)
    if version is not None:
        (root / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{version}"\n')
    return root


# Run in a child process of its own: it replaces signal.signal and the wakeup fd.  "py4j" is a
# module whose file name says py4j; its call blocks reading a pipe, as py4j waits for the JVM.
GATE_SCRIPT = r"""
import os, signal, sys, threading, time
from node.engines.spark_signals import StopGate

scenario = sys.argv[1]
py4j = {}
exec(compile(
    "import os\ndef call(fd):\n    answer = os.read(fd, 10)\n    print('answer read', flush=True)\n"
    "    return answer\n",
    "/site-packages/py4j/fake_clientserver.py", "exec"), py4j)

class Stop(BaseException):
    pass

def handler(signum, frame):
    print("handler ran", flush=True)
    raise Stop

StopGate(interrupt_on=1).install()
signal.signal(signal.SIGTERM, handler)  # as the runner does, after the gate
r, w = os.pipe()

def later():
    time.sleep(0.3)
    if scenario == "in-py4j":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        os.write(w, b"answer")
    else:  # delivered to this thread, not the main one, which sleeps outside py4j
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

threading.Thread(target=later, daemon=True).start()
began = time.monotonic()
try:
    if scenario == "in-py4j":
        py4j["call"](r)
        print("not interrupted", flush=True)
    else:
        time.sleep(10)
except Stop:
    print(f"stopped in the caller after {time.monotonic() - began:.1f}s", flush=True)
"""


def run_gate(scenario: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", GATE_SCRIPT, scenario],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(TESTS.parent)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()
