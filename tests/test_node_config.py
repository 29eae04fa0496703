"""The agent's config file: every key typed, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from ion.errors import ConfigError
from node.config import config_from_mapping, load_config
from node.outbox.classes import TrafficClass


def test_minimal_config_has_sane_defaults() -> None:
    cfg = config_from_mapping({"node": {"id": "edge-1"}})
    assert cfg.node_id == "edge-1"
    assert cfg.broker.url == "mqtt://127.0.0.1:1883"
    assert cfg.heartbeat_interval_ms == 10_000
    assert cfg.publish_window == 1000
    assert not cfg.is_gateway
    assert cfg.relay is None
    assert cfg.data_dir == Path("ion-data/edge-1")


def test_full_config(tmp_path: Path) -> None:
    f = tmp_path / "node.yaml"
    f.write_text(
        """
node: {id: gw-1, labels: {tier: gateway, site: a}, layer: gateway, parent: ""}
broker: {url: "mqtt://127.0.0.1:1884"}
upstream: {url: "mqtts://cloud:8883", ca_file: ca.pem}
relay: {up: ["ion/v1/nodes/+/status"], down: ["ion/v1/ions/+/def"]}
data_dir: data
heartbeat_interval: 2s
drain_timeout: 500ms
publish_window: 64
outbox: {classes: {data: {max_items: 10, on_full: reject}}}
log_level: DEBUG
"""
    )
    cfg = load_config(f)
    assert cfg.identity.labels == {"tier": "gateway", "site": "a"}
    assert cfg.is_gateway
    assert cfg.upstream is not None
    assert cfg.upstream.tls is not None
    assert cfg.relay is not None
    assert cfg.relay.up == ("ion/v1/nodes/+/status",)
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.heartbeat_interval_ms == 2000
    assert cfg.drain_timeout_ms == 500
    assert cfg.outbox.of(TrafficClass.DATA).max_items == 10
    assert cfg.log_level == "debug"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "'node'"),
        ({"node": {"id": "Edge 1"}}, "node.id"),
        ({"node": {"id": "e", "colour": "red"}}, "unknown key"),
        ({"node": {"id": "e"}, "brokr": {}}, "unknown key.*brokr"),
        ({"node": {"id": "e"}, "broker": {"url": "tcp://x"}}, "scheme"),
        ({"node": {"id": "e"}, "heartbeat_interval": "soon"}, "heartbeat_interval"),
        ({"node": {"id": "e"}, "heartbeat_interval": "-1s"}, "positive"),
        ({"node": {"id": "e"}, "publish_window": 0}, "publish_window"),
        ({"node": {"id": "e"}, "relay": {}}, "needs an 'upstream'"),
        (
            {"node": {"id": "e"}, "upstream": {}, "relay": {"up": ["ion/v1/#"]}},
            "would loop",
        ),
        ({"node": {"id": "e"}, "upstream": {}, "relay": {"up": ["other/#"]}}, "outside"),
        ({"node": {"id": "e"}, "outbox": {"classes": {"video": {}}}}, "unknown class"),
        ({"node": {"id": "e"}, "log_level": "loud"}, "log_level"),
    ],
)
def test_bad_configs_say_what_is_wrong(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping(data)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
