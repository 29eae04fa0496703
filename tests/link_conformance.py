"""One behaviour suite for every ``MqttLink``: the fake must not promise what the real one breaks.

A test module subclasses ``LinkConformance`` and provides an ``env`` fixture (a ``LinkEnv``):
``tests/test_link_fake.py`` (in memory) and ``tests/test_link_aiomqtt.py`` (real Mosquitto
behind a ``FaultProxy``).  Links made with ``env.link`` go through the faultable path;
``env.observer`` links go straight to the broker, so they see what the others' failures cause
(wills, retained status).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import pytest
from support import async_wait_until, unique_name

from node.link.base import (
    IncomingMessage,
    InvalidTopicError,
    LinkClosed,
    LinkDown,
    LinkOptions,
    LinkRefusedError,
    LinkState,
    MqttLink,
    OutgoingMessage,
    Will,
)

# Fast reconnects and prompt failure detection: tests wait for behaviour, not for defaults.
FAST = LinkOptions(
    backoff_initial_s=0.05,
    backoff_max_s=0.4,
    ack_timeout_s=5.0,
    close_timeout_s=1.0,
    stable_after_s=0.5,
)


class LinkEnv(Protocol):
    def link(
        self,
        client_id: str,
        *,
        will: Will | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_connect_publish: Sequence[OutgoingMessage] = (),
        options: LinkOptions = FAST,
    ) -> MqttLink:
        """A link through the faultable path."""
        ...

    def observer(self, client_id: str, **kwargs: Any) -> MqttLink:
        """A link straight to the broker (unaffected by cut/stall)."""
        ...

    def refused_link(self, client_id: str) -> MqttLink:
        """A link whose login the broker refuses (bad credentials)."""
        ...

    def refused_attempts(self) -> int:
        """Connection attempts ``refused_link`` links have made so far."""
        ...

    async def cut(self) -> None:
        """Connections on the faultable path die abruptly; new ones fail until restore."""
        ...

    async def stall(self) -> None:
        """Acknowledgements stop coming on the faultable path (connections stay up)."""
        ...

    async def restore(self) -> None: ...


@contextlib.asynccontextmanager
async def running(*links: MqttLink) -> AsyncIterator[None]:
    """Enter the links and wait until each is connected."""
    async with contextlib.AsyncExitStack() as stack:
        for link in links:
            await stack.enter_async_context(link)
        async with asyncio.timeout(10):
            for link in links:
                await link.wait_connected()
        yield


async def take(link: MqttLink, n: int, within: float = 10.0) -> list[IncomingMessage]:
    got: list[IncomingMessage] = []
    async with asyncio.timeout(within):
        async for msg in link.messages():
            got.append(msg)
            if len(got) == n:
                break
    return got


async def next_on(link: MqttLink, topic: str, within: float = 10.0) -> IncomingMessage:
    """The next message on ``topic`` (others are skipped)."""
    async with asyncio.timeout(within):
        async for msg in link.messages():
            if msg.topic == topic:
                return msg
    raise AssertionError(f"link closed before a message on {topic}")


async def wait_state(link: MqttLink, state: LinkState, within: float = 10.0) -> None:
    await async_wait_until(lambda: link.state is state, within, message=lambda: str(link.status))


async def wait_down(link: MqttLink, within: float = 10.0) -> None:
    """Until the link noticed its connection is gone (it may already be retrying)."""
    await async_wait_until(lambda: link.state is not LinkState.CONNECTED, within)


async def wait_connects(link: MqttLink, n: int, within: float = 10.0) -> None:
    """Until the link has connected ``n`` times in all and is connected."""
    await async_wait_until(
        lambda: link.status.connects >= n and link.state is LinkState.CONNECTED,
        within,
        message=lambda: str(link.status),
    )


def topic(prefix: str) -> str:
    return f"test/{unique_name(prefix)}"


class LinkConformance:
    @pytest.mark.asyncio
    async def test_qos1_roundtrip(self, env: LinkEnv) -> None:
        t = topic("rt")
        sub = env.link(unique_name("sub"), subscriptions=[(t + "/#", 1)])
        pub = env.link(unique_name("pub"))
        async with running(sub, pub):
            await pub.publish(t + "/a", b"hello", qos=1)
            (msg,) = await take(sub, 1)
        assert msg == IncomingMessage(t + "/a", b"hello", retain=False, qos=1)

    @pytest.mark.asyncio
    async def test_payload_bytes_arrive_untouched(self, env: LinkEnv) -> None:
        t = topic("bytes")
        junk = os.urandom(4096)  # malformed as far as any decoder is concerned
        sub = env.link(unique_name("sub"), subscriptions=[(t, 1)])
        obs = env.observer(unique_name("obs"))
        async with running(sub, obs):
            await obs.publish(t, junk)
            await obs.publish(t, b"")
            got = await take(sub, 2)
        assert [m.payload for m in got] == [junk, b""]

    @pytest.mark.asyncio
    async def test_retained_message_arrives_flagged_on_subscribe(self, env: LinkEnv) -> None:
        t = topic("ret")
        obs = env.observer(unique_name("obs"))
        sub = env.link(unique_name("sub"))
        async with running(obs, sub):
            await obs.publish(t, b"kept", retain=True)
            await sub.subscribe(t, 1)
            msg = await next_on(sub, t)
            await obs.publish(t, b"", retain=True)  # clear it for other tests
        assert msg.retain and msg.payload == b"kept"

    @pytest.mark.asyncio
    async def test_2000_concurrent_publishes_all_acknowledged_in_order(self, env: LinkEnv) -> None:
        t = topic("many")
        n = 2000
        sub = env.observer(unique_name("sub"), subscriptions=[(t, 1)])
        pub = env.link(unique_name("pub"), options=LinkOptions(inflight_window=1000))
        async with running(sub, pub):
            async with asyncio.timeout(30):
                await asyncio.gather(*(pub.publish(t, b"%d" % i) for i in range(n)))
            got = await take(sub, n, within=30)
        assert [int(m.payload) for m in got] == list(range(n))

    @pytest.mark.asyncio
    async def test_publish_without_connection_fails_fast(self, env: LinkEnv) -> None:
        link = env.link(unique_name("pub"))
        with pytest.raises(LinkClosed):
            await link.publish(topic("x"), b"before entry")
        async with running(link):
            await env.cut()
            await wait_down(link)
            async with asyncio.timeout(1):
                with pytest.raises(LinkDown):
                    await link.publish(topic("x"), b"while down")
            await env.restore()
        with pytest.raises(LinkClosed):
            await link.publish(topic("x"), b"after exit")

    @pytest.mark.asyncio
    async def test_cut_fails_pending_publishes_then_reconnects_and_resubscribes(
        self, env: LinkEnv
    ) -> None:
        t = topic("cut")
        link = env.link(unique_name("node"), subscriptions=[(t + "/in", 1)])
        obs = env.observer(unique_name("obs"))
        async with running(link, obs):
            await env.stall()
            pending = [asyncio.create_task(link.publish(t + "/out", b"p")) for _ in range(50)]
            await asyncio.sleep(0.2)
            assert not any(p.done() for p in pending), "acks came through a stalled path"
            await env.cut()
            async with asyncio.timeout(3):  # promptly, not after a timeout
                results = await asyncio.gather(*pending, return_exceptions=True)
            assert all(isinstance(r, LinkDown) for r in results), results
            await env.restore()
            async with asyncio.timeout(10):
                await link.wait_connected()
            assert link.status.connects == 2
            await obs.publish(t + "/in", b"after")
            msg = await next_on(link, t + "/in")
            await link.publish(t + "/out", b"works again")
        assert msg.payload == b"after"

    @pytest.mark.asyncio
    async def test_will_published_when_connection_dies(self, env: LinkEnv) -> None:
        status = topic("status")
        obs = env.observer(unique_name("obs"), subscriptions=[(status, 1)])
        node = env.link(
            unique_name("node"),
            will=Will(status, b"offline"),
            on_connect_publish=[OutgoingMessage(status, b"online")],
        )
        async with running(obs, node):
            assert (await next_on(obs, status)).payload == b"online"
            await env.cut()
            assert (await next_on(obs, status)).payload == b"offline"
            await env.restore()
            # Reconnected: the on-connect status is published again.
            assert (await next_on(obs, status)).payload == b"online"
            await obs.publish(status, b"", retain=True)

    @pytest.mark.asyncio
    async def test_clean_close_publishes_the_will_payload(self, env: LinkEnv) -> None:
        status = topic("status")
        obs = env.observer(unique_name("obs"), subscriptions=[(status, 1)])
        node = env.link(
            unique_name("node"),
            will=Will(status, b"offline"),
            on_connect_publish=[OutgoingMessage(status, b"online")],
        )
        async with running(obs):
            async with running(node):
                assert (await next_on(obs, status)).payload == b"online"
            assert node.state is LinkState.CLOSED
            msg = await next_on(obs, status)
            await obs.publish(status, b"", retain=True)
        assert msg.payload == b"offline"

    @pytest.mark.asyncio
    async def test_runtime_subscriptions_survive_reconnect(self, env: LinkEnv) -> None:
        t = topic("dyn")
        link = env.link(unique_name("node"))
        obs = env.observer(unique_name("obs"))
        async with running(link, obs):
            await link.subscribe(t + "/a", 1)
            await link.subscribe(t + "/b", 1)
            await link.unsubscribe(t + "/b")
            await env.cut()
            await wait_down(link)
            await link.subscribe(t + "/c", 1)  # while down: made on reconnect
            await env.restore()
            await link.wait_connected()
            for leaf in ("b", "a", "c"):
                await obs.publish(f"{t}/{leaf}", leaf.encode())
            got = await take(link, 2)
        assert [m.topic for m in got] == [t + "/a", t + "/c"]

    @pytest.mark.asyncio
    async def test_persistent_session_keeps_messages_while_away(self, env: LinkEnv) -> None:
        t = topic("persist")
        client_id = unique_name("durable")
        opts = LinkOptions(persistent_session=True, backoff_initial_s=0.05, backoff_max_s=0.4)
        obs = env.observer(unique_name("obs"))
        async with running(obs):
            first = env.link(client_id, subscriptions=[(t, 1)], options=opts)
            async with running(first):
                assert first.session_present is False
            await obs.publish(t, b"while away")
            second = env.link(client_id, subscriptions=[(t, 1)], options=opts)
            async with running(second):
                assert second.session_present is True
                (msg,) = await take(second, 1)
            # Leave no session behind on a shared broker.
            clean = env.link(client_id, options=FAST)
            async with running(clean):
                pass
        assert msg.payload == b"while away"

    @pytest.mark.asyncio
    async def test_full_incoming_queue_pauses_reading_and_loses_nothing(self, env: LinkEnv) -> None:
        t = topic("flood")
        n = 300
        opts = LinkOptions(incoming_queue=20, backoff_initial_s=0.05, backoff_max_s=0.4)
        sub = env.link(unique_name("slow"), subscriptions=[(t, 1)], options=opts)
        obs = env.observer(unique_name("obs"))
        async with running(sub, obs):
            await asyncio.gather(*(obs.publish(t, b"%d" % i) for i in range(n)))
            await async_wait_until(lambda: sub.status.reading_paused)
            await asyncio.sleep(0.3)  # reading stays paused: the queue stops growing
            held = sub.status.queued_messages
            assert held < n, f"{held} queued: reading did not pause"
            got = await take(sub, n)
        assert [int(m.payload) for m in got] == list(range(n))

    @pytest.mark.asyncio
    async def test_refused_login_is_fatal_without_retries(self, env: LinkEnv) -> None:
        link = env.refused_link(unique_name("intruder"))
        async with link:
            async with asyncio.timeout(5):
                with pytest.raises(LinkRefusedError) as refused:
                    await link.wait_connected()
            assert link.state is LinkState.FAILED
            assert "refused" in str(refused.value)
            with pytest.raises(LinkRefusedError):
                await link.publish(topic("x"), b"nope")
            with pytest.raises(LinkRefusedError):
                await anext(link.messages())
            await asyncio.sleep(0.5)  # no hot loop: still one attempt
            assert env.refused_attempts() == 1
            assert link.status.reason

    @pytest.mark.asyncio
    async def test_cancelling_the_owner_exits_promptly(self, env: LinkEnv) -> None:
        link = env.link(unique_name("node"), options=FAST)
        entered = asyncio.Event()

        async def owner() -> None:
            async with link:
                await link.wait_connected()
                await env.stall()
                entered.set()
                await asyncio.gather(*(link.publish(topic("x"), b"p") for _ in range(20)))

        task = asyncio.create_task(owner())
        async with asyncio.timeout(10):
            await entered.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        async with asyncio.timeout(FAST.close_timeout_s + 1.5):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert link.status.state is LinkState.CLOSED
        await env.restore()
        # (the autouse leak check fails the test if the link left a task behind)

    @pytest.mark.asyncio
    async def test_cancel_while_broker_unreachable_exits_promptly(self, env: LinkEnv) -> None:
        await env.cut()
        link = env.link(unique_name("node"))

        async def owner() -> None:
            async with link:
                await link.wait_connected()

        task = asyncio.create_task(owner())
        await asyncio.sleep(0.3)
        assert link.state in (LinkState.CONNECTING, LinkState.BACKOFF)
        task.cancel()
        async with asyncio.timeout(2):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert link.status.state is LinkState.CLOSED
        await env.restore()

    @pytest.mark.asyncio
    async def test_invalid_topics_are_caller_errors(self, env: LinkEnv) -> None:
        link = env.link(unique_name("node"))
        async with running(link):
            for bad in ("a/+/b", "a/#", ""):
                with pytest.raises(InvalidTopicError):
                    await link.publish(bad, b"x")
            for bad_filter in ("a/#/b", "a+/b", ""):
                with pytest.raises(InvalidTopicError):
                    await link.subscribe(bad_filter)
            assert link.state is LinkState.CONNECTED
