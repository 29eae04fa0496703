"""The python engine with real child processes: the conformance suite, then what is particular
to the python runner (draining, wiring, exit statuses, process-group hygiene)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from engine_conformance import EngineConformance, Jobs, gone, group_alive, until, wait_for_output
from support.pipelines import comp, install_plugin, pipe

from ion.model.definition import (
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
)
from node.engines.base import JobSpec, JobStartError, Outcome
from node.engines.process import MAX_LINE_BYTES, output_log
from node.engines.python_engine import PythonEngine

pytestmark = pytest.mark.integration  # real child processes throughout

REPO = Path(__file__).resolve().parents[1]
BATCH = PipelineMode.BATCH
STREAMING = PipelineMode.STREAMING

# Installed (as far as importlib.metadata can tell) through a dist-info directory on the
# child's PYTHONPATH: exactly how a third-party package provides components.
PLUGIN_MODULE = '''
import os, signal, subprocess, sys, time
from node.runner import Component


class IgnoresTerm(Component):
    output_ports = ()

    def stream(self, inputs):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        while True:
            time.sleep(0.02)
            yield None


class Grandchild(Component):
    """Starts a process that would outlive the job if nobody cleaned up its group."""

    output_ports = ()

    def _spawn(self):
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        (self.ctx.work_dir / "grandchild.pid").write_text(str(p.pid))

    def run(self, inputs):
        self._spawn()

    def stream(self, inputs):
        self._spawn()
        while self.ctx.sleep(0.05):
            yield None


class Raises(Component):
    output_ports = ()

    def run(self, inputs):
        raise ValueError("bad reading 42")

    def stream(self, inputs):
        raise ValueError("bad reading 42")


class EnvEcho(Component):
    output_ports = ()

    def run(self, inputs):
        for key in ("ION_ION", "ION_PIPELINE", "ION_NODE_ID", "ION_VERSION", "EXTRA"):
            print(f"{key}={os.environ.get(key)}")
        print(f"cwd={os.getcwd()}")
'''

ENTRY_POINTS = {
    "ignores_term": "ion_testplug:IgnoresTerm",
    "grandchild": "ion_testplug:Grandchild",
    "raises": "ion_testplug:Raises",
    "env_echo": "ion_testplug:EnvEcho",
}


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin(
        tmp_path_factory.mktemp("plugins"),
        "ion-testplug",
        ENTRY_POINTS,
        module="ion_testplug",
        source=PLUGIN_MODULE,
    )


@dataclass
class PythonCase:
    work_root: Path
    env: Mapping[str, str] = field(default_factory=dict)
    name: str = "python"
    stop_grace_s: float = 5.0

    def engine(self) -> PythonEngine:
        return PythonEngine()

    def missing_engine(self) -> PythonEngine:
        return PythonEngine(python=self.work_root / "no-such-python")

    def printing(self, marker: str) -> Pipeline:
        return pipe(
            "printing",
            BATCH,
            comp("src", "counter_source", {"count": 2}),
            comp("out", "log_sink", {"prefix": f"{marker} "}, "src"),
        )

    def long_running(self, marker: str) -> Pipeline:
        return pipe(
            "long-running",
            STREAMING,
            comp("src", "counter_source", {"rate": 50.0}),
            comp("out", "log_sink", {"prefix": f"{marker} "}, "src"),
        )

    def crashing(self, code: int, marker: str) -> Pipeline:
        return pipe("crashing", BATCH, comp("boom", "fail", {"code": code, "message": marker}))

    def bad_arguments(self) -> tuple[Pipeline, str]:
        bad = comp("src", "counter_source", {"count": "many"})
        return pipe("bad-args", BATCH, bad), "argument 'count' must be an integer"

    def unknown_component(self) -> tuple[Pipeline, str]:
        return pipe("unknown", BATCH, comp("x", "no_such_thing")), "'no_such_thing'"

    def ignoring_sigterm(self) -> Pipeline:
        return pipe("stubborn", STREAMING, comp("x", "ignores_term"))


@pytest.fixture
def python_case(tmp_path: Path, plugin_path: Path) -> PythonCase:
    return PythonCase(
        work_root=tmp_path, env={"PYTHONPATH": os.pathsep.join([str(plugin_path), str(REPO)])}
    )


class TestPythonConformance(EngineConformance):
    @pytest.fixture
    def case(self, python_case: PythonCase) -> PythonCase:
        return python_case


# What is particular to the python runner ---------------------------------------------------


@pytest_asyncio.fixture
async def jobs(python_case: PythonCase, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Jobs]:
    caplog.set_level(logging.INFO, logger=output_log.name)
    jobs = Jobs(python_case)
    try:
        yield jobs
    finally:
        leaked = await jobs.cleanup()
    assert not leaked, f"process groups outlived their jobs: {leaked}"


def lines(path: Path) -> list[object]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.asyncio
async def test_stop_drains_every_item_in_flight(jobs: Jobs) -> None:
    pipeline = pipe(
        "drain",
        STREAMING,
        comp("src", "counter_source", {"rate": 200.0}),
        comp("double", "scale", {"factor": 2}, "src"),
        comp("file", "jsonl_sink", {"path": "out/items.jsonl"}, "double"),
    )
    job = await jobs.start(pipeline)
    out = jobs.case.work_root / "job1" / "out" / "items.jsonl"
    await until(lambda: len(lines(out)) >= 20)
    exit = await job.stop(5.0)
    assert exit.outcome is Outcome.SUCCEEDED, exit.describe()
    items = lines(out)
    assert items == [2.0 * i for i in range(len(items))]  # nothing lost, nothing reordered
    assert any("drained after a stop request" in line for line in exit.tail)


@pytest.mark.asyncio
async def test_streaming_pipeline_whose_sources_end_succeeds(jobs: Jobs) -> None:
    pipeline = pipe(
        "finite",
        STREAMING,
        comp("src", "counter_source", {"count": 5}),
        comp("file", "jsonl_sink", {}, "src"),
    )
    exit = await jobs.run(pipeline)
    assert exit.outcome is Outcome.SUCCEEDED
    assert lines(jobs.case.work_root / "job1" / "file.jsonl") == [0, 1, 2, 3, 4]


@pytest.mark.asyncio
async def test_fan_out_in_any_declaration_order(jobs: Jobs) -> None:
    pipeline = pipe(
        "fanout",
        STREAMING,
        comp("raw", "jsonl_sink", {}, "src"),
        comp("scaled", "jsonl_sink", {}, "double"),
        comp("double", "scale", {"factor": 2, "offset": 1}, "src"),
        comp("src", "counter_source", {"count": 50}),
    )
    exit = await jobs.run(pipeline)
    assert exit.outcome is Outcome.SUCCEEDED, exit.describe()
    work = jobs.case.work_root / "job1"
    assert lines(work / "raw.jsonl") == list(range(50))
    assert lines(work / "scaled.jsonl") == [2.0 * i + 1 for i in range(50)]


@pytest.mark.asyncio
async def test_batch_passes_outputs_downstream_in_topological_order(jobs: Jobs) -> None:
    pipeline = pipe(
        "batch",
        BATCH,
        comp("file", "jsonl_sink", {"path": "result.jsonl"}, "x10"),
        comp("x10", "scale", {"factor": 10}, "src"),
        comp("src", "counter_source", {"count": 4, "start": 1}),
    )
    exit = await jobs.run(pipeline)
    assert exit.outcome is Outcome.SUCCEEDED, exit.describe()
    assert lines(jobs.case.work_root / "job1" / "result.jsonl") == [10.0, 20.0, 30.0, 40.0]


@pytest.mark.asyncio
async def test_stopping_a_batch_interrupts_it(jobs: Jobs, caplog: pytest.LogCaptureFixture) -> None:
    job = await jobs.start(pipe("long-batch", BATCH, comp("wait", "sleep", {"seconds": 60})))
    await wait_for_output(caplog, "conformance/long-batch", "running component wait")
    began = time.monotonic()
    exit = await job.stop(5.0)
    assert time.monotonic() - began < 3.0
    assert exit.outcome is Outcome.FAILED
    assert exit.code == 143
    assert any("interrupted by a stop request" in line for line in exit.tail)


@pytest.mark.asyncio
async def test_crash_mid_stream_keeps_what_was_delivered(jobs: Jobs) -> None:
    pipeline = pipe(
        "midstream",
        STREAMING,
        comp("src", "counter_source", {"rate": 100.0}),
        comp("gate", "fail", {"after_items": 5, "code": 4, "message": "sensor unplugged"}, "src"),
        comp("file", "jsonl_sink", {}, "gate"),
    )
    exit = await jobs.run(pipeline)
    assert (exit.outcome, exit.code) == (Outcome.FAILED, 4)
    assert "sensor unplugged" in exit.describe()
    assert lines(jobs.case.work_root / "job1" / "file.jsonl") == [0, 1, 2, 3, 4]


@pytest.mark.asyncio
async def test_component_exception_fails_with_a_clear_last_line(jobs: Jobs) -> None:
    exit = await jobs.run(pipe("raising", BATCH, comp("boom", "raises")))
    assert (exit.outcome, exit.code) == (Outcome.FAILED, 1)
    assert any(line.startswith("Traceback") for line in exit.tail)
    assert exit.describe().endswith(
        "ion-runner: component 'boom' (raises) failed: ValueError: bad reading 42"
    )


@pytest.mark.asyncio
async def test_every_spec_problem_is_reported_before_anything_runs(jobs: Jobs) -> None:
    pipeline = pipe(
        "broken",
        BATCH,
        comp("file", "jsonl_sink", {"path": "never.jsonl"}, "src"),
        comp("src", "counter_source", {"count": -1, "colour": "red"}),
        comp("ghost", "no_such_type"),
        comp("orphan", "log_sink"),
    )
    exit = await jobs.run(pipeline)
    assert exit.outcome is Outcome.START_FAILED
    assert "unknown component type 'no_such_type'" in exit.reason
    assert "input port 'in' is not bound" in exit.reason
    assert not (jobs.case.work_root / "job1" / "never.jsonl").exists()
    # Arguments are checked once the structure is sound.
    pipeline = pipe(
        "bad-args",
        BATCH,
        comp("src", "counter_source", {"count": -1, "colour": "red"}),
        comp("file", "jsonl_sink", {}, "src"),
    )
    exit = await jobs.run(pipeline)
    assert exit.outcome is Outcome.START_FAILED
    assert "argument 'count' must be at least 0" in exit.reason
    assert exit.describe().startswith("could not start: ")


@pytest.mark.asyncio
async def test_unknown_arguments_are_rejected(jobs: Jobs) -> None:
    exit = await jobs.run(
        pipe("typo", BATCH, comp("src", "counter_source", {"count": 1, "cuont": 2}))
    )
    assert exit.outcome is Outcome.START_FAILED
    assert "unknown argument(s): cuont" in exit.reason


@pytest.mark.asyncio
async def test_grandchildren_do_not_outlive_a_finished_job(jobs: Jobs) -> None:
    exit = await jobs.run(pipe("spawner", BATCH, comp("g", "grandchild")))
    assert exit.outcome is Outcome.SUCCEEDED, exit.describe()
    pid = int((jobs.case.work_root / "job1" / "grandchild.pid").read_text())
    await until(lambda: gone(pid), within_s=3.0)


@pytest.mark.asyncio
async def test_grandchildren_do_not_outlive_a_stopped_job(jobs: Jobs) -> None:
    job = await jobs.start(pipe("spawner", STREAMING, comp("g", "grandchild")))
    pid_file = jobs.case.work_root / "job1" / "grandchild.pid"
    await until(pid_file.exists)
    pid = int(pid_file.read_text())
    assert not gone(pid)
    exit = await job.stop(5.0)
    assert exit.outcome is Outcome.SUCCEEDED, exit.describe()
    await until(lambda: gone(pid), within_s=3.0)
    assert not group_alive(job.pid)


@pytest.mark.asyncio
async def test_identity_environment_and_work_dir_reach_the_child(jobs: Jobs) -> None:
    pipeline = pipe("env", BATCH, comp("e", "env_echo"))
    spec = jobs.spec(pipeline, version=9)
    spec = JobSpec(
        ion=spec.ion,
        pipeline=spec.pipeline,
        node_id=spec.node_id,
        work_dir=spec.work_dir,
        version=9,
        env={**spec.env, "EXTRA": "yes"},
    )
    job = await PythonEngine().start(spec)
    jobs.started.append(job)
    exit = await job.wait()
    assert exit.ok, exit.describe()
    for expected in (
        "ION_ION=conformance",
        "ION_PIPELINE=env",
        "ION_NODE_ID=node-1",
        "ION_VERSION=9",
        "EXTRA=yes",
        f"cwd={spec.work_dir}",
    ):
        assert expected in exit.tail
    assert json.loads((spec.work_dir / "pipeline.json").read_text())["version"] == 9


@pytest.mark.asyncio
async def test_long_lines_are_cut_and_the_tail_is_bounded(
    jobs: Jobs, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = pipe(
        "chatty",
        BATCH,
        comp("src", "counter_source", {"count": 3}),
        comp("out", "log_sink", {"prefix": "x" * 20_000}, "src"),
    )
    job = await PythonEngine().start(jobs.spec(pipeline, log_tail_lines=2))
    jobs.started.append(job)
    exit = await job.wait()
    assert exit.ok
    assert len(exit.tail) == 2
    long = [r.getMessage() for r in caplog.records if "xxxx" in r.getMessage()]
    assert len(long) == 3
    assert all(m.endswith("[...line truncated]") for m in long)
    assert all(len(m) < MAX_LINE_BYTES + 100 for m in long)


@pytest.mark.asyncio
async def test_refuses_a_pipeline_for_another_engine(jobs: Jobs) -> None:
    spark = Pipeline(
        name="train",
        engine="spark",
        role=PipelineRole.TRAINING,
        mode=BATCH,
        placement=Placement(),
        components=(comp("x", "counter_source", {"count": 1}),),
    )
    with pytest.raises(JobStartError, match="engine 'spark'"):
        await jobs.start(spark)


@pytest.mark.asyncio
async def test_unwritable_work_dir_is_a_start_error(jobs: Jobs, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    spec = JobSpec("conformance", jobs.case.printing("x"), "node-1", blocker / "work")
    with pytest.raises(JobStartError, match="cannot write"):
        await PythonEngine().start(spec)


def test_job_spec_checks_its_values(tmp_path: Path) -> None:
    pipeline = pipe("p", BATCH, comp("x", "counter_source", {"count": 1}))
    with pytest.raises(ValueError, match="log_tail_lines"):
        JobSpec("i", pipeline, "n", tmp_path, log_tail_lines=-1)
    with pytest.raises(ValueError, match="environment"):
        JobSpec("i", pipeline, "n", tmp_path, env={"A=B": "x"})
    assert JobSpec("i", pipeline, "n", tmp_path).job_id == "i/p"


@pytest.mark.asyncio
async def test_a_relative_work_dir_is_made_absolute(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(jobs.case.work_root)
    pipeline = pipe(
        "rel", BATCH, comp("n", "counter_source", {"count": 2}), comp("f", "jsonl_sink", {}, "n")
    )
    job = await PythonEngine().start(
        JobSpec("i", pipeline, "n", Path("relative/dir"), env=jobs.case.env)
    )
    jobs.started.append(job)
    exit = await job.wait()
    assert exit.ok, exit.describe()
    assert lines(jobs.case.work_root / "relative" / "dir" / "f.jsonl") == [0, 1]


def test_interpreter_is_the_agents_own_unless_told() -> None:
    assert PythonEngine().check_available() is None
    assert PythonEngine(sys.executable).check_available() is None
    assert "not found" in (PythonEngine("no-such-python-3").check_available() or "")


@pytest.mark.asyncio
async def test_cancelling_a_stop_kills_at_once(
    python_case: PythonCase, jobs: Jobs, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = python_case.ignoring_sigterm()
    assert pipeline is not None
    job = await jobs.start(pipeline)
    await wait_for_output(caplog, f"conformance/{pipeline.name}", "ignoring SIGTERM")
    stopping = asyncio.create_task(job.stop(30.0))
    await asyncio.sleep(0.2)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    async with asyncio.timeout(5.0):
        exit = await job.wait()
    assert exit.outcome is Outcome.KILLED
    assert exit.signal == signal.SIGKILL
