"""The agent's one typed, frozen configuration, loaded once at start-up.

A YAML file; every key below, its default in brackets.  Unknown keys are an error.

```yaml
node:
  id: edge-1                 # required; a name: [a-z0-9_-], at most 64 characters
  labels: {tier: edge}       # [{}] placement selects nodes by these
  layer: edge                # [edge] edge | gateway | cloud (free text, shown by the monitor)
  parent: gw-1               # [""] the gateway this node sits behind
broker:                      # the broker this node talks to (a gateway's local broker)
  url: mqtt://127.0.0.1:1883 # [mqtt://127.0.0.1:1883]; mqtts:// for TLS
  ca_file: ...               # TLS and credentials: see ion.config.broker
upstream: {url: ...}         # [none] gateways only: the parent broker
relay:                       # gateways only
  up: [...]                  # [status, events, stats, health, results, ...] filters
  down: [...]                # [definitions, commands, models, acks] filters
data_dir: /var/lib/ion/edge-1  # [./ion-data/<id>] outbox, inbox, model store, work dirs
heartbeat_interval: 10s      # [10s] retained status this often
publish_window: 1000         # [1000] QoS 1 publishes in flight at once
drain_timeout: 10s           # [10s] on SIGTERM, flush the outbox this long
outbox: {...}                # [defaults per traffic class] see node.outbox.classes
dedup_window: 100000         # [100000] message ids remembered to drop duplicates
ordering: {max_held: 20000}  # [see node.inbox.sequence.SequenceConfig] gap repair and order
models: {chunk_size: 262144} # [see node.models.config.ModelConfig] transfer sizes and limits
trust: {keys: [...]}         # [trust no key] see ion.security.trust: signed definitions/models
log_level: info              # [info]
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ion.config.broker import BrokerConfig, broker_from_mapping
from ion.config.fields import duration_ms, positive_int
from ion.errors import ConfigError
from ion.model.definition import NAME_PATTERN
from ion.security.trust import TrustConfig, trust_from_mapping
from ion.topics import filters_overlap

from .identity import NodeIdentity
from .inbox.sequence import SequenceConfig
from .models.config import ModelConfig
from .outbox.classes import OutboxConfig

_TOP_KEYS = {
    "node",
    "broker",
    "upstream",
    "relay",
    "data_dir",
    "heartbeat_interval",
    "publish_window",
    "drain_timeout",
    "outbox",
    "dedup_window",
    "ordering",
    "models",
    "trust",
    "log_level",
}
_NODE_KEYS = {"id", "labels", "layer", "parent"}
_RELAY_KEYS = {"up", "down"}
_LOG_LEVELS = {"debug", "info", "warning", "error"}

DEFAULT_RELAY_UP = (
    "ion/v1/nodes/+/status",
    "ion/v1/nodes/+/events",
    "ion/v1/nodes/+/results",
    "ion/v1/ions/+/pipelines/#",
    "ion/v1/ions/+/edges/+/health/+",
    "ion/v1/ions/+/edges/+/stats/+",
    "ion/v1/ions/+/edges/+/events/+",
    "ion/v1/ions/+/edges/+/trigger/+",
    "ion/v1/ions/+/edges/+/model/requests",
)
DEFAULT_RELAY_DOWN = (
    "ion/v1/ions/+/def",
    "ion/v1/ions/+/cmd",
    "ion/v1/nodes/+/cmd",
    "ion/v1/nodes/+/acks",
    "ion/v1/ions/+/edges/+/model/manifest",
    "ion/v1/ions/+/edges/+/model/chunks/+",
    # Operators' retained decisions on model versions (approve, reject, promote, rollback):
    # nodes behind a gateway decide under them too.
    "ion/v1/ions/+/edges/+/model/decisions/+",
)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Topic filters a gateway forwards: ``up`` from its local broker to the upstream one,
    ``down`` the other way.  No filter may match in both directions (that is what makes
    loops impossible by construction; checked at load).  Retransmit requests are routed by
    the gateway itself, towards the node that must answer, and belong in neither list."""

    up: tuple[str, ...] = DEFAULT_RELAY_UP
    down: tuple[str, ...] = DEFAULT_RELAY_DOWN


