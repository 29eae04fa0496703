"""A sending application that embeds the agent, for the kill -9 test.

It emits values ``start..n-1`` along edge ``feed`` of ION ``flow`` and records, after each emit
returns (the message is durable in the outbox), the next value to send.  Killed at any
moment and started again, it resumes from there, sending the value it was not sure about again
with the same message id, so receivers can drop the copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

from agent_support import node_config

from ion.model.messages import DataRecords
from node.agent.service import Agent


def message_id(i: int) -> str:
    return hashlib.sha256(f"kill9-{i}".encode()).hexdigest()[:32]


async def main(url: str, data_dir: Path, n: int) -> None:
    progress = data_dir / "next"
    start = int(progress.read_text()) if progress.exists() else 0
    async with Agent(node_config("src-1", url, data_dir)) as agent:
        while not any(v.name == "flow" for v in agent.status().ions):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for i in range(start, n):
            body = DataRecords(columns=("i",), values=(float(i),))
            await agent.emit("flow", "feed", body, message_id=message_id(i))
            tmp = progress.with_suffix(".tmp")
            tmp.write_text(str(i + 1))
            os.replace(tmp, progress)
        print("sent all", flush=True)
        await agent.drain(30)
        print("drained", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])))
