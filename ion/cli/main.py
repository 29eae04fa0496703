"""``ion``: the operator's command line.

Exit codes: 0 success, 1 the operation failed (broker unreachable or refusing, nothing to
delete, ...), 2 invalid input (a broken ION file, a bad flag).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import click

from ion import __version__

from .keys import keys, resolve_signing_key, signing_option, unsigned_warning
from .options import CONTEXT, broker_options, fail, reports_errors, resolve_broker

log = logging.getLogger("ion.cli")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="ion")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """ION runtime: run ML pipelines across edge, gateway and cloud over MQTT.

    Author an ION (pipelines and the edges between them) in YAML, check it with
    `ion validate`, publish it with `ion apply`; node agents pick it up.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# -- validate ----------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--inventory",
    type=click.Path(dir_okay=False, exists=True),
    help="Nodes file: also check that every placement selects a node.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print errors only.")
@reports_errors
def validate(files: tuple[str, ...], inventory: str | None, as_json: bool, quiet: bool) -> None:
    """Check ION files and print every problem with its location.

    Exits 2 when any file has an error.  Cycles across an ION are allowed (a model feeds
    inference whose health triggers retraining) and are shown as info.
    """
    from ion.authoring import load_ion_file
    from ion.validate import load_inventory_file, validate_parsed

    catalog = _catalog()
    inv = load_inventory_file(inventory) if inventory else None
    any_error = False
    results: list[dict[str, Any]] = []
    for file in files:
        parsed = load_ion_file(file)
        report = validate_parsed(parsed, catalog=catalog, inventory=inv)
        problems = [*catalog.problems, *report.problems]
        errors = [p for p in problems if p.severity == "error"]
        any_error |= bool(errors)
        if as_json:
            results.append(
                {
                    "file": file,
                    "valid": not errors,
                    "problems": [
                        {
                            "severity": p.severity,
                            "location": p.location,
                            "message": p.message,
                            "line": p.line,
                        }
                        for p in problems
                    ],
                    "cycles": [list(c) for c in report.cycles],
                }
            )
            continue
        for p in problems:
            if quiet and p.severity != "error":
                continue
            click.echo(str(p), err=p.severity == "error")
        if errors:
            click.echo(f"{file}: {len(errors)} error(s)", err=True)
        elif not quiet:
            d = parsed.definition
            assert d is not None
            cycles = "".join(f"; cycle {' -> '.join(c)}" for c in report.cycles)
            click.echo(
                f"{file}: valid ION {d.name!r} ({len(d.pipelines)} pipelines, "
                f"{len(d.edges)} edges{cycles})"
            )
    if as_json:
        click.echo(json.dumps(results, indent=2))
    if any_error:
        sys.exit(2)


def _catalog() -> Any:
    from ion.catalog import builtin_catalog

    return builtin_catalog().with_entry_points()


def _load_valid(file: str) -> Any:
    """The definition in ``file``, or exit 2 printing every error."""
    from ion.authoring import load_ion_file
    from ion.validate import validate_parsed

    parsed = load_ion_file(file)
    report = validate_parsed(parsed, catalog=_catalog())
    if not report.ok or parsed.definition is None:
        errors = [p for p in report.problems if p.severity == "error"]
        for p in errors:
            click.echo(str(p), err=True)
        fail(f"{file}: {len(errors)} error(s); nothing was applied", 2)
    return parsed.definition


# -- apply / get / list / delete ---------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Publish a new version even when nothing changed.")
@signing_option
@broker_options
@reports_errors
def apply(file: str, force: bool, **kwargs: Any) -> None:
    """Validate FILE and publish it as the ION's desired state.

    The definition is published retained at QoS 1 with the next version number, signed with
    --key; the command returns once the broker has acknowledged it.  Node agents subscribed
    to it check the signature and reconcile.
    """
    from ion.client import definitions
    from ion.client.session import connect

    definition = _load_valid(file)
    key = resolve_signing_key(kwargs)
    broker, operator = resolve_broker(kwargs)
    with connect(broker) as session:
        current = definitions.fetch(session, definition.name)
        plan = definitions.plan_apply(
            definition, current, now_ms=now_ms(), operator=operator, force=force
        )
        if plan.definition is None:
            click.echo(f"ion/{definition.name} {plan.reason}")
            return
        if key is None:
            unsigned_warning()
        definitions.publish(session, plan.definition, now_ms=now_ms(), key=key)
    d = plan.definition
    signed = f", signed by key {key.key_id}" if key is not None else ", unsigned"
    click.echo(
        f"ion/{d.name} {plan.reason}: version {d.version}, "
        f"sha256 {d.content_sha256[:12]}{signed}, on {broker.url}"
    )


@cli.command(context_settings=CONTEXT)
@click.argument("name")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="Output format.",
)
@broker_options
@reports_errors
def get(name: str, output: str, **kwargs: Any) -> None:
    """Print the ION NAME as the broker holds it (YAML that `ion apply` accepts)."""
    from ion.authoring import dump_ion
    from ion.client import definitions
    from ion.client.session import connect
    from ion.model.definition import IonDeleted

    broker, _ = resolve_broker(kwargs)
    with connect(broker) as session:
        stored = definitions.fetch(session, name)
    if stored is None:
        fail(f"no ION named {name!r} on {broker.url}")
    if isinstance(stored, IonDeleted):
        fail(
            f"ION {name!r} was deleted by {stored.deleted_by or 'unknown'} "
            f"(version {stored.version})"
        )
    assert stored is not None
    assert not isinstance(stored, IonDeleted)
    text = dump_ion(stored)
    if output == "json":
        import yaml

        click.echo(json.dumps(yaml.safe_load(text), indent=2))
    else:
        click.echo(
            f"# version {stored.version}, sha256 {stored.content_sha256}, applied by "
            f"{stored.applied_by or 'unknown'}"
        )
        click.echo(text, nl=False)


