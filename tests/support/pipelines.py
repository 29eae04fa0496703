"""Pipelines built in code, and test component plugins installed the way users install theirs.

``install_plugin`` writes a dist-info directory declaring entry points in the group
``ion.components.python`` (and, when given, the plugin's module source) into ``root``; put
``root`` on the child's PYTHONPATH and the runner's registry finds the components as it finds
any installed package's.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

from ion.model.definition import (
    ArgValue,
    Component,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    PortBinding,
)


def comp(
    name: str, type_: str, args: Mapping[str, ArgValue] | None = None, *inputs: str
) -> Component:
    """``inputs`` as "port=component.port" (or "component": in=component.out)."""
    bindings = []
    for spec in inputs:
        port, _, source = spec.rpartition("=")
        upstream, _, from_port = source.partition(".")
        bindings.append(PortBinding(port or "in", upstream, from_port or "out"))
    return Component(name, type_, dict(args or {}), tuple(bindings))


def pipe(
    name: str,
    mode: PipelineMode,
    *components: Component,
    engine: str = "python",
    config: Mapping[str, str] | None = None,
) -> Pipeline:
    """A pipeline on ``node-1``."""
    return Pipeline(
        name=name,
        engine=engine,
        role=PipelineRole.OTHER,
        mode=mode,
        placement=Placement(nodes=("node-1",)),
        components=components,
        engine_config=dict(config or {}),
    )


def placeholder(
    name: str,
    nodes: str | tuple[str, ...],
    role: PipelineRole,
    mode: PipelineMode = PipelineMode.BATCH,
) -> Pipeline:
    """A pipeline on an engine no node has: its placement counts (edges, model policies),
    nothing is ever started."""
    return Pipeline(
        name=name,
        engine="none",
        role=role,
        mode=mode,
        placement=Placement(nodes=(nodes,) if isinstance(nodes, str) else nodes),
        components=(Component("c", "noop"),),
    )


def install_plugin(
    root: Path,
    dist: str,
    entry_points: Mapping[str, str],
    *,
    module: str = "",
    source: str = "",
) -> Path:
    """Declare ``entry_points`` (type name -> ``module:Class``) as an installed distribution
    ``dist`` in ``root``; write ``source`` as ``root/<module>.py`` when given.  Returns root."""
    root.mkdir(parents=True, exist_ok=True)
    if source:
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = ["[ion.components.python]", *(f"{n} = {v}" for n, v in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root
