"""The agent's local socket server over a real Unix socket, against ``FakeAgentPort``.

The client side here is raw frames (``RawClient``), so each test says exactly what goes on the
wire; the SDK's own tests are in test_sdk.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ion.errors import ConfigError, InputError, UnavailableError
from ion.model.event import DataRecords
from ion.model.local import (
    Delivered,
    Delivery,
    Emit,
    Hello,
    LocalFrame,
    LocalMessage,
    Reply,
    Subscribe,
)
from ion.model.messages import Envelope, new_envelope
from ion.v1 import local_pb2
from ion.wire.local import decode_frame, encode_frame
from node.local import ClientInfo, FakeAgentPort, Inbound, LocalServer, ServerSettings
from node.local.framing import FrameDecoder, encode

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]

WAIT = 5.0  # seconds: generous bound for anything that should happen "at once"


def envelope(payload: bytes = b"x" * 100) -> Envelope:
    return new_envelope(DataRecords(payload=payload), source_node="n1", now_ms=1, ion="demo")


@contextlib.asynccontextmanager
async def serve(
    tmp_path: Path, port: FakeAgentPort | None = None, **settings: float
) -> AsyncIterator[tuple[LocalServer, FakeAgentPort]]:
    port = port or FakeAgentPort()
    path = tmp_path / "agent.sock"
    async with LocalServer(path, port, ServerSettings(**settings)) as server:  # type: ignore[arg-type]
        yield server, port


class RawClient:
    """Frames over a real connection, nothing more."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.frames: list[LocalFrame] = []

    @classmethod
    async def open(cls, server: LocalServer) -> RawClient:
        return await cls.open_path(server.path)

    @classmethod
    async def open_path(cls, path: Path) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    async def send(self, *frames: LocalFrame) -> None:
        await self.send_bytes(b"".join(encode(encode_frame(f)) for f in frames))

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> LocalFrame:
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(65536), WAIT)
            if not data:
                raise EOFError
            self.frames.extend(decode_frame(p) for p in self.decoder.feed(data))
        return self.frames.pop(0)

    async def recv_n(self, n: int) -> list[LocalFrame]:
        return [await self.recv() for _ in range(n)]

    async def request(self, rid: int, msg: LocalMessage) -> Reply:
        await self.send(LocalFrame(rid, msg))
        frame = await self.recv()
        assert frame.request_id == rid
        assert isinstance(frame.message, Reply)
        return frame.message

    async def hello(self, token: str = "secret", component: str = "c") -> Reply:
        return await self.request(1, Hello("demo", "p", component, token))

    async def closed_by_server(self) -> bool:
        """True once the server closed the connection (after any frames it sent first).
        Closes this side too."""
        try:
            while True:
                await self.recv()
        except EOFError:
            return True
        except (ConnectionResetError, TimeoutError):
            return False
        finally:
            await self.close()

    async def nothing_arrives(self, seconds: float = 0.2) -> bool:
        if self.frames:
            return False
        try:
            data = await asyncio.wait_for(self.reader.read(65536), seconds)
        except TimeoutError:
            return True
        self.frames.extend(decode_frame(p) for p in self.decoder.feed(data))
        return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def connected(server: LocalServer) -> RawClient:
    client = await RawClient.open(server)
    assert (await client.hello()).ok
    return client


async def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# The socket file ---------------------------------------------------------------------------


