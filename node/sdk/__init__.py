"""The component SDK: how pipeline code talks to the node agent.

::

    from node import sdk

    class Score(Component):
        def stream(self, inputs):
            client = sdk.connect(component=self.ctx.component)  # not in __init__: no sockets there
            with client:
                for batch in inputs["in"]:
                    client.emit_stats({"rows": len(batch), "anomaly_rate": rate(batch)})
                    client.emit_data(("x", "score"), rows(batch), "scores", wait=False)
                    yield batch
                client.flush()

``connect()`` reads the environment the agent gives the pipeline's process:

- ``ION_AGENT_SOCKET``: the agent's Unix socket.  Unset or empty: standalone mode (below).
- ``ION_AGENT_TOKEN``: the per-job secret the agent checks in ``Hello``.
- ``ION_ION``, ``ION_PIPELINE``, ``ION_NODE_ID``: who this is; ``ION_COMPONENT`` is the default
  component name when ``connect`` is not given one.
- Standalone only: ``ION_SDK_OUTPUT`` (a file for JSON lines; unset or ``-``: standard output)
  and ``ION_SDK_INPUT`` (JSON lines that ``subscribe`` reads).  See ``node.sdk.standalone``.

The API (``Client``): ``emit``, ``emit_nowait``, ``flush``, ``emit_stats``, ``emit_event``,
``emit_health``, ``emit_data``, ``subscribe``, ``close``; see ``node.sdk.client``
(the API), ``node.sdk.socket_client`` (over the agent's socket), ``node.sdk.standalone``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .client import DEFAULT_TIMEOUT_S, Client, EmitHandle, Identity, StopFlag
from .socket_client import AgentClient, Subscription
from .standalone import StandaloneClient

__all__ = [
    "SOCKET_ENV",
    "TOKEN_ENV",
    "AgentClient",
    "Client",
    "EmitHandle",
    "Identity",
    "StandaloneClient",
    "StopFlag",
    "Subscription",
    "connect",
]

SOCKET_ENV = "ION_AGENT_SOCKET"
TOKEN_ENV = "ION_AGENT_TOKEN"  # noqa: S105 - the variable's name, not a secret


def connect(
    component: str = "",
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Client:
    """A client for this process's agent, or a standalone one when no agent is configured.

    Raises ``UnavailableError`` when an agent socket is configured but cannot be reached, and
    ``RefusedError`` when the agent refuses the token: a pipeline started by an agent must
    never quietly fall back to writing to stdout.
    """
    env = os.environ if environ is None else environ
    identity = Identity(
        ion=env.get("ION_ION", ""),
        pipeline=env.get("ION_PIPELINE", ""),
        component=component or env.get("ION_COMPONENT", ""),
        node_id=env.get("ION_NODE_ID", ""),
    )
    path = env.get(SOCKET_ENV, "")
    if not path:
        return StandaloneClient.from_environ(identity, env)
    return AgentClient(Path(path), identity, token=env.get(TOKEN_ENV, ""), timeout=timeout)
