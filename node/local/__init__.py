"""The agent's local component socket: pipeline components talk to the agent through it.

- ``framing``: length-prefixed frames on a byte stream (pure; the SDK uses it too).
- ``port``: ``AgentPort``, everything the server asks of the agent, and ``FakeAgentPort``.
- ``server``: ``LocalServer``, the asyncio Unix socket server.

Frames are ``ion.model.local`` values; ``ion.wire.local`` converts them.  Components use
``node.sdk``, not this package.
"""

from __future__ import annotations

from .port import AgentPort, ClientInfo, FakeAgentPort, Inbound
from .server import LocalServer, ServerSettings, ServerStats

__all__ = [
    "AgentPort",
    "ClientInfo",
    "FakeAgentPort",
    "Inbound",
    "LocalServer",
    "ServerSettings",
    "ServerStats",
]
