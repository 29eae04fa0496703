"""``ion node``: run the node agent (``python -m node`` is the same)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click

from ion.errors import ConfigError, IonError, RefusedError

log = logging.getLogger("node")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
def node_group() -> None:
    """The node agent: one per machine (edge device, gateway, cloud)."""


@node_group.command(context_settings=CONTEXT)
@click.option(
    "-c", "--config", "config_file", required=True, type=click.Path(dir_okay=False),
    help="The node's YAML config (see docs/node.md).",
)  # fmt: skip
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Override the config's log_level.")  # fmt: skip
def run(config_file: str, log_level: str | None) -> None:
    """Run the agent until SIGTERM or Ctrl-C, then drain and exit 0.

    Draining stops the node's pipelines, flushes its outbox for up to drain_timeout and
    publishes its status as offline.
    """
    from node.config import load_config

    try:
        config = load_config(Path(config_file))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    level = (log_level or config.log_level).upper()
    logging.basicConfig(
        level=getattr(logging, level),
        format=f"%(asctime)s %(levelname)s [{config.node_id}] %(name)s: %(message)s",
        force=True,  # `ion` itself may have configured logging already
    )
    try:
        asyncio.run(_serve(config))
    except RefusedError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except IonError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


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


def main() -> None:
    node_group(prog_name="ion node")
