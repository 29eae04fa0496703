"""``ion node``: run the node agent (``python -m node`` is the same)."""

from __future__ import annotations

import sys

import click

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
    from node.serve import serve_file

    sys.exit(serve_file(config_file, log_level))


def main() -> None:
    node_group(prog_name="ion node")
