"""Broker URLs and options (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ion.config.broker import broker_from_mapping, parse_broker_url, with_options
from ion.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "user", "password"),
    [
        ("mqtt://127.0.0.1", "127.0.0.1", 1883, False, None, None),
        ("mqtt://broker:1884", "broker", 1884, False, None, None),
        ("mqtts://broker", "broker", 8883, True, None, None),
        ("MQTTS://Broker:9000/", "broker", 9000, True, None, None),
        ("mqtt://alice:s%40cret@h", "h", 1883, False, "alice", "s@cret"),
        ("mqtt://[::1]:1883", "::1", 1883, False, None, None),
    ],
)
def test_parse_broker_url(
    url: str, host: str, port: int, tls: bool, user: str | None, password: str | None
) -> None:
    cfg = parse_broker_url(url)
    assert (cfg.host, cfg.port, cfg.tls is not None, cfg.username, cfg.password) == (
        host,
        port,
        tls,
        user,
        password,
    )
    assert "@" not in cfg.url  # never prints credentials


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h", "scheme"),
        ("h:1883", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://h:99999", "out of range"),
        ("mqtt://h/path", "path"),
        ("mqtt://h?x=1", "query"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_broker_url(url)


def test_tls_options_need_mqtts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not mqtts"):
        with_options(parse_broker_url("mqtt://h"), ca_file=tmp_path / "ca.pem")
    cfg = with_options(parse_broker_url("mqtts://h"), ca_file=tmp_path / "ca.pem")
    assert cfg.tls is not None and cfg.tls.ca_file == tmp_path / "ca.pem"


def test_client_cert_needs_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both"):
        with_options(parse_broker_url("mqtts://h"), cert_file=tmp_path / "c.pem")


def test_password_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("hunter2\n")
    cfg = with_options(parse_broker_url("mqtt://u@h"), password_file=f)
    assert cfg.password == "hunter2"
    with pytest.raises(ConfigError, match="cannot read"):
        with_options(parse_broker_url("mqtt://h"), password_file=tmp_path / "missing")


def test_mapping_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        broker_from_mapping({"url": "mqtt://h", "ca_flie": "x"})
    cfg = broker_from_mapping({"url": "mqtts://h:8884", "keepalive_s": 60})
    assert cfg.port == 8884 and cfg.keepalive_s == 60
