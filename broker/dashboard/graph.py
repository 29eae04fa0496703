"""An ION as a graph with live state (pure): layout, then JSON or inline SVG.

Layout: pipelines are boxes in columns by rank, the longest path from a source over the
edges that are not back edges (a depth-first search in definition order finds the back
edges, so the ION's cycles, e.g. health -> trigger -> training -> model -> inference, do not
break ranking).  Forward edges are drawn left to right; back edges and edges within one
column loop underneath the boxes, each at its own depth so they never overlap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from html import escape
from typing import Any

from ion import topics

from .format import duration_ms

BOX_W, BOX_H, COL_GAP, ROW_GAP, PAD, LOOP_STEP = 190, 66, 210, 56, 24, 44
GOOD = {"running", "succeeded"}
BAD = {"failed", "crash_loop", "crashloop", "error"}


@dataclass(frozen=True, slots=True)
class PipelineBox:
    name: str
    engine: str
    role: str
    mode: str
    placed: int  # node rows the store has for it
    running: int
    states: dict[str, int]
    health: str  # ok | bad | warn | idle
    summary: str
    x: int = 0
    y: int = 0


@dataclass(frozen=True, slots=True)
class EdgeArrow:
    name: str
    kind: str
    source: str
    target: str
    policy: str
    back: bool  # drawn looping underneath (closes a cycle, or within one column)
    live: str  # messages and lag, or model versions
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IonGraph:
    name: str
    version: int
    boxes: tuple[PipelineBox, ...]
    arrows: tuple[EdgeArrow, ...]
    width: int
    height: int


def endpoint_pipeline(value: object) -> str:
    """The pipeline of an endpoint as the store writes it: ``"p"``, ``"p.comp.port"`` or a
    mapping with ``pipeline``."""
    if isinstance(value, Mapping):
        return str(value.get("pipeline", ""))
    return str(value).split(".", 1)[0]


def _pipeline_box(spec: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> PipelineBox:
    states = Counter(str(r.get("state") or "unknown") for r in rows)
    running = sum(n for s, n in states.items() if s in GOOD)
    bad = sum(n for s, n in states.items() if s in BAD)
    if not rows:
        health, summary = "idle", "not reported by any node"
    elif bad:
        health = "bad"
        summary = f"{bad} of {len(rows)} failed" + (f", running {running}" if running else "")
    elif running == len(rows):
        health, summary = "ok", f"running on {running}/{len(rows)}"
    else:
        health = "warn"
        summary = ", ".join(f"{s} {n}" for s, n in sorted(states.items()))
        summary += f" (running {running}/{len(rows)})"
    return PipelineBox(
        name=str(spec.get("name", "")),
        engine=str(spec.get("engine") or ""),
        role=str(spec.get("role") or ""),
        mode=str(spec.get("mode") or ""),
        placed=len(rows),
        running=running,
        states=dict(states),
        health=health,
        summary=summary,
    )


def _edge_live(
    ion: str,
    edge: Mapping[str, Any],
    streams: Iterable[Mapping[str, Any]],
    models: Iterable[Mapping[str, Any]],
) -> tuple[str, dict[str, Any]]:
    name = str(edge.get("name", ""))
    if edge.get("kind") == "model":
        mine = [m for m in models if m.get("ion") == ion and m.get("edge") == name]
        active = Counter(str(m.get("active_version") or "") for m in mine)
        pending = Counter(v for m in mine for v in (m.get("pending") or []))
        parts = [f"v{v} on {n}" for v, n in sorted(active.items()) if v]
        parts += [f"v{v} pending on {n}" for v, n in sorted(pending.items())]
        details = {"active": dict(active), "pending": dict(pending), "consumers": len(mine)}
        return (", ".join(parts) or "no model yet"), details
    received = gaps = 0
    lag = -1
    for s in streams:
        try:
            t = topics.parse(str(s.get("stream", "")))
        except topics.TopicError:
            continue
        if t.kind is topics.TopicKind.EDGE and (t.ion, t.edge) == (ion, name):
            received += int(s.get("received") or 0)
            gaps += int(s.get("gaps") or 0) - int(s.get("repaired") or 0)
            lag = max(lag, int(s.get("lag_ms") or 0))
    details = {"messages": received, "lag_ms": lag if lag >= 0 else None, "open_gaps": gaps}
    if lag < 0:
        return "no traffic seen", details
    text = f"{received} msgs, lag {duration_ms(lag)}"
    return (text + (f", {gaps} gaps" if gaps else "")), details


def _back_edges(names: list[str], adjacency: dict[str, list[str]]) -> set[tuple[str, str]]:
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(n: str) -> None:
        state[n] = 1
        for m in adjacency.get(n, []):
            if state.get(m) == 1:
                back.add((n, m))
            elif m not in state:
                visit(m)
        state[n] = 2

    for n in names:
        if n not in state:
            visit(n)
    return back


def _ranks(names: list[str], forward: list[tuple[str, str]]) -> dict[str, int]:
    rank = dict.fromkeys(names, 0)
    # Longest path on a DAG: relax |V| times (IONs have a handful of pipelines).
    for _ in range(len(names)):
        changed = False
        for a, b in forward:
            if rank[b] < rank[a] + 1:
                rank[b] = rank[a] + 1
                changed = True
        if not changed:
            break
    return rank


def build_graph(
    ion: Mapping[str, Any],
    pipelines: Iterable[Mapping[str, Any]],
    models: Iterable[Mapping[str, Any]] = (),
    streams: Iterable[Mapping[str, Any]] = (),
) -> IonGraph:
    """Lay out ``ion`` (a row of the ``ions`` table) with the live rows about it."""
    name = str(ion.get("name", ""))
    specs = [p for p in (ion.get("pipelines") or []) if isinstance(p, Mapping)]
    edges = [e for e in (ion.get("edges") or []) if isinstance(e, Mapping)]
    rows = [r for r in pipelines if r.get("ion") == name]
    models, streams = list(models), list(streams)
    names = [str(p.get("name", "")) for p in specs]
    pairs: list[tuple[str, str, Mapping[str, Any]]] = []
    for e in edges:
        src = endpoint_pipeline(e.get("from", ""))
        pairs.extend((src, endpoint_pipeline(t), e) for t in e.get("to") or [])
    for a, b, _ in pairs:  # endpoints naming no declared pipeline still get a box
        for n in (a, b):
            if n not in names:
                names.append(n)
                specs.append({"name": n})
    adjacency: dict[str, list[str]] = {}
    for a, b, _ in pairs:
        adjacency.setdefault(a, []).append(b)
    back = _back_edges(names, adjacency)
    rank = _ranks(names, [(a, b) for a, b, _ in pairs if (a, b) not in back])
    columns: dict[int, list[str]] = {}
    for n in names:
        columns.setdefault(rank[n], []).append(n)
    pos: dict[str, tuple[int, int]] = {}
    for col, members in columns.items():
        for i, n in enumerate(members):
            pos[n] = (PAD + col * (BOX_W + COL_GAP), PAD + i * (BOX_H + ROW_GAP))
    boxes = []
    for spec in specs:
        n = str(spec.get("name", ""))
        box = _pipeline_box(spec, [r for r in rows if r.get("pipeline") == n])
        x, y = pos[n]
        boxes.append(replace(box, x=x, y=y))
    arrows = []
    for a, b, e in pairs:
        live, details = _edge_live(name, e, streams, models)
        arrows.append(
            EdgeArrow(
                name=str(e.get("name", "")),
                kind=str(e.get("kind", "")),
                source=a,
                target=b,
                policy=str(e.get("policy") or ""),
                back=(a, b) in back or rank[b] <= rank[a],
                live=live,
                details=details,
            )
        )
    loops = sum(1 for x in arrows if x.back)
    width = PAD * 2 + (max(columns, default=0) + 1) * (BOX_W + COL_GAP) - COL_GAP
    height = PAD * 2 + max((len(c) for c in columns.values()), default=1) * (BOX_H + ROW_GAP)
    return IonGraph(
        name=name,
        version=int(ion.get("version") or 0),
        boxes=tuple(boxes),
        arrows=tuple(arrows),
        width=max(width, 320),
        height=height + loops * LOOP_STEP + 20,
    )


def graph_json(g: IonGraph) -> dict[str, Any]:
    return {
        "name": g.name,
        "version": g.version,
        "pipelines": [asdict(b) for b in g.boxes],
        "edges": [asdict(a) for a in g.arrows],
    }


def graph_svg(g: IonGraph) -> str:
    """Inline SVG (every text escaped); classes are styled by the page's CSS."""
    at = {b.name: b for b in g.boxes}
    bottom = max((b.y + BOX_H for b in g.boxes), default=0)
    out = [
        f'<svg class="graph" viewBox="0 0 {g.width} {g.height}" width="{g.width}" '
        f'height="{g.height}" role="img" aria-label="ION {escape(g.name)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>'
        "</defs>",
    ]
    loop = 0
    seen: Counter[tuple[str, str]] = Counter()
    for a in g.arrows:
        s, t = at[a.source], at[a.target]
        if a.back:
            loop += 1
            depth = bottom + loop * LOOP_STEP
            x1, y1 = s.x + BOX_W // 2 + 12, s.y + BOX_H
            x2, y2 = t.x + BOX_W // 2 - 12, t.y + BOX_H
            d = f"M{x1},{y1} C{x1},{depth} {x2},{depth} {x2},{y2}"
            # The curve's lowest point (t = 1/2) is 3/4 of the way to the control points.
            lx, ly = (x1 + x2) // 2, (y1 + y2) // 8 + depth * 3 // 4 + 12
        else:
            k = seen[(a.source, a.target)]
            seen[(a.source, a.target)] += 1
            x1, y1 = s.x + BOX_W, s.y + BOX_H // 2 + k * 10
            x2, y2 = t.x, t.y + BOX_H // 2 + k * 10
            mid = (x1 + x2) // 2
            d = f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"
            lx, ly = mid, min(y1, y2) - 22 - k * 26  # above the arrow, clear of it
        title = f"{a.name} ({a.kind}{', policy ' + a.policy if a.policy else ''}): {a.live}"
        out.append(
            f'<g class="edge kind-{escape(a.kind)}" data-edge="{escape(a.name)}">'
            f"<title>{escape(title)}</title>"
            f'<path d="{d}" marker-end="url(#arrow)"/>'
            f'<text x="{lx}" y="{ly}" text-anchor="middle">'
            f'<tspan class="edge-name">{escape(a.name)} · {escape(a.kind)}</tspan>'
            f'<tspan class="edge-live" x="{lx}" dy="13">{escape(a.live)}</tspan></text></g>'
        )
    for b in g.boxes:
        sub = " · ".join(x for x in (b.engine, b.mode) if x)
        out.append(
            f'<g class="pipeline p-{b.health}" data-pipeline="{escape(b.name)}">'
            f"<title>{escape(b.name)}: {escape(b.summary)}</title>"
            f'<rect x="{b.x}" y="{b.y}" width="{BOX_W}" height="{BOX_H}" rx="8"/>'
            f'<text x="{b.x + 10}" y="{b.y + 20}" class="p-name">{escape(b.name)}</text>'
            f'<text x="{b.x + 10}" y="{b.y + 38}" class="p-sub">{escape(sub)}</text>'
            f'<text x="{b.x + 10}" y="{b.y + 56}" class="p-state">{escape(b.summary)}</text>'
            "</g>"
        )
    out.append("</svg>")
    return "".join(out)
