"""Which connection failures are fatal: pure decisions, kept apart from the aiomqtt adapter.

Fatal (``LinkRefusedError``, the link stops in ``FAILED`` and never retries): a CONNACK that
refuses our credentials, authorisation, client id or protocol, and a TLS failure about a
certificate on either side.  Everything else (refused TCP, resets, timeouts, "server
unavailable", a broker at its connection limit) is retryable (``LinkDown``) with backoff.
"""

from __future__ import annotations

import ssl

from ion.config.broker import TlsSettings
from ion.errors import ConfigError
from node.link.base import LinkDown, LinkRefusedError

# CONNACK reason codes no retry can fix (MQTT 5 numbering; paho maps 3.1.1 return codes to
# them: 1 -> 0x84, 2 -> 0x85, 4 -> 0x86, 5 -> 0x87).
FATAL_CONNACK = {
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorised",
    0x8A: "banned",
    0x8C: "bad authentication method",
}
# Fragments of OpenSSL errors that mean a certificate problem on either side.
_TLS_FATAL_MARKERS = ("CERTIFICATE", "UNKNOWN_CA", "UNKNOWN CA", "ACCESS_DENIED")


def connack_error(code: int | None, text: str) -> LinkDown | LinkRefusedError:
    """The error for a CONNACK refusal with reason ``code`` (``text`` is its description)."""
    if code in FATAL_CONNACK:
        return LinkRefusedError(
            f"broker refused the connection: {text} (code {code:#x})", code=code
        )
    return LinkDown(f"broker refused the connection for now: {text}")


def connect_error(exc: BaseException, logged_error: str = "") -> LinkDown | LinkRefusedError:
    """The error for a failed connection attempt.  ``logged_error`` is the client library's
    last logged error: a TLS 1.3 broker rejects our certificate after the handshake, so the
    alert only shows on the first read, which paho reports in its log alone."""
    for err in _chain(exc):
        if isinstance(err, ssl.SSLCertVerificationError):
            return LinkRefusedError(f"TLS: the broker's certificate was rejected: {err}")
        if isinstance(err, ssl.SSLError) and tls_fatal(str(err)):
            return LinkRefusedError(f"TLS handshake failed: {err}")
    if tls_fatal(logged_error):
        return LinkRefusedError(f"TLS: the broker rejected the connection: {logged_error}")
    text = str(exc) or type(exc).__name__
    if logged_error and logged_error not in text:
        text = f"{text} ({logged_error})"
    return LinkDown(f"cannot connect: {text}")


def tls_fatal(text: str) -> bool:
    upper = text.upper()
    return ("SSL" in upper or "TLS" in upper) and any(m in upper for m in _TLS_FATAL_MARKERS)


def _chain(exc: BaseException) -> list[BaseException]:
    # aiomqtt raises MqttError(...) ``from None``: the cause survives on __context__.
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def check_client_id(client_id: str) -> str:
    if not client_id or "\x00" in client_id or len(client_id.encode("utf-8")) > 65_535:
        raise ConfigError(f"MQTT client id {client_id!r} must be 1..65535 bytes of UTF-8")
    return client_id


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """Built once per link, so a missing or unreadable file is a ConfigError at start-up
    rather than a retry loop."""
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None:
            key = str(tls.key_file) if tls.key_file is not None else None
            ctx.load_cert_chain(str(tls.cert_file), key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS files: {exc}") from exc
    if tls.insecure_skip_verify:  # tests against throw-away certificates only
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
