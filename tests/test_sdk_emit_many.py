"""The SDK's ``emit_many`` and its message ids, against the agent's local socket (a fake port)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_sdk import agent, connect, in_thread

from ion.errors import InputError, UnavailableError
from ion.model.event import DataRecords
from ion.model.messages import Envelope, is_message_id
from node.local import ClientInfo, FakeAgentPort
from node.sdk.client import _MessageIds


def test_sdk_message_ids_grow_within_a_millisecond_and_after_a_fork() -> None:
    clock = [1_700_000_000.0]
    ids = _MessageIds(lambda: clock[0])
    got = [ids.next() for _ in range(300)]
    clock[0] -= 5.0  # the wall clock stepped back
    got += [ids.next() for _ in range(3)]
    clock[0] += 10.0
    got.append(ids.next())
    assert all(is_message_id(m) for m in got)
    assert got == sorted(got)
    assert len(set(got)) == len(got)
    assert got[0].startswith(f"{1_700_000_000_000:012x}")
    assert got[-1].startswith(f"{1_700_000_005_000:012x}")
    pid = os.getpid()
    ids._pid = pid + 1  # as if this were a forked child: a fresh random start
    child = ids.next()
    assert child.startswith(f"{1_700_000_005_000:012x}")
    assert child != got[-1]


@pytest.mark.asyncio
@pytest.mark.integration
async def test_emit_many_stores_all_in_order_and_waits_for_every_answer(tmp_path: Path) -> None:
    n = 3000
    refuse = False

    async def hook(client: ClientInfo, edge: str, env: Envelope) -> None:
        assert isinstance(env.body, DataRecords)
        if refuse and env.body.payload == b"\x00\x07":
            raise UnavailableError("outbox full")

    async with agent(tmp_path, FakeAgentPort(emit_hook=hook)) as port:
        client = await in_thread(lambda: connect(tmp_path))
        bodies = [DataRecords(payload=i.to_bytes(2, "big")) for i in range(n)]
        await in_thread(lambda: client.emit_many("out", bodies))
        assert [env.body for _, _, env in port.emitted] == bodies
        ids = [env.message_id for _, _, env in port.emitted]
        assert ids == sorted(ids)  # in order: cheap for the receivers' dedup index
        refuse = True
        with pytest.raises(UnavailableError, match="full"):
            await in_thread(lambda: client.emit_many("out", bodies[:20]))
        assert len(port.emitted) == n + 19  # the others were stored
        with pytest.raises(InputError):
            await in_thread(lambda: client.emit_many("nowhere", bodies[:2]))
        await in_thread(client.flush)  # nothing left unreported
        await in_thread(client.close)
