"""The agent's MQTT session: one narrow interface (``MqttLink``), two implementations.

- ``node.link.aiomqtt_link.AiomqttLink``: a real broker, over aiomqtt 2.5 (the only module in
  the project importing aiomqtt; import it where a real link is built, e.g. the entry point).
- ``node.link.fake.FakeLink`` on a ``node.link.fake.FakeBroker``: in memory, with scripted
  failures, for fast tests of the agent core.

Both run the same supervisor (``node.link.session.ReconnectingLink``): reconnect with jittered
backoff (``node.link.backoff``), re-subscribe, on-connect messages, fatal refusals.  This package
imports neither aiomqtt nor the fake, so ``import node.link`` stays cheap.
"""

from __future__ import annotations

from node.link.base import (
    IncomingMessage,
    InvalidTopicError,
    LinkClosed,
    LinkDown,
    LinkOptions,
    LinkRefusedError,
    LinkState,
    LinkStatus,
    MqttLink,
    OutgoingMessage,
    PublishRefusedError,
    SubscriptionRefusedError,
    Will,
    topic_matches,
)

__all__ = [
    "IncomingMessage",
    "InvalidTopicError",
    "LinkClosed",
    "LinkDown",
    "LinkOptions",
    "LinkRefusedError",
    "LinkState",
    "LinkStatus",
    "MqttLink",
    "OutgoingMessage",
    "PublishRefusedError",
    "SubscriptionRefusedError",
    "Will",
    "topic_matches",
]
