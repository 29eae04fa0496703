"""The spark engine: its pure parts (event log, REST progress, command line, availability)
first, then the conformance suite and Spark jobs with real Spark in local mode."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest
import pytest_asyncio
from engine_conformance import EngineConformance, Jobs, until, wait_for_output
from spark_support import (
    SMALL,
    SPARK_TIMEOUT_S,
    SparkCase,
    child_pythonpath,
    comp,
    free_port,
    info_of,
    plugin_dir,
    spark_pipe,
)
from spark_support_fakes import (
    ACTIVE_STAGES,
    RUNNING_JOBS,
    SAMPLE,
    SAMPLE_APP,
    FakeDriver,
    assert_sample_totals,
    fake_jdk,
    folded,
    run_gate,
    sample_lines,
    serve_fake_driver,
    submission,
)

from ion.model.definition import ArgValue, Pipeline, PipelineMode
from node.engines.base import JobStartError, Outcome
from node.engines.process import output_log
from node.engines.spark_engine import EVENT_DIR, SparkEngine, SparkJob
from node.engines.spark_eventlog import (
    STAT_NAMES,
    EventLogStats,
    EventLogTail,
    LineSplitter,
    event_name,
    newest_log,
)
from node.engines.spark_rest import fetch_progress, progress
from node.engines.spark_submit import (
    DRIVER,
    INSTALL_PYSPARK,
    SparkSettings,
    check_java,
    command,
    driver_env,
    find_spark_submit,
    java_major_version,
    parse_engine_config,
    spark_conf,
)

BATCH = PipelineMode.BATCH
STREAMING = PipelineMode.STREAMING


# -- the event log ---------------------------------------------------------------------------


def test_a_recorded_event_log_folds_to_its_totals() -> None:
    stats = folded(sample_lines())
    assert_sample_totals(stats.values())
    assert set(stats.values()) == set(STAT_NAMES)
    assert (stats.app_id, stats.app_name, stats.app_ended) == (SAMPLE_APP, "rec.py", True)
    assert stats.bad_lines == 0
    assert stats.last_event_ms == 1795482751285  # the application's end


def test_active_jobs_and_executors_follow_starts_and_ends() -> None:
    stats = EventLogStats()
    stats.feed({"Event": "SparkListenerExecutorAdded", "Executor ID": "1"})
    stats.feed({"Event": "SparkListenerExecutorAdded", "Executor ID": "2"})
    stats.feed({"Event": "SparkListenerJobStart", "Job ID": 0})
    stats.feed({"Event": "SparkListenerJobStart", "Job ID": 1})
    assert stats.values()["spark.jobs.active"] == 2
    stats.feed({"Event": "SparkListenerJobEnd", "Job ID": 0, "Job Result": {"Result": "X"}})
    stats.feed({"Event": "SparkListenerExecutorRemoved", "Executor ID": "1"})
    stats.feed({"Event": "SparkListenerTaskEnd", "Task End Reason": {"Reason": "TaskKilled"}})
    values = stats.values()
    assert (values["spark.jobs.active"], values["spark.jobs.failed"]) == (1, 1)
    assert (values["spark.executors.active"], values["spark.executors.added"]) == (1, 2)
    assert values["spark.tasks.killed"] == 1


def test_event_names_are_read_without_parsing_the_line() -> None:
    assert event_name(b'{"Event":"SparkListenerTaskEnd","Stage ID":0}') == "SparkListenerTaskEnd"
    assert event_name(b'  { "Event" : "X" }') == "X"
    assert event_name(b'{"Stage ID":0,"Event":"X"}') is None  # another layout: parsed in full
    stats = EventLogStats()
    # An event we do not count is skipped unparsed, so even a broken one costs nothing.
    stats.feed_line(b'{"Event":"org.apache.spark.sql.execution.ui.SparkListenerSQL", broken')
    assert stats.bad_lines == 0
    for bad in (b'{"Event":"SparkListenerJobStart", broken', b"[1, 2]", b"\xff\xfe", b"{"):
        stats.feed_line(bad)
    assert stats.bad_lines == 4
    stats.feed_line(b'{"Stage ID":0,"Event":"SparkListenerJobStart","Job ID":3}')
    assert stats.values()["spark.jobs.started"] == 1


def test_lines_split_anywhere_are_joined() -> None:
    data = SAMPLE.read_bytes()
    for size in (1, 7, 4096):
        splitter = LineSplitter()
        lines = [
            line for i in range(0, len(data), size) for line in splitter.feed(data[i : i + size])
        ]
        assert lines == sample_lines()
        assert splitter.pending_bytes == 0
    splitter = LineSplitter()
    assert list(splitter.feed(b'{"a":1}\n{"b"')) == [b'{"a":1}']
    assert splitter.pending_bytes == 4  # an unfinished last line waits


def test_an_overlong_line_is_skipped_and_reading_goes_on() -> None:
    splitter = LineSplitter(max_line_bytes=10)
    out = list(splitter.feed(b"short\n" + b"x" * 8))
    out += list(splitter.feed(b"y" * 8))  # now over the limit: dropped
    out += list(splitter.feed(b"zzz\nnext\n"))
    assert out == [b"short", b"next"]
    assert splitter.skipped == 1


def test_the_tail_follows_the_inprogress_file_through_its_rename(tmp_path: Path) -> None:
    data = SAMPLE.read_bytes()
    tail = EventLogTail(tmp_path)
    assert tail.poll() == 0  # no app yet: nothing to read
    tail.follow(SAMPLE_APP)
    assert tail.poll() == 0 and tail.path() is None  # not written yet
    inprogress = tmp_path / f"{SAMPLE_APP}.inprogress"
    cut = len(data) // 2 + 13  # in the middle of a line
    inprogress.write_bytes(data[:cut])
    assert tail.poll() == cut
    half = tail.values()["spark.jobs.started"]
    assert 0 < half < 7
    finished_early = tail.finished
    with inprogress.open("ab") as f:
        f.write(data[cut:])
    inprogress.rename(tmp_path / SAMPLE_APP)  # the driver's last act
    assert tail.path() == tmp_path / SAMPLE_APP
    assert tail.poll() == len(data) - cut
    assert_sample_totals(tail.values())
    assert (finished_early, tail.finished) == (False, True)
    assert tail.poll() == 0


def test_the_tail_reads_a_long_log_within_its_budget(tmp_path: Path) -> None:
    data = SAMPLE.read_bytes()
    (tmp_path / SAMPLE_APP).write_bytes(data)
    tail = EventLogTail(tmp_path, SAMPLE_APP)
    polls = 0
    while tail.poll(budget_bytes=5000):
        polls += 1
    assert polls == -(-len(data) // 5000)
    assert_sample_totals(tail.values())


def test_the_tail_starts_over_for_another_app_or_a_replaced_file(tmp_path: Path) -> None:
    lines = sample_lines()
    (tmp_path / "app-1").write_bytes(b"\n".join(lines) + b"\n")
    tail = EventLogTail(tmp_path, "app-1")
    tail.poll()
    (tmp_path / "app-1").write_bytes(b"\n".join(lines[:10]) + b"\n")  # shorter: replaced
    tail.poll()
    assert tail.values() == folded(lines[:10]).values()
    (tmp_path / "app-2").write_bytes(b"\n".join(lines) + b"\n")
    tail.follow("app-2")
    tail.poll()
    assert_sample_totals(tail.values())
    for bad in ("../x", ".hidden", "a/b"):
        tail.follow(bad)
        assert tail.path() is None


def test_newest_log_finds_this_runs_log(tmp_path: Path) -> None:
    old = tmp_path / "local-1"
    old.write_text("")
    os.utime(old, ns=(1_000, 1_000))
    assert newest_log(tmp_path, since_ns=2_000) is None
    (tmp_path / "local-2.inprogress").write_text("")
    (tmp_path / ".local-2.inprogress.crc").write_text("")
    assert newest_log(tmp_path, since_ns=2_000) == "local-2"
    assert newest_log(tmp_path / "missing", since_ns=0) is None


# -- the REST API ----------------------------------------------------------------------------


def test_progress_sums_the_running_jobs() -> None:
    values = progress(RUNNING_JOBS, ACTIVE_STAGES)
    assert values == {
        "spark.active.jobs": 2.0,
        "spark.active.stages": 1.0,
        "spark.active.tasks_running": 2.0,
        "spark.active.tasks_total": 10.0,
        "spark.active.tasks_completed": 6.0,
        "spark.active.tasks_failed": 1.0,
        "spark.active.progress": 0.6,
    }
    idle = progress([], [])
    assert idle["spark.active.progress"] == 0.0 and idle["spark.active.jobs"] == 0.0
    # Whatever the driver sends, the answer is numbers.
    odd = progress({"not": "a list"}, [1, None, {"numTasks": "x"}])
    assert all(isinstance(v, float) for v in odd.values())


@pytest.fixture
def fake_driver() -> Iterator[tuple[FakeDriver, str]]:
    with serve_fake_driver() as served:
        yield served


@pytest.mark.integration  # a socket or a child process
def test_fetch_progress_asks_the_driver_about_its_app(
    fake_driver: tuple[FakeDriver, str],
) -> None:
    state, url = fake_driver
    base = "/api/v1/applications/local-1"
    state.routes = {
        f"{base}/jobs?status=running": RUNNING_JOBS,
        f"{base}/stages?status=active": ACTIVE_STAGES,
    }
    assert fetch_progress(url, "local-1") == progress(RUNNING_JOBS, ACTIVE_STAGES)
    assert fetch_progress(url, "app-other") is None  # 404
    state.raw = b"<html>not json</html>"
    assert fetch_progress(url, "local-1") is None


@pytest.mark.integration  # a socket or a child process
def test_fetch_progress_is_none_when_the_driver_is_not_there() -> None:
    port = free_port()  # nothing listens there now
    assert fetch_progress(f"http://127.0.0.1:{port}", "local-1", timeout_s=0.5) is None
    assert fetch_progress("file:///etc/passwd", "local-1") is None
    assert fetch_progress("http://127.0.0.1:1", "") is None


# -- configuration, command line, availability ----------------------------------------------


def test_engine_config_defaults_and_spark_properties() -> None:
    assert parse_engine_config({}) == SparkSettings()
    settings = parse_engine_config(
        {"master": "spark://10.0.0.1:7077", "log_level": "INFO", "spark.executor.memory": "1g"}
    )
    assert settings.master == "spark://10.0.0.1:7077"
    assert settings.log_level == "info"
    assert settings.conf == {"spark.executor.memory": "1g"}


def test_engine_config_problems_are_all_named() -> None:
    with pytest.raises(ValueError) as failure:
        parse_engine_config(
            {
                "cores": "4",
                "spark.eventLog.dir": "/tmp",
                "spark.master": "local",
                "master": "local [2]",
                "log_level": "loud",
            }
        )
    message = str(failure.value)
    for expected in (
        "unknown engine_config key 'cores'",
        "'spark.eventLog.dir' cannot be set",
        "use the engine_config key 'master'",
        "must be a Spark master URL",
        "'log_level' must be one of",
    ):
        assert expected in message


def test_the_command_line_sets_what_the_engine_relies_on(tmp_path: Path) -> None:
    sub = submission(
        tmp_path, **{"spark.ui.port": "4050", "spark.driver.defaultJavaOptions": "-Dx=1"}
    )
    argv = command(sub)
    assert argv[:3] == ["/opt/spark/bin/spark-submit", "--master", "local[2]"]
    assert argv[-7:] == [
        str(DRIVER),
        "--spec",
        str(tmp_path / "pipeline.json"),
        "--info",
        str(tmp_path / "info.json"),
        "--work-dir",
        str(tmp_path),
    ]
    conf = spark_conf(sub)
    assert conf["spark.eventLog.enabled"] == "true"
    assert conf["spark.eventLog.compress"] == "false"
    assert conf["spark.eventLog.rolling.enabled"] == "false"
    assert conf["spark.eventLog.dir"] == (tmp_path / "events").as_uri()
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.app.name"] == "ion/train"
    assert conf["spark.ui.port"] == "4050"  # the pipeline's choice over our default
    java_options = conf["spark.driver.defaultJavaOptions"]
    assert java_options.startswith("-Dlog4j2.configurationFile=file:")
    assert java_options.endswith(" -Dx=1")
    assert f"spark.eventLog.dir={(tmp_path / 'events').as_uri()}" in argv
    remote = dataclasses.replace(sub, loopback=False)
    assert "spark.driver.host" not in spark_conf(remote)


def test_the_driver_runs_our_interpreter_on_loopback() -> None:
    env = driver_env({"PATH": "/bin"}, {}, "/venv/bin/python")
    assert env["PYSPARK_DRIVER_PYTHON"] == env["PYSPARK_PYTHON"] == "/venv/bin/python"
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    chosen = {"SPARK_LOCAL_IP": "10.1.2.3", "PYSPARK_PYTHON": "/usr/bin/python3"}
    env = driver_env(chosen, chosen, "/venv/bin/python")
    assert env["SPARK_LOCAL_IP"] == "10.1.2.3"
    assert env["PYSPARK_PYTHON"] == "/usr/bin/python3"


def test_java_versions_are_read_from_the_jdk_release_file(tmp_path: Path) -> None:
    assert java_major_version(fake_jdk(tmp_path / "j8", "1.8.0_392") / "bin" / "java") == 8
    assert java_major_version(fake_jdk(tmp_path / "j17", "17.0.15") / "bin" / "java") == 17
    assert java_major_version(fake_jdk(tmp_path / "j21", "21") / "bin" / "java") == 21
    assert java_major_version(fake_jdk(tmp_path / "jx", None) / "bin" / "java") is None
    assert check_java({"JAVA_HOME": str(tmp_path / "j17")}) is None
    assert check_java({"JAVA_HOME": str(tmp_path / "jx")}) is None  # unknown: let Spark say
    old = check_java({"JAVA_HOME": str(tmp_path / "j8")})
    assert old is not None and "Java 8" in old and "too old" in old and "Java 17+" in old
    missing = check_java({"JAVA_HOME": str(tmp_path / "nothing")})
    assert missing is not None and missing.startswith("Java 17+ not found")
    assert "JAVA_HOME" in missing
    no_path = check_java({"PATH": str(tmp_path / "empty")})
    assert no_path is not None and "PATH" in no_path


def test_spark_submit_is_found_or_the_fix_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found, reason = find_spark_submit(None, {})
    assert found is not None and found.endswith("pyspark/bin/spark-submit"), reason
    found, reason = find_spark_submit(str(tmp_path / "nope"), {})
    assert found is None and "not found" in reason
    found, reason = find_spark_submit(None, {"SPARK_HOME": str(tmp_path)})
    assert found is None and "SPARK_HOME" in reason
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert find_spark_submit(None, {}) == (None, INSTALL_PYSPARK)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("SPARK_HOME", raising=False)
    assert SparkEngine().check_available() == INSTALL_PYSPARK


def test_check_available_names_missing_java(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    reason = SparkEngine().check_available()
    assert reason is not None and reason.startswith("Java 17+ not found")


@pytest.mark.asyncio
async def test_bad_engine_config_and_wrong_engine_are_start_errors(tmp_path: Path) -> None:
    from node.engines.base import JobSpec

    pipeline = spark_pipe("p", BATCH, comp("x", "counter_source", {"count": 1}))
    bad = spark_pipe("p", BATCH, comp("x", "counter_source"), config={"cores": "4"})
    with pytest.raises(JobStartError, match="unknown engine_config key 'cores'"):
        await SparkEngine().start(JobSpec("i", bad, "n", tmp_path))
    other = dataclasses.replace(pipeline, engine="python")
    with pytest.raises(JobStartError, match="engine 'python'"):
        await SparkEngine().start(JobSpec("i", other, "n", tmp_path))
    assert not list(tmp_path.iterdir())  # refused before anything was written


# -- stop requests in the driver (no Spark: a stand-in for py4j) -----------------------------


@pytest.mark.integration  # a socket or a child process
def test_a_stop_request_inside_py4j_waits_for_the_call_to_return() -> None:
    lines = run_gate("in-py4j")
    # The answer was consumed before the handler raised: the connection stays in step.
    assert lines[:2] == ["answer read", "handler ran"]
    assert lines[2].startswith("stopped in the caller")


@pytest.mark.integration  # a socket or a child process
def test_a_stop_request_delivered_to_another_thread_wakes_the_main_one() -> None:
    lines = run_gate("other-thread")
    assert lines[0] == "handler ran"
    assert lines[1].startswith("stopped in the caller after ")
    assert float(lines[1].split()[-1].rstrip("s")) < 5.0  # not after the 10 s sleep


# -- real Spark: the conformance suite -------------------------------------------------------


@pytest.fixture(scope="session")
def spark_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return plugin_dir(tmp_path_factory.mktemp("spark-plugins"))


@dataclasses.dataclass
class SparkSessionCase(SparkCase):
    """The conformance scenarios with real Spark work where it is cheap: the job that runs and
    the one that runs until stopped sum numbers in a Spark session (so its statistics come
    from Spark's event log, not only from /proc); the rest fail before a session would start,
    or exercise the runner's own exit paths, which a session would only slow down."""

    start_timeout_s: float = 60.0
    """A Spark session takes 4-15 s to create here, more while other tests load the cores."""

    def printing(self, marker: str) -> Pipeline:
        args: dict[str, ArgValue] = {"count": 10, "partitions": 1, "prefix": f"{marker} "}
        return spark_pipe("printing", BATCH, comp("sum", "spark_sum", args))

    def long_running(self, marker: str) -> Pipeline:
        args: dict[str, ArgValue] = {"count": 10, "interval_s": 0.2, "prefix": f"{marker} "}
        return spark_pipe("long-running", STREAMING, comp("sum", "spark_sum", args))


@pytest.fixture
def spark_case(tmp_path: Path, spark_plugins: Path) -> SparkCase:
    return SparkSessionCase(work_root=tmp_path, env={"PYTHONPATH": child_pythonpath(spark_plugins)})


class TestSparkConformance(EngineConformance):
    @pytest.fixture
    def case(self, spark_case: SparkCase) -> SparkCase:
        return spark_case


# -- real Spark: jobs ------------------------------------------------------------------------


@pytest_asyncio.fixture
async def jobs(spark_case: SparkCase, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Jobs]:
    caplog.set_level(logging.INFO, logger=output_log.name)
    jobs = Jobs(spark_case)
    try:
        yield jobs
    finally:
        leaked = await jobs.cleanup()
    assert not leaked, f"process groups outlived their jobs: {leaked}"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_spark_batch_job_succeeds_and_its_event_log_is_counted(jobs: Jobs) -> None:
    config = {**SMALL, "spark.ion.greeting": "hello"}
    pipeline = spark_pipe(
        "sum",
        BATCH,
        comp("sum", "spark_sum", {"count": 1000, "echo_conf": "spark.ion.greeting"}),
        config=config,
    )
    job = await jobs.start(pipeline)
    assert isinstance(job, SparkJob)
    async with asyncio.timeout(SPARK_TIMEOUT_S):
        exit = await job.wait()
    assert exit.outcome is Outcome.SUCCEEDED, exit.describe()
    assert "conf spark.ion.greeting=hello" in exit.tail  # engine_config reached Spark
    assert "sum 499500" in exit.tail
    stats = job.stats()
    assert stats is not None
    values = stats.values
    assert values["spark.jobs.succeeded"] >= 1 and values["spark.jobs.failed"] == 0
    assert values["spark.tasks.completed"] >= 2
    assert values["spark.records.read"] == 1000
    assert values["spark.executors.active"] == 1
    assert not any(name.startswith("spark.active.") for name in values)  # nothing runs now
    work = jobs.case.work_root / "job1"
    info = info_of(work)
    assert job.app_id == info["app_id"] and info["app_id"].startswith("local-")
    assert info["ui_url"].startswith("http://127.0.0.1:")  # the UI listens on loopback only
    logs = sorted(p.name for p in (work / EVENT_DIR).iterdir() if not p.name.startswith("."))
    assert logs == [info["app_id"]]  # complete: renamed from .inprogress


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_streaming_spark_job_reports_progress_and_drains_on_stop(
    jobs: Jobs, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = spark_pipe(
        "ticks",
        STREAMING,
        comp("sum", "spark_sum", {"count": 200, "interval_s": 0.2, "prefix": "tick "}),
        comp("out", "log_sink", {"prefix": "got "}, "sum"),
    )
    job = await jobs.start(pipeline)
    seen: list[Mapping[str, float]] = []

    def progressing() -> bool:
        stats = job.stats()
        if stats is not None:
            seen.append(stats.values)
        return (
            bool(seen) and "spark.active.jobs" in seen[-1] and seen[-1]["spark.jobs.succeeded"] >= 2
        )

    await until(progressing, within_s=SPARK_TIMEOUT_S)
    await wait_for_output(caplog, "conformance/ticks", "got 19900")
    exit = await job.stop(30.0)
    assert exit.outcome is Outcome.SUCCEEDED, exit.describe()
    assert any("drained after a stop request" in line for line in exit.tail)
    final = job.stats()
    assert final is not None
    assert final.values["spark.jobs.succeeded"] >= seen[-1]["spark.jobs.succeeded"]
    assert "spark.active.jobs" not in final.values
    assert final.values["process.cpu_seconds"] > 0


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_failing_spark_job_fails_with_its_error_and_is_counted(jobs: Jobs) -> None:
    pipeline = spark_pipe("failing", BATCH, comp("boom", "spark_fail", {"message": "bad row 7"}))
    job = await jobs.start(pipeline)
    async with asyncio.timeout(SPARK_TIMEOUT_S):
        exit = await job.wait()
    assert (exit.outcome, exit.code) == (Outcome.FAILED, 1), exit.describe()
    said = "ion-runner: component 'boom' (spark_fail) failed: "
    assert any(line.startswith(said) and "bad row 7" in line for line in exit.tail)
    stats = job.stats()
    assert stats is not None
    assert stats.values["spark.jobs.failed"] == 1
    assert stats.values["spark.tasks.failed"] >= 1
    assert stats.values["spark.stages.failed"] == 1


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.asyncio
async def test_stopping_a_batch_spark_job_cancels_it(jobs: Jobs) -> None:
    endless = comp("sum", "spark_sum", {"count": 50_000_000_000, "partitions": 2})
    job = await jobs.start(spark_pipe("endless", BATCH, endless))

    def running() -> bool:
        stats = job.stats()
        return stats is not None and stats.values.get("spark.active.jobs", 0) >= 1

    await until(running, within_s=SPARK_TIMEOUT_S)
    began = asyncio.get_running_loop().time()
    exit = await job.stop(30.0)
    took = asyncio.get_running_loop().time() - began
    # Interrupted like a python batch job (not killed after the grace period), promptly.
    assert (exit.outcome, exit.code) == (Outcome.FAILED, 143), exit.describe()
    # (The JVM's own lines about the cancelled tasks may come last: another pipe.)
    assert any(line.endswith("interrupted by a stop request") for line in exit.tail)
    assert any("cancelled the running Spark jobs" in line for line in exit.tail)
    assert took < 15.0
