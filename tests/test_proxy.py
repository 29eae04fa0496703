"""FaultProxy: bytes flow in order and are counted; cut, blackhole and delay do what they say."""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import aiomqtt
import pytest
from support import scaled, unique_name, wait_until
from support.brokers import mqtt_client
from support.proxy import FaultProxy

from broker.embedded import EmbeddedBroker

ProxyFactory = Callable[[str, int], FaultProxy]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="echo", daemon=True
    )
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=scaled(10))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _connect_and_exchange(proxy: FaultProxy, data: bytes) -> bytes:
    with _connect(proxy) as sock:
        return _exchange(sock, data)


def _exchange(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return _recv_exactly(sock, len(data))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def test_bytes_flow_in_order_and_are_counted(echo_port: int, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory("127.0.0.1", echo_port)
    payload = os.urandom(1024 * 1024 + 7)
    with _connect(proxy) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        echoed = _recv_exactly(sock, len(payload))
        sender.join()
    assert echoed == payload
    wait_until(lambda: proxy.bytes_up == proxy.bytes_down == len(payload))
    wait_until(lambda: proxy.connections == 0)
    assert proxy.accepted == 1


def test_cut_resets_open_connections_and_refuses_new_ones(
    echo_port: int, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory("127.0.0.1", echo_port)
    with _connect(proxy) as sock:
        sock.sendall(b"ping")
        assert _recv_exactly(sock, 4) == b"ping"
        proxy.cut()
        assert proxy.mode == "cut"
        with pytest.raises(OSError):
            _exchange(sock, b"x")
    with pytest.raises(OSError):  # reset at connect, or right after
        _connect_and_exchange(proxy, b"ping")
    proxy.restore()
    with _connect(proxy) as sock:
        sock.sendall(b"back")
        assert _recv_exactly(sock, 4) == b"back"


def test_delay_adds_latency_each_way(echo_port: int, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory("127.0.0.1", echo_port)
    proxy.set_delay(0.15)
    with _connect(proxy) as sock:
        for i in range(3):
            start = time.monotonic()
            sock.sendall(bytes([i]))
            assert _recv_exactly(sock, 1) == bytes([i])
            assert time.monotonic() - start >= 0.3  # 0.15 s up, 0.15 s down
        proxy.set_delay(0)
        sock.sendall(b"!")
        assert _recv_exactly(sock, 1) == b"!"
    with pytest.raises(ValueError):
        proxy.set_delay(-1)


def test_blackhole_holds_bytes_silently_until_restore(
    echo_port: int, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory("127.0.0.1", echo_port)
    with _connect(proxy) as old:
        old.sendall(b"a")
        assert _recv_exactly(old, 1) == b"a"
        proxy.blackhole()
        old.sendall(b"held")
        new = _connect(proxy)  # accepted, but goes nowhere
        with new:
            new.sendall(b"new")
            for sock in (old, new):
                sock.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    sock.recv(10)
                sock.settimeout(scaled(10))
            assert proxy.bytes_up == 1
            proxy.restore()
            assert _recv_exactly(old, 4) == b"held"
            assert _recv_exactly(new, 3) == b"new"


def test_close_stops_listening_and_its_thread(echo_port: int) -> None:
    with FaultProxy("127.0.0.1", echo_port) as proxy:
        sock = _connect(proxy)
        thread_names = {t.name for t in threading.enumerate()}
        assert any(name.startswith("FaultProxy") for name in thread_names)
    with sock, pytest.raises(OSError):
        _exchange(sock, b"x")
    with pytest.raises(OSError):
        socket.create_connection((proxy.host, proxy.port), timeout=2).close()
    assert not any(t.name.startswith("FaultProxy") for t in threading.enumerate())
    proxy.close()  # idempotent


def test_a_dead_target_resets_the_client(proxy_factory: ProxyFactory) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    proxy = proxy_factory("127.0.0.1", dead_port)
    with pytest.raises(OSError):
        _connect_and_exchange(proxy, b"x")


# -- with a real broker and MQTT clients ------------------------------------------------------


@pytest.mark.integration
def test_mqtt_through_the_proxy_survives_a_cut(
    mosquitto: EmbeddedBroker, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(mosquitto.host, mosquitto.port)
    topic = unique_name("via-proxy")
    with (
        mqtt_client(mosquitto.host, mosquitto.port) as direct,
        mqtt_client(proxy.host, proxy.port) as client,
    ):
        direct.subscribe(topic)
        client.publish(topic, b"one")
        assert direct.expect().payload == b"one"
        assert proxy.bytes_up > len(b"one") + len(topic)
        assert proxy.bytes_down >= 4  # CONNACK at least

        proxy.cut()
        client.wait_disconnected()
        assert client.disconnects == 1
        proxy.restore()
        wait_until(lambda: client.connects == 2, 15, message="paho did not reconnect")
        client.publish(topic, b"two")
        assert direct.expect().payload == b"two"


@pytest.mark.integration
def test_mqtt_round_trip_grows_by_twice_the_delay(
    mosquitto: EmbeddedBroker, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(mosquitto.host, mosquitto.port)
    with mqtt_client(proxy.host, proxy.port) as client:
        topic = unique_name("rtt")
        proxy.set_delay(0.2)
        start = time.monotonic()
        client.publish(topic, b"x", qos=1)  # PUBLISH up, PUBACK down
        assert time.monotonic() - start >= 0.4


@pytest.mark.integration
def test_keepalive_notices_a_blackhole(
    mosquitto: EmbeddedBroker, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(mosquitto.host, mosquitto.port)
    with mqtt_client(proxy.host, proxy.port, keepalive=1) as client:
        proxy.blackhole()
        client.wait_disconnected(timeout=15)
        proxy.restore()
        wait_until(lambda: client.connects >= 2, 15, message="paho did not reconnect")


@pytest.mark.integration
@pytest.mark.asyncio
async def test_asyncio_clients_work_through_the_proxy(
    mosquitto: EmbeddedBroker, proxy_factory: ProxyFactory
) -> None:
    proxy = proxy_factory(mosquitto.host, mosquitto.port)
    topic = unique_name("aio")
    async with (
        aiomqtt.Client(proxy.host, proxy.port, identifier=unique_name("sub")) as sub,
        aiomqtt.Client(proxy.host, proxy.port, identifier=unique_name("pub")) as pub,
    ):
        await sub.subscribe(topic, qos=1)
        await pub.publish(topic, b"hello", qos=1)
        async for message in sub.messages:
            assert message.payload == b"hello"
            break
    assert proxy.bytes_up > 0
