"""paho's PUBLISH decoding without copying the payload three times.

paho-mqtt 2.2's ``_packet.decode_publish`` splits an incoming PUBLISH with three
``struct.unpack("!H<n>s", ...)`` calls (topic length, topic, packet id), and each ``<n>s``
copies the whole rest of the packet into a new ``bytes``.  For a 256 KiB model chunk that is
three fresh 256 KiB allocations (glibc serves them from new ``mmap``s, whose pages fault in on
first touch): measured in a 20-node rollout, ``struct.unpack`` was the largest CPU cost of a
consumer process, ahead of hashing every chunk (bench/model_rollout.py, cProfile).

``decode_publish`` below reads the same fields from a ``memoryview`` and copies the payload
once.  Same result and same errors (``MalformedPacket``) for MQTT 3.1.1; MQTT 5 packets go to
paho's own function (their properties need its parser).  ``install`` puts it in place of
paho's for every paho client in the process (paho looks the function up on its module at
each call); it checks that paho still has the function it replaces, and does nothing when a
different paho is installed (then paho's own decoding runs, only slower).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

log = logging.getLogger(__name__)

# paho's own, taken before ``install`` replaces it (MQTT 5 packets still go to it).
_original: Callable[..., Any] | None = getattr(_packet, "decode_publish", None)


def decode_publish(
    header: int, packet: bytes | bytearray, protocol: MQTTProtocolVersion
) -> _packet.PublishPacket:
    """``paho.mqtt._packet.decode_publish`` with one copy of the payload (see above)."""
    if protocol == MQTTProtocolVersion.MQTTv5:
        assert _original is not None
        result: _packet.PublishPacket = _original(header, packet, protocol)
        return result
    qos = (header & 0x06) >> 1
    view = memoryview(packet)
    if len(view) < 2:
        raise MalformedPacket("PUBLISH too short for its topic length")
    topic_end = 2 + int.from_bytes(view[:2], "big")
    if len(view) < topic_end:
        raise MalformedPacket("PUBLISH shorter than its topic")
    if topic_end == 2:
        raise MalformedPacket("topic can't be empty in MQTTv3")
    topic = bytes(view[2:topic_end])
    mid = 0
    start = topic_end
    if qos > 0:
        if len(view) < topic_end + 2:
            raise MalformedPacket("PUBLISH too short for its packet id")
        mid = int.from_bytes(view[topic_end : topic_end + 2], "big")
        start += 2
    return _packet.PublishPacket(
        dup=((header & 0x08) >> 3) != 0,
        qos=qos,
        retain=(header & 0x01) != 0,
        topic=topic,
        mid=mid,
        properties=None,
        payload=bytes(view[start:]),
    )


def install() -> bool:
    """Use ``decode_publish`` for every paho client in this process; False (and paho's own
    decoding) when this paho has no such function to replace."""
    current = getattr(_packet, "decode_publish", None)
    if current is decode_publish:
        return True
    if current is None or current is not _original or not hasattr(_packet, "PublishPacket"):
        log.info("paho-mqtt without _packet.decode_publish: its own PUBLISH decoding is used")
        return False
    _packet.decode_publish = decode_publish
    return True
