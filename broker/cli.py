"""``ion broker``: run an MQTT broker for one-machine use until Ctrl-C or SIGTERM.

Prints the broker's URL alone on the first line of stdout (so scripts can read it), details on
stderr.  Exit status 0 after Ctrl-C/SIGTERM, 1 when the broker cannot start or dies.
Also runnable without the ``ion`` CLI as ``python -m broker.cli``.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import cast

import click

from broker.embedded import Kind, start_broker
from broker.errors import BrokerConfigError, BrokerStartError, PortInUseError

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STOP_GRACE = 30.0


@click.command("broker")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback exposes an anonymous broker.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=1883,
    show_default=True,
    help="MQTT port; 0 picks a free one.",
)
@click.option(
    "--kind",
    type=click.Choice(["auto", "mosquitto", "amqtt"]),
    default="auto",
    show_default=True,
    help="auto: Mosquitto when installed, else the pure-Python amqtt broker.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep retained messages, sessions and logs here across restarts "
    "(default: a temporary directory, nothing kept).",
)
def broker_command(host: str, port: int, kind: str, data_dir: Path | None) -> None:
    """Run an MQTT broker for one machine until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    with ExitStack() as stack:
        _handle_stop_signals(stack, stop)
        try:
            broker = start_broker(kind=cast("Kind", kind), host=host, port=port, data_dir=data_dir)
        except PortInUseError as exc:
            raise click.ClickException(
                f"{exc.summary} (another broker running? use --port, 0 picks a free one)"
            ) from None
        except (BrokerStartError, BrokerConfigError) as exc:
            raise click.ClickException(str(exc)) from None
        stack.enter_context(broker)
        if not _is_loopback(host):
            click.echo(
                f"warning: anonymous clients may connect from the network on {host}; "
                "see deploy/mosquitto/ion-broker.conf for a production setup",
                err=True,
            )
        click.echo(broker.url)
        click.echo(
            f"{broker.kind} broker running (pid {broker.pid}, files in {broker.data_dir}); "
            "Ctrl-C to stop",
            err=True,
        )
        while not stop.wait(0.5):
            if not broker.is_running():
                raise click.ClickException(
                    f"the broker exited unexpectedly\n{broker.log_tail().rstrip()}"
                )
        # Mosquitto writes its whole database on the way out; a big backlog takes a while.
        broker.stop(grace=_STOP_GRACE)
    click.echo("broker stopped", err=True)


def _handle_stop_signals(stack: ExitStack, stop: threading.Event) -> None:
    """Turn SIGINT/SIGTERM into ``stop``, restoring the previous handlers on exit."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; Ctrl-C then ends us by KeyboardInterrupt
    for sig in _STOP_SIGNALS:
        previous = signal.signal(sig, on_signal)
        stack.callback(signal.signal, sig, previous)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    """Entry point for ``python -m broker.cli``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    broker_command()


if __name__ == "__main__":
    main()
