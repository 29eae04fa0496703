"""Brokers and a small synchronous MQTT client for tests.

The fixtures in tests/conftest.py are built from these; use the fixtures in tests, and these
classes directly only where a fixture does not fit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.embedded import INSTALL_HINT, EmbeddedBroker, mosquitto_path, start_broker
from broker.settings import BrokerSettings
from support import Artifacts, scaled, unique_name, wait_until

LOG_TAIL_BYTES = 256 * 1024


def require_mosquitto() -> None:
    """Fail (never skip) the test when Mosquitto is missing: integration tests need it."""
    if mosquitto_path() is None:
        pytest.fail(f"Mosquitto is not installed: {INSTALL_HINT}", pytrace=False)


def save_broker_logs(artifacts: Artifacts, name: str, broker: EmbeddedBroker) -> None:
    """Keep the end of a broker's logs beside a failed test's other artefacts."""
    artifacts.save_text(f"{name}.log", broker.log_tail(LOG_TAIL_BYTES))


class BrokerFactory:
    """Starts brokers for one test, each with its own data dir; ``close_all`` stops them."""

    def __init__(self, base_dir: Path) -> None:
        self._base_dir = base_dir
        self.brokers: list[EmbeddedBroker] = []

    def __call__(
        self,
        *,
        kind: Literal["mosquitto", "amqtt"] = "mosquitto",
        port: int = 0,
        data_dir: Path | None = None,
        settings: BrokerSettings | None = None,
    ) -> EmbeddedBroker:
        """Start a broker (Mosquitto unless asked otherwise) on a free loopback port.

        Each gets ``data_dir`` (default: a fresh directory under the test's tmp_path), so a
        Mosquitto started here keeps retained messages and sessions across ``restart()``.
        """
        if kind == "mosquitto":
            require_mosquitto()
        if data_dir is None:
            data_dir = self._base_dir / f"broker-{len(self.brokers)}-{kind}"
        broker = start_broker(
            kind=kind,
            port=port,
            data_dir=data_dir,
            settings=settings if settings is not None else BrokerSettings(),
        )
        self.brokers.append(broker)
        return broker

    def close_all(self) -> None:
        """Stop every broker started here (each is reaped)."""
        while self.brokers:
            self.brokers.pop().close()


@dataclass(frozen=True, slots=True)
class Received:
    """One message a ``MqttTestClient`` received."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttTestClient:
    """A paho client on its own network thread, with blocking helpers for assertions.

    It reconnects by itself (paho's loop) after a lost connection; ``connects`` and
    ``disconnects`` count the transitions so tests can wait for them.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        keepalive: int = 60,
    ) -> None:
        self.client_id = client_id or unique_name("test-client")
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connects = 0
        self.disconnects = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._suback = threading.Condition()
        self._acked_mids: set[int] = set()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    @property
    def paho(self) -> mqtt.Client:
        """The underlying paho client, for what the helpers do not cover."""
        return self._client

    def connect(self, timeout: float = 10.0) -> MqttTestClient:
        """Start the network thread and wait for the first CONNACK."""
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self._client.loop_start()
        self.wait_connected(timeout)
        return self

    def is_connected(self) -> bool:
        """True between a CONNACK and the next disconnect."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Block until connected (fails the test after ``timeout``)."""
        if not self._connected.wait(scaled(timeout)):
            raise AssertionError(f"{self.client_id} not connected to {self.host}:{self.port}")

    def wait_disconnected(self, timeout: float = 10.0) -> None:
        """Block until the connection is lost (fails the test after ``timeout``)."""
        wait_until(lambda: not self.is_connected(), timeout, message="still connected")

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK."""
        _, mid = self._client.subscribe(topic, qos)
        with self._suback:
            if not self._suback.wait_for(lambda: mid in self._acked_mids, scaled(timeout)):
                raise AssertionError(f"no SUBACK for {topic!r}")

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Publish and, for QoS > 0, wait for the broker's acknowledgement."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(scaled(timeout))
        if not info.is_published():
            raise AssertionError(f"publish to {topic!r} not acknowledged (rc {info.rc})")

    def expect(self, timeout: float = 10.0) -> Received:
        """The next message received (fails the test after ``timeout``)."""
        try:
            return self.messages.get(timeout=scaled(timeout))
        except queue.Empty:
            raise AssertionError(f"{self.client_id} received nothing in {timeout}s") from None

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        with self._lock:
            self.connects += 1
        self._connected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, *args: Any) -> None:
        with self._suback:
            self._acked_mids.add(mid)
            self._suback.notify_all()

    def _on_disconnect(self, *args: Any) -> None:
        with self._lock:
            self.disconnects += 1
        self._connected.clear()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))


@contextmanager
def mqtt_client(
    host: str, port: int, *, connect: bool = True, **kwargs: Any
) -> Iterator[MqttTestClient]:
    """A ``MqttTestClient`` that is closed (thread stopped) however the block ends."""
    client = MqttTestClient(host, port, **kwargs)
    try:
        if connect:
            client.connect()
        yield client
    finally:
        client.close()
