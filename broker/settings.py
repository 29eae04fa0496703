"""Typed, frozen settings for an embedded broker.

Defaults are deliberate rather than Mosquitto's own, because Mosquitto's defaults lose messages
that it has already acknowledged:

- ``max_queued_messages`` (Mosquitto default 1000): QoS 1 messages queued for an offline or slow
  subscriber past this count are dropped *after* the publisher got its PUBACK.
- ``max_queued_bytes`` (default unlimited): the byte cap per client that bounds memory when the
  backlog is made of model chunks rather than small events.
- ``message_size_limit``: the largest payload we promise to carry.  It is rendered as Mosquitto's
  ``max_packet_size`` (payload plus room for topic and headers), which *disconnects* a client
  sending more, instead of ``message_size_limit``, which acknowledges and silently drops it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from broker.errors import BrokerConfigError

MIB = 1024 * 1024
# Room in one PUBLISH packet beyond the payload: topic (at most 64 KiB), packet id, fixed header
# and MQTT 5 properties.  Any payload up to message_size_limit therefore always fits.
PACKET_OVERHEAD = 128 * 1024
MQTT_MAX_PACKET = 268_435_455 + 5


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """An extra TLS listener beside the plain loopback one (the plain one stays for readiness).

    ``port`` 0 picks a free port at first start (kept across restarts).
    """

    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    require_certificate: bool = False
    port: int = 0

    def __post_init__(self) -> None:
        _check_port(self.port, "tls.port")
        for name in ("certfile", "keyfile", "cafile"):
            _check_path(getattr(self, name), f"tls.{name}")
        if self.require_certificate and self.cafile is None:
            raise BrokerConfigError("tls.require_certificate needs tls.cafile to verify clients")


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """What an embedded broker is told, whichever kind runs it.

    max_queued_messages: QoS 1/2 messages queued per client beyond those in flight (default
        1,000,000; 0 would mean unlimited, which Mosquitto discourages).
    max_queued_bytes: bytes queued per client beyond those in flight (default 1 GiB; 0 means no
        byte cap).  Whichever limit is reached first applies.
    max_inflight_messages: outgoing QoS 1/2 messages in flight per client (default 100;
        Mosquitto's 20 throttles pipelined delivery on high-latency links).
    message_size_limit: the largest payload carried (default 16 MiB: one model chunk plus
        room); larger publishes disconnect the sender rather than vanish.
    persistence: keep retained messages, sessions and queues across restarts.  ``None`` (the
        default) means "on exactly when a data_dir is given".
    autosave_interval: seconds between Mosquitto's database saves; it always saves on a clean
        stop, so this bounds what a crash (SIGKILL) loses (default 30).
    allow_anonymous: accept clients without credentials (default True: the embedded broker
        listens on loopback).
    password_file: a ``mosquitto_passwd`` file (Mosquitto only).
    acl_file: a Mosquitto ACL file (Mosquitto only).
    tls: an extra TLS listener (Mosquitto only).
    extra_lines: raw lines appended to the generated Mosquitto config, for experiments.
    """

    max_queued_messages: int = 1_000_000
    max_queued_bytes: int = 1024 * MIB
    max_inflight_messages: int = 100
    message_size_limit: int = 16 * MIB
    persistence: bool | None = None
    autosave_interval: int = 30
    allow_anonymous: bool = True
    password_file: Path | None = None
    acl_file: Path | None = None
    tls: TlsSettings | None = None
    extra_lines: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in (
            "max_queued_messages",
            "max_queued_bytes",
            "max_inflight_messages",
            "autosave_interval",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BrokerConfigError(f"{name} must be a non-negative integer, got {value!r}")
        limit = self.message_size_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise BrokerConfigError(f"message_size_limit must be positive, got {limit!r}")
        if limit + PACKET_OVERHEAD > MQTT_MAX_PACKET:
            raise BrokerConfigError(
                f"message_size_limit {limit} is beyond what MQTT can carry in one packet"
            )
        _check_path(self.password_file, "password_file")
        _check_path(self.acl_file, "acl_file")
        for line in self.extra_lines:
            if "\n" in line or "\r" in line:
                raise BrokerConfigError(f"extra_lines entries must be single lines: {line!r}")
        if not self.allow_anonymous and self.password_file is None:
            raise BrokerConfigError("allow_anonymous=False needs a password_file")

    @property
    def max_packet_size(self) -> int:
        """The packet limit that guarantees every payload up to message_size_limit fits."""
        return self.message_size_limit + PACKET_OVERHEAD

    def wants_persistence(self, *, has_data_dir: bool) -> bool:
        """Resolve ``persistence=None`` ("when a data_dir is given")."""
        return has_data_dir if self.persistence is None else self.persistence


def _check_port(port: int, name: str) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise BrokerConfigError(f"{name} must be a port number 0-65535, got {port!r}")


def _check_path(path: Path | None, name: str) -> None:
    # The Mosquitto config format is line based; a newline would smuggle in a directive.
    if path is not None and ("\n" in str(path) or "\r" in str(path)):
        raise BrokerConfigError(f"{name} must not contain a newline: {path!r}")
