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

Reading: paho's ``Client._packet_read`` also receives every packet into a ``bytearray``
(``packet += data``: the payload copied once more, and the array reallocated as it grows),
from which the payload is then copied out.  ``packet_read`` (installed in its place with
``install``, for paho 2.x) reads a PUBLISH of MQTT 3.1/3.1.1 in two parts: its variable header
(topic and packet id, a few dozen bytes) and then its payload, received as its own ``bytes``.
A payload that comes in one ``recv`` (a 256 KiB model chunk, nearly always, once the socket
holds it) is then the very object the kernel filled, and ``decode_publish`` takes it as it is:
one copy of a chunk on its way in instead of three.  Everything else (other packets, MQTT 5,
a PUBLISH too short for its own header) is read as paho reads it.  Measured in a 20-node
rollout: see docs/benchmarks.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from paho.mqtt import _packet
from paho.mqtt import client as _client
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

log = logging.getLogger(__name__)

# paho's own, taken before ``install`` replaces it (MQTT 5 packets still go to it).
_original: Callable[..., Any] | None = getattr(_packet, "decode_publish", None)
_original_read: Callable[..., Any] | None = getattr(_client.Client, "_packet_read", None)

_PUBLISH = 0x30
_MQTT5 = MQTTProtocolVersion.MQTTv5


class SplitPublish:
    """A PUBLISH read by ``packet_read``: its variable header (topic length, topic and, with
    QoS > 0, packet id) and its payload, apart."""

    __slots__ = ("head", "payload")

    def __init__(self, head: bytes, payload: bytes) -> None:
        self.head = head
        self.payload = payload


def decode_publish(
    header: int, packet: bytes | bytearray | SplitPublish, protocol: MQTTProtocolVersion
) -> _packet.PublishPacket:
    """``paho.mqtt._packet.decode_publish`` with one copy of the payload (see above)."""
    if protocol == MQTTProtocolVersion.MQTTv5:
        assert _original is not None
        result: _packet.PublishPacket = _original(header, packet, protocol)
        return result
    qos = (header & 0x06) >> 1
    if isinstance(packet, SplitPublish):
        topic_end = 2 + int.from_bytes(packet.head[:2], "big")
        if topic_end == 2:
            raise MalformedPacket("topic can't be empty in MQTTv3")
        mid = int.from_bytes(packet.head[topic_end : topic_end + 2], "big") if qos > 0 else 0
        return _packet.PublishPacket(
            dup=((header & 0x08) >> 3) != 0,
            qos=qos,
            retain=(header & 0x01) != 0,
            topic=packet.head[2:topic_end],
            mid=mid,
            properties=None,
            payload=packet.payload,
        )
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
    """Use ``decode_publish`` and ``packet_read`` for every paho client in this process;
    False (and paho's own reading and decoding) when this paho has no such functions to
    replace."""
    current = getattr(_packet, "decode_publish", None)
    if current is decode_publish:
        return True
    if current is None or current is not _original or not hasattr(_packet, "PublishPacket"):
        log.info("paho-mqtt without _packet.decode_publish: its own PUBLISH decoding is used")
        return False
    _packet.decode_publish = decode_publish
    if _original_read is not None and _paho_2():
        _client.Client._packet_read = packet_read  # type: ignore[method-assign]
    return True


def _paho_2() -> bool:
    from paho.mqtt import __version__

    return __version__.startswith("2.")


# -- reading -------------------------------------------------------------------------------------
# Adapted from paho-mqtt 2.2's ``Client._packet_read`` (EPL-2.0 / EDL-1.0): the same steps, the
# same results and errors, and the same ``_in_packet`` state between calls (``ion_head`` and
# ``ion_pieces`` are this module's), except that a PUBLISH of MQTT 3.x is read in two parts.


