"""What the link treats as fatal versus retryable, and MQTT's topic rules: pure decisions."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from ion.config.broker import TlsSettings
from ion.errors import ConfigError
from node.link.base import (
    InvalidTopicError,
    LinkDown,
    LinkOptions,
    LinkRefusedError,
    OutgoingMessage,
    Will,
    check_filter,
    check_topic,
    topic_matches,
)
from node.link.refusals import (
    check_client_id,
    connack_error,
    connect_error,
    tls_context,
    tls_fatal,
)


@pytest.mark.parametrize("code", [0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C])
def test_credential_and_identity_refusals_are_fatal(code: int) -> None:
    err = connack_error(code, "refused")
    assert isinstance(err, LinkRefusedError)
    assert err.code == code


@pytest.mark.parametrize("code", [0x80, 0x88, 0x89, 0x97, 0x9F, None])
def test_busy_or_unavailable_brokers_are_retried(code: int | None) -> None:
    assert isinstance(connack_error(code, "later"), LinkDown)


def _wrapped(inner: BaseException) -> Exception:
    """As aiomqtt does it: ``raise MqttError(str(exc)) from None`` inside ``except``."""
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError(str(exc)) from None
    except RuntimeError as outer:
        return outer


def test_certificate_verification_failure_is_fatal_through_a_wrapper() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed")
    assert isinstance(connect_error(_wrapped(verify)), LinkRefusedError)


def test_tls_alert_about_our_certificate_is_fatal() -> None:
    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert (_ssl.c:2580)")
    assert isinstance(connect_error(_wrapped(alert)), LinkRefusedError)
    logged = "failed to receive on socket: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"
    assert isinstance(connect_error(RuntimeError("closed"), logged), LinkRefusedError)


@pytest.mark.parametrize(
    "inner",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
    ],
)
def test_network_trouble_is_retryable(inner: OSError) -> None:
    err = connect_error(_wrapped(inner), "failed to receive on socket: reset")
    assert isinstance(err, LinkDown)
    assert "reset" in str(err)


def test_tls_fatal_needs_both_tls_and_a_certificate_word() -> None:
    assert tls_fatal("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate")
    assert not tls_fatal("certificate of deposit")
    assert not tls_fatal("[SSL] connection reset")


def test_client_ids() -> None:
    assert check_client_id("edge-1") == "edge-1"
    for bad in ("", "a\x00b", "x" * 65_536):
        with pytest.raises(ConfigError):
            check_client_id(bad)


def test_missing_tls_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        tls_context(TlsSettings(ca_file=tmp_path / "none.pem"))
    with pytest.raises(ConfigError):
        tls_context(TlsSettings(cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem"))
    insecure = tls_context(TlsSettings(insecure_skip_verify=True))
    assert insecure.verify_mode is ssl.CERT_NONE


# -- topics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("+/+", "/x", True),
        ("#", "$SYS/load", False),
        ("+/load", "$SYS/load", False),
        ("$SYS/#", "$SYS/load", True),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
    ],
)
def test_topic_matching(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


def test_topic_and_filter_rules() -> None:
    assert check_topic("ion/v1/nodes/n1/status")
    assert check_filter("ion/v1/+/n1/#")
    for bad in ("", "a/+", "a/#", "a\x00"):
        with pytest.raises(InvalidTopicError):
            check_topic(bad)
    for bad in ("a/#/b", "a#", "a/b+", ""):
        with pytest.raises(InvalidTopicError):
            check_filter(bad)
    with pytest.raises(InvalidTopicError):
        Will("a/+", b"offline")
    with pytest.raises(InvalidTopicError):
        OutgoingMessage("a/b", b"x", qos=3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"inflight_window": 0},
        {"inflight_window": 70_000},
        {"incoming_queue": 1},
        {"ack_timeout_s": 0},
        {"backoff_initial_s": 5, "backoff_max_s": 1},
        {"backoff_jitter": 2},
        {"protocol": "4"},
    ],
)
def test_bad_link_options_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        LinkOptions(**kwargs)  # type: ignore[arg-type]
