"""``ion status``, ``ion pipelines`` and ``ion events``: the operator's views of the fleet.

All three read the broker directly (no monitor needed): ``status`` and ``pipelines`` fold the
retained node statuses (``ion.client.fleet``), ``events`` subscribes to every topic that carries
events (``ion.client.events``).  ``--json`` output keys are documented in docs/operations.md and
only ever gain new keys.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .options import CONTEXT, broker_options, reports_errors, resolve_broker
from .render import ago, print_line, print_table, rich_output, style_of

if TYPE_CHECKING:
    from ion.client.events import EventRecord


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _read_fleet(kwargs: dict[str, Any]) -> tuple[str, list[Any], dict[str, int]]:
    from ion.client.fleet import read_statuses
    from ion.client.session import connect

    broker, _ = resolve_broker(kwargs)
    with connect(broker) as session:
        statuses, sent, problems = read_statuses(session)
    for problem in problems:
        click.echo(f"warning: unreadable status {problem}", err=True)
    return broker.url, statuses, sent


# -- status ---------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.option(
    "--backlog-age",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds a queued message may wait before the node's queue counts as a problem.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (see docs/operations.md).")
@broker_options
@reports_errors
def status(backlog_age: float, as_json: bool, **kwargs: Any) -> None:
    """The fleet at a glance: nodes by layer, their state and heartbeat, pipelines running and
    failed, outbox depth and oldest message, active models, and the problems found.

    A node whose status says online but that has missed three heartbeats is shown as stale.
    """
    from ion.client.fleet import status_rows

    url, statuses, sent = _read_fleet(kwargs)
    now = _now_ms()
    rows, problems = status_rows(statuses, now_ms=now, sent_ms=sent, backlog_age_s=backlog_age)
    states = dict(sorted(Counter(r.state for r in rows).items()))
    summary: dict[str, Any] = {
        "nodes": len(rows),
        "states": states,
        "layers": dict(sorted(Counter(r.layer for r in rows).items())),
        "pipelines_running": sum(r.pipelines_running for r in rows),
        "pipelines_failed": sum(r.pipelines_failed for r in rows),
        "queued": sum(r.queue_depth for r in rows),
        "problems": len(problems),
    }
    if as_json:
        out = {
            "broker": url,
            "time_ms": now,
            "summary": summary,
            "nodes": [asdict(r) for r in rows],
            "problems": [asdict(p) for p in problems],
        }
        click.echo(json.dumps(out, indent=2))
        return
    if not rows:
        click.echo(f"no nodes on {url}")
        return
    table = [
        [
            r.layer, r.node_id, r.state, ago(r.heartbeat_age_s),
            f"{r.pipelines_running}/{r.pipelines_total}", str(r.pipelines_failed),
            str(r.queue_depth), ago(r.queue_oldest_s),
            str(r.models_active) + (f" (+{r.models_pending} pending)" if r.models_pending else ""),
            str(r.problems) if r.problems else "-",
        ]
        for r in rows
    ]  # fmt: skip
    print_table(
        ["LAYER", "NODE", "STATE", "HEARTBEAT", "RUNNING", "FAILED", "QUEUED", "OLDEST",
         "MODELS", "PROBLEMS"],
        table,
        right=("RUNNING", "FAILED", "QUEUED", "OLDEST", "HEARTBEAT"),
    )  # fmt: skip
    by_state = ", ".join(f"{n} {s}" for s, n in states.items())
    click.echo(
        f"\n{summary['nodes']} node(s): {by_state}; {summary['pipelines_running']} pipeline(s) "
        f"running, {summary['pipelines_failed']} failed; {len(problems)} problem(s) on {url}"
    )
    for p in problems:
        print_line(f"  {p.severity.upper():7} {p.message}", style=style_of(p.severity))


# -- pipelines ------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("ion", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (see docs/operations.md).")
@broker_options
@reports_errors
def pipelines(ion: str | None, as_json: bool, **kwargs: Any) -> None:
    """Every pipeline on every node (of the ION named ION, if given): state, engine, restarts,
    how long in that state, and its last message.

    A pipeline on a node that is offline or stale shows what the node last reported.
    """
    from ion.client.fleet import pipeline_rows

    url, statuses, sent = _read_fleet(kwargs)
    rows = pipeline_rows(statuses, now_ms=_now_ms(), sent_ms=sent, ion=ion)
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    if not rows:
        click.echo(f"no pipelines{f' of ION {ion!r}' if ion else ''} on {url}")
        return
    table = []
    for r in rows:
        state = (
            r.state
            if r.node_state in ("online", "draining")
            else f"{r.state} (node {r.node_state})"
        )
        table.append([
            r.ion, r.pipeline, r.node_id, state, r.engine or "-", str(r.restarts),
            ago(r.since_s), (r.message or "-")[:80],
        ])  # fmt: skip
    print_table(
        ["ION", "PIPELINE", "NODE", "STATE", "ENGINE", "RESTARTS", "SINCE", "MESSAGE"],
        table,
        right=("RESTARTS", "SINCE"),
    )


# -- events ---------------------------------------------------------------------------------


def _since_ms(value: str | None, now: int) -> int | None:
    if value is None:
        return None
    from ion.authoring.durations import parse_duration
    from ion.errors import InputError

    try:
        return now - abs(parse_duration(value))
    except (TypeError, ValueError) as exc:
        raise InputError(f"--since {value!r}: {exc}") from None


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _where(e: EventRecord) -> str:
    parts = [e.ion, e.pipeline or (f"edge {e.edge}" if e.edge else "")]
    return "/".join(p for p in parts if p) or "-"


def _event_line(e: EventRecord) -> str:
    text = f": {e.message}" if e.message else ""
    subject = f" [{e.subject}]" if e.subject else ""
    return (
        f"{_clock(e.time_ms)} {e.severity.upper():8} {e.source:8} {e.node_id} {_where(e)} "
        f"{e.type}{subject}{text}"
    )


@click.command(context_settings=CONTEXT)
@click.option("--ion", help="Only events of this ION.")
@click.option("--node", help="Only events from this node (alerts: from this monitor).")
@click.option("--type", "type_pattern", help="Only event types matching, e.g. 'model.*'.")
@click.option(
    "--severity",
    type=click.Choice(["debug", "info", "warning", "error", "critical"]),
    help="Only events at least this severe.",
)
@click.option("--since", help="Only events created in the last DURATION, e.g. 10m, 2h.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing events until Ctrl-C.")
@click.option(
    "--for",
    "duration",
    type=click.FloatRange(min=0),
    help="Seconds to listen [default 3 without --follow; until Ctrl-C with it].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per event.")
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False),
    help="Read the history from the monitor's store (ion monitor --db FILE) instead of "
    "listening; with --follow, go on with live events after it.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="With --db: the newest this many events.",
)
@broker_options
@reports_errors
def events(  # noqa: PLR0917 - click passes every option as a parameter
    ion: str | None,
    node: str | None,
    type_pattern: str | None,
    severity: str | None,
    since: str | None,
    follow: bool,
    duration: float | None,
    as_json: bool,
    db_path: str | None,
    limit: int,
    **kwargs: Any,
) -> None:
    """Events from the bus: node, pipeline and edge events, model canary verdicts and monitor
    alerts.

    A broker keeps no history of events (only the retained canary verdicts), so without
    --follow this listens for --for seconds (3 by default) and prints what arrived, oldest
    first; with --follow it prints each event as it arrives until Ctrl-C (exit 0).  For
    history, --db reads the monitor's store (e.g. ion events --db monitor.db --since 2h).
    """
    from ion.client.events import EventFilter
    from ion.client.events import follow as subscribe

    now = _now_ms()
    wanted = EventFilter(
        ion=ion, node=node, type_pattern=type_pattern, min_severity=severity,
        since_ms=_since_ms(since, now),
    )  # fmt: skip
    if db_path is not None:
        from broker.monitor.history import read_events

        history = read_events(Path(db_path), wanted, limit=limit)
        if not follow:
            _print_events(history, as_json, f"no events in {db_path}")
            return
        for old in history:
            click.echo(json.dumps(asdict(old), sort_keys=True) if as_json else _event_line(old))
    broker, _ = resolve_broker(kwargs)
    listen = duration if duration is not None else (None if follow else 3.0)
    deadline = None if listen is None else time.monotonic() + listen
    collected: list[EventRecord] = []
    try:
        with subscribe(broker, wanted, timeout=broker.connect_timeout_s) as stream:
            if follow and not as_json:
                click.echo(f"following events on {broker.url} (Ctrl-C to stop)", err=True)
            while deadline is None or time.monotonic() < deadline:
                left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                e = stream.get(max(left, 0.0))
                if e is None:
                    continue
                if not follow:
                    collected.append(e)
                elif as_json:
                    click.echo(json.dumps(asdict(e), sort_keys=True))
                else:
                    print_line(_event_line(e), style=style_of(e.severity))
    except KeyboardInterrupt:
        if not follow:
            raise
        return  # Ctrl-C is how --follow ends: not an error
    collected.sort(key=lambda e: e.time_ms)
    _print_events(collected, as_json, f"no events in {listen:g}s on {broker.url}")


def _print_events(collected: list[EventRecord], as_json: bool, none: str) -> None:
    if as_json:
        for e in collected:
            click.echo(json.dumps(asdict(e), sort_keys=True))
        return
    if not collected:
        click.echo(none)
        return
    if rich_output():
        print_table(
            ["TIME", "SEVERITY", "SOURCE", "NODE", "WHERE", "TYPE", "MESSAGE"],
            [
                [_clock(e.time_ms), e.severity, e.source, e.node_id, _where(e), e.type,
                 e.message or e.subject or "-"]
                for e in collected
            ],
        )  # fmt: skip
    else:
        for e in collected:
            click.echo(_event_line(e))


def register(cli: click.Group) -> None:
    cli.add_command(status, name="status")
    cli.add_command(pipelines, name="pipelines")
    cli.add_command(events, name="events")
