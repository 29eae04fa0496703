"""Options every broker-facing command shares, and turning them into one ``BrokerConfig``.

Precedence: command-line flag, then environment variable, then the config file
(``--config`` / ``ION_CONFIG`` / ``~/.config/ion/config.yaml``), then the default
``mqtt://127.0.0.1:1883``.  The config file looks like::

    broker:
      url: mqtts://broker.example.com:8883
      ca_file: /etc/ion/ca.pem
      cert_file: /etc/ion/operator.pem
      key_file: /etc/ion/operator.key
    operator: alice
    signing_key: alice        # `ion apply` and `ion delete` sign with it (a name or a file)
"""

from __future__ import annotations

import functools
import getpass
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from ion.config.broker import DEFAULT_URL, BrokerConfig, broker_from_mapping, with_options
from ion.errors import ConfigError, InputError, IonError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONFIG = Path("~/.config/ion/config.yaml")
_CONFIG_KEYS = {"broker", "operator", "signing_key"}  # signing_key: see ion.cli.keys


def broker_options(func: F) -> F:
    """Adds --broker, TLS and credential flags, --config and --operator to a command."""
    decorators = [
        click.option(
            "--broker",
            "broker_url",
            envvar="ION_BROKER",
            help=f"Broker URL, mqtt:// or mqtts:// [env ION_BROKER; default {DEFAULT_URL}].",
        ),
        click.option(
            "--ca-file",
            type=click.Path(dir_okay=False),
            envvar="ION_CA_FILE",
            help="CA certificate that signed the broker's certificate (mqtts).",
        ),
        click.option(
            "--cert-file",
            type=click.Path(dir_okay=False),
            envvar="ION_CERT_FILE",
            help="Client certificate (mqtts with require_certificate).",
        ),
        click.option(
            "--key-file",
            type=click.Path(dir_okay=False),
            envvar="ION_KEY_FILE",
            help="Client private key.",
        ),
        click.option("--username", envvar="ION_USERNAME", help="Broker user name."),
        click.option(
            "--password-file",
            type=click.Path(dir_okay=False),
            envvar="ION_PASSWORD_FILE",
            help="File holding the broker password.",
        ),
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            envvar="ION_CONFIG",
            help="Client config file [env ION_CONFIG; default ~/.config/ion/config.yaml].",
        ),
        click.option(
            "--operator",
            envvar="ION_OPERATOR",
            help="Who is acting, recorded with every change [default: user@host].",
        ),
        click.option(
            "--timeout",
            type=float,
            default=10.0,
            show_default=True,
            help="Seconds to wait for the broker.",
        ),
    ]
    for deco in reversed(decorators):
        func = deco(func)
    return func


def _load_config_file(path: str | None) -> dict[str, Any]:
    file = Path(path).expanduser() if path else DEFAULT_CONFIG.expanduser()
    if not file.exists():
        if path:
            raise ConfigError(f"config file {file} does not exist")
        return {}
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file}: expected a mapping at the top")
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"config file {file}: unknown key(s) {', '.join(unknown)}")
    return data


def resolve_broker(kwargs: dict[str, Any]) -> tuple[BrokerConfig, str]:
    """The broker and operator name from the shared options (removes them from ``kwargs``)."""
    config = _load_config_file(kwargs.pop("config_file", None))
    section = dict(config.get("broker") or {})
    url = kwargs.pop("broker_url", None)
    if url:
        section["url"] = url
    broker = broker_from_mapping(section, where="broker")

    def path(key: str) -> Path | None:
        value = kwargs.pop(key, None)
        return Path(value).expanduser() if value else None

    timeout = float(kwargs.pop("timeout", 10.0))
    broker = with_options(
        broker,
        ca_file=path("ca_file"),
        cert_file=path("cert_file"),
        key_file=path("key_file"),
        username=kwargs.pop("username", None),
        password_file=path("password_file"),
        connect_timeout_s=timeout,
    )
    operator = kwargs.pop("operator", None) or config.get("operator") or default_operator()
    return broker, str(operator)


@functools.cache
def default_operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{platform.node() or 'localhost'}"


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes", "on"}


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
"""Every ``ion`` command's click context settings."""


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def reports_errors(func: F) -> F:
    """One clear line and an exit code instead of a traceback for every expected failure:
    2 for bad input (``InputError``), 1 for anything else of ours, 130 on Ctrl-C."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            fail(str(exc), 2)
        except IonError as exc:
            fail(str(exc), 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        return None

    return wrapper  # type: ignore[return-value]
