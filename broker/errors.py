"""Errors of the ``broker`` package, sorted by who is at fault (see ``ion.errors``).

A broker that will not start is an outside system that is not there: ``BrokerStartError`` is an
``UnavailableError`` (retrying later, or on another port, may work).  A broker that is not
installed, or settings the chosen broker cannot honour, are the operator's to fix:
``BrokerConfigError`` is a ``ConfigError``.
"""

from __future__ import annotations

from ion.errors import ConfigError, UnavailableError


class BrokerStartError(UnavailableError):
    """The broker process did not come up (it exited, or never answered an MQTT CONNECT).

    ``log_tail`` holds the last lines the broker wrote, for the error report.
    """

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        self.log_tail = log_tail
        full = f"{message}\n--- broker log (tail) ---\n{log_tail.rstrip()}" if log_tail else message
        super().__init__(full)
        self.summary = message


class PortInUseError(BrokerStartError):
    """The requested listener address is already taken by another process."""

    def __init__(self, host: str, port: int, *, log_tail: str = "") -> None:
        self.host = host
        self.port = port
        super().__init__(f"port {port} on {host} is already in use", log_tail=log_tail)


class BrokerConfigError(ConfigError):
    """The requested broker kind or settings cannot be used on this machine."""