@dataclass(frozen=True, slots=True)
class NodeConfig:
    identity: NodeIdentity
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    upstream: BrokerConfig | None = None
    relay: RelayConfig | None = None
    data_dir: Path = Path("ion-data")
    heartbeat_interval_ms: int = 10_000
    publish_window: int = 1000
    drain_timeout_ms: int = 10_000
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    dedup_window: int = 100_000
    ordering: SequenceConfig = field(default_factory=SequenceConfig)
    models: ModelConfig = field(default_factory=ModelConfig)
    # Secure by default: no trusted key, no development mode, so nothing unsigned is run.
    trust: TrustConfig = field(default_factory=TrustConfig)
    log_level: str = "info"

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    @property
    def is_gateway(self) -> bool:
        return self.upstream is not None


def load_config(path: str | Path) -> NodeConfig:
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    return config_from_mapping(data or {}, where=str(file), base_dir=file.parent)


def config_from_mapping(
    data: Mapping[str, Any], *, where: str = "config", base_dir: Path | None = None
) -> NodeConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping at the top")
    _no_unknown(data, _TOP_KEYS, where)
    node = data.get("node")
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where}: 'node' (with at least 'id') is required")
    _no_unknown(node, _NODE_KEYS, f"{where}: node")
    node_id = str(node.get("id", ""))
    if not re.match(NAME_PATTERN, node_id):
        raise ConfigError(
            f"{where}: node.id {node_id!r} must be 1-64 of [a-z0-9_-], starting and ending "
            "with a letter or digit"
        )
    labels = node.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise ConfigError(f"{where}: node.labels must be a mapping")
    identity = NodeIdentity(
        node_id=node_id,
        labels={str(k): str(v) for k, v in labels.items()},
        layer=str(node.get("layer", "edge")),
        parent=str(node.get("parent", "")),
    )
    broker = broker_from_mapping(_section(data, "broker", where), where=f"{where}: broker")
    upstream = None
    if data.get("upstream") is not None:
        upstream = broker_from_mapping(
            _section(data, "upstream", where), where=f"{where}: upstream"
        )
    relay = None
    if upstream is not None or data.get("relay") is not None:
        if upstream is None:
            raise ConfigError(f"{where}: 'relay' needs an 'upstream' broker")
        relay = _relay(_section(data, "relay", where), f"{where}: relay")
    data_dir = Path(str(data.get("data_dir", f"ion-data/{node_id}"))).expanduser()
    if not data_dir.is_absolute() and base_dir is not None and "data_dir" in data:
        data_dir = base_dir / data_dir
    log_level = str(data.get("log_level", "info")).lower()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"{where}: log_level must be one of {', '.join(sorted(_LOG_LEVELS))}")
    return NodeConfig(
        identity=identity,
        broker=broker,
        upstream=upstream,
        relay=relay,
        data_dir=data_dir,
        heartbeat_interval_ms=duration_ms(data, "heartbeat_interval", 10_000, where),
        publish_window=positive_int(data, "publish_window", 1000, where),
        drain_timeout_ms=duration_ms(data, "drain_timeout", 10_000, where),
        outbox=OutboxConfig.from_mapping(_section(data, "outbox", where), where=f"{where}: outbox"),
        dedup_window=positive_int(data, "dedup_window", 100_000, where),
        models=ModelConfig.from_mapping(_section(data, "models", where), where=f"{where}: models"),
        ordering=SequenceConfig.from_mapping(
            _section(data, "ordering", where), where=f"{where}: ordering"
        ),
        trust=trust_from_mapping(
            _section(data, "trust", where), where=f"{where}: trust", base_dir=base_dir
        ),
        log_level=log_level,
    )


def _no_unknown(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _section(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: '{key}' must be a mapping")
    return value


def _relay(data: Mapping[str, Any], where: str) -> RelayConfig:
    _no_unknown(data, _RELAY_KEYS, where)
    up = tuple(str(f) for f in data.get("up", DEFAULT_RELAY_UP))
    down = tuple(str(f) for f in data.get("down", DEFAULT_RELAY_DOWN))
    for f in (*up, *down):
        if not f.startswith("ion/v1/"):
            raise ConfigError(f"{where}: filter {f!r} is outside the ion/v1/ namespace")
    overlap = sorted(f"{u} ~ {d}" for u in up for d in down if filters_overlap(u, d))
    if overlap:
        raise ConfigError(f"{where}: filters relayed both ways would loop: {', '.join(overlap)}")
    return RelayConfig(up=up, down=down)
