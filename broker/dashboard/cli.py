"""``ion dashboard``: look at an existing monitor store in a browser.

``ion monitor`` serves the same dashboard itself; this command is for a store that is
already there (a copy, or one another process writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

import click

from ion.cli.options import CONTEXT, broker_options, reports_errors, resolve_broker

log = logging.getLogger(__name__)

ENV_TOKEN = "ION_DASHBOARD_TOKEN"  # noqa: S105 (a variable name, not a secret)


@click.command("dashboard", context_settings=CONTEXT)
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The monitor's SQLite store (read-only).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8321,
    show_default=True,
    help="Port; 0 picks a free one.",
)
@click.option(
    "--token",
    envvar=ENV_TOKEN,
    help=f"Token that unlocks approve/reject/rollback [env {ENV_TOKEN}; without it the "
    "dashboard is read-only].",
)
@click.option(
    "--key",
    "signing_key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file that signs decisions, as `ion approve --key` does.",
)
@broker_options
@reports_errors
def dashboard_command(
    db_path: Path,
    host: str,
    port: int,
    token: str | None,
    signing_key: Path | None,
    **kwargs: Any,
) -> None:
    """Serve the monitor's dashboard over the store DB until Ctrl-C."""
    from . import DashboardSettings, serve_dashboard

    broker, _ = resolve_broker(kwargs)
    settings = DashboardSettings(
        db_path=db_path, host=host, port=port, token=token or None, broker=broker,
        signing_key=signing_key,
    )  # fmt: skip
    if not db_path.exists():
        click.echo(f"warning: {db_path} does not exist yet; pages say so until it does", err=True)

    def started(url: str) -> None:
        click.echo(url)
        if host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(
                f"warning: listening on {host}: anyone who can reach it can read the fleet "
                "(and act, with the token); put it behind TLS and a firewall",
                err=True,
            )
        click.echo(
            f"dashboard for {db_path} ({'actions need the token' if token else 'read-only'}; "
            f"decisions go to {broker.url}); Ctrl-C stops",
            err=True,
        )

    async def main() -> None:
        # SIGTERM (systemd, the demo) stops it as cleanly as Ctrl-C: by cancellation.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve_dashboard(settings, started=started)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is meant to stop
        asyncio.run(main())
