"""``ion demo``: the whole system on one machine, on an embedded broker.

For now it starts the embedded broker, applies the example ION over MQTT and shows that a
separate subscriber received exactly what was applied.  Later issues extend it to node agents,
Spark training, edge inference, the monitor and drift-triggered retraining.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import click

from ion.errors import IonError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ION = REPO_ROOT / "examples" / "kmeans" / "ion.yaml"


def _step(text: str) -> None:
    click.echo(click.style("==> ", fg="cyan", bold=True) + text)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--ion",
    "ion_file",
    type=click.Path(dir_okay=False, exists=True),
    default=str(DEFAULT_ION),
    show_default=True,
    help="The ION to apply.",
)
@click.option("--port", type=int, default=0, help="Broker port on 127.0.0.1 [default: a free one].")
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds [default: run until Ctrl-C].",
)
def demo(ion_file: str, port: int, duration: float | None) -> None:
    """Run the end-to-end demo on an embedded broker (Ctrl-C stops it cleanly)."""
    from broker.embedded import start_broker
    from ion.authoring import load_ion_file
    from ion.client import definitions
    from ion.client.session import connect
    from ion.config.broker import parse_broker_url
    from ion.model.definition import IonDefinition
    from ion.validate import validate_parsed

    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    _step(f"validating {ion_file}")
    parsed = load_ion_file(ion_file)
    errors = [p for p in validate_parsed(parsed).problems if p.severity == "error"]
    if errors or parsed.definition is None:
        for p in errors:
            click.echo(str(p), err=True)
        sys.exit(2)
    definition = parsed.definition
    _step("starting the embedded broker")
    try:
        with start_broker(port=port) as broker:
            _step(f"broker ({broker.kind}) listening at {broker.url}")
            cfg = parse_broker_url(broker.url)
            with connect(cfg, client_prefix="ion-demo") as session:
                plan = definitions.plan_apply(
                    definition,
                    definitions.fetch(session, definition.name),
                    now_ms=time.time_ns() // 1_000_000,
                    operator="demo",
                )
                if plan.definition is not None:
                    definitions.publish(
                        session, plan.definition, now_ms=time.time_ns() // 1_000_000
                    )
                    _step(f"applied ION {definition.name!r} version {plan.definition.version}")
            with connect(cfg, client_prefix="ion-demo-reader") as session:
                received = definitions.fetch(session, definition.name)
            if not isinstance(received, IonDefinition):
                click.echo("error: the broker did not return the applied ION", err=True)
                sys.exit(1)
            same = definitions.authored(received) == definitions.authored(definition)
            _step(
                f"a separate subscriber received ION {received.name!r} version "
                f"{received.version} ({len(received.pipelines)} pipelines, "
                f"{len(received.edges)} edges, sha256 {received.content_sha256[:12]}); "
                f"identical to the file: {'yes' if same else 'NO'}"
            )
            for pl in received.pipelines:
                where = ", ".join(pl.placement.nodes) or ", ".join(
                    f"{k}={v}" for k, v in pl.placement.labels.items()
                )
                click.echo(
                    f"      pipeline {pl.name:<12} {pl.engine:<10} {pl.mode.value:<9} on {where}"
                )
            for e in received.edges:
                targets = ", ".join(str(t) for t in e.targets)
                click.echo(
                    f"      edge     {e.name:<12} {e.kind.value:<10} {e.source} -> {targets}"
                )
            if duration is None:
                _step(
                    f"running; try `ion get {definition.name} --broker {broker.url}` in "
                    "another terminal. Ctrl-C stops."
                )
            stop.wait(duration)
            _step("stopping")
    except IonError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    _step("stopped cleanly")
