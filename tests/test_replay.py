"""Replays and stale messages against real agents on a real Mosquitto: each is refused with
a reason (a result for commands, an event always) and changes nothing.

- a command replayed in a new envelope (past the receivers' message-id dedup), also after
  the node restarted; a command issued too long ago, or too far in the future;
- an exact copy of a command envelope: run once (operators' messages are unsequenced, so the
  receiver's message-id dedup does not apply; the command gate refuses the copy);
- an older signed ION definition re-sent after a newer one; a different one with the same
  version."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, ticker
from security_support import (
    OPERATOR,
    Events,
    command,
    command_envelope,
    is_running,
    now_ms,
    publish_as_is,
    publish_raw,
    result_of,
    run_count,
    secure_config,
)
from support import async_wait_until
from support.brokers import mqtt_client

from ion import topics
from ion.model.command import Ping, PipelineRef, RestartPipeline
from ion.model.definition import IonDefinition
from ion.security import sign
from node.agent.service import Agent

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


def job(name: str, node: str, rate: float = 1.0) -> IonDefinition:
    return IonDefinition(name=name, pipelines=(ticker("job", (node,), rate=rate),))


async def test_replayed_stale_and_future_commands_are_refused_also_after_a_restart(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    cfg = secure_config("rp-1", url, tmp_path, command_max_age="1m", clock_skew="5s")
    restart = RestartPipeline(PipelineRef("replay", "job"))
    with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as client:
        events = Events(client, "rp-1")
        async with Agent(cfg) as agent:
            await agent.link.wait_connected()
            await apply(url, job("replay", "rp-1"), key=OPERATOR)
            await async_wait_until(lambda: is_running(agent, "replay", "job"), 30)
            first = command(restart)
            assert (await result_of(url, first, "rp-1")).message == "restarting"
            await async_wait_until(lambda: run_count(agent, "replay", "job") == 2, 30)
            await async_wait_until(lambda: is_running(agent, "replay", "job"), 30)

            again = await result_of(url, first, "rp-1")  # the same signed command, new envelope
            assert not again.ok and again.message.startswith("refused: replay"), again
            await async_wait_until(lambda: events.has("command.refused", "replay"), 10)

            stale = await result_of(url, command(restart, issued_ms=now_ms() - 61_000), "rp-1")
            assert not stale.ok and "stale: issued 61" in stale.message
            await async_wait_until(lambda: events.has("command.refused", "stale: issued"), 10)
            future = await result_of(url, command(restart, issued_ms=now_ms() + 30_000), "rp-1")
            assert not future.ok and "from the future" in future.message
            await async_wait_until(lambda: events.has("command.refused", "from the future"), 10)

            # An exact copy of an envelope (unsequenced, as operators' messages are, so the
            # receiver's dedup does not see it): run once, the copy refused as a replay.
            payload = command_envelope(command(restart))
            publish_raw(url, topics.node_command("rp-1"), payload)
            publish_raw(url, topics.node_command("rp-1"), payload)
            gate = agent.command_gate
            assert gate is not None
            await async_wait_until(lambda: gate.refused["replay"] == 2, 10)
            await async_wait_until(lambda: run_count(agent, "replay", "job") == 3, 30)
            await async_wait_until(lambda: is_running(agent, "replay", "job"), 30)
            assert run_count(agent, "replay", "job") == 3
            assert gate.refused == {"replay": 2, "stale": 1, "from the future": 1}

        # A restarted node still knows what it ran.
        async with Agent(cfg) as agent:
            await agent.link.wait_connected()
            await async_wait_until(lambda: is_running(agent, "replay", "job"), 30)
            runs = run_count(agent, "replay", "job")
            replayed = await result_of(url, first, "rp-1")
            assert not replayed.ok and replayed.message.startswith("refused: replay")
            assert run_count(agent, "replay", "job") == runs
            assert (await result_of(url, command(Ping()), "rp-1")).ok


async def test_an_older_or_conflicting_signed_definition_is_refused(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as client:
        events = Events(client, "rp-2")
        async with Agent(secure_config("rp-2", url, tmp_path)) as agent:
            await agent.link.wait_connected()
            v1 = await apply(url, job("history", "rp-2"), key=OPERATOR)
            await async_wait_until(lambda: is_running(agent, "history", "job"), 30)
            v2 = await apply(url, job("history", "rp-2", rate=2.0), key=OPERATOR)
            assert (v1.version, v2.version) == (1, 2)
            await async_wait_until(lambda: any(v.version == 2 for v in agent.status().ions), 30)
            held = agent.status().ions
            def_topic = topics.definition("history")

            # The genuine, signed version 1 again (a captured message replayed).
            publish_as_is(url, v1, def_topic)
            await async_wait_until(lambda: events.has("ion.refused", "stale: version 1 < held 2"),
                                   20)  # fmt: skip
            # Another ION signed as version 2: same version, different content.
            other = sign(replace(v2, pipelines=(ticker("job", ("rp-2",), rate=9.0),)),
                         OPERATOR, now_ms=now_ms())  # fmt: skip
            publish_as_is(url, other, def_topic)
            await async_wait_until(lambda: events.has("ion.refused", "conflict"), 20)
            assert agent.status().ions == held
            spec = agent.pipelines()[("history", "job")][0]
            assert spec is not None and spec.components[0].args["rate"] == 2.0
