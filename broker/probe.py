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
        sock.sendall(connect_packet(client_id))
        reply = recv_exactly(sock, 4)
        if reply[0] != 0x20 or reply[1] != 0x02:
            raise ProbeError(f"not an MQTT CONNACK from {host}:{port}: {reply!r}")
        code = reply[3]
        if code == CONNACK_ACCEPTED:
            sock.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye
        return code


def connect_packet(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    keepalive_s: int = 10,
) -> bytes:
    """An MQTT 3.1.1 CONNECT: clean session, no will, the credentials when given."""
    flags = 0x02  # clean session
    payload = _string(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _string(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _string(password.encode())
    variable = _string(b"MQTT") + bytes([4, flags]) + keepalive_s.to_bytes(2, "big")
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes, or ``ProbeError`` saying how many came before the connection closed."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)
