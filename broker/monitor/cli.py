"""``ion monitor``: subscribe to the whole namespace, fold it into SQLite, raise alerts, and
serve the dashboard (when ``broker.dashboard`` is installed) in the same event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from ion.cli.options import CONTEXT, broker_options, resolve_broker
from ion.errors import ConfigError, InputError, IonError
from ion.security.keyring import load_keyring
from ion.security.trust import TrustConfig

from .alerts import AlertBounds
from .modelcache import ModelCache, ModelCacheSettings
from .retention import RetentionSettings
from .service import Monitor, MonitorSettings, run_until_cancelled, wall_ms

log = logging.getLogger("broker.monitor")
_HOUR_MS, _DAY_MS = 3_600_000, 86_400_000


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65_535:
        raise InputError(f"--http {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8321")
    return host.strip("[]"), int(port_text)


@click.command(context_settings=CONTEXT)
@broker_options
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False),
    default="monitor.db",
    show_default=True,
    help="SQLite file the monitor writes (created if missing).",
)
@click.option(
    "--id",
    "monitor_id",
    default="monitor",
    show_default=True,
    help="Monitor id: its MQTT client id and alert topic ion/v1/monitor/<id>/alerts.",
)
@click.option(
    "--raw-hours",
    type=float,
    default=6.0,
    show_default=True,
    help="Keep stats, drift and queue history raw this long, then per minute.",
)
@click.option(
    "--keep-days",
    type=float,
    default=7.0,
    show_default=True,
    help="Drop time series older than this.",
)
@click.option(
    "--events-days",
    type=float,
    default=30.0,
    show_default=True,
    help="Drop events and resolved alerts older than this.",
)
@click.option(
    "--drift-threshold",
    type=float,
    default=0.2,
    show_default=True,
    help="Drift alert threshold for scores that carry none of their own.",
)
@click.option(
    "--backlog-depth",
    type=int,
    default=10_000,
    show_default=True,
    help="Backlog alert: messages queued on one link of one node.",
)
@click.option(
    "--backlog-age",
    type=float,
    default=300.0,
    show_default=True,
    help="Backlog alert: seconds the oldest queued message has waited.",
)
@click.option(
    "--lag",
    "lag_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Lag alert: seconds between a message's creation and its arrival here.",
)
@click.option(
    "--model-alert-hours",
    type=float,
    default=1.0,
    show_default=True,
    help="A model_rejected alert resolves after this long without a good version.",
)
@click.option(
    "--http",
    "http",
    default="127.0.0.1:8321",
    show_default=True,
    help="Where the dashboard listens (HOST:PORT).",
)
@click.option("--no-http", is_flag=True, help="Do not serve the dashboard.")
@click.option(
    "--key",
    "signing_key",
    type=click.Path(dir_okay=False, exists=True),
    help="Private key file the dashboard signs approve/reject/rollback decisions with "
    "(as `ion approve --key FILE` does).",
)
@click.option(
    "--token",
    envvar="ION_MONITOR_TOKEN",
    help="Token the dashboard asks for before approve/reject/rollback [env ION_MONITOR_TOKEN].",
)
@click.option(
    "--model-cache",
    "model_cache",
    type=click.Path(file_okay=False),
    help="Directory of the model cache, which keeps every model published on the broker and "
    "answers chunk requests nobody else answers (e.g. when the producer is gone) "
    "[default: beside --db, <db name>-models].",
)
@click.option("--no-model-cache", is_flag=True, help="Keep no models and answer no requests.")
@click.option(
    "--model-cache-gib",
    type=float,
    default=8.0,
    show_default=True,
    help="Largest size of the model cache; least recently used models go first.",
)
@click.option(
    "--trust",
    "trusted",
    multiple=True,
    metavar="KEY",
    help="A trusted public key (a key line or a file of key lines; repeatable): the model "
    "cache keeps only manifests signed by one of them.  Without any, manifests are kept "
    "unchecked (consumers still check every chunk against their own signed manifest).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def monitor(**kwargs: Any) -> None:  # fmt: skip
    """Watch the whole fleet: subscribe to ion/v1/# on one broker (or the top of a hierarchy
    where gateways relay), fold every message into a SQLite store (nodes, pipelines, queues,
    models, the decisions audit trail, stats, drift, events, alerts, delivery per stream) and
    raise alerts as rows and as events on ion/v1/monitor/<id>/alerts.

    Runs until SIGINT or SIGTERM, then commits what it has and closes the database.  Exits 1
    with one line when the broker is unreachable or refuses the login.  Browse the store with
    `datasette monitor.db`; the schema is in docs/monitor.md.
    """
    signing_key = kwargs.pop("signing_key", None)
    try:
        settings, http, token, timeout = _settings(kwargs)
        cache = _cache_settings(kwargs, settings.db_path)
    except InputError as exc:
        _fail(str(exc), 2)
        return
    logging.basicConfig(
        level=getattr(logging, str(kwargs["log_level"]).upper()),
        format=f"%(asctime)s %(levelname)s [{settings.monitor_id}] %(name)s: %(message)s",
        force=True,
    )
    try:
        key = Path(signing_key) if signing_key else None
        asyncio.run(_serve(settings, http, token, timeout, signing_key=key, cache=cache))
    except (IonError, BaseExceptionGroup) as exc:
        cause = first_ion_error(exc)
        if cause is None:
            raise
        _fail(str(cause), 1)


def first_ion_error(exc: BaseException) -> IonError | None:
    """The error to report from what a TaskGroup raised (groups nest)."""
    if isinstance(exc, IonError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_ion_error(inner)
            if found is not None:
                return found
    return None


def _settings(kw: dict[str, Any]) -> tuple[MonitorSettings, tuple[str, int] | None, str | None,
                                            float]:  # fmt: skip
    broker, _operator = resolve_broker(kw)  # also checks the broker flags and config file
    try:
        bounds = AlertBounds(
            drift_threshold=kw["drift_threshold"],
            backlog_depth=kw["backlog_depth"],
            backlog_age_ms=int(kw["backlog_age"] * 1000),
            lag_ms=int(kw["lag_s"] * 1000),
            model_rejected_hold_ms=int(kw["model_alert_hours"] * _HOUR_MS),
        )
        retention = RetentionSettings(
            raw_ms=int(kw["raw_hours"] * _HOUR_MS),
            keep_ms=int(kw["keep_days"] * _DAY_MS),
            events_keep_ms=int(kw["events_days"] * _DAY_MS),
        )
        settings = MonitorSettings(
            broker=broker, db_path=Path(kw["db_path"]), monitor_id=kw["monitor_id"],
            bounds=bounds, retention=retention,
        )  # fmt: skip
    except ConfigError as exc:
        raise InputError(str(exc)) from exc
    http = None if kw["no_http"] else parse_listen(kw["http"])
    return settings, http, kw["token"], broker.connect_timeout_s


async def _serve(
    settings: MonitorSettings,
    http: tuple[str, int] | None,
    token: str | None,
    connect_s: float,
    *,
    signing_key: Path | None = None,
    cache: ModelCacheSettings | None = None,
) -> None:
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    extra = _with_model_cache(settings, cache, _dashboard(settings, http, token, signing_key))

    def started(m: Monitor) -> None:
        click.echo(f"monitor {settings.monitor_id}: watching {settings.broker.url}, "
                   f"writing {settings.db_path}", err=True)  # fmt: skip

    try:
        await run_until_cancelled(settings, connect_timeout_s=connect_s, started=started,
                                  extra=extra)  # fmt: skip
    except asyncio.CancelledError:
        log.info("stopped: database committed and closed")


def _dashboard(
    settings: MonitorSettings,
    http: tuple[str, int] | None,
    token: str | None,
    signing_key: Path | None,
) -> Callable[[Monitor], Coroutine[Any, Any, None]] | None:
    if http is None:
        return None
    try:
        from broker.dashboard import DashboardSettings, serve_dashboard
    except ImportError:
        log.warning("the dashboard is not installed here: monitoring without it")
        return None
    host, port = http

    async def serve(monitor: Monitor) -> None:
        dash = DashboardSettings(db_path=settings.db_path, host=host, port=port, token=token,
                                 broker=settings.broker, signing_key=signing_key)  # fmt: skip
        try:
            await serve_dashboard(
                dash, started=lambda url: click.echo(f"dashboard: {url}", err=True)
            )
        except ImportError as exc:  # the `monitor` extra (aiohttp) is not installed
            log.warning("no dashboard (%s): monitoring without it", exc)

    return serve


def _cache_settings(kw: dict[str, Any], db_path: Path) -> ModelCacheSettings | None:
    if kw.pop("no_model_cache"):
        return None
    root = Path(kw.pop("model_cache") or db_path.with_name(f"{db_path.stem}-models"))
    trusted = kw.pop("trusted")
    gib = kw.pop("model_cache_gib")
    try:
        trust = TrustConfig(keyring=load_keyring(trusted, where="--trust")) if trusted else None
        return ModelCacheSettings(root=root, max_bytes=int(gib * 1024**3), trust=trust)
    except (ConfigError, ValueError) as exc:
        raise InputError(str(exc)) from exc


def _with_model_cache(
    settings: MonitorSettings,
    cache: ModelCacheSettings | None,
    extra: Callable[[Monitor], Coroutine[Any, Any, None]] | None,
) -> Callable[[Monitor], Coroutine[Any, Any, None]] | None:
    """``extra`` run with the model cache beside it (its own MQTT session)."""
    if cache is None:
        return extra

    async def serve(monitor: Monitor) -> None:
        async with ModelCache(cache, settings.broker, clock=wall_ms,
                              client_id=f"ion-monitor-{settings.monitor_id}-models"):  # fmt: skip
            click.echo(f"model cache: {cache.root}", err=True)
            if extra is not None:
                await extra(monitor)
            await asyncio.Event().wait()

    return serve


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