@cli.command(name="list", context_settings=CONTEXT)
@click.option("--all", "show_all", is_flag=True, help="Include deleted IONs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@broker_options
@reports_errors
def list_cmd(show_all: bool, as_json: bool, **kwargs: Any) -> None:
    """List the IONs the broker holds."""
    from ion.client import definitions
    from ion.client.session import connect
    from ion.model.definition import IonDefinition

    broker, _ = resolve_broker(kwargs)
    with connect(broker) as session:
        stored, problems = definitions.fetch_all(session)
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    rows = []
    for s in stored:
        if isinstance(s, IonDefinition):
            rows.append(
                {
                    "name": s.name,
                    "version": s.version,
                    "state": "active",
                    "pipelines": len(s.pipelines),
                    "edges": len(s.edges),
                    "by": s.applied_by,
                    "sha256": s.content_sha256[:12],
                }
            )
        elif show_all:
            rows.append(
                {
                    "name": s.name,
                    "version": s.version,
                    "state": "deleted",
                    "pipelines": 0,
                    "edges": 0,
                    "by": s.deleted_by,
                    "sha256": "",
                }
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no IONs on {broker.url}")
        return
    header = ["NAME", "VERSION", "STATE", "PIPELINES", "EDGES", "BY", "SHA256"]
    table = [header] + [
        [str(r[k]) for k in ("name", "version", "state", "pipelines", "edges", "by", "sha256")]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@cli.command(context_settings=CONTEXT)
@click.argument("name")
@signing_option
@broker_options
@reports_errors
def delete(name: str, **kwargs: Any) -> None:
    """Delete the ION NAME: its pipelines stop on every node.

    A versioned tombstone (signed with --key) replaces the retained definition, so an older
    copy replayed later cannot bring the ION back.
    """
    from ion.client import definitions
    from ion.client.session import connect

    key = resolve_signing_key(kwargs)
    broker, operator = resolve_broker(kwargs)
    with connect(broker) as session:
        current = definitions.fetch(session, name)
        tombstone = definitions.plan_delete(current, name, now_ms=now_ms(), operator=operator)
        if key is None:
            unsigned_warning()
        definitions.publish(session, tombstone, now_ms=now_ms(), key=key)
    click.echo(f"ion/{name} deleted (version {tombstone.version})")


@cli.command(context_settings=CONTEXT)
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@broker_options
@reports_errors
def nodes(watch: bool, as_json: bool, **kwargs: Any) -> None:
    """The nodes the broker knows: state, pipelines, queued messages, resources."""
    from dataclasses import asdict

    from ion.client.fleet import node_rows, read_statuses
    from ion.client.session import connect

    broker, _ = resolve_broker(kwargs)
    while True:
        with connect(broker) as session:
            statuses, sent, problems = read_statuses(session)
        for problem in problems:
            click.echo(f"warning: {problem}", err=True)
        rows = node_rows(statuses, now_ms=now_ms(), sent_ms=sent)
        if as_json:
            click.echo(json.dumps([asdict(r) for r in rows], indent=2))
        elif not rows:
            click.echo(f"no nodes on {broker.url}")
        else:
            if watch:
                click.clear()
            header = ["NODE", "STATE", "LAYER", "LABELS", "PIPELINES", "QUEUED", "CPU%", "RSS MB",
                      "HEARTBEAT"]  # fmt: skip
            table = [header] + [
                [r.node_id, r.state, r.layer, r.labels or "-", r.pipelines, str(r.queued),
                 f"{r.cpu_percent:.1f}", f"{r.rss_mb:.0f}",
                 "-" if r.heartbeat_age_s is None else f"{r.heartbeat_age_s:.0f}s ago"]
                for r in rows
            ]  # fmt: skip
            widths = [max(len(row[i]) for row in table) for i in range(len(header))]
            for row in table:
                click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if not watch:
            return
        time.sleep(2)


cli.add_command(keys, name="keys")


def _register_optional_commands() -> None:
    from broker.cli import broker_command

    cli.add_command(broker_command, name="broker")
    from ion.cli.demo import demo

    cli.add_command(demo, name="demo")
    from node.cli import node_group

    cli.add_command(node_group, name="node")
    from ion.cli.models import register as register_model_commands

    register_model_commands(cli)  # models, approve, reject, promote, rollback
    cli.add_command(__import__("broker.deploy.cli", fromlist=["deploy"]).deploy, name="deploy")
    cli.add_command(__import__("broker.monitor.cli", fromlist=["monitor"]).monitor, name="monitor")
    from broker.dashboard.cli import dashboard_command

    cli.add_command(dashboard_command, name="dashboard")
    from ion.cli.commands import register as register_node_commands

    register_node_commands(cli)  # ping, restart, run (signed commands to nodes)
    from ion.cli.fleet import register as register_fleet_commands

    register_fleet_commands(cli)  # status, pipelines, events
    from ion.cli.check import check

    cli.add_command(check, name="check")


_register_optional_commands()


def main() -> None:
    cli(prog_name="ion")


if __name__ == "__main__":
    main()
