"""``ion models``, ``ion approve``, ``ion reject``, ``ion promote``, ``ion rollback``.

Model versions are decided on the consuming nodes (see docs/node.md, "Update policies"); what
the operator does is publish *decisions*: one retained ``Command`` per version on
``ion/v1/ions/<ion>/edges/<edge>/model/decisions/<version>`` (the last decision on a version
wins).  Retained, so a node that is offline now acts on every decision when it comes back.

``ion rollback ION EDGE`` rejects the newest version active on any node (each node goes back
to the version it ran before); ``ion rollback ION EDGE VERSION`` rejects every known version
newer than VERSION and names VERSION as the target (nodes that hold it switch to it).

``ion models`` reads what the broker holds: ION definitions (each model edge's policy), the
retained manifests (the latest version), decisions, canary verdicts and node statuses (which
node runs, holds and waits on which version).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ion.client.rollouts import EdgeView

from .keys import resolve_signing_key, signing_option, unsigned_warning
from .options import CONTEXT, broker_options, reports_errors, resolve_broker


def _decide(
    *,
    ion: str,
    edge: str,
    version: str | None,
    action: str,
    reason: str,
    as_json: bool,
    kwargs: dict[str, Any],
) -> None:
    from ion.client.rollouts import find_edge, plan_decision, publish_decisions
    from ion.client.session import connect

    key = resolve_signing_key(kwargs)
    broker, operator = resolve_broker(kwargs)
    with connect(broker) as session:
        view = find_edge(session, ion, edge)
        actions, notes = plan_decision(view, action, version)
        if key is None:
            unsigned_warning()
        published = publish_decisions(
            session, view, actions, operator=operator, reason=reason, key=key
        )
    if as_json:
        click.echo(
            json.dumps({"ion": ion, "edge": edge, "decisions": published, "notes": notes}, indent=2)
        )
        return
    for p in published:
        click.echo(
            f"{ion}/{edge} version {p['version']}: {p['action']} published "
            f"(command {p['command_id'][:12]})"
        )
    for note in notes:
        click.echo(note)
    waiting = [n.node_id for n in view.nodes if version and version in n.pending]
    if waiting and action in ("approve", "promote"):
        click.echo(f"pending on {len(waiting)} node(s): {', '.join(waiting)}")


# -- commands -----------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("ion", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@broker_options
@reports_errors
def models(ion: str | None, as_json: bool, **kwargs: Any) -> None:
    """Model versions per model edge (of ION, or of every ION): the latest published, which
    node runs, holds and waits on which version, decisions and canary verdicts."""
    from ion.client.rollouts import read_models
    from ion.client.session import connect

    broker, _ = resolve_broker(kwargs)
    with connect(broker) as session:
        _, views, problems = read_models(session, ion)
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        click.echo(json.dumps([asdict(v) for v in views], indent=2))
        return
    if not views:
        click.echo(f"no model edges{f' in ION {ion!r}' if ion else ''} on {broker.url}")
        return
    for v in views:
        _print_view(v)


def _print_view(v: EdgeView) -> None:
    click.echo(f"{v.ion}/{v.edge}  policy {v.policy}")
    if v.latest:
        metrics = ", ".join(f"{k} {x:g}" for k, x in v.metrics.items())
        click.echo(
            f"  latest {v.latest} (model {v.latest_model_id[:12]}, {v.latest_size} bytes, "
            f"from {v.producer or '?'}{'; ' + metrics if metrics else ''})"
        )
    else:
        click.echo("  no version published yet")
    for d in v.decisions:
        why = f": {d.reason}" if d.reason else ""
        click.echo(f"  decision {d.version}: {d.action} by {d.by or '?'}{why}")
    for c in v.canaries:
        outcome = "passed" if c.passed else "failed"
        click.echo(f"  canary {c.node_id}: {outcome} {c.version} ({c.reason})")
    from ion.client.rollouts import label_key

    pending = sorted({p for n in v.nodes for p in n.pending}, key=label_key)
    if pending:
        click.echo(f"  pending approval or promotion: {', '.join(pending)}")
    if not v.nodes:
        click.echo("  no node reports this edge")
        return
    header = ["NODE", "STATE", "ACTIVE", "PENDING", "CANARY", "HELD"]
    rows = [header] + [
        [
            n.node_id,
            n.state,
            n.active or "-",
            ",".join(n.pending) or "-",
            n.canary or "-",
            ",".join(n.held) or "-",
        ]
        for n in v.nodes
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        click.echo("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _decision_command(action: str, summary: str) -> click.Command:
    @click.command(name=action, context_settings=CONTEXT, help=summary)
    @click.argument("ion")
    @click.argument("edge")
    @click.argument("version")
    @click.option("--reason", default="", help="Why: kept with the decision (audit trail).")
    @click.option("--json", "as_json", is_flag=True, help="Print what was published as JSON.")
    @signing_option
    @broker_options
    @reports_errors
    def command(
        ion: str, edge: str, version: str, reason: str, as_json: bool, **kwargs: Any
    ) -> None:
        _decide(
            ion=ion,
            edge=edge,
            version=version,
            action=action,
            reason=reason,
            as_json=as_json,
            kwargs=kwargs,
        )

    return command


approve = _decision_command(
    "approve",
    "Approve VERSION of the model edge EDGE of ION: nodes holding it pending (policy manual) "
    "activate it; under gated it overrides a gate.  Published retained, so nodes that are "
    "offline now act on it when they come back.",
)
reject = _decision_command(
    "reject",
    "Reject VERSION of EDGE of ION: no node activates it; nodes running it roll back to the "
    "version they ran before.",
)
promote = _decision_command(
    "promote",
    "Promote VERSION of EDGE of ION (policy canary): every consumer activates it now, without "
    "waiting for the canary's verdict.",
)


@click.command(context_settings=CONTEXT)
@click.argument("ion")
@click.argument("edge")
@click.argument("version", required=False)
@click.option("--reason", default="", help="Why: kept with the decision (audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Print what was published as JSON.")
@signing_option
@broker_options
@reports_errors
def rollback(
    ion: str, edge: str, version: str | None, reason: str, as_json: bool, **kwargs: Any
) -> None:
    """Roll EDGE of ION back, on every node that consumes it.

    Without VERSION: the newest version running anywhere is rejected, and each node goes back
    to the version it ran before.  With VERSION: every known version newer than VERSION is
    rejected and nodes holding VERSION switch to it.  Versions published later are not
    affected.
    """
    _decide(
        ion=ion,
        edge=edge,
        version=version,
        action="rollback",
        reason=reason or "rollback",
        as_json=as_json,
        kwargs=kwargs,
    )


def register(group: click.Group) -> None:
    for command in (models, approve, reject, promote, rollback):
        group.add_command(command)