async def test_socket_is_private_and_removed_on_exit(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, _):
        mode = os.stat(server.path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
    assert not server.path.exists()


async def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays: what a killed agent leaves behind
    async with serve(tmp_path) as (server, _):
        client = await connected(server)
        await client.close()
        with pytest.raises(UnavailableError, match="in use"):
            async with LocalServer(path, FakeAgentPort()):
                pass
        assert path.exists()  # the live server's socket was left alone


async def test_a_file_that_is_not_a_socket_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    path.write_text("precious")
    with pytest.raises(ConfigError, match="not a socket"):
        async with LocalServer(path, FakeAgentPort()):
            pass
    assert path.read_text() == "precious"


# Hello -------------------------------------------------------------------------------------


async def test_hello_with_the_job_token_is_accepted(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, _):
        client = await RawClient.open(server)
        assert await client.hello() == Reply.success()
        await client.close()


@pytest.mark.parametrize(
    ("hello", "error"),
    [
        (Hello("demo", "p", "c", "wrong"), "unknown job token"),
        (Hello("demo", "other", "c", "secret"), "does not run here"),
        (Hello("demo", "p", "c", "secret", protocol_version=2), "protocol version 2"),
    ],
)
async def test_refused_hello_is_answered_then_closed(
    tmp_path: Path, hello: Hello, error: str
) -> None:
    async with serve(tmp_path) as (server, _):
        client = await RawClient.open(server)
        reply = await client.request(1, hello)
        assert not reply.ok
        assert not reply.retryable
        assert error in reply.error
        assert await client.closed_by_server()
        assert server.stats.refused == 1


async def test_anything_before_hello_is_refused(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, port):
        client = await RawClient.open(server)
        reply = await client.request(3, Emit("out", envelope()))
        assert not reply.ok
        assert "first frame must be Hello" in reply.error
        assert await client.closed_by_server()
        assert port.emitted == []


async def test_silent_connection_is_closed_after_hello_timeout(tmp_path: Path) -> None:
    async with serve(tmp_path, hello_timeout_s=0.1) as (server, _):
        client = await RawClient.open(server)
        assert await client.closed_by_server()
        assert server.stats.connections_open == 0


async def test_hello_when_the_job_is_not_ready_is_retryable(tmp_path: Path) -> None:
    class NotYet(FakeAgentPort):
        def authorize(self, hello: Hello) -> ClientInfo:
            raise UnavailableError("job still starting")

    async with serve(tmp_path, NotYet()) as (server, _):
        client = await RawClient.open(server)
        reply = await client.hello()
        assert reply == Reply.failure("job still starting", retryable=True)
        assert await client.closed_by_server()


# Emit --------------------------------------------------------------------------------------


async def test_emit_is_stored_then_answered(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, port):
        client = await connected(server)
        env = envelope()
        assert await client.request(7, Emit("out", env)) == Reply.success()
        assert port.emitted == [(ClientInfo("demo", "p", "c"), "out", env)]
        assert server.stats.emits_ok == 1
        await client.close()


async def test_emit_error_is_mapped_and_the_connection_goes_on(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, port):
        client = await connected(server)
        reply = await client.request(2, Emit("nowhere", envelope()))
        assert not reply.ok
        assert not reply.retryable
        assert "'nowhere' does not leave" in reply.error
        assert (await client.request(3, Emit("out", envelope()))).ok
        assert len(port.emitted) == 1
        assert server.stats.emits_failed == 1
        await client.close()


async def test_full_outbox_is_a_retryable_error(tmp_path: Path) -> None:
    async def full(client: ClientInfo, edge: str, env: Envelope) -> None:
        raise UnavailableError("outbox full for class data")

    async with serve(tmp_path, FakeAgentPort(emit_hook=full)) as (server, _):
        client = await connected(server)
        reply = await client.request(2, Emit("out", envelope()))
        assert reply == Reply.failure("outbox full for class data", retryable=True)
        await client.close()


async def test_a_bug_in_the_port_fails_the_request_not_the_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def buggy(client: ClientInfo, edge: str, env: Envelope) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")

    async with serve(tmp_path, FakeAgentPort(emit_hook=buggy)) as (server, _):
        client = await connected(server)
        with caplog.at_level(logging.ERROR, logger="node.local"):
            reply = await client.request(2, Emit("out", envelope()))
        assert not reply.ok
        assert not reply.retryable
        assert "boom" in caplog.text  # logged with its traceback, not sent to the component
        assert (await client.request(3, Emit("out", envelope()))).ok
        await client.close()


async def test_invalid_envelope_fails_only_its_request(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, _):
        client = await connected(server)
        bad = local_pb2.LocalFrame(request_id=5)
        bad.emit.edge = "out"
        bad.emit.envelope.message_id = "not hex"
        await client.send_bytes(encode(bad.SerializeToString()))
        reply = await client.recv()
        assert reply.request_id == 5
        assert isinstance(reply.message, Reply)
        assert "invalid request" in reply.message.error
        assert (await client.request(6, Emit("out", envelope()))).ok
        assert server.stats.malformed_frames == 0
        await client.close()


async def test_ten_thousand_pipelined_emits_are_all_answered(tmp_path: Path) -> None:
    n = 10_000
    async with serve(tmp_path) as (server, port):
        client = await connected(server)
        envs = [envelope(i.to_bytes(4, "big")) for i in range(n)]
        await client.send(*(LocalFrame(i + 2, Emit("out", e)) for i, e in enumerate(envs)))
        replies = await client.recv_n(n)
        assert sorted(f.request_id for f in replies) == list(range(2, n + 2))
        assert all(f.message == Reply.success() for f in replies)
        # The port saw them in the order they were sent.
        assert [e for _, _, e in port.emitted] == envs
        await client.close()


async def test_replies_come_as_emits_complete_not_in_order(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow_first(client: ClientInfo, edge: str, env: Envelope) -> None:
        if env.body == DataRecords(payload=b"slow"):
            await release.wait()

    async with serve(tmp_path, FakeAgentPort(emit_hook=slow_first)) as (server, _):
        client = await connected(server)
        await client.send(
            LocalFrame(10, Emit("out", envelope(b"slow"))),
            LocalFrame(11, Emit("out", envelope(b"fast"))),
        )
        assert (await client.recv()).request_id == 11
        release.set()
        assert (await client.recv()).request_id == 10
        await client.close()


async def test_in_flight_limit_stops_reading_until_there_is_room(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def held(client: ClientInfo, edge: str, env: Envelope) -> None:
        await release.wait()

    port = FakeAgentPort(emit_hook=held)
    async with serve(tmp_path, port, max_in_flight=3) as (server, _):
        client = await connected(server)
        await client.send(*(LocalFrame(i, Emit("out", envelope())) for i in range(2, 12)))
        await asyncio.sleep(0.1)
        assert port.emit_count == 0
        release.set()
        replies = await client.recv_n(10)
        assert all(f.message.ok for f in replies if isinstance(f.message, Reply))
        assert port.emit_count == 10
        await client.close()


async def test_half_closed_client_still_gets_its_replies(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, _):
        client = await connected(server)
        await client.send(*(LocalFrame(i, Emit("out", envelope())) for i in range(2, 102)))
        client.writer.write_eof()
        assert len(await client.recv_n(100)) == 100
        assert await client.closed_by_server()


# Subscribe ---------------------------------------------------------------------------------


async def test_deliveries_respect_the_window(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, port):
        pushed = [port.push("in", envelope(bytes([i]))) for i in range(20)]
        client = await connected(server)
        assert await client.request(2, Subscribe(("in",), window=5)) == Reply.success()
        first = await client.recv_n(5)
        assert [f.message.delivery_id for f in first if isinstance(f.message, Delivery)] == [
            1,
            2,
            3,
            4,
            5,
        ]
        assert all(f.request_id == 2 for f in first)
        assert await client.nothing_arrives()  # no credit, no sixth delivery
        assert port.queued == 15  # and the rest is still the agent's, not in a buffer
        await client.send(LocalFrame(0, Delivered(3)))
        more = await client.recv_n(3)
        ids = [f.message.delivery_id for f in more if isinstance(f.message, Delivery)]
        assert ids == [6, 7, 8]
        assert await client.nothing_arrives()
        await eventually(lambda: len(port.handled) == 3)
        assert port.handled == pushed[:3]
        # An older cumulative acknowledgement says nothing new.
        await client.send(LocalFrame(0, Delivered(2)))
        assert await client.nothing_arrives()
        await client.close()


async def test_window_is_capped_and_defaulted(tmp_path: Path) -> None:
    async with serve(tmp_path, default_window=2, max_window=4) as (server, port):
        for i in range(10):
            port.push("in", envelope(bytes([i])))
        a = await connected(server)
        assert (await a.request(2, Subscribe(window=0))).ok
        assert len(await a.recv_n(2)) == 2
        assert await a.nothing_arrives()
        b = await connected(server)
        assert (await b.request(2, Subscribe(window=1000))).ok
        assert len(await b.recv_n(4)) == 4
        assert await b.nothing_arrives()
        await a.close()
        await b.close()


async def test_subscribe_errors(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, _):
        client = await connected(server)
        reply = await client.request(2, Subscribe(("elsewhere",)))
        assert not reply.ok
        assert "do not lead into" in reply.error
        assert (await client.request(3, Subscribe(("in",)))).ok
        reply = await client.request(4, Subscribe(("in",)))
        assert reply == Reply.failure("this connection has subscribed already")
        await client.close()


async def test_delivered_beyond_what_was_delivered_closes_the_connection(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, port):
        port.push("in", envelope())
        client = await connected(server)
        assert (await client.request(2, Subscribe())).ok
        assert isinstance((await client.recv()).message, Delivery)
        await client.send(LocalFrame(0, Delivered(5)))
        reply = await client.recv()
        assert isinstance(reply.message, Reply)
        assert "only 1 were delivered" in reply.message.error
        assert await client.closed_by_server()
        assert server.stats.malformed_frames == 1
        assert port.handled == []  # nothing acknowledged: it will be delivered again


async def test_end_of_subscription_is_told_to_the_component(tmp_path: Path) -> None:
    class Finite(FakeAgentPort):
        def deliveries(self, client: ClientInfo, edges: tuple[str, ...]) -> AsyncIterator[Inbound]:
            async def one() -> AsyncIterator[Inbound]:
                yield Inbound("in", envelope(), 1)

            return one()

    async with serve(tmp_path, Finite()) as (server, _):
        client = await connected(server)
        assert (await client.request(2, Subscribe())).ok
        assert isinstance((await client.recv()).message, Delivery)
        end = await client.recv()
        assert end.request_id == 2
        assert end.message == Reply.failure("subscription ended by the agent", retryable=True)
        await client.close()


# Bad input ---------------------------------------------------------------------------------


async def test_malformed_frame_closes_only_that_connection(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, port):
        good = await connected(server)
        bad = await connected(server)
        await bad.send_bytes(encode(b"\xff\xff\xff\xff"))
        reply = await bad.recv()
        assert reply.request_id == 0
        assert isinstance(reply.message, Reply)
        assert "malformed frame" in reply.message.error
        assert await bad.closed_by_server()
        assert (await good.request(5, Emit("out", envelope()))).ok
        assert server.stats.malformed_frames == 1
        # And the server still takes new connections.
        late = await connected(server)
        assert (await late.request(2, Emit("out", envelope()))).ok
        assert len(port.emitted) == 2
        await good.close()
        await late.close()


async def test_oversized_frame_closes_the_connection(tmp_path: Path) -> None:
    async with serve(tmp_path, max_frame_size=1024) as (server, _):
        client = await connected(server)
        await client.send_bytes((10_000).to_bytes(4, "big"))
        assert await client.closed_by_server()
        assert server.stats.malformed_frames == 1


async def test_frames_only_the_agent_sends_are_refused(tmp_path: Path) -> None:
    async with serve(tmp_path) as (server, _):
        client = await connected(server)
        await client.send(LocalFrame(3, Reply()))
        reply = await client.recv()
        assert reply.request_id == 3
        assert await client.closed_by_server()
        assert server.stats.malformed_frames == 1


async def test_random_bytes_never_hurt_the_server(tmp_path: Path) -> None:
    rng = random.Random(1234)
    async with serve(tmp_path, max_frame_size=4096) as (server, port):
        for i in range(40):
            client = await RawClient.open(server)
            if i % 2:
                assert (await client.hello()).ok
            junk = rng.randbytes(rng.randrange(1, 300))
            if i % 4 == 1:  # a plausible header, then junk
                junk = len(junk).to_bytes(4, "big") + junk
            await client.send_bytes(junk)
            client.writer.write_eof()
            assert await client.closed_by_server()
        await eventually(lambda: server.stats.connections_open == 0)
        client = await connected(server)
        assert (await client.request(2, Emit("out", envelope()))).ok
        assert port.emit_count == 1
        await client.close()


async def test_client_disconnect_mid_request(tmp_path: Path) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(client: ClientInfo, edge: str, env: Envelope) -> None:
        started.set()
        await release.wait()

    port = FakeAgentPort(emit_hook=slow)
    async with serve(tmp_path, port) as (server, _):
        client = await connected(server)
        await client.send(LocalFrame(2, Emit("out", envelope())))
        await asyncio.wait_for(started.wait(), WAIT)
        client.writer.transport.abort()  # gone, with a request in flight
        await asyncio.sleep(0.05)
        release.set()
        # The emit the agent had started still completes; its reply has nowhere to go.
        await eventually(lambda: port.emit_count == 1)
        await eventually(lambda: server.stats.connections_open == 0)
        other = await connected(server)
        assert (await other.request(2, Emit("out", envelope()))).ok
        await other.close()


async def test_leaving_the_server_closes_connections_promptly(tmp_path: Path) -> None:
    cancelled = asyncio.Event()

    async def forever(client: ClientInfo, edge: str, env: Envelope) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    port = FakeAgentPort(emit_hook=forever)
    async with serve(tmp_path, port) as (server, _):
        port.push("in", envelope())
        a = await connected(server)
        b = await connected(server)
        assert (await b.request(2, Subscribe())).ok
        await a.send(LocalFrame(2, Emit("out", envelope())))
        await asyncio.sleep(0.05)
        start = time.monotonic()
    assert time.monotonic() - start < 1.0
    assert cancelled.is_set()
    assert await a.closed_by_server()
    assert await b.closed_by_server()
    await a.close()
    await b.close()


async def test_cancelling_the_task_that_serves_stops_everything(tmp_path: Path) -> None:
    ready = asyncio.Event()

    async def run() -> None:
        async with serve(tmp_path):
            ready.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(run())
    await asyncio.wait_for(ready.wait(), WAIT)
    client = await RawClient.open_path(tmp_path / "agent.sock")
    assert (await client.hello()).ok
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await client.closed_by_server()
    assert not (tmp_path / "agent.sock").exists()
    await client.close()


async def test_an_exception_in_the_body_comes_out_unchanged(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="mine"):
        async with serve(tmp_path):
            raise InputError("mine")
