"""Who a node is: the facts placement decisions are made on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    node_id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    layer: str = "edge"
    parent: str = ""
