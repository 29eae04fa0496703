"""The link's PUBLISH decoding and reading give what paho's own give, and the same errors."""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

import node.link.aiomqtt_link  # noqa: F401 - installs the decoder
from node.link import paho_publish

V311 = MQTTProtocolVersion.MQTTv311


def packet(topic: bytes, payload: bytes, qos: int, mid: int = 7) -> bytes:
    head = len(topic).to_bytes(2, "big") + topic
    return head + (mid.to_bytes(2, "big") if qos else b"") + payload


def test_it_is_the_one_paho_uses() -> None:
    assert _packet.decode_publish is paho_publish.decode_publish


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_same_fields_as_paho(qos: int) -> None:
    rng = random.Random(qos)
    original = paho_publish._original
    assert original is not None
    for size in (0, 1, 100, 256 * 1024):
        for header in (0x30 | qos << 1, 0x30 | qos << 1 | 0x09):
            data = packet(b"ion/v1/x/" + bytes([97 + rng.randrange(26)]), rng.randbytes(size), qos)
            for buf in (data, bytearray(data)):
                assert paho_publish.decode_publish(header, buf, V311) == original(header, buf, V311)


@pytest.mark.parametrize(
    ("data", "qos"),
    [(b"", 0), (b"\x00", 0), (b"\x00\x05abc", 0), (b"\x00\x00payload", 0), (b"\x00\x01a\x00", 1)],
)
def test_malformed_packets_are_refused_as_paho_refuses_them(data: bytes, qos: int) -> None:
    original = paho_publish._original
    assert original is not None
    header = 0x30 | qos << 1
    with pytest.raises(MalformedPacket):
        original(header, data, V311)
    with pytest.raises(MalformedPacket):
        paho_publish.decode_publish(header, data, V311)


# -- reading: the same messages and results as paho's own reader, over a real socket ----------


def publish(topic: bytes, payload: bytes, qos: int, mid: int = 5) -> bytes:
    body = packet(topic, payload, qos, mid)
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (128 if n else 0))
        if not n:
            return bytes([0x30 | qos << 1]) + bytes(length) + body


def connected_pair(kind: str) -> tuple[socket.socket, socket.socket]:
    if kind == "unix":
        return socket.socketpair()
    with socket.create_server(("127.0.0.1", 0)) as server:
        theirs = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
        return ours, theirs


def read_all(
    reader: Any, stream: bytes, pieces: list[int], kind: str = "tcp", pause: float = 0.0002
) -> tuple[list[tuple[Any, ...]], int]:
    """Feed ``stream`` in ``pieces`` through a connected pair of sockets (TCP on loopback,
    or a Unix socket pair) to a paho client reading with ``reader``: the messages it
    delivers, and how the reading ended."""
    ours, theirs = connected_pair(kind)
    ours.setblocking(False)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    got: list[tuple[Any, ...]] = []
    client.on_message = lambda c, u, m: got.append(
        (m.topic, m.qos, m.retain, m.mid, bytes(m.payload))
    )
    client._sock = ours

    def feed() -> None:
        pos = 0
        for n in pieces:
            theirs.sendall(stream[pos : pos + n])
            pos += n
            time.sleep(pause)
        theirs.shutdown(socket.SHUT_WR)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        while True:
            select.select([ours], [], [], 1)
            rc = reader(client)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                return got, int(rc)
    finally:
        feeder.join()
        ours.close()
        theirs.close()


def test_the_reader_is_the_one_paho_uses() -> None:
    assert mqtt.Client._packet_read is paho_publish.packet_read


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.parametrize("seed", range(3))
def test_reading_in_any_fragments_gives_what_paho_gives(seed: int, kind: str) -> None:
    rng = random.Random(seed)
    sizes = [0, 1, 100, 70_000, 256 * 1024]
    stream = b"".join(
        publish(b"ion/v1/" + bytes([97 + i % 26]), rng.randbytes(rng.choice(sizes)), i % 3, i + 1)
        for i in range(24)
    )
    stream += b"\xd0\x00"  # a PINGRESP between them
    stream += publish(b"ion/v1/last", rng.randbytes(1000), 1, 99)
    pieces, left = [], len(stream)
    while left:
        n = min(left, rng.choice([1, 2, 3, 7, 1000, 65_536, 300_000]))
        pieces.append(n)
        left -= n
    original = paho_publish._original_read
    ours = read_all(paho_publish.packet_read, stream, pieces, kind)
    assert ours == read_all(original, stream, pieces, kind)
    assert len(ours[0]) == 17  # QoS 2 messages wait for a PUBREL
    assert ours[1] == mqtt.MQTT_ERR_CONN_LOST  # the end of the stream


@pytest.mark.parametrize(
    "bad",
    [
        b"\x30\x01\x00",  # too short for its topic length
        b"\x30\x02\x00\x00",  # an empty topic
        b"\x30\x04\x00\x05ab",  # a topic longer than the packet
        b"\x32\x04\x00\x02ab",  # QoS 1 without room for its packet id
        b"\x30\x80\x80\x80\x80\x01",  # a remaining length of five bytes
    ],
)
def test_malformed_publishes_end_the_reading_as_with_paho(bad: bytes) -> None:
    stream = publish(b"ion/v1/a", b"ok", 1) + bad + publish(b"ion/v1/b", b"never", 0)
    for pieces in ([len(stream)], [1] * len(stream)):
        ours = read_all(paho_publish.packet_read, stream, pieces)
        assert ours == read_all(paho_publish._original_read, stream, pieces)
        assert ours[0][:1] == [("ion/v1/a", 1, False, 5, b"ok")]
        assert ours[1] == mqtt.MQTT_ERR_PROTOCOL
