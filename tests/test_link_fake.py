"""The in-memory link: the conformance suite, plus what only a scripted broker can show
(exact backoff delays, attempt counts, held acknowledgements, refused subscriptions)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from link_conformance import (
    FAST,
    LinkConformance,
    running,
    take,
    topic,
    wait_connects,
    wait_down,
)
from support import async_wait_until, unique_name

from node.link.base import (
    LinkDown,
    LinkOptions,
    LinkRefusedError,
    LinkState,
    OutgoingMessage,
    SubscriptionRefusedError,
    Will,
)
from node.link.connection import Window
from node.link.fake import FakeBroker, FakeLink


class FakeEnv:
    def __init__(self) -> None:
        self.broker = FakeBroker()
        self._faulty: set[str] = set()
        self._refused: list[str] = []
        self._cut = False

    def link(
        self,
        client_id: str,
        *,
        will: Will | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_connect_publish: Sequence[OutgoingMessage] = (),
        options: LinkOptions = FAST,
    ) -> FakeLink:
        self._faulty.add(client_id)
        if self._cut:
            self.broker.partition(client_id)
        return FakeLink(
            self.broker,
            client_id,
            will=will,
            subscriptions=subscriptions,
            on_connect_publish=on_connect_publish,
            options=options,
        )

    def observer(self, client_id: str, **kwargs: Any) -> FakeLink:
        kwargs.setdefault("options", FAST)
        return FakeLink(self.broker, client_id, **kwargs)

    def refused_link(self, client_id: str) -> FakeLink:
        self.broker.refuse("Bad user name or password", code=0x86, client_id=client_id)
        self._refused.append(client_id)
        return FakeLink(self.broker, client_id, options=FAST)

    def refused_attempts(self) -> int:
        return sum(self.broker.connect_attempts[c] for c in self._refused)

    async def cut(self) -> None:
        self._cut = True
        for client_id in self._faulty:
            self.broker.partition(client_id)

    async def stall(self) -> None:
        self.broker.hold_acks()

    async def restore(self) -> None:
        self._cut = False
        for client_id in self._faulty:
            self.broker.heal(client_id)
        self.broker.release_acks()


@pytest.fixture
def env() -> FakeEnv:
    return FakeEnv()


class TestFakeLinkConformance(LinkConformance):
    pass


# -- what only the fake can show -------------------------------------------------------------


class RecordingSleep:
    """An injected sleep: records each delay and returns at once (after ``limit`` delays it
    never returns, which freezes the link where the test wants it)."""

    def __init__(self, limit: int | None = None) -> None:
        self.delays: list[float] = []
        self._limit = limit

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self._limit is not None and len(self.delays) >= self._limit:
            await asyncio.Event().wait()
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_reconnect_delays_follow_the_backoff_policy() -> None:
    broker = FakeBroker()
    broker.set_down(True)
    sleep = RecordingSleep()
    link = FakeLink(broker, "n1", sleep=sleep, random=lambda: 0.0)  # no jitter
    async with link:
        await async_wait_until(lambda: len(sleep.delays) >= 9)
        broker.set_down(False)
        await link.wait_connected()
    assert sleep.delays[:9] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert link.status.connects == 1


@pytest.mark.asyncio
async def test_jitter_only_shortens_delays() -> None:
    broker = FakeBroker()
    broker.set_down(True)
    sleep = RecordingSleep()
    async with FakeLink(broker, "n1", sleep=sleep, random=lambda: 0.999):
        await async_wait_until(lambda: len(sleep.delays) >= 3)
    assert sleep.delays[:3] == pytest.approx([0.25025, 0.5005, 1.001])


@pytest.mark.asyncio
async def test_flapping_connection_keeps_backing_off() -> None:
    """A broker that accepts and drops at once (e.g. two nodes sharing a client id) must not
    get a reconnect storm: only a connection that lasted ``stable_after_s`` resets backoff."""
    broker = FakeBroker()
    sleep = RecordingSleep()
    link = FakeLink(broker, "n1", sleep=sleep, random=lambda: 0.0)
    async with link:
        for i in range(1, 5):
            await wait_connects(link, i)
            broker.drop("n1")
        await wait_connects(link, 5)
    assert sleep.delays[:4] == [0.5, 1.0, 2.0, 4.0]


@pytest.mark.asyncio
async def test_stable_connection_resets_backoff() -> None:
    broker = FakeBroker()
    sleep = RecordingSleep()
    opts = LinkOptions(stable_after_s=0.0)
    link = FakeLink(broker, "n1", sleep=sleep, random=lambda: 0.0, options=opts)
    async with link:
        for i in range(1, 4):
            await wait_connects(link, i)
            broker.drop("n1")
        await wait_connects(link, 4)
    assert sleep.delays[:3] == [0.5, 0.5, 0.5]


@pytest.mark.asyncio
async def test_refusal_makes_exactly_one_attempt_and_no_sleep() -> None:
    broker = FakeBroker(credentials={"node": "secret"})
    sleep = RecordingSleep()
    link = FakeLink(broker, "n1", username="node", password="wrong", sleep=sleep)
    async with link:
        with pytest.raises(LinkRefusedError) as refused:
            await link.wait_connected()
    assert refused.value.code == 0x86
    assert broker.connect_attempts["n1"] == 1
    assert sleep.delays == []
    assert link.state is LinkState.CLOSED


@pytest.mark.asyncio
async def test_correct_credentials_connect() -> None:
    broker = FakeBroker(credentials={"node": "secret"})
    async with running(FakeLink(broker, "n1", username="node", password="secret")):
        pass


@pytest.mark.asyncio
async def test_retry_logging_is_a_summary_not_one_line_per_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FakeBroker()
    broker.set_down(True)
    sleep = RecordingSleep(limit=25)
    caplog.set_level(logging.DEBUG, logger="node.link")
    async with FakeLink(broker, "n1", sleep=sleep):
        await async_wait_until(lambda: len(sleep.delays) >= 25)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The first failure, then one summary per ten attempts.
    assert len(warnings) == 3, [r.getMessage() for r in warnings]
    assert "still cannot connect" in warnings[-1].getMessage()


@pytest.mark.asyncio
async def test_slow_acks_delay_publish() -> None:
    broker = FakeBroker()
    broker.ack_delay_s = 0.2
    link = FakeLink(broker, "n1", options=FAST)
    async with running(link):
        loop = asyncio.get_running_loop()
        start = loop.time()
        await link.publish("a/b", b"x")
        assert loop.time() - start >= 0.19


@pytest.mark.asyncio
async def test_no_acks_for_ack_timeout_drops_the_connection() -> None:
    broker = FakeBroker()
    opts = LinkOptions(ack_timeout_s=0.3, backoff_initial_s=0.01, backoff_max_s=0.05)
    link = FakeLink(broker, "n1", options=opts)
    async with running(link):
        broker.hold_acks()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(LinkDown, match="no answer from the broker"):
            await link.publish("a/b", b"x")
        assert loop.time() - start < 2
        broker.release_acks()
        await wait_connects(link, 2)
        await link.publish("a/b", b"y")


@pytest.mark.asyncio
async def test_window_bounds_in_flight_and_keeps_order() -> None:
    broker = FakeBroker()
    link = FakeLink(broker, "n1", options=LinkOptions(inflight_window=5))
    async with running(link):
        broker.hold_acks()
        pubs = [asyncio.create_task(link.publish("a/b", b"%d" % i)) for i in range(20)]
        await asyncio.sleep(0.05)
        assert len(broker.published_on("a/b")) == 5
        assert link.status.pending_publishes == 5
        for _ in range(4):  # each release lets the next five through
            broker.release_acks()
            broker.hold_acks()
            await asyncio.sleep(0.05)
        broker.release_acks()
        await asyncio.gather(*pubs)
    assert broker.published_on("a/b") == [b"%d" % i for i in range(20)]


@pytest.mark.asyncio
async def test_publishes_waiting_for_the_window_fail_when_their_connection_dies() -> None:
    broker = FakeBroker()
    link = FakeLink(broker, "n1", options=LinkOptions(inflight_window=2, backoff_initial_s=0.01))
    async with running(link):
        broker.hold_acks()
        pubs = [asyncio.create_task(link.publish("a/b", b"%d" % i)) for i in range(6)]
        await asyncio.sleep(0.01)
        broker.drop("n1")
        results = await asyncio.gather(*pubs, return_exceptions=True)
        broker.release_acks()
        await link.wait_connected()
    assert all(isinstance(r, LinkDown) for r in results)
    # Only the first two reached the broker; the waiting four never migrated to the new
    # connection (the caller's outbox decides what to resend, in its order).
    assert broker.published_on("a/b") == [b"0", b"1"]


@pytest.mark.asyncio
async def test_refused_subscription_raises_and_is_forgotten() -> None:
    broker = FakeBroker()
    broker.deny_subscribe("secret/#")
    link = FakeLink(broker, "n1", options=FAST)
    async with running(link):
        with pytest.raises(SubscriptionRefusedError):
            await link.subscribe("secret/#")
        await link.subscribe("open/#")
        broker.drop("n1")
        await wait_connects(link, 2)
        assert broker.subscriptions("n1") == {"open/#": 1}


@pytest.mark.asyncio
async def test_refused_subscription_at_reconnect_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FakeBroker()
    broker.deny_subscribe("secret/#")
    link = FakeLink(broker, "n1", subscriptions=[("secret/#", 1), ("open/#", 1)], options=FAST)
    async with running(link):
        for i in range(2, 5):
            broker.drop("n1")
            await wait_connects(link, i)
        assert broker.subscriptions("n1") == {"open/#": 1}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "secret/#" in errors[0].getMessage()


@pytest.mark.asyncio
async def test_persistent_session_does_not_resubscribe_what_the_broker_kept() -> None:
    broker = FakeBroker()
    opts = LinkOptions(persistent_session=True, backoff_initial_s=0.01)
    link = FakeLink(broker, "n1", subscriptions=[("a/#", 1)], options=opts)
    obs = FakeLink(broker, "obs", options=FAST)
    async with running(link, obs):
        await obs.publish("a/retained", b"r", retain=True)
        assert (await take(link, 1))[0].payload == b"r"
        broker.drop("n1")
        await wait_connects(link, 2)
        assert link.session_present is True
        await obs.publish("a/live", b"live")
        # Had the link re-subscribed, the retained message would come again first.
        (msg,) = await take(link, 1)
    assert msg.payload == b"live"


@pytest.mark.asyncio
async def test_injected_garbage_reaches_the_consumer_unchanged() -> None:
    broker = FakeBroker()
    link = FakeLink(broker, "n1", subscriptions=[("ion/v1/#", 1)], options=FAST)
    async with running(link):
        broker.inject("ion/v1/nodes/x/cmd", b"\xff\x00not protobuf")
        (msg,) = await take(link, 1)
    assert msg.payload == b"\xff\x00not protobuf"


@pytest.mark.asyncio
async def test_messages_queued_before_close_are_still_handed_out() -> None:
    broker = FakeBroker()
    link = FakeLink(broker, "n1", subscriptions=[("a/#", 1)], options=FAST)
    async with running(link):
        broker.inject("a/1", b"1")
        broker.inject("a/2", b"2")
        await asyncio.sleep(0.01)
    got = [m.payload async for m in link.messages()]
    assert got == [b"1", b"2"]


@pytest.mark.asyncio
async def test_session_takeover_drops_the_older_connection() -> None:
    broker = FakeBroker()
    first = FakeLink(broker, "same", options=FAST)
    second = FakeLink(broker, "same", options=FAST)
    async with running(first), running(second):
        await wait_down(first, within=2)


@pytest.mark.asyncio
async def test_status_reports_queue_and_pending() -> None:
    broker = FakeBroker()
    link = FakeLink(broker, "n1", subscriptions=[("a/#", 1)], options=FAST)
    assert link.status.state is LinkState.NEW
    async with running(link):
        broker.inject("a/1", b"1")
        broker.hold_acks()
        pub = asyncio.create_task(link.publish("b", b"x"))
        await asyncio.sleep(0.01)
        status = link.status
        broker.release_acks()
        await pub
    assert status.state is LinkState.CONNECTED
    assert status.pending_publishes == 1
    assert status.queued_messages == 1
    assert status.session_present is False


def test_link_is_entered_only_once() -> None:
    async def main() -> None:
        link = FakeLink(FakeBroker(), "n1", options=FAST)
        async with link:
            pass
        with pytest.raises(RuntimeError):
            await link.__aenter__()

    asyncio.run(main())


# -- the window on its own -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_window_is_first_come_first_served() -> None:
    window = Window(1)
    order: list[int] = []

    async def user(i: int) -> None:
        await window.acquire()
        order.append(i)
        await asyncio.sleep(0)
        window.release()

    await asyncio.gather(*(user(i) for i in range(10)))
    assert order == list(range(10))


@pytest.mark.asyncio
async def test_window_cancelled_waiter_passes_its_slot_on() -> None:
    window = Window(1)
    await window.acquire()
    waiter = asyncio.create_task(window.acquire())
    second = asyncio.create_task(window.acquire())
    await asyncio.sleep(0)
    window.release()  # handed to ``waiter`` ...
    waiter.cancel()  # ... which is cancelled before it runs
    await asyncio.gather(waiter, return_exceptions=True)
    async with asyncio.timeout(1):
        await second  # so the slot went on to ``second``
    assert window.waiting == 0


@pytest.mark.asyncio
async def test_topic_helper_is_unique() -> None:
    assert topic("a") != topic("a")
    assert unique_name() != unique_name()


@pytest.mark.asyncio
async def test_paused_reading_does_not_trip_the_ack_timeout() -> None:
    broker = FakeBroker()
    opts = LinkOptions(incoming_queue=2, ack_timeout_s=0.2, backoff_initial_s=0.01)
    link = FakeLink(broker, "n1", subscriptions=[("a/#", 1)], options=opts)
    async with running(link):
        for i in range(5):
            broker.inject("a/x", b"%d" % i)
        await async_wait_until(lambda: link.status.reading_paused)
        broker.hold_acks()  # as if the PUBACK sat unread behind the messages
        pub = asyncio.create_task(link.publish("b", b"x"))
        await asyncio.sleep(0.6)
        assert link.status.connects == 1 and link.state is LinkState.CONNECTED
        broker.release_acks()
        await pub
        assert len(await take(link, 5)) == 5
