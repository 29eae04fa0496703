"""Is an MQTT broker answering?  One CONNECT, one CONNACK, one DISCONNECT over a plain socket.

A listening TCP port is not enough: a broker may accept connections before it serves them (or a
different program may own the port).  Any CONNACK proves an MQTT broker is there; its return code
(0 accepted, 4 bad credentials, 5 not authorised, ...) is for the caller to judge.  Written by
hand so the readiness check needs no client library and starts no threads.
"""

from __future__ import annotations

import os
import socket

CONNACK_ACCEPTED = 0


class ProbeError(OSError):
    """Something answered, but not with an MQTT CONNACK."""


def mqtt_probe(host: str, port: int, *, timeout: float = 2.0) -> int:
    """Connect, read the CONNACK and disconnect; return the CONNACK return code.

    Raises ``OSError`` (``ProbeError`` included) when no MQTT broker answers in ``timeout``.
    """
    client_id = f"ion-probe-{os.urandom(4).hex()}"
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(_connect_packet(client_id))
        reply = _recv_exactly(sock, 4)
        if reply[0] != 0x20 or reply[1] != 0x02:
            raise ProbeError(f"not an MQTT CONNACK from {host}:{port}: {reply!r}")
        code = reply[3]
        if code == CONNACK_ACCEPTED:
            sock.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye
        return code


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    variable = (
        b"\x00\x04MQTT"  # protocol name
        + b"\x04"  # protocol level 4 = MQTT 3.1.1
        + b"\x02"  # flags: clean session, no will, no credentials
        + (10).to_bytes(2, "big")  # keep alive, seconds
    )
    payload = len(cid).to_bytes(2, "big") + cid
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)
