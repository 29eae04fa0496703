"""The I/O behind ``ion check``: a TCP connect, a TLS handshake, one hand-written MQTT CONNECT,
and a read-only look at a node's outbox.  Each returns plain facts (frozen values) or raises
``ProbeFailed`` with what went wrong; judging the facts is ``node.check``'s job.

Written against raw sockets rather than an MQTT client library so each step can fail on its own
and be named: "nothing listens", "the TLS handshake failed", "something answered but not with
MQTT", "the broker said no to these credentials" are four different fixes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from broker.probe import ProbeError, connect_packet, recv_exactly
from ion.config.broker import BrokerConfig


class ProbeFailed(Exception):  # noqa: N818 - a failed probe is an outcome, reported as FAIL
    """One probe step failed; ``str()`` says what happened, in one line."""


@dataclass(frozen=True, slots=True)
class TlsFacts:
    version: str
    subject: str
    issuer: str
    not_after_s: float  # Unix seconds


@dataclass(frozen=True, slots=True)
class OutboxClassFacts:
    traffic_class: str
    depth: int
    bytes: int
    in_flight: int
    oldest_created_ms: int | None


CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised (Mosquitto also says this for a wrong password)",
}


def tcp_connect(host: str, port: int, timeout: float) -> tuple[socket.socket, float]:
    """A connected socket and the milliseconds it took."""
    start = time.perf_counter()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise ProbeFailed(f"cannot resolve host {host!r}: {exc.strerror or exc}") from exc
    except TimeoutError as exc:
        raise ProbeFailed(f"no answer from {host}:{port} within {timeout:g}s") from exc
    except OSError as exc:
        raise ProbeFailed(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    return sock, (time.perf_counter() - start) * 1000


def tls_handshake(
    sock: socket.socket, host: str, context: ssl.SSLContext, timeout: float
) -> tuple[ssl.SSLSocket, TlsFacts]:
    """Wrap ``sock`` and complete the handshake; ``ProbeFailed`` says why not (the original
    ``ssl`` error is its ``__cause__``)."""
    sock.settimeout(timeout)
    try:
        tls = context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise ProbeFailed(
            f"the broker's certificate is not trusted: {exc.verify_message or exc.reason}"
        ) from exc
    except ssl.SSLError as exc:
        sock.close()
        raise ProbeFailed(f"TLS handshake failed: {exc.reason or exc}") from exc
    except TimeoutError as exc:
        sock.close()
        raise ProbeFailed(f"TLS handshake timed out after {timeout:g}s") from exc
    except OSError as exc:
        sock.close()
        raise ProbeFailed(f"TLS handshake failed: {exc.strerror or exc}") from exc
    cert = tls.getpeercert() or {}
    not_after = cert.get("notAfter")
    return tls, TlsFacts(
        version=tls.version() or "?",
        subject=_name(cert.get("subject", ())),
        issuer=_name(cert.get("issuer", ())),
        not_after_s=ssl.cert_time_to_seconds(str(not_after)) if not_after else 0.0,
    )


def _name(rdns: object) -> str:
    """``CN=broker, O=...`` from the nested tuples ``getpeercert`` returns."""
    parts = []
    if isinstance(rdns, tuple):
        for rdn in rdns:
            for pair in rdn if isinstance(rdn, tuple) else ():
                if isinstance(pair, tuple) and len(pair) == 2:
                    key = {"commonName": "CN", "organizationName": "O"}.get(pair[0], pair[0])
                    parts.append(f"{key}={pair[1]}")
    return ", ".join(parts) or "?"


def mqtt_connect(
    sock: socket.socket, broker: BrokerConfig, client_id: str, timeout: float
) -> tuple[int, float]:
    """Send CONNECT (MQTT 3.1.1, clean session, the broker's credentials) and read the
    CONNACK: its return code and the milliseconds it took.  Disconnects politely on success."""
    sock.settimeout(timeout)
    start = time.perf_counter()
    try:
        sock.sendall(connect_packet(client_id, broker.username, broker.password, keepalive_s=30))
        reply = recv_exactly(sock, 4)
    except ProbeError as exc:  # closed before a whole CONNACK
        raise ProbeFailed(f"the broker closed the connection without a CONNACK: {exc}") from exc
    except TimeoutError as exc:
        raise ProbeFailed(f"no MQTT CONNACK within {timeout:g}s") from exc
    except ssl.SSLError as exc:  # TLS 1.3 reports a rejected client certificate here
        raise ProbeFailed(f"TLS: the broker closed the connection: {exc.reason or exc}") from exc
    except OSError as exc:
        raise ProbeFailed(f"no MQTT CONNACK: {exc.strerror or exc}") from exc
    elapsed = (time.perf_counter() - start) * 1000
    if reply[0] != 0x20 or reply[1] != 0x02:
        raise ProbeFailed(f"something answered, but not with an MQTT CONNACK ({reply.hex()})")
    code = reply[3]
    if code == 0:
        with contextlib.suppress(OSError):  # DISCONNECT: a clean goodbye in the broker's log
            sock.sendall(b"\xe0\x00")
    return code, elapsed


def probe_client_id(node_id: str | None) -> str:
    """A client id of our own (never the node's: taking it would disconnect the agent)."""
    base = f"{node_id[:40]}-check" if node_id else "ion-check"
    return f"{base}-{os.urandom(4).hex()}"


def read_outbox(path: Path) -> list[OutboxClassFacts]:
    """Depth, bytes, in-flight count and oldest item per traffic class of the outbox at
    ``path``, opened read-only (never written, never locked for writing: the agent may be
    running).  Classes with nothing queued are left out."""
    from node.outbox.classes import TrafficClass

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise ProbeFailed(f"cannot open outbox {path}: {exc}") from exc
    try:
        rows = db.execute(
            "SELECT cls, count(*), coalesce(sum(size), 0), coalesce(sum(state = 1), 0),"
            " min(created_ms) FROM outbox GROUP BY cls ORDER BY cls"
        ).fetchall()
    except sqlite3.Error as exc:
        raise ProbeFailed(f"cannot read outbox {path}: {exc}") from exc
    finally:
        db.close()
    out = []
    for code, depth, size, in_flight, oldest in rows:
        try:
            name = TrafficClass.from_code(int(code)).value
        except KeyError:
            name = f"class-{code}"
        out.append(OutboxClassFacts(name, int(depth), int(size), int(in_flight), oldest))
    return out
