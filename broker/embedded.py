"""An MQTT broker in a child process, for one-machine use and for tests.

``start_broker()`` runs Mosquitto when it is installed, else the pure-Python amqtt broker (in a
child ``python -m broker.amqtt_runner``, so both kinds stop, crash and restart the same way).
It returns once the broker answers an MQTT CONNECT, not merely once its port is open::

    with start_broker(data_dir=path) as b:
        connect(b.host, b.port)
        b.restart()              # same port; retained messages and sessions kept (Mosquitto)
        b.restart(crash=True)    # SIGKILL: only what the last autosave wrote survives

Files live in ``data_dir`` (or a private temp dir, removed on ``close``): the generated config,
``broker.log`` (the broker's own log) and ``console.log`` (its stdout and stderr).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import sys
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Literal

from broker.errors import BrokerConfigError, BrokerStartError, PortInUseError
from broker.mosquitto_conf import MosquittoLayout, render_mosquitto_conf
from broker.probe import mqtt_probe
from broker.process import ChildProcess, read_tail
from broker.settings import BrokerSettings

log = logging.getLogger(__name__)

Kind = Literal["auto", "mosquitto", "amqtt"]
RunningKind = Literal["mosquitto", "amqtt"]

# Where Debian, Homebrew and source installs put the binary; sbin is often not on a user's PATH.
_MOSQUITTO_CANDIDATES = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
    "/usr/local/opt/mosquitto/sbin/mosquitto",
)
MOSQUITTO_ENV = "ION_MOSQUITTO"
INSTALL_HINT = (
    "install Mosquitto (Debian/Ubuntu: apt-get install mosquitto; or run ./dev setup), "
    f"or point {MOSQUITTO_ENV} at the binary"
)
_READY_POLL = 0.05
_AUTO_PORT_ATTEMPTS = 3


def mosquitto_path() -> Path | None:
    """The Mosquitto binary: ``$ION_MOSQUITTO``, then PATH, then the usual sbin places."""
    override = os.environ.get(MOSQUITTO_ENV)
    if override:
        path = Path(override)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for candidate in _MOSQUITTO_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def amqtt_available() -> bool:
    """Is the pure-Python fallback broker importable?"""
    return importlib.util.find_spec("amqtt") is not None


def resolve_kind(kind: Kind) -> RunningKind:
    """Turn "auto" into a concrete kind, or fail with what to install."""
    if kind == "mosquitto" or (kind == "auto" and mosquitto_path() is not None):
        if mosquitto_path() is None:
            raise BrokerConfigError(f"Mosquitto is not installed: {INSTALL_HINT}")
        return "mosquitto"
    if kind not in ("auto", "amqtt"):
        raise BrokerConfigError(f"unknown broker kind {kind!r} (auto, mosquitto or amqtt)")
    if not amqtt_available():
        raise BrokerConfigError(
            f"no MQTT broker available: {INSTALL_HINT}; or pip install 'ion-runtime[broker]'"
        )
    return "amqtt"


def start_broker(
    *,
    kind: Kind = "auto",
    host: str = "127.0.0.1",
    port: int = 0,
    data_dir: Path | None = None,
    settings: BrokerSettings = BrokerSettings(),  # noqa: B008 - frozen, shared safely
    startup_timeout: float = 20.0,
) -> EmbeddedBroker:
    """Start a broker and return it once it answers MQTT; port 0 picks a free port.

    Raises ``BrokerConfigError`` (nothing to run, or settings the kind cannot honour),
    ``PortInUseError`` or ``BrokerStartError`` (with the broker's log tail).
    """
    broker = EmbeddedBroker(
        kind=resolve_kind(kind),
        host=host,
        port=port,
        data_dir=data_dir,
        settings=settings,
        startup_timeout=startup_timeout,
    )
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    return broker


class EmbeddedBroker:
    """One broker child process, restartable on the same port.  Not thread-safe."""

    def __init__(
        self,
        *,
        kind: RunningKind,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | None = None,
        settings: BrokerSettings = BrokerSettings(),  # noqa: B008 - frozen, shared safely
        startup_timeout: float = 20.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise BrokerConfigError(f"port must be 0-65535, got {port}")
        self.kind: RunningKind = kind
        self.host = host
        self.settings = settings
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self._port: int | None = None
        self._tls_port: int | None = None
        self._child: ChildProcess | None = None
        self._cleanup: weakref.finalize[..., EmbeddedBroker] | None = None
        if data_dir is None:
            tmp = tempfile.mkdtemp(prefix=f"ion-{kind}-")
            self.data_dir = Path(tmp)
            self._cleanup = weakref.finalize(self, shutil.rmtree, tmp, ignore_errors=True)
        else:
            self.data_dir = data_dir.resolve()
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.persistent = settings.wants_persistence(has_data_dir=data_dir is not None)
        if kind == "amqtt":
            self._check_amqtt_settings()
        self.log_path = self.data_dir / "broker.log"
        self.console_path = self.data_dir / "console.log"

    # -- what clients need ---------------------------------------------------------------

    @property
    def port(self) -> int:
        """The MQTT port (fixed at first start; kept across restarts)."""
        if self._port is None:
            raise RuntimeError("the broker has not been started yet")
        return self._port

    @property
    def tls_port(self) -> int | None:
        """The TLS listener's port, when ``settings.tls`` asked for one."""
        return self._tls_port

    @property
    def connect_host(self) -> str:
        """Where a local client connects (a wildcard bind address means loopback)."""
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
        return wildcard.get(self.host, self.host)

    @property
    def url(self) -> str:
        """``mqtt://host:port`` for local clients."""
        host = self.connect_host
        return f"mqtt://[{host}]:{self.port}" if ":" in host else f"mqtt://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process id while it runs."""
        return self._child.pid if self._child is not None and self._child.alive() else None

    def is_running(self) -> bool:
        """True while the broker process exists (a frozen broker still counts)."""
        return self._child is not None and self._child.alive()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the process and wait until it answers an MQTT CONNECT."""
        if self.is_running():
            return
        self._reap_dead_child()
        attempts = _AUTO_PORT_ATTEMPTS if self._port is None and self._requested_port == 0 else 1
        for attempt in range(attempts):
            if self._port is None:
                self._port = self._requested_port or _free_port(self.host)
            if self._tls_port is None and self.settings.tls is not None:
                self._tls_port = self.settings.tls.port or _free_port(self.host)
            try:
                self._start_once()
            except PortInUseError:
                if attempt + 1 == attempts:
                    raise
                log.info("port %d was taken before %s bound it; trying another", self._port, self)
                self._port = None
                self._tls_port = None
            else:
                return

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, up to ``grace`` seconds, then SIGKILL; the process is always reaped."""
        child, self._child = self._child, None
        if child is not None:
            code = child.stop(grace)
            log.info("%s (pid %d) stopped, exit status %d", self, child.pid, code)

    def kill(self) -> None:
        """SIGKILL the broker: a crash, so Mosquitto saves nothing beyond its last autosave."""
        child, self._child = self._child, None
        if child is not None:
            child.kill()
            log.info("%s (pid %d) killed", self, child.pid)

    def restart(self, *, crash: bool = False, grace: float = 5.0) -> None:
        """Stop (or with ``crash`` kill) and start again on the same port."""
        if crash:
            self.kill()
        else:
            self.stop(grace)
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the broker: connections stay open but nothing is answered (a hung broker)."""
        if self._child is not None:
            self._child.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen broker."""
        if self._child is not None:
            self._child.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop the broker and remove its temp dir (a given ``data_dir`` is kept)."""
        self.stop()
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self, max_bytes: int = 8192) -> str:
        """The end of the broker's log (and of its console output, when there is any)."""
        return _join_tails(
            read_tail(self.log_path, max_bytes), read_tail(self.console_path, max_bytes // 4)
        )

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port is not None else self.host
        return f"<EmbeddedBroker {self.kind} {where}>"

    # -- internals -------------------------------------------------------------------------

    def _start_once(self) -> None:
        port = self.port
        self.data_dir.mkdir(parents=True, exist_ok=True)  # again: close() removes a temp dir
        if _port_taken(self.host, port):
            raise PortInUseError(self.host, port)
        log_mark = _size(self.log_path)
        console_mark = _size(self.console_path)
        argv = self._argv(port)
        child = ChildProcess(argv, console_log=self.console_path, cwd=self.data_dir)
        self._child = child
        deadline = time.monotonic() + self.startup_timeout
        # Short first probes notice a child that died at once; longer ones suit a loaded host.
        probe_timeout = 0.25
        while True:
            if not child.alive():
                code = child.stop()
                self._child = None
                tail = _join_tails(
                    read_tail(self.log_path, since=log_mark),
                    read_tail(self.console_path, since=console_mark),
                )
                # Both Mosquitto and broker.amqtt_runner say it in these words.
                if "Address already in use" in tail:
                    raise PortInUseError(self.host, port, log_tail=tail)
                raise BrokerStartError(
                    f"{self.kind} exited with status {code} while starting on {self.host}:{port}",
                    log_tail=tail,
                )
            remaining = deadline - time.monotonic()
            try:
                mqtt_probe(self.connect_host, port, timeout=max(0.1, min(probe_timeout, remaining)))
            except OSError:
                probe_timeout = min(probe_timeout * 2, 2.0)
                if remaining <= 0:
                    self.stop()
                    raise BrokerStartError(
                        f"{self.kind} did not answer an MQTT CONNECT on {self.host}:{port} "
                        f"within {self.startup_timeout:.0f}s",
                        log_tail=_join_tails(
                            read_tail(self.log_path, since=log_mark),
                            read_tail(self.console_path, since=console_mark),
                        ),
                    ) from None
                time.sleep(_READY_POLL)
            else:
                log.info("%s (pid %d) ready at %s", self, child.pid, self.url)
                return

    def _argv(self, port: int) -> list[str]:
        if self.kind == "amqtt":
            return [
                sys.executable,
                "-m",
                "broker.amqtt_runner",
                "--host",
                self.host,
                "--port",
                str(port),
                "--log-file",
                str(self.log_path),
            ]
        binary = mosquitto_path()
        if binary is None:
            raise BrokerConfigError(f"Mosquitto is not installed: {INSTALL_HINT}")
        layout = MosquittoLayout(
            host=self.host,
            port=port,
            log_file=self.log_path,
            persistence_dir=self.data_dir if self.persistent else None,
            tls_port=self._tls_port,
            run_as_user=pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None,
        )
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(render_mosquitto_conf(layout, self.settings))
        return [str(binary), "-c", str(conf)]

    def _check_amqtt_settings(self) -> None:
        s = self.settings
        unsupported = [
            name
            for name, value in (
                ("password_file", s.password_file),
                ("acl_file", s.acl_file),
                ("tls", s.tls),
            )
            if value is not None
        ]
        if s.persistence:
            unsupported.append("persistence")
        if unsupported:
            raise BrokerConfigError(
                f"the amqtt broker does not support {', '.join(unsupported)}: {INSTALL_HINT}"
            )
        if self.persistent:
            log.info("amqtt keeps nothing across restarts; %s holds its logs only", self.data_dir)
            self.persistent = False

    def _reap_dead_child(self) -> None:
        if self._child is not None and not self._child.alive():
            code = self._child.stop()
            log.warning("%s had exited by itself (status %d)", self, code)
            self._child = None


def _free_port(host: str) -> int:
    """A port nobody listens on now (the broker binds it a moment later; start() retries)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _port_taken(host: str, port: int) -> bool:
    """Would a broker's bind fail?  Binds as brokers do (SO_REUSEADDR), so TIME_WAIT is fine."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise BrokerConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return False


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _size(path: Path) -> int:
    with contextlib.suppress(OSError):
        return path.stat().st_size
    return 0


def _join_tails(log_tail: str, console_tail: str) -> str:
    if not console_tail.strip():
        return log_tail
    return f"{log_tail.rstrip()}\n--- console ---\n{console_tail}".lstrip("\n")
