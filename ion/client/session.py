"""A short-lived synchronous MQTT session for operator commands (paho-mqtt).

The one module of the ``ion`` package that talks to a broker.  Operator commands connect,
read retained state, publish with QoS 1 and wait for the broker's PUBACK, then disconnect; a
thread-based paho client is the lightest fit (the agent, which runs for months, uses aiomqtt).

Reading retained state has a subtle end: MQTT has no "that was all the retained messages"
marker.  After subscribing we publish to a topic only this client uses and wait for our own
echo; the broker handles one client's packets in order, so every retained message for the
earlier subscription has been delivered by the time the echo arrives.
"""

from __future__ import annotations

import logging
import queue
import secrets
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ion import topics
from ion.config.broker import BrokerConfig
from ion.errors import ConfigError, RefusedError, UnavailableError

log = logging.getLogger(__name__)

# CONNACK reason codes that mean "you may not", as opposed to "not now".
_REFUSALS = {"Bad user name or password", "Not authorized", "Client identifier not valid"}


@dataclass(frozen=True, slots=True)
class RetainedMessage:
    topic: str
    payload: bytes


class OperatorSession:
    """Use through ``connect()``; not thread-safe (one CLI command at a time)."""

    def __init__(self, client: paho.Client, client_id: str, broker: BrokerConfig) -> None:
        self._client = client
        self.client_id = client_id
        self.broker = broker
        self._lock = threading.Lock()
        self._inbox: list[RetainedMessage] = []
        self._probe_seen = threading.Event()
        self._probe_token = b""
        self._suback = threading.Event()
        self._sub_error: str | None = None
        self._live: queue.Queue[RetainedMessage] | None = None  # see ``listen``
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe

    # -- paho callbacks (paho's network thread) --
    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == topics.client_probe(self.client_id):
            if msg.payload == self._probe_token:
                self._probe_seen.set()
            return
        received = RetainedMessage(msg.topic, bytes(msg.payload))
        if self._live is not None:
            self._live.put(received)
            return
        with self._lock:
            self._inbox.append(received)

    def _on_subscribe(
        self, _c: paho.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        failed = [str(c) for c in codes if c.is_failure]
        if failed:
            self._sub_error = ", ".join(failed)
        self._suback.set()

    def read_retained(self, filters: Sequence[str], timeout: float = 10.0) -> list[RetainedMessage]:
        """Every retained message currently stored under ``filters``."""
        probe = topics.client_probe(self.client_id)
        self._live = None  # what arrives now is the retained state asked for
        self._suback.clear()
        self._probe_seen.clear()
        self._sub_error = None
        with self._lock:
            self._inbox.clear()
        rc, _ = self._client.subscribe([(f, 1) for f in (*filters, probe)])
        if rc != paho.MQTT_ERR_SUCCESS:
            raise UnavailableError(f"subscribe failed: {paho.error_string(rc)}")
        if not self._suback.wait(timeout):
            raise UnavailableError(f"broker {self.broker.url} did not answer a subscribe")
        if self._sub_error:
            raise RefusedError(f"broker refused the subscription: {self._sub_error}")
        self._probe_token = secrets.token_bytes(8)
        self._client.publish(probe, self._probe_token, qos=1)
        if not self._probe_seen.wait(timeout):
            raise UnavailableError(f"broker {self.broker.url} did not echo our probe in time")
        self._client.unsubscribe([*filters, probe])
        with self._lock:
            return list(self._inbox)

    def listen(self, filters: Sequence[str], timeout: float = 10.0) -> queue.Queue[RetainedMessage]:
        """Subscribe to ``filters`` (returns after the broker's SUBACK) and hand everything
        that arrives from then on to the queue returned (e.g. the results of commands about
        to be sent)."""
        self._suback.clear()
        self._sub_error = None
        live: queue.Queue[RetainedMessage] = queue.Queue()
        self._live = live
        rc, _ = self._client.subscribe([(f, 1) for f in filters])
        if rc != paho.MQTT_ERR_SUCCESS:
            raise UnavailableError(f"subscribe failed: {paho.error_string(rc)}")
        if not self._suback.wait(timeout):
            raise UnavailableError(f"broker {self.broker.url} did not answer a subscribe")
        if self._sub_error:
            raise RefusedError(f"broker refused the subscription: {self._sub_error}")
        return live

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 10.0
    ) -> None:
        """Publish at QoS 1 and return once the broker has acknowledged it."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise UnavailableError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise UnavailableError(f"publish to {topic} failed: {exc}") from exc
        if not info.is_published():
            raise UnavailableError(
                f"broker {self.broker.url} did not acknowledge the publish within {timeout:g}s"
            )


def _make_client(broker: BrokerConfig, client_id: str) -> paho.Client:
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    client.connect_timeout = broker.connect_timeout_s
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls is not None:
        tls = broker.tls
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_NONE if tls.insecure_skip_verify else ssl.CERT_REQUIRED,
            )
        except (OSError, ssl.SSLError) as exc:  # a missing or unreadable CA, cert or key file
            raise ConfigError(f"broker {broker.url}: TLS files: {exc}") from None
        if tls.insecure_skip_verify:
            client.tls_insecure_set(True)
    return client


@contextmanager
def connect(broker: BrokerConfig, *, client_prefix: str = "ion-cli") -> Iterator[OperatorSession]:
    """Connect, yield a session, and always disconnect.

    Raises ``UnavailableError`` when the broker cannot be reached (retryable) and
    ``RefusedError`` when it refuses us (credentials, certificate): one clear sentence each.
    """
    client_id = f"{client_prefix}-{secrets.token_hex(4)}"
    client = _make_client(broker, client_id)
    connected = threading.Event()
    outcome: list[str] = []

    def on_connect(_c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        outcome.append("ok" if not reason.is_failure else str(reason))
        connected.set()

    def on_disconnect(*_args: object) -> None:
        connected.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(broker.host, broker.port, keepalive=broker.keepalive_s)
    except ssl.SSLError as exc:
        raise RefusedError(f"TLS handshake with {broker.url} failed: {exc.reason or exc}") from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UnavailableError(f"cannot reach broker at {broker.url}: {reason}") from exc
    client.loop_start()
    try:
        if not connected.wait(broker.connect_timeout_s):
            raise UnavailableError(
                f"broker at {broker.url} did not answer within {broker.connect_timeout_s:g}s"
            )
        if not outcome:
            raise UnavailableError(f"broker at {broker.url} closed the connection")
        if outcome[0] != "ok":
            cls = RefusedError if outcome[0] in _REFUSALS else UnavailableError
            raise cls(f"broker at {broker.url} refused the connection: {outcome[0]}")
        log.debug("connected to %s as %s", broker.url, client_id)
        yield OperatorSession(client, client_id, broker)
    finally:
        client.disconnect()
        client.loop_stop()
