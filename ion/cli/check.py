"""``ion check``: diagnose a node's set-up and broker connection, like ``iotedge check``.

The checks themselves live in ``node.check`` (they need sockets and SQLite; this package is
pure), imported when the command runs.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from .options import CONTEXT, broker_options, reports_errors, resolve_broker
from .render import print_segments, style_of

_BROKER_FLAGS = ("ca_file", "cert_file", "key_file", "username", "password_file")


@click.command(context_settings=CONTEXT)
@click.option(
    "-n",
    "--node-config",
    type=click.Path(dir_okay=False),
    help="The node's YAML config: checks it, and its broker, data dir, outbox and trust.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Check disk space and the outbox here [default: the node config's data_dir].",
)
@click.option(
    "--min-free-percent",
    type=click.FloatRange(0, 100),
    default=10.0,
    show_default=True,
    help="FAIL when the data dir's disk has less free space (WARN below twice this).",
)
@click.option(
    "--max-queue-age",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="FAIL when an outbox message waited longer, in seconds (WARN from a tenth of it).",
)
@click.option(
    "--max-skew",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="WARN when this clock differs from the fleet's by more seconds (FAIL beyond 15x).",
)
@click.option(
    "--cert-warn-days",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="WARN when the broker's TLS certificate expires within this many days.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (see docs/operations.md).")
@broker_options
@reports_errors
def check(  # noqa: PLR0917 - click passes every option as a parameter
    node_config: str | None,
    data_dir: str | None,
    min_free_percent: float,
    max_queue_age: float,
    max_skew: float,
    cert_warn_days: float,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Diagnose a node or a broker connection: each check prints OK, WARN, FAIL or SKIP with
    a one-line fix; exits 1 when any check FAILs.

    With --node-config the node's own broker settings are used unless --broker (or a client
    --config) is given; with --data-dir alone only the data dir is checked; otherwise the
    broker from the usual options is checked.
    """
    from node.check import CheckPlan, Thresholds, run_checks

    explicit = bool(kwargs.get("broker_url") or kwargs.get("config_file"))
    timeout = float(kwargs.get("timeout") or 10.0)
    if data_dir and not node_config and not explicit:
        broker = None  # only the data dir was named
    elif node_config and not explicit:
        ignored = [f"--{k.replace('_', '-')}" for k in _BROKER_FLAGS if kwargs.get(k)]
        if ignored:
            click.echo(
                f"warning: {', '.join(ignored)} ignored: the node config's broker is checked "
                "(add --broker to check another)",
                err=True,
            )
        broker = None
    else:
        broker, _ = resolve_broker(kwargs)
    plan = CheckPlan(
        node_config=Path(node_config) if node_config else None,
        broker=broker,
        data_dir=Path(data_dir) if data_dir else None,
        thresholds=Thresholds(
            min_free_percent=min_free_percent,
            max_queue_age_s=max_queue_age,
            max_skew_s=max_skew,
            cert_warn_days=cert_warn_days,
        ),
        timeout_s=timeout,
    )
    results = run_checks(plan)
    counts = Counter(r.verdict for r in results)
    failed = counts["FAIL"] > 0
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": not failed,
                    "summary": {v: counts[v] for v in ("OK", "WARN", "FAIL", "SKIP")},
                    "checks": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    else:
        what = [f"node config {node_config}"] if node_config else []
        if broker is not None:
            what.append(f"broker {broker.url}")
        click.echo(f"ion check: {', '.join(what)}")
        width = max(len(r.name) for r in results) if results else 0
        for r in results:
            print_segments(
                [("  ", None), (f"{r.verdict:4}", style_of(r.verdict)),
                 (f"  {r.name:{width}}  {r.detail}", None)]
            )  # fmt: skip
            if r.hint and r.verdict in ("WARN", "FAIL"):
                click.echo(f"  {'':4}  {'':{width}}  fix: {r.hint}")
        summary = ", ".join(f"{counts[v]} {v}" for v in ("FAIL", "WARN", "OK", "SKIP") if counts[v])
        click.echo(summary or "nothing to check")
    if failed:
        sys.exit(1)
