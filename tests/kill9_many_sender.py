"""A sending application that embeds the agent and emits in batches, for the kill -9 test of
``Agent.emit_many``.

It emits values ``start..n-1`` along edge ``feed`` of ION ``flow``, ``batch`` at a time, and
records, after each ``emit_many`` returns (the whole batch is durable in the outbox), the next
value to send.  Killed at any moment and started again, it resumes from there, sending the
batch it was not sure about again with the same message ids, so receivers drop the copies.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from agent_support import node_config
from kill9_sender import message_id

from ion.model.messages import DataRecords
from node.agent.service import Agent


async def main(url: str, data_dir: Path, n: int, batch: int) -> None:
    progress = data_dir / "next"
    start = int(progress.read_text()) if progress.exists() else 0
    async with Agent(node_config("src-1", url, data_dir)) as agent:
        while not any(v.name == "flow" for v in agent.status().ions):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for first in range(start, n, batch):
            values = range(first, min(n, first + batch))
            bodies = [DataRecords(columns=("i",), values=(float(i),)) for i in values]
            await agent.emit_many(
                "flow", "feed", bodies, message_ids=[message_id(i) for i in values]
            )
            tmp = progress.with_suffix(".tmp")
            tmp.write_text(str(values[-1] + 1))
            os.replace(tmp, progress)
        print("sent all", flush=True)
        await agent.drain(30)
        print("drained", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
