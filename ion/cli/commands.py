"""``ion ping``, ``ion restart``, ``ion run``: signed commands to nodes, and their results.

Each command is signed with ``--key`` (as ``ion apply`` signs definitions) and carries a fresh
id and its issue time; nodes outside development mode refuse unsigned, stale or replayed
commands and say why in their result (see docs/security.md).  The command waits for a result
from every node it addressed and exits 1 when one refused, failed or stayed silent.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from .keys import resolve_signing_key, signing_option, unsigned_warning
from .options import CONTEXT, broker_options, reports_errors, resolve_broker

if TYPE_CHECKING:
    from ion.client.commands import Outcome
    from ion.model.command import CommandAction


def _wait_option(func: Any) -> Any:
    return click.option(
        "--wait",
        "wait_s",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        help="Seconds to wait for the nodes' results.",
    )(func)


def _common(func: Any) -> Any:
    func = click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")(func)
    func = click.option("--reason", default="", help="Why: kept with the command (audit).")(func)
    return signing_option(_wait_option(func))


def _send(
    action: CommandAction,
    *,
    nodes: tuple[str, ...],
    ion: str | None,
    reason: str,
    wait_s: float,
    as_json: bool,
    kwargs: dict[str, Any],
) -> None:
    from ion.client import commands
    from ion.client.session import connect
    from ion.errors import InputError

    key = resolve_signing_key(kwargs)
    broker, operator = resolve_broker(kwargs)
    with connect(broker) as session:
        targets = list(nodes)
        if not targets and ion is not None:
            targets = commands.nodes_running(session, ion)
            if not targets:
                raise InputError(f"no node reports a pipeline of ION {ion!r} on {broker.url}")
        if key is None:
            unsigned_warning()
        cmd = commands.make_command(
            action, operator=operator, now_ms=commands.now_ms(), key=key, reason=reason
        )
        # An explicit --node list gets the command on each node's own topic.
        outcome = commands.send(
            session, cmd, nodes=targets, ion=None if nodes else ion, wait_s=wait_s
        )
    _report(cmd.command_id, outcome, as_json)
    if not outcome.ok:
        raise click.exceptions.Exit(1)


def _report(command_id: str, outcome: Outcome, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "command_id": command_id,
                    "results": [
                        {"node": r.node_id, "ok": r.ok, "message": r.message}
                        for r in outcome.results
                    ],
                    "silent": list(outcome.silent),
                },
                indent=2,
            )
        )
        return
    for r in outcome.results:
        click.echo(f"{r.node_id}: {'ok' if r.ok else 'FAILED'}: {r.message}")
    for node in outcome.silent:
        click.echo(f"{node}: no result in time")


@click.command(context_settings=CONTEXT)
@click.argument("nodes", nargs=-1, required=True)
@_common
@broker_options
@reports_errors
def ping(nodes: tuple[str, ...], reason: str, wait_s: float, as_json: bool, **kw: Any) -> None:
    """Ask NODES to answer: checks the signed command path end to end."""
    from ion.model.command import Ping

    _send(Ping(), nodes=nodes, ion=None, reason=reason, wait_s=wait_s, as_json=as_json, kwargs=kw)


def _pipeline_command(name: str, summary: str) -> click.Command:
    @click.command(name=name, context_settings=CONTEXT, help=summary)
    @click.argument("ion")
    @click.argument("pipeline")
    @click.option(
        "--node",
        "nodes",
        multiple=True,
        help="Only this node (repeatable); default: every node running a pipeline of ION.",
    )
    @_common
    @broker_options
    @reports_errors
    def command(
        ion: str,
        pipeline: str,
        *,
        nodes: tuple[str, ...],
        reason: str,
        wait_s: float,
        as_json: bool,
        **kw: Any,
    ) -> None:
        from ion.model.command import PipelineRef, RestartPipeline, RunPipeline

        ref = PipelineRef(ion, pipeline)
        action = RestartPipeline(ref) if name == "restart" else RunPipeline(ref)
        _send(action, nodes=nodes, ion=ion, reason=reason, wait_s=wait_s, as_json=as_json,
              kwargs=kw)  # fmt: skip

    return command


restart = _pipeline_command(
    "restart", "Restart PIPELINE of ION on the nodes that run it (or only on --node)."
)
run = _pipeline_command(
    "run", "Start the batch PIPELINE of ION now on the nodes that run it (or only on --node)."
)


def register(group: click.Group) -> None:
    for command in (ping, restart, run):
        group.add_command(command)
