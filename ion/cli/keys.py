"""``ion keys``: Ed25519 signing keys, and the ``--key`` option of commands that sign.

Operators sign ION definitions (``ion apply --key NAME``) and tombstones (``ion delete``);
nodes that produce models sign their manifests with a producer key from their config.  Nodes
act only on what a key in their ``trust.keys`` signed (see docs/security.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .options import CONTEXT, F, reports_errors

if TYPE_CHECKING:
    from ion.security.keys import SigningKey
    from ion.security.keystore import KeyStore, StoredKey


# ion.security (and with it cryptography) is imported only when a command needs it: every
# `ion` invocation imports this module.  Tests check these against ion.security.
ROLE_CHOICES = ("operator", "producer")
ENV_DIR = "ION_KEYS_DIR"

ENV_SIGNING_KEY = "ION_SIGNING_KEY"


def _dir_option(func: F) -> F:
    return click.option(
        "--dir",
        "keys_dir",
        type=click.Path(file_okay=False),
        envvar=ENV_DIR,
        help=f"Where the keys are [env {ENV_DIR}; default ~/.config/ion/keys].",
    )(func)


def _store(keys_dir: str | None) -> KeyStore:
    from ion.security.keystore import KeyStore

    return KeyStore(Path(keys_dir).expanduser() if keys_dir else None)


def _as_dict(k: StoredKey) -> dict[str, Any]:
    return {
        "name": k.name,
        "key_id": k.key_id,
        "roles": sorted(r.value for r in k.trusted.roles),
        "public_key": k.trusted.key.text(),
        "line": k.line(),
        "private_key_file": str(k.private_file) if k.private_file else None,
        "public_key_file": str(k.public_file),
    }


@click.group(context_settings=CONTEXT)
def keys() -> None:
    """Create, list and show Ed25519 signing keys.

    `operator` keys sign ION definitions and commands (`ion apply --key NAME`); `producer`
    keys sign model manifests (a node's `trust.signing_key`).  Paste the line that
    `ion keys show NAME` prints into the `trust.keys` list of every node that should trust
    the key.
    """


@keys.command(context_settings=CONTEXT)
@click.argument("name")
@click.option(
    "--role",
    "roles",
    type=click.Choice(ROLE_CHOICES),
    multiple=True,
    help="What the key signs; repeat for both [default: operator].",
)
@_dir_option
@reports_errors
def create(name: str, roles: tuple[str, ...], keys_dir: str | None) -> None:
    """Create the key pair NAME (private key readable by you alone).

    Never overwrites an existing key.  Prints the public key line for node configs.
    """
    from ion.security.keyring import Role, format_roles

    store = _store(keys_dir)
    created = store.create(name, {Role(r) for r in roles} or {Role.OPERATOR})
    click.echo(
        f"created key {name!r} (id {created.key_id}, {format_roles(created.trusted.roles)})\n"
        f"  private key: {created.private_file} (keep it secret; never copy it to nodes)\n"
        f"  public key:  {created.public_file}\n"
        "add this line to the trust.keys list of the nodes that should trust it:\n"
        f"  {created.line()}"
    )


@keys.command(name="list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_dir_option
@reports_errors
def list_cmd(as_json: bool, keys_dir: str | None) -> None:
    """List the keys in the key directory."""
    from ion.security.keyring import format_roles

    store = _store(keys_dir)
    found, problems = store.entries()
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        click.echo(json.dumps([_as_dict(k) for k in found], indent=2))
        return
    if not found:
        click.echo(f"no keys in {store.directory} (create one: ion keys create NAME)")
        return
    header = ["NAME", "KEY ID", "ROLES", "PRIVATE"]
    table = [header] + [
        [k.name, k.key_id, format_roles(k.trusted.roles), "yes" if k.private_file else "no"]
        for k in found
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@keys.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (key id, roles, files).")
@_dir_option
@reports_errors
def show(name: str, as_json: bool, keys_dir: str | None) -> None:
    """Print the public key line of NAME, to paste into a node's trust.keys."""
    stored = _store(keys_dir).get(name)
    if as_json:
        click.echo(json.dumps(_as_dict(stored), indent=2))
    else:
        click.echo(stored.line())


# -- signing commands --------------------------------------------------------------------------


def signing_option(func: F) -> F:
    """Adds ``--key`` (env ``ION_SIGNING_KEY``, else ``signing_key`` in the client config)."""
    return click.option(
        "--key",
        "signing_key",
        envvar=ENV_SIGNING_KEY,
        metavar="NAME|FILE",
        help=(
            f"Sign with this key: a name in the key directory or a private key file "
            f"[env {ENV_SIGNING_KEY}; else signing_key in the config file]."
        ),
    )(func)


def resolve_signing_key(kwargs: dict[str, Any]) -> SigningKey | None:
    """The key ``--key`` names (removed from ``kwargs``), else the config file's
    ``signing_key``; None when neither says.  Leaves ``config_file`` for ``resolve_broker``."""
    from ion.security.keystore import load_signing_key

    from .options import _load_config_file

    spec = kwargs.pop("signing_key", None)
    if not spec:
        spec = _load_config_file(kwargs.get("config_file")).get("signing_key")
    if not spec:
        return None
    return load_signing_key(str(spec))


def unsigned_warning() -> None:
    click.echo(
        "warning: publishing unsigned (no --key, ION_SIGNING_KEY or signing_key in the "
        "config); nodes outside development mode will refuse it",
        err=True,
    )
