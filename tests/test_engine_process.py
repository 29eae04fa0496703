"""The child process every engine shares (``node.engines.process``), with plain programs:
line splitting, start errors, and an exit that must be seen while the pipes stay open."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import pytest
from engine_conformance import gone, group_alive, until

from node.engines import process
from node.engines.base import JobStartError
from node.engines.process import MAX_LINE_BYTES, ChildProcess


async def spawn(argv: list[str], tmp_path: Path, tail_lines: int = 50) -> ChildProcess:
    return await ChildProcess.spawn(
        argv,
        job_id="t/p",
        node_id="n",
        cwd=tmp_path,
        env=dict(os.environ),
        tail_lines=tail_lines,
    )


@pytest.mark.asyncio
async def test_output_is_split_into_lines_however_it_arrives() -> None:
    rng = random.Random(4)
    long_line = b"y" * (MAX_LINE_BYTES + 500)
    stream = b"one\r\ntwo\n\n" + long_line + b"\nthree\nunterminated"
    expected = ["one", "two", "", "y" * MAX_LINE_BYTES + " [...line truncated]", "three"]
    for _ in range(200):
        child = ChildProcess(job_id="t/p", node_id="n", tail_lines=100)
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(0, 12)))
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            child._data(1, stream[start:end])
        assert list(child.tail()) == expected
        child._pipe_closed(1)
        assert list(child.tail()) == [*expected, "unterminated"]


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_program_that_cannot_be_executed_is_a_start_error(tmp_path: Path) -> None:
    with pytest.raises(JobStartError, match="cannot execute /nonexistent/engine"):
        await spawn(["/nonexistent/engine"], tmp_path)
    script = tmp_path / "not-executable.sh"
    script.write_text("echo hi\n")
    with pytest.raises(JobStartError, match="Permission denied"):
        await spawn([str(script)], tmp_path)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_exit_is_seen_even_when_an_escaped_process_holds_the_pipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "DRAIN_TIMEOUT_S", 0.3)
    # The grandchild leaves our process group (setsid) but keeps stdout: nothing we may kill.
    script = "setsid sh -c 'echo $$; exec sleep 30' & sleep 0.3; exit 0"
    child = await spawn(["/bin/sh", "-c", script], tmp_path)
    try:
        await until(lambda: len(child.tail()) == 1)
        async with asyncio.timeout(5.0):
            status = await child.wait()
        assert status == 0
    finally:
        escaped = int(child.tail()[0])
        os.kill(escaped, signal.SIGKILL)
        await until(lambda: gone(escaped))
    assert not group_alive(child.pid)


def test_process_stats_of_self_and_of_a_missing_pid(tmp_path: Path) -> None:
    from node.engines.procstats import read_process_stats

    mine = read_process_stats(os.getpid())
    assert mine is not None
    assert mine.values["process.rss_bytes"] > 1_000_000
    assert mine.values["process.cpu_seconds"] >= 0
    assert read_process_stats(2**22 + 12345, proc=tmp_path) is None


@pytest.mark.integration
def test_a_pipeline_does_not_outlive_a_killed_agent(tmp_path: Path) -> None:
    """kill -9 of the agent: its pipeline child gets SIGTERM (PR_SET_PDEATHSIG) and ends."""
    import subprocess
    import sys
    import time

    pidfile = tmp_path / "child.pid"
    agent = tmp_path / "agent.py"
    agent.write_text(
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from node.engines.process import ChildProcess\n"
        "async def main():\n"
        "    argv = [sys.executable, '-c', 'import time; time.sleep(60)']\n"
        "    child = await ChildProcess.spawn(argv, job_id='k/p', node_id='n', cwd=Path('.'),"
        " env={}, tail_lines=5)\n"
        f"    Path({str(pidfile)!r}).write_text(str(child.pid))\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, str(agent)], cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 20
        # write_text creates the file before it writes the pid: wait for the content.
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pidfile.read_text())
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # The orphan is re-parented to pytest (a child subreaper, see conftest): reap it.
            try:
                pid, _ = os.waitpid(child, os.WNOHANG)
            except ChildProcessError:
                break  # reaped by someone else: gone
            if pid == child:
                break
            time.sleep(0.05)
        else:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the pipeline outlived its agent")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