def _recv(client: Any, size: int) -> bytes | MQTTErrorCode:
    """``size`` bytes at most, or the code to return: AGAIN, or CONN_LOST (logged)."""
    try:
        data: bytes = client._sock_recv(size)
    except BlockingIOError:
        return MQTTErrorCode.MQTT_ERR_AGAIN
    except OSError as err:
        client._easy_log(_client.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
        return MQTTErrorCode.MQTT_ERR_CONN_LOST
    if not data:
        return MQTTErrorCode.MQTT_ERR_CONN_LOST
    return data


def packet_read(self: Any) -> MQTTErrorCode:
    """``paho.mqtt.client.Client._packet_read``, reading a PUBLISH's payload apart (see the
    module docstring)."""
    inp = self._in_packet
    if inp["command"] == 0:
        data = _recv(self, 1)
        if isinstance(data, MQTTErrorCode):
            return data
        inp["command"] = data[0]

    if inp["have_remaining"] == 0:
        while True:
            data = _recv(self, 1)
            if isinstance(data, MQTTErrorCode):
                return data
            byte = data[0]
            inp["remaining_count"].append(byte)
            if len(inp["remaining_count"]) > 4:
                return MQTTErrorCode.MQTT_ERR_PROTOCOL
            inp["remaining_length"] += (byte & 127) * inp["remaining_mult"]
            inp["remaining_mult"] = inp["remaining_mult"] * 128
            if (byte & 128) == 0:
                break
        inp["have_remaining"] = 1
        inp["to_process"] = inp["remaining_length"]

    if (inp["command"] & 0xF0) == _PUBLISH and self._protocol != _MQTT5 and "plain" not in inp:
        rc = _read_publish(self, inp)
    else:
        rc = _read_plain(self, inp)
    if rc is not None:
        return rc

    # All of the packet is read.
    inp["pos"] = 0
    try:
        rc = self._packet_handle()
    except MalformedPacket as exc:
        self._easy_log(_client.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
        rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
    self._in_packet = {
        "command": 0,
        "have_remaining": 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": 0,
        "packet": bytearray(b""),
        "to_process": 0,
        "pos": 0,
    }
    with self._msgtime_mutex:
        self._last_bytes_received = _client.time_func()
    result: MQTTErrorCode = rc
    return result


def _read_plain(client: Any, inp: dict[str, Any]) -> MQTTErrorCode | None:
    """paho's way: the rest of the packet into ``inp["packet"]``; None once it is complete."""
    count = 100  # don't get stuck in this loop on a huge message
    while inp["to_process"] > 0:
        data = _recv(client, inp["to_process"])
        if isinstance(data, MQTTErrorCode):
            return data
        inp["to_process"] -= len(data)
        inp["packet"] += data
        with client._msgtime_mutex:
            client._last_bytes_received = _client.time_func()
        count -= 1
        if count == 0:
            return MQTTErrorCode.MQTT_ERR_AGAIN
    return None


def _read_publish(client: Any, inp: dict[str, Any]) -> MQTTErrorCode | None:
    """The variable header, then the payload as its own ``bytes``; a packet too short for its
    own header goes on paho's way (and ``decode_publish`` says what is wrong with it)."""
    head: bytearray = inp.setdefault("ion_head", bytearray())
    qos = (inp["command"] & 0x06) >> 1
    count = 100
    while True:
        need = 2 if len(head) < 2 else 2 + int.from_bytes(head[:2], "big") + (2 if qos else 0)
        if need > inp["remaining_length"]:
            inp["plain"] = True
            inp["packet"] = bytearray(head)
            return _read_plain(client, inp)
        if len(head) >= need:
            break
        data = _recv(client, need - len(head))
        if isinstance(data, MQTTErrorCode):
            return data
        head += data
        inp["to_process"] -= len(data)
        count -= 1
        if count == 0:
            return MQTTErrorCode.MQTT_ERR_AGAIN
    pieces: list[bytes] = inp.setdefault("ion_pieces", [])
    while inp["to_process"] > 0:
        data = _recv(client, inp["to_process"])
        if isinstance(data, MQTTErrorCode):
            return data
        pieces.append(data)
        inp["to_process"] -= len(data)
        with client._msgtime_mutex:
            client._last_bytes_received = _client.time_func()
        count -= 1
        if count == 0:
            return MQTTErrorCode.MQTT_ERR_AGAIN
    payload = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    inp["packet"] = SplitPublish(bytes(head), payload)
    return None
