"""Helpers for agent tests: configs, IONs built in code, applying them over MQTT."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ion.client import definitions
from ion.client.session import connect
from ion.config.broker import parse_broker_url
from ion.model.definition import (
    Component,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    PortBinding,
)
from ion.security.keys import SigningKey
from node.config import NodeConfig, config_from_mapping


def node_config(
    node_id: str, url: str, data_dir: Path, labels: Mapping[str, str] | None = None, **extra: Any
) -> NodeConfig:
    # Nodes refuse unsigned definitions by default; tests that do not test signatures run in
    # development mode (pass trust={...} to test them).
    return config_from_mapping(
        {
            "node": {"id": node_id, "labels": dict(labels or {})},
            "broker": {"url": url},
            "data_dir": str(data_dir / node_id),
            "heartbeat_interval": "1s",
            "trust": {"development_mode": True},
            **extra,
        }
    )


def ticker(name: str, nodes: tuple[str, ...], rate: float = 1.0) -> Pipeline:
    """A small streaming pipeline that really runs (counter -> log) on ``nodes``."""
    return Pipeline(
        name=name,
        engine="python",
        role=PipelineRole.OTHER,
        mode=PipelineMode.STREAMING,
        placement=Placement(nodes=nodes),
        components=(
            Component("src", "counter_source", {"rate": rate}),
            Component("sink", "log_sink", {"every": 100}, (PortBinding("in", "src", "out"),)),
        ),
    )


def two_node_ion(name: str, source: str, target: str) -> IonDefinition:
    """``producer`` on ``source`` sends data along edge ``feed`` to ``consumer`` on ``target``.

    The edge's ends name no component of the pipelines (``api``), so the pipelines' runners do
    not use it: only the test's ``Agent.emit`` calls send along it."""
    return IonDefinition(
        name=name,
        pipelines=(ticker("producer", (source,)), ticker("consumer", (target,))),
        edges=(
            Edge(
                "feed",
                EdgeKind.DATA,
                Endpoint("producer", "api", "out"),
                (Endpoint("consumer", "api", "in"),),
            ),
        ),
    )


def apply_sync(url: str, definition: IonDefinition, key: SigningKey | None = None) -> IonDefinition:
    with connect(parse_broker_url(url)) as session:
        plan = definitions.plan_apply(
            definition,
            definitions.fetch(session, definition.name),
            now_ms=time.time_ns() // 1_000_000,
            operator="test",
        )
        assert plan.definition is not None
        published = definitions.publish(
            session, plan.definition, now_ms=time.time_ns() // 1_000_000, key=key
        )
        assert isinstance(published, IonDefinition)
        return published


async def apply(
    url: str, definition: IonDefinition, key: SigningKey | None = None
) -> IonDefinition:
    return await asyncio.to_thread(apply_sync, url, definition, key)


def delete_sync(url: str, name: str, key: SigningKey | None = None) -> None:
    with connect(parse_broker_url(url)) as session:
        tomb = definitions.plan_delete(
            definitions.fetch(session, name), name, now_ms=time.time_ns() // 1_000_000,
            operator="test",
        )  # fmt: skip
        definitions.publish(session, tomb, now_ms=time.time_ns() // 1_000_000, key=key)
