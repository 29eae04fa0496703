"""The component SDK: standalone (JSON lines, no agent) and against the real local socket
server with ``FakeAgentPort``, its synchronous API called from threads as components do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from ion.errors import ConfigError, InputError, RefusedError, UnavailableError
from ion.model.event import DataRecords, Event, Severity
from ion.model.health import HealthReport, Histogram, Metric, StatsReport, Table
from ion.model.local import Emit
from ion.model.messages import Envelope, new_envelope
from ion.wire.local import frame_from_json
from node import sdk
from node.local import ClientInfo, FakeAgentPort, LocalServer
from node.sdk import AgentClient, Client, StandaloneClient, Subscription

T = TypeVar("T")
WAIT = 5.0


def env_for(path: Path | None, token: str = "secret", **more: str) -> dict[str, str]:
    env = {"ION_ION": "demo", "ION_PIPELINE": "p", "ION_NODE_ID": "edge-1", **more}
    if path is not None:
        env["ION_AGENT_SOCKET"] = str(path)
        env["ION_AGENT_TOKEN"] = token
    return env


# Standalone --------------------------------------------------------------------------------


def read_lines(path: Path) -> list[tuple[str, Envelope]]:
    out = []
    for line in path.read_text().splitlines():
        msg = frame_from_json(line).message
        assert isinstance(msg, Emit)
        out.append((msg.edge, msg.envelope))
    return out


def test_without_an_agent_the_sdk_writes_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "out" / "emitted.jsonl"
    with sdk.connect("score", environ=env_for(None, ION_SDK_OUTPUT=str(out))) as client:
        assert isinstance(client, StandaloneClient)
        client.emit_stats({"rows": 3, "rate": 0.5}, tables=[Table("t", ("a",), (("1",),))])
        client.emit_event("model.loaded", "v3 is active", "warning", {"version": "3"})
        client.emit_data(("x", "y"), [(1, 2), (3.5, 4)], "scores")
        client.emit_health(HealthReport("", histograms=(Histogram("x", (0.0, 1.0), (5,)),)))
        handle = client.emit_nowait("scores", DataRecords(payload=b"raw"))
        assert handle.done()
        client.flush()
    lines = read_lines(out)
    assert [edge for edge, _ in lines] == ["", "", "scores", "", "scores"]
    envs = [e for _, e in lines]
    assert all(e.ion == "demo" and e.source_node == "edge-1" for e in envs)
    assert len({e.message_id for e in envs}) == 5
    assert envs[0].body == StatsReport(
        "p",
        "score",
        (Metric("rows", 3.0), Metric("rate", 0.5)),
        tables=(Table("t", ("a",), (("1",),)),),
    )
    assert envs[1].body == Event(
        "model.loaded",
        Severity.WARNING,
        message="v3 is active",
        attributes={"version": "3"},
        pipeline="p",
        component="score",
    )
    assert envs[2].body == DataRecords(columns=("x", "y"), values=(1.0, 2.0, 3.5, 4.0))
    health = envs[3].body
    assert isinstance(health, HealthReport)
    assert (health.pipeline, health.component) == ("p", "score")
    # Plain JSON for people and tools: snake_case names, one object per line.
    first = json.loads(out.read_text().splitlines()[0])
    assert first["emit"]["envelope"]["stats"]["scalars"][0] == {"name": "rows", "value": 3.0}


def test_standalone_defaults_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    client = sdk.connect(environ={})
    client.emit_event("hello", "world")
    client.close()
    line = capsys.readouterr().out.strip()
    msg = frame_from_json(line).message
    assert isinstance(msg, Emit)
    assert isinstance(msg.envelope.body, Event)
    assert msg.envelope.body.message == "world"


def test_one_standalone_pipeline_feeds_the_next(tmp_path: Path) -> None:
    produced = tmp_path / "train.jsonl"
    with sdk.connect(environ=env_for(None, ION_SDK_OUTPUT=str(produced))) as trainer:
        trainer.emit_data(("v",), [(1.0,)], "model")
        trainer.emit_stats({"loss": 0.1})  # telemetry: not for the consumer
        trainer.emit_data(("v",), [(2.0,)], "model")
    consumer = sdk.connect(environ=env_for(None, ION_SDK_INPUT=str(produced)))
    got = list(consumer.subscribe(["model"]))
    assert [(edge, e.body) for edge, e in got] == [
        ("model", DataRecords(columns=("v",), values=(1.0,))),
        ("model", DataRecords(columns=("v",), values=(2.0,))),
    ]
    assert list(sdk.connect(environ={}).subscribe()) == []  # no input: nothing arrives


def test_standalone_input_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "in.jsonl"
    bad.write_text('\n{"emit": {"edge": "x"}}\n')
    client = sdk.connect(environ={"ION_SDK_INPUT": str(bad)})
    with pytest.raises(InputError, match=r"in\.jsonl:2"):
        list(client.subscribe())


def test_a_missing_standalone_input_is_a_config_error(tmp_path: Path) -> None:
    client = sdk.connect(environ={"ION_SDK_INPUT": str(tmp_path / "missing.jsonl")})
    with pytest.raises(ConfigError, match="ION_SDK_INPUT"):
        list(client.subscribe())


def test_emit_data_checks_row_widths_and_takes_numpy_like_rows(tmp_path: Path) -> None:
    class Array:  # what emit_data needs of a numpy array
        def tolist(self) -> list[list[float]]:
            return [[1.0, 2.0], [3.0, 4.0]]

    buf = tmp_path / "o.jsonl"
    client = sdk.connect(environ={"ION_SDK_OUTPUT": str(buf)})
    with pytest.raises(ValueError, match="row 1 has 1 values for 2 columns"):
        client.emit_data(("a", "b"), [(1, 2), (3,)], "e")
    client.emit_data(("a", "b"), Array(), "e")  # type: ignore[arg-type]
    client.close()
    assert read_lines(buf)[0][1].body == DataRecords(("a", "b"), (1.0, 2.0, 3.0, 4.0))
    with pytest.raises(InputError, match="closed"):
        client.emit_stats({})


# Against the agent's socket ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def agent(tmp_path: Path, port: FakeAgentPort | None = None) -> AsyncIterator[FakeAgentPort]:
    port = port or FakeAgentPort()
    async with LocalServer(tmp_path / "agent.sock", port):
        yield port


async def in_thread(fn: Callable[[], T]) -> T:
    """Run blocking SDK code as a component would: in a thread, the loop serving meanwhile."""
    return await asyncio.wait_for(asyncio.to_thread(fn), 30)


def connect(tmp_path: Path, component: str = "c", **kw: str) -> Client:
    return sdk.connect(component, environ=env_for(tmp_path / "agent.sock", **kw), timeout=WAIT)


@pytest.mark.asyncio
@pytest.mark.integration
async def test_emits_reach_the_agent(tmp_path: Path) -> None:
    async with agent(tmp_path) as port:

        def component() -> None:
            with connect(tmp_path, "score") as client:
                assert isinstance(client, AgentClient)
                client.emit_stats({"rows": 10})
                client.emit_event("model.loaded", "ok", Severity.INFO, edge="")
                client.emit_data(("x",), [(1.0,), (2.0,)], "out")
                client.emit("out", DataRecords(payload=b"p"), correlation_id="cmd-1")

        await in_thread(component)
        who = ClientInfo("demo", "p", "score")
        edges = [(c, e) for c, e, _ in port.emitted]
        assert edges == [(who, ""), (who, ""), (who, "out"), (who, "out")]
        bodies = [env.body for _, _, env in port.emitted]
        assert bodies[0] == StatsReport("p", "score", (Metric("rows", 10.0),))
        assert bodies[2] == DataRecords(("x",), (1.0, 2.0))
        last = port.emitted[3][2]
        assert (last.ion, last.source_node, last.correlation_id) == ("demo", "edge-1", "cmd-1")


@pytest.mark.asyncio
@pytest.mark.integration
async def test_errors_from_the_agent_are_raised_by_who_is_at_fault(tmp_path: Path) -> None:
    full = False

    async def hook(client: ClientInfo, edge: str, env: Envelope) -> None:
        if full:
            raise UnavailableError("outbox full")

    async with agent(tmp_path, FakeAgentPort(emit_hook=hook)):
        client = await in_thread(lambda: connect(tmp_path))
        with pytest.raises(InputError, match="does not leave"):
            await in_thread(lambda: client.emit_data(("x",), [(1.0,)], "nowhere"))
        full = True
        with pytest.raises(UnavailableError, match="outbox full"):
            await in_thread(lambda: client.emit_stats({"a": 1}))
        full = False
        await in_thread(lambda: client.emit_stats({"a": 1}))  # still connected
        await in_thread(client.close)


@pytest.mark.asyncio
@pytest.mark.integration
async def test_pipelined_emits_and_flush(tmp_path: Path) -> None:
    n = 5000
    async with agent(tmp_path) as port:

        def component() -> None:
            with connect(tmp_path) as client:
                handles = [
                    client.emit_nowait("out", DataRecords(payload=i.to_bytes(4, "big")))
                    for i in range(n)
                ]
                client.flush()
                assert all(h.done() for h in handles)
                client.emit_nowait("nowhere", DataRecords())
                client.emit_nowait("nowhere", DataRecords())
                observed = client.emit_nowait("nowhere", DataRecords())
                with pytest.raises(InputError):
                    observed.result()
                with pytest.raises(InputError) as info:
                    client.flush()  # the two failures nobody looked at
                assert "1 more" in " ".join(info.value.__notes__)
                client.flush()  # reported once

        await in_thread(component)
        payloads = [env.body for _, _, env in port.emitted]
        assert payloads == [DataRecords(payload=i.to_bytes(4, "big")) for i in range(n)]


@pytest.mark.asyncio
@pytest.mark.integration
async def test_many_threads_share_one_client(tmp_path: Path) -> None:
    async with agent(tmp_path) as port:
        client = await in_thread(lambda: connect(tmp_path))

        def worker(k: int) -> None:
            for i in range(200):
                client.emit("out", DataRecords(payload=bytes([k, i % 256])))

        def run_all() -> None:
            threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            client.close()

        await in_thread(run_all)
        assert port.emit_count == 800
        # Each thread's own messages stay in its order.
        for k in range(4):
            mine = [e.body.payload for _, _, e in port.emitted if e.body.payload[0] == k]  # type: ignore[union-attr]
            assert mine == [bytes([k, i]) for i in range(200)]


@pytest.mark.asyncio
@pytest.mark.integration
async def test_a_wrong_token_is_refused(tmp_path: Path) -> None:
    async with agent(tmp_path):
        with pytest.raises(RefusedError, match="unknown job token"):
            await in_thread(lambda: connect(tmp_path, token="guess"))


@pytest.mark.asyncio
@pytest.mark.integration
async def test_no_agent_at_the_socket_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="cannot reach the agent"):
        await in_thread(lambda: connect(tmp_path))


@pytest.mark.asyncio
@pytest.mark.integration
async def test_subscribe_gives_credit_as_items_are_taken(tmp_path: Path) -> None:
    n = 100
    async with agent(tmp_path) as port:
        pushed = [port.push("in", _envelope(i)) for i in range(n)]
        client = await in_thread(lambda: connect(tmp_path))

        def consume() -> list[int]:
            sub = client.subscribe(["in"], window=4)
            assert isinstance(sub, Subscription)
            got = []
            for edge, env in sub:
                assert edge == "in"
                assert isinstance(env.body, DataRecords)
                got.append(env.body.payload[0])
                if len(got) == n:
                    break
            sub.get(0.05)  # taking (or asking for) the next acknowledges the last
            return got

        assert await in_thread(consume) == list(range(n))
        await _eventually(lambda: len(port.handled) == n)
        assert port.handled == pushed
        await in_thread(client.close)


@pytest.mark.asyncio
@pytest.mark.integration
async def test_subscription_ends_when_the_job_is_asked_to_stop(tmp_path: Path) -> None:
    stop = threading.Event()
    async with agent(tmp_path) as port:
        port.push("in", _envelope(1))
        client = await in_thread(lambda: connect(tmp_path))

        def consume() -> int:
            count = 0
            for _ in client.subscribe(stop=stop):
                count += 1
                stop.set()  # e.g. SIGTERM arrived while handling this one
            return count

        assert await in_thread(consume) == 1
        await _eventually(lambda: len(port.handled) == 1)
        await in_thread(client.close)


@pytest.mark.asyncio
@pytest.mark.integration
async def test_losing_the_agent_fails_what_is_pending(tmp_path: Path) -> None:
    started = threading.Event()

    async def never(client: ClientInfo, edge: str, env: Envelope) -> None:
        started.set()
        await asyncio.Event().wait()

    port = FakeAgentPort(emit_hook=never)
    server = LocalServer(tmp_path / "agent.sock", port)
    await server.__aenter__()
    try:
        client = await in_thread(lambda: connect(tmp_path))
        sub = await in_thread(client.subscribe)
        pending = await in_thread(lambda: client.emit_nowait("out", DataRecords()))
        await in_thread(lambda: started.wait(WAIT))
    finally:
        await server.__aexit__(None, None, None)
    with pytest.raises(UnavailableError, match="connection to the agent lost"):
        await in_thread(lambda: pending.result(WAIT))
    with pytest.raises(UnavailableError):
        await in_thread(lambda: next(sub))
    with pytest.raises(UnavailableError):
        await in_thread(lambda: client.emit_stats({"a": 1}))
    await in_thread(client.close)


@pytest.mark.asyncio
@pytest.mark.integration
async def test_an_emit_the_agent_does_not_answer_times_out(tmp_path: Path) -> None:
    async def slow(client: ClientInfo, edge: str, env: Envelope) -> None:
        await asyncio.sleep(0.5)

    async with agent(tmp_path, FakeAgentPort(emit_hook=slow)) as port:
        client = await in_thread(lambda: connect(tmp_path))
        env = client.envelope(DataRecords(payload=b"once"))
        with pytest.raises(UnavailableError, match="emitting it again is safe"):
            await in_thread(lambda: client.emit("out", env, timeout=0.05))
        await in_thread(lambda: client.emit("out", env))  # the retry: same message id
        assert [e.message_id for _, _, e in port.emitted] == [env.message_id] * 2
        await in_thread(client.close)


@pytest.mark.asyncio
@pytest.mark.integration
async def test_a_child_process_finds_the_agent_through_its_environment(tmp_path: Path) -> None:
    code = (
        "from node import sdk\n"
        "with sdk.connect() as c:\n"
        "    c.emit_stats({'rows': 7})\n"
        "    c.emit_event('done', 'bye')\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        **env_for(tmp_path / "agent.sock", ION_COMPONENT="child"),
        "PYTHONPATH": root,
    }
    async with agent(tmp_path) as port:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, env=env, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
    assert [c.component for c, _, _ in port.emitted] == ["child", "child"]
    assert port.emitted[0][2].body == StatsReport("p", "child", (Metric("rows", 7.0),))


@pytest.mark.asyncio
@pytest.mark.integration
async def test_get_with_a_timeout_and_a_closed_client(tmp_path: Path) -> None:
    async with agent(tmp_path) as port:
        client = await in_thread(lambda: connect(tmp_path))
        sub = await in_thread(client.subscribe)
        assert isinstance(sub, Subscription)
        assert await in_thread(lambda: sub.get(0.05)) is None  # nothing yet
        port.push("in", _envelope(9))
        got = await in_thread(lambda: sub.get(WAIT))
        assert got is not None
        assert got[1].body == DataRecords(payload=bytes([9]))
        await in_thread(client.close)
        with pytest.raises(InputError, match="closed"):
            await in_thread(lambda: client.emit_stats({}))
        assert await in_thread(lambda: list(sub)) == []  # closed here: the iteration just ends


def _envelope(i: int) -> Envelope:
    return new_envelope(DataRecords(payload=bytes([i])), source_node="cloud", now_ms=1, ion="demo")


async def _eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_identity_comes_from_the_environment() -> None:
    client = sdk.connect(environ={"ION_ION": "a", "ION_PIPELINE": "b", "ION_COMPONENT": "c"})
    assert (client.identity.ion, client.identity.pipeline, client.identity.component) == (
        "a",
        "b",
        "c",
    )
    assert sdk.connect("x", environ={"ION_COMPONENT": "c"}).identity.component == "x"
    assert isinstance(sdk.connect(environ={"ION_AGENT_SOCKET": ""}), StandaloneClient)
