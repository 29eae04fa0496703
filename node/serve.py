"""Running the agent from a config file, without click: ``python -m node run`` stays light.

The agent is what a small gateway runs all day; its resident memory is what it imports, so
the process entry point parses its few arguments with argparse, and ``ion node run`` (the
click command, for operators) calls the same ``serve_file``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from ion.errors import ConfigError, IonError, RefusedError

log = logging.getLogger("node")

LOG_LEVELS = ("debug", "info", "warning", "error")


def serve_file(config_file: str, log_level: str | None = None) -> int:
    """Run the agent until SIGTERM or Ctrl-C, drain, and return the exit status: 0 after a
    clean stop, 1 when the broker refused the node, 2 for a bad config."""
    from node.config import load_config

    try:
        config = load_config(Path(config_file))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    level = (log_level or config.log_level).upper()
    logging.basicConfig(
        level=getattr(logging, level),
        format=f"%(asctime)s %(levelname)s [{config.node_id}] %(name)s: %(message)s",
        force=True,  # `ion` itself may have configured logging already
    )
    try:
        asyncio.run(_serve(config))
    except IonError as exc:  # RefusedError included: a refused login is fatal, not retried
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(config: object) -> None:
    from node.agent.service import Agent
    from node.config import NodeConfig

    assert isinstance(config, NodeConfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Agent(config) as agent:
        log.info("node %s running; broker %s", config.node_id, config.broker.url)
        stopping = asyncio.ensure_future(stop.wait())
        failing = asyncio.ensure_future(agent.failed.wait())
        await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        failing.cancel()
        if agent.failed.is_set():
            raise RefusedError(agent.status().error)
        log.info("stopping: draining for up to %d ms", config.drain_timeout_ms)
        flushed = await agent.drain()
        log.info("drained (%s)", "outbox empty" if flushed else "items left in the outbox")


def main(argv: list[str] | None = None) -> int:
    """``python -m node run -c FILE [--log-level L]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m node", description="The ION node agent: one per machine."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the agent until SIGTERM or Ctrl-C, then drain and exit 0",
        description="Run the agent until SIGTERM or Ctrl-C, then drain and exit 0. Draining "
        "stops the node's pipelines, flushes its outbox for up to drain_timeout and publishes "
        "its status as offline.",
    )
    run.add_argument("-c", "--config", required=True, help="the node's YAML config (docs/node.md)")
    run.add_argument("--log-level", choices=LOG_LEVELS, help="override the config's log_level")
    args = parser.parse_args(argv)
    return serve_file(args.config, args.log_level)
