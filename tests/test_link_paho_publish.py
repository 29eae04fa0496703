"""The link's PUBLISH decoding gives what paho's own gives, and the same errors."""

from __future__ import annotations

import random

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
