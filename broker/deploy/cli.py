"""``ion deploy ION.yaml INVENTORY.yaml --out DIR``: certificates and configs per machine."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from pathlib import Path
from typing import Any

import click

from ion.cli.options import CONTEXT, fail, reports_errors
from ion.errors import InputError
from ion.model.definition import IonDefinition
from ion.security.keyring import parse_trusted_line, read_trusted_lines
from ion.validate.inventory import Inventory, load_inventory_file

from .bundle import write_plan
from .plan import DeployOptions, make_plan


@click.command(context_settings=CONTEXT)
@click.argument("ion_file", type=click.Path(dir_okay=False, exists=True))
@click.argument("inventory_file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory: one bundle per machine (created).",
)
@click.option(
    "--ca-dir",
    type=click.Path(file_okay=False),
    help="The CA's directory, created if empty, reused after [default: OUT/ca].",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write into a directory not made by ion deploy; issue every certificate anew.",
)
@click.option(
    "--also",
    "extra_ions",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True),
    help="More ION files deployed on the same brokers (repeatable).",
)
@click.option(
    "--bridges",
    is_flag=True,
    help="Gateways forward with Mosquitto bridges instead of their relay.",
)
@click.option(
    "--auth",
    type=click.Choice(["cert", "password"]),
    default="cert",
    show_default=True,
    help="How clients authenticate: client certificate or name and password.",
)
@click.option(
    "--local", is_flag=True, help="Paths point into OUT, to run the whole topology on this machine."
)
@click.option("--listen", help="Address every broker binds [default: all interfaces].")
@click.option(
    "--trust-key",
    "trust_keys",
    multiple=True,
    help="A trusted key line ('ed25519:... operator alice') or a file of them.",
)
@click.option(
    "--development-mode",
    is_flag=True,
    help="Nodes act on unsigned definitions too (never in production).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@reports_errors
def deploy(ion_file: str, inventory_file: str, *, out: str, ca_dir: str | None, force: bool,
           extra_ions: tuple[str, ...], bridges: bool, auth: str, local: bool,
           listen: str | None, trust_keys: tuple[str, ...], development_mode: bool,
           as_json: bool) -> None:  # fmt: skip
    """Generate a CA, certificates, Mosquitto configs with least-privilege ACLs, agent configs,
    systemd units and a README per machine from an ION and an inventory (docs/deploy.md).

    Run it again after changing an ION or the inventory: certificates still valid are kept,
    ACLs and configs are regenerated.
    """
    inventory = load_inventory_file(inventory_file)
    files = (ion_file, *extra_ions)
    ions = [_load(f, inventory) for f in files]
    out_dir = Path(out).resolve()
    options = DeployOptions(
        bridges=bridges,
        auth="password" if auth == "password" else "cert",
        local=out_dir if local else None,
        listen=listen,
        # Mosquitto started as root switches to the "mosquitto" user, which cannot read a
        # private output directory: in local mode keep whoever runs it.
        run_as_user=(getpass.getuser() if os.geteuid() == 0 else None) if local else "mosquitto",
        trust_keys=_trust_lines(trust_keys),
        development_mode=development_mode,
        source=", ".join(Path(f).name for f in files),
    )
    plan = make_plan(ions, inventory, options)
    result = write_plan(
        plan,
        out_dir,
        ca_dir=Path(ca_dir) if ca_dir else None,
        now=dt.datetime.now(dt.UTC),
        force=force,
    )
    summary: dict[str, Any] = {
        "out": str(result.out),
        "ca_dir": str(result.ca_dir),
        "ca_created": result.ca_created,
        "files": result.files,
        "issued": list(result.issued),
        "reused": list(result.reused),
        "stale": list(result.stale),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"wrote {result.files} files under {result.out}")
    ca_state = "created" if result.ca_created else "reused"
    click.echo(f"CA {ca_state} in {result.ca_dir}: keep ca.key off every machine")
    click.echo(f"certificates: {len(result.issued)} issued, {len(result.reused)} kept")
    for bundle in result.stale:
        click.echo(f"warning: {bundle} is no longer in the inventory (left as it was)", err=True)


def _load(file: str, inventory: Inventory) -> IonDefinition:
    from ion.authoring import load_ion_file
    from ion.catalog import builtin_catalog
    from ion.validate import validate_parsed

    parsed = load_ion_file(file)
    report = validate_parsed(parsed, catalog=builtin_catalog(), inventory=inventory)
    errors = [p for p in report.problems if p.severity == "error"]
    if errors or parsed.definition is None:
        for p in errors:
            click.echo(str(p), err=True)
        fail(f"{file}: {len(errors)} error(s); nothing was written", 2)
    assert parsed.definition is not None
    return parsed.definition


def _trust_lines(entries: tuple[str, ...]) -> tuple[str, ...]:
    lines: list[str] = []
    for entry in entries:
        path = Path(entry).expanduser()
        found = list(read_trusted_lines(path.read_text())) if path.is_file() else [entry]
        for line in found:
            try:
                parse_trusted_line(line)
            except InputError as exc:
                raise InputError(f"--trust-key {entry!r}: {exc}") from None
            lines.append(line)
    return tuple(lines)
