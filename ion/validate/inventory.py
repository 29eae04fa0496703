"""The node inventory: which nodes exist, their labels, tier and parent.

Written as YAML::

    nodes:
      - {id: cloud-1, layer: cloud, labels: {tier: cloud}}
      - {id: gw-1, layer: gateway, parent: cloud-1, labels: {tier: gateway}}
      - {id: edge-1, layer: edge, parent: gw-1, labels: {tier: edge, site: north}}

Given one, the validator checks that every placement selects at least one node and names only
nodes that exist.  ``layer`` is free text (``edge``, ``gateway`` and ``cloud`` by convention);
``parent`` is the node this one reaches the upstream broker through.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import Node

from ion.authoring import yaml_core
from ion.authoring.locations import child, element_keys, item
from ion.authoring.nodes import NodeReader, peek_text
from ion.errors import ConfigError, Problem
from ion.model.definition import NAME_PATTERN, Placement

logger = logging.getLogger(__name__)

INVENTORY_KEYS = ("nodes",)
NODE_KEYS = ("id", "labels", "layer", "parent")


@dataclass(frozen=True, slots=True)
class InventoryNode:
    id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    layer: str = ""
    parent: str = ""


@dataclass(frozen=True, slots=True)
class Inventory:
    nodes: tuple[InventoryNode, ...] = ()

    def node(self, node_id: str) -> InventoryNode | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes)

    def select(self, placement: Placement) -> tuple[InventoryNode, ...]:
        """The nodes ``placement`` runs on."""
        return tuple(n for n in self.nodes if placement.selects(n.id, n.labels))


class InvalidInventoryError(ConfigError):
    """An inventory file has errors; ``problems`` lists every one."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid inventory:\n" + "\n".join(f"  {p}" for p in self.problems))


def load_inventory(text: str, file: str | None = None) -> Inventory:
    """Parse inventory YAML; raises :class:`InvalidInventoryError` listing every problem."""
    reader = NodeReader(file)
    nodes: list[tuple[str, InventoryNode]] = []
    try:
        root = yaml_core.compose(text)
    except yaml.YAMLError as exc:
        raise InvalidInventoryError([Problem("error", "", f"not valid YAML: {exc}", file)]) from exc
    top = reader.fields(root, "", "an inventory", INVENTORY_KEYS, ("nodes",)) if root else None
    if root is None:
        reader.problem("", "the inventory is empty; expected nodes: [...]")
    if top is not None and "nodes" in top:
        items = reader.sequence(top["nodes"], "nodes", "nodes") or []
        keys = element_keys(peek_text(n, "id") for n in items)
        for key, node in zip(keys, items, strict=True):
            loc = item("nodes", key)
            reader.mark(loc, node)
            parsed = _node(reader, node, loc)
            if parsed is not None:
                nodes.append((loc, parsed))
    _check(reader, nodes)
    errors = [p for p in reader.problems if p.severity == "error"]
    if errors:
        raise InvalidInventoryError(sorted(errors, key=lambda p: p.line or 0))
    return Inventory(tuple(node for _, node in nodes))


def load_inventory_file(path: str | Path) -> Inventory:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInventoryError(
            [Problem("error", "", f"cannot read: {exc}", str(path))]
        ) from exc
    return load_inventory(text, str(path))


def _node(reader: NodeReader, node: Node, loc: str) -> InventoryNode | None:
    f = reader.fields(node, loc, "an inventory node", NODE_KEYS, ("id",))
    if f is None or "id" not in f:
        return None
    node_id = reader.text(f["id"], child(loc, "id"))
    if node_id is None:
        return None
    labels = reader.text_map(f["labels"], child(loc, "labels"), "labels") if "labels" in f else {}
    layer = reader.text(f["layer"], child(loc, "layer")) if "layer" in f else ""
    parent = reader.text(f["parent"], child(loc, "parent")) if "parent" in f else ""
    return InventoryNode(node_id, labels, layer or "", parent or "")


def _check(reader: NodeReader, located: list[tuple[str, InventoryNode]]) -> None:
    seen: set[str] = set()
    for loc, node in located:
        if not re.match(NAME_PATTERN, node.id):
            reader.problem(child(loc, "id"), f"node id {node.id!r} does not match {NAME_PATTERN}")
        if node.id in seen:
            reader.problem(loc, f"duplicate node id {node.id!r}")
        seen.add(node.id)
    parents: dict[str, str] = {}
    for _, node in located:
        parents.setdefault(node.id, node.parent)
    for loc, node in located:
        if node.parent and node.parent not in parents:
            reader.problem(child(loc, "parent"), f"parent {node.parent!r} is not a node")
            continue
        # A parent chain must end: a loop would relay messages around it forever.
        walked: list[str] = [node.id]
        current = node.parent
        while current and current in parents and current not in walked:
            walked.append(current)
            current = parents[current]
        if current == node.id and node.id == min(walked):  # report each loop once
            reader.problem(
                child(loc, "parent"), "parents form a loop: " + " -> ".join([*walked, node.id])
            )
