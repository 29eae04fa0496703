"""Where a broker is and how to log in to it: one frozen value, parsed from a URL and options.

``mqtt://host[:1883]`` is plain TCP; ``mqtts://host[:8883]`` is TLS, verifying the broker's
certificate against ``ca_file`` (or the system store).  Credentials come from the URL
(``mqtt://user:pass@host``), from options, or from a password file, never from the command
line alone where other users could read them in ``ps``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ion.errors import ConfigError

DEFAULT_URL = "mqtt://127.0.0.1:1883"
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Only for tests against throw-away certificates: never verify nothing in production.
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """One broker connection.  ``tls`` is None for plain ``mqtt://``."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: TlsSettings | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0

    @property
    def url(self) -> str:
        """The URL without credentials, safe to print."""
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerConfig:
    """``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://...`` to a ``BrokerConfig``."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ConfigError(f"broker URL {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"broker URL {url!r}: unexpected path or query")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ConfigError(f"broker URL {url!r}: {exc}") from None
    return BrokerConfig(
        host=parts.hostname,
        port=port,
        tls=TlsSettings() if scheme == "mqtts" else None,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


_KEYS = {
    "url",
    "ca_file",
    "cert_file",
    "key_file",
    "username",
    "password",
    "password_file",
    "keepalive_s",
    "connect_timeout_s",
    "insecure_skip_verify",
}


def broker_from_mapping(data: Mapping[str, Any], *, where: str = "broker") -> BrokerConfig:
    """A ``BrokerConfig`` from a config-file section.  Unknown keys are an error.

    Keys: ``url`` (default ``mqtt://127.0.0.1:1883``), ``ca_file``, ``cert_file``, ``key_file``,
    ``username``, ``password`` or ``password_file``, ``keepalive_s`` (30),
    ``connect_timeout_s`` (10), ``insecure_skip_verify`` (false; tests only).
    """
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    cfg = parse_broker_url(str(data.get("url", DEFAULT_URL)))
    return with_options(
        cfg,
        ca_file=_opt_path(data, "ca_file"),
        cert_file=_opt_path(data, "cert_file"),
        key_file=_opt_path(data, "key_file"),
        username=_opt_str(data, "username"),
        password=_opt_str(data, "password"),
        password_file=_opt_path(data, "password_file"),
        keepalive_s=int(data.get("keepalive_s", cfg.keepalive_s)),
        connect_timeout_s=float(data.get("connect_timeout_s", cfg.connect_timeout_s)),
        insecure_skip_verify=bool(data.get("insecure_skip_verify", False)),
    )


def with_options(
    cfg: BrokerConfig,
    *,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    username: str | None = None,
    password: str | None = None,
    password_file: Path | None = None,
    keepalive_s: int | None = None,
    connect_timeout_s: float | None = None,
    insecure_skip_verify: bool = False,
) -> BrokerConfig:
    """Overlay options on a parsed URL; TLS files are only meaningful with ``mqtts://``."""
    tls = cfg.tls
    if ca_file or cert_file or key_file or insecure_skip_verify:
        if tls is None:
            raise ConfigError(f"TLS options given but the broker URL {cfg.url} is not mqtts://")
        tls = TlsSettings(
            ca_file=ca_file or tls.ca_file,
            cert_file=cert_file or tls.cert_file,
            key_file=key_file or tls.key_file,
            insecure_skip_verify=insecure_skip_verify or tls.insecure_skip_verify,
        )
        if (tls.cert_file is None) != (tls.key_file is None):
            raise ConfigError("a client certificate needs both cert_file and key_file")
    if password_file is not None:
        try:
            password = password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read password file {password_file}: {exc}") from None
    if keepalive_s is not None and keepalive_s < 5:
        raise ConfigError("keepalive_s must be at least 5")
    return replace(
        cfg,
        tls=tls,
        username=username if username is not None else cfg.username,
        password=password if password is not None else cfg.password,
        keepalive_s=keepalive_s if keepalive_s is not None else cfg.keepalive_s,
        connect_timeout_s=connect_timeout_s
        if connect_timeout_s is not None
        else cfg.connect_timeout_s,
    )


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else str(value)


def _opt_path(data: Mapping[str, Any], key: str) -> Path | None:
    value = data.get(key)
    return None if value is None else Path(str(value)).expanduser()
