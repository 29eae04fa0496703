"""``ion demo``: the whole system on one machine, on an embedded broker.

It starts two embedded brokers (the cloud's and a gateway's), the monitor with its dashboard,
a cloud node, a gateway relaying for three edge nodes behind it, generates training data,
applies the KMeans example ION signed with a throw-away operator key, runs simulated devices,
and prints what the fleet does: Spark training on the cloud node with its progress, the model
rolled out to the edge under the edge's canary policy and hot-swapped into the running
inference pipelines, anomaly rates, drift the edge nodes detect on their own once the devices
start to wear, the monitor's alerts, the retrain trigger firing, and the retrained model
rolling out.  Ctrl-C (or ``--duration``) stops everything and leaves no process behind.  See
``node.demo_run`` for the steps.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from ion.errors import IonError

from .options import CONTEXT

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ION = REPO_ROOT / "examples" / "kmeans" / "ion.yaml"


def _step(text: str) -> None:
    click.echo(click.style("==> ", fg="cyan", bold=True) + text)


@click.command(context_settings=CONTEXT)
@click.option(
    "--ion",
    "ion_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=DEFAULT_ION,
    show_default=True,
    help="The ION to run (its pipelines must be placed by the labels tier=cloud / tier=edge "
    "or on the node ids cloud-1, edge-1..3).",
)
@click.option("--port", type=int, default=0, help="Broker port on 127.0.0.1 [default: a free one].")
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds [default: run until Ctrl-C].",
)
@click.option(
    "--drift-after",
    type=float,
    default=90.0,
    show_default=True,
    help="Seconds of scoring at the edge before the devices start to drift.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep node data and logs here [default: a temporary directory, removed at the end].",
)
@click.option(
    "--dashboard-port",
    type=int,
    default=8321,
    show_default=True,
    help="Port of the monitor's dashboard on 127.0.0.1 (a free one if taken).",
)
@click.option(
    "--until-retrained",
    is_flag=True,
    help="Stop once a drift-triggered retrain has rolled out to every edge node (the whole "
    "story once; for tests and recordings).",
)
def demo(
    *,
    ion_file: Path,
    port: int,
    duration: float | None,
    drift_after: float,
    work_dir: Path | None,
    dashboard_port: int,
    until_retrained: bool,
) -> None:
    """Run the end-to-end demo on an embedded broker (Ctrl-C stops it cleanly)."""
    from node.demo_run import run_demo

    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        status = run_demo(
            ion_file=ion_file,
            port=port,
            duration=duration,
            drift_after=drift_after,
            work_dir=work_dir,
            say=_step,
            stop=stop,
            dashboard_port=dashboard_port,
            until_retrained=until_retrained,
        )
    except IonError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    sys.exit(status)
