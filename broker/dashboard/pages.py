"""The fleet, ION and node pages (pure: rows in, ``Page`` out)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from . import format as fmt
from .charts import Series, line_chart
from .graph import BAD, GOOD, build_graph, graph_svg
from .markup import Html, Page, badge, esc, ion_link, node_link, notice, table
from .store import Store

LAYERS = ("cloud", "gateway", "edge")


@dataclass(frozen=True, slots=True)
class Ctx:
    """What a page needs besides the store: the clock and who is looking."""

    now_ms: int
    can_act: bool
    why_not: str  # why actions are disabled ("" when they are not)
    csrf: str
    flash: str = ""
    flash_kind: str = ""


def not_found(what: str) -> Page:
    return Page("Not found", Html(f"<h1>Not found</h1>{notice(what, 'bad')}"), status=404)


def _flash(ctx: Ctx) -> str:
    return notice(ctx.flash, ctx.flash_kind) if ctx.flash else ""


def heartbeat(node: Mapping[str, Any], now_ms: int) -> Html:
    seen = node.get("seen_ms") or 0
    text = esc(fmt.age(now_ms, seen))
    interval = node.get("heartbeat_interval_ms") or 0
    if seen and interval and node.get("state") == "online" and now_ms - seen > 3 * interval:
        return Html(f'<span class="warn" title="more than 3 heartbeats missed">{text}</span>')
    return Html(text)


# -- fleet ---------------------------------------------------------------------------------


def fleet(store: Store, ctx: Ctx) -> Page:
    nodes, pipelines, queues = store.nodes(), store.pipelines(), store.queues()
    firing = store.alerts(firing_only=True, limit=10)
    models = store.node_models()
    per_node = Counter(str(p["node_id"]) for p in pipelines)
    running = Counter(str(p["node_id"]) for p in pipelines if p.get("state") in GOOD)
    queued: Counter[str] = Counter()
    for q in queues:
        queued[str(q["node_id"])] += int(q.get("depth") or 0)
    pending = Counter(str(m["node_id"]) for m in models for _ in (m.get("pending") or []))
    up = sum(1 for n in nodes if n.get("state") == "online")
    failed = sum(1 for p in pipelines if p.get("state") in BAD)
    cards = [
        ("nodes up", f"{up}/{len(nodes)}"),
        ("pipelines running", f"{sum(running.values())}/{len(pipelines)}"),
        ("pipelines failed", str(failed)),
        ("alerts firing", str(len(firing))),
        ("pending approvals", str(sum(pending.values()))),
        ("queued items", str(sum(queued.values()))),
    ]
    body = [
        "<h1>Fleet</h1>",
        _flash(ctx),
        '<div class="cards">',
        *(
            f'<div class="card" data-card="{esc(k)}"><b>{esc(v)}</b>{esc(k)}</div>'
            for k, v in cards
        ),
        "</div>",
    ]
    if firing:
        body.append(notice(Html(f"{len(firing)} alert(s) firing: " + "; ".join(
            f"{esc(a.get('rule'))} {esc(a.get('key'))}: {esc(a.get('message'))}"
            for a in firing[:5]) + ' (<a href="/events">timeline</a>)'), "bad"))  # fmt: skip
    if store.empty:
        body.append(notice("The store has no tables yet: is `ion monitor` running?"))
    layers = [*LAYERS, *sorted({str(n.get("layer") or "") for n in nodes} - set(LAYERS))]
    for layer in layers:
        members = [n for n in nodes if str(n.get("layer") or "") == layer]
        if not members and layer not in LAYERS:
            continue
        down = sum(1 for n in members if n.get("state") != "online")
        body.append(
            f'<h2 data-layer="{esc(layer)}">{esc(layer or "no layer")} '
            f'<span class="muted">{len(members) - down} up, {down} down</span></h2>'
        )
        rows = [
            [
                node_link(n["node_id"]),
                badge(n.get("state")),
                node_link(n["parent"]) if n.get("parent") else "-",
                heartbeat(n, ctx.now_ms),
                f"{n['cpu_percent']:.0f}%" if n.get("cpu_percent") is not None else "-",
                fmt.size(n.get("rss_bytes")),
                f"{running[n['node_id']]}/{per_node[n['node_id']]}",
                queued[n["node_id"]],
                pending[n["node_id"]] or "",
                n.get("agent_version") or "",
            ]
            for n in members
        ]
        body.append(table(
            ["node", "state", "parent", "heartbeat", "cpu", "rss", "pipelines", "queued",
             "pending", "agent"], rows, numeric=(4, 5, 7, 8), empty=f"no {layer} nodes",
            cls="nodes", row_ids=[str(n["node_id"]) for n in members]))  # fmt: skip
    body.append("<h2>IONs</h2>")
    body.append(ions_table(store))
    return Page("Fleet", Html("".join(body)), section="fleet")


def ions_table(store: Store) -> Html:
    rows = [
        [
            ion_link(i["name"]),
            i.get("version"),
            len(i.get("pipelines") or []),
            len(i.get("edges") or []),
            "deleted" if i.get("deleted_ms") else "",
            i.get("applied_by") or "",
            i.get("description") or "",
        ]
        for i in store.ions()
    ]
    return table(["ion", "version", "pipelines", "edges", "", "applied by", "description"],
                 rows, numeric=(1, 2, 3), empty="no ION applied yet")  # fmt: skip


def ions_index(store: Store, ctx: Ctx) -> Page:
    return Page("IONs", Html(f"<h1>IONs</h1>{_flash(ctx)}{ions_table(store)}"), section="ions")


# -- one ION -------------------------------------------------------------------------------


def ion_page(store: Store, name: str, ctx: Ctx) -> Page:
    ion = store.ion(name)
    if ion is None:
        return not_found(f"no ION named {name!r} in the store")
    g = build_graph(ion, store.pipelines(ion=name), store.node_models(ion=name), store.streams())
    body = [f"<h1>ION {esc(name)} <span class=muted>version {esc(ion.get('version'))}</span></h1>"]
    body.append(_flash(ctx))
    if ion.get("deleted_ms"):
        body.append(notice(f"deleted {fmt.age(ctx.now_ms, ion['deleted_ms'])}", "bad"))
    if ion.get("description"):
        body.append(f"<p>{esc(ion['description'])}</p>")
    body.append(f'<div class="graph-wrap">{graph_svg(g)}</div>')
    body.append("<h2>Edges</h2>")
    body.append(table(
        ["edge", "kind", "from", "to", "policy", "live"],
        [[a.name, a.kind, a.source, a.target, a.policy, a.live] for a in g.arrows],
        cls="edges", empty="no edges"))  # fmt: skip
    body.append("<h2>Pipelines per node</h2>")
    rows = store.pipelines(ion=name)
    body.append(table(
        ["pipeline", "node", "state", "engine", "restarts", "since", "message"],
        [[r["pipeline"], node_link(r["node_id"]), badge(r.get("state")), r.get("engine") or "",
          r.get("restarts") or 0, fmt.age(ctx.now_ms, r.get("since_ms")), r.get("message") or ""]
         for r in rows], numeric=(4,), empty="no node reports a pipeline of it yet"))  # fmt: skip
    return Page(f"ION {name}", Html("".join(body)), section="ions")


# -- one node ------------------------------------------------------------------------------


def model_actions(ion: str, edge: str, pending: Sequence[str], ctx: Ctx, back: str) -> Html:
    """Approve/reject buttons per pending version and a rollback button, or why not."""
    dis = "" if ctx.can_act else " disabled"
    hidden = (
        f'<input type="hidden" name="ion" value="{esc(ion)}">'
        f'<input type="hidden" name="edge" value="{esc(edge)}">'
        f'<input type="hidden" name="csrf" value="{esc(ctx.csrf)}">'
        f'<input type="hidden" name="next" value="{esc(back)}">'
    )
    out = []
    for v in pending:
        ver = f'<input type="hidden" name="version" value="{esc(v)}">'
        out.append(
            f'<form class="inline" method="post" action="/actions/approve">{hidden}{ver}'
            f'<button class="primary" data-action="approve" data-version="{esc(v)}"{dis}>'
            f"Approve {esc(v)}</button></form>"
            f'<form class="inline" method="post" action="/actions/reject" '
            f'data-confirm="Reject version {esc(v)} of {esc(ion)}/{esc(edge)}?">{hidden}{ver}'
            f'<button class="danger" data-action="reject" data-version="{esc(v)}"{dis}>'
            f"Reject {esc(v)}</button></form>"
        )
    out.append(
        f'<form class="inline" method="post" action="/actions/rollback" '
        f'data-confirm="Roll back {esc(ion)}/{esc(edge)} on every node?">{hidden}'
        f'<button data-action="rollback"{dis}>Roll back</button></form>'
    )
    if not ctx.can_act:
        out.append(f'<small class="muted why-disabled">{esc(ctx.why_not)}</small>')
    return Html("".join(out))


def models_table(rows: Sequence[Mapping[str, Any]], ctx: Ctx, back: str, *, by_node: bool) -> Html:
    first = "node" if by_node else "ion/edge"
    return table(
        [first, "active", "pending", "held", "canary", "updated", "actions"],
        [
            [
                node_link(m["node_id"]) if by_node else f"{m['ion']}/{m['edge']}",
                m.get("active_version") or "-",
                ", ".join(m.get("pending") or []) or "-",
                ", ".join(m.get("versions") or []) or "-",
                m.get("canary_state") or "",
                fmt.age(ctx.now_ms, m.get("updated_ms")),
                model_actions(m["ion"], m["edge"], m.get("pending") or [], ctx, back),
            ]
            for m in rows
        ],
        cls="models",
        empty="no models reported",
    )


def node_page(store: Store, node_id: str, ctx: Ctx, *, window_ms: int = 3_600_000) -> Page:
    n = store.node(node_id)
    if n is None:
        return not_found(f"no node {node_id!r} in the store")
    back = f"/nodes/{quote(node_id, safe='')}"
    labels = ", ".join(f"{k}={v}" for k, v in (n.get("labels") or {}).items())
    facts = [
        ("state", badge(n.get("state"))),
        ("layer", n.get("layer") or "-"),
        ("parent", node_link(n["parent"]) if n.get("parent") else "-"),
        ("labels", labels or "-"),
        ("agent", n.get("agent_version") or "-"),
        ("started", fmt.clock(n.get("started_ms"))),
        ("heartbeat", heartbeat(n, ctx.now_ms)),
        ("cpu", f"{n['cpu_percent']:.0f}%" if n.get("cpu_percent") is not None else "-"),
        ("rss", fmt.size(n.get("rss_bytes"))),
        ("disk free", fmt.size(n.get("disk_free_bytes"))),
    ]
    body = [f"<h1>Node {esc(node_id)}</h1>", _flash(ctx)]
    if n.get("error"):
        body.append(notice(n["error"], "bad"))
    body.append(table(["", ""], facts, cls="facts"))
    children = [c for c in store.nodes() if c.get("parent") == node_id]
    if children:
        body.append("<h2>Behind this gateway</h2>")
        body.append(table(["node", "state", "heartbeat"], [
            [node_link(c["node_id"]), badge(c.get("state")), heartbeat(c, ctx.now_ms)]
            for c in children]))  # fmt: skip
    body.append("<h2>Pipelines</h2>")
    body.append(table(
        ["ion", "pipeline", "state", "engine", "restarts", "since", "exit", "message"],
        [[ion_link(p["ion"]), p["pipeline"], badge(p.get("state")), p.get("engine") or "",
          p.get("restarts") or 0, fmt.age(ctx.now_ms, p.get("since_ms")),
          "" if p.get("exit_code") is None else p["exit_code"], p.get("message") or ""]
         for p in store.pipelines(node_id=node_id)], numeric=(4,), cls="pipelines",
        empty="no pipelines on this node"))  # fmt: skip
    body.append("<h2>Models</h2>")
    body.append(models_table(store.node_models(node_id=node_id), ctx, back, by_node=False))
    body.append("<h2>Links</h2>")
    body.append(table(
        ["link", "url", "connected", "since", "error"],
        [[lk["name"], lk.get("url") or "", badge("up" if lk.get("connected") else "down",
          "ok" if lk.get("connected") else "bad"), fmt.age(ctx.now_ms, lk.get("since_ms")),
          lk.get("error") or ""] for lk in store.links(node_id)], empty="no links"))  # fmt: skip
    body.append("<h2>Queues</h2>")
    body.append(queues_table(store.queues(node_id), by_node=False))
    body.append("<h2>Charts</h2>")
    body.append(node_charts(store, node_id, ctx.now_ms - window_ms))
    body.append("<h2>Recent events</h2>")
    from .pages_more import timeline

    body.append(timeline(store.events(node_id=node_id, limit=30), ctx.now_ms))
    return Page(f"Node {node_id}", Html("".join(body)), section="fleet")


def queues_table(rows: Sequence[Mapping[str, Any]], *, by_node: bool) -> Html:
    head = ["node"] if by_node else []
    return table(
        [*head, "link", "class", "depth", "bytes", "oldest", "sent", "dropped", "expired",
         "rejected"],
        [[*([node_link(q["node_id"])] if by_node else []), q["link"], q["traffic_class"],
          q.get("depth") or 0, fmt.size(q.get("bytes")), fmt.duration_ms(q.get("oldest_age_ms")),
          q.get("sent") or 0, q.get("dropped") or 0, q.get("expired") or 0,
          q.get("rejected") or 0] for q in rows],
        numeric=range(len(head) + 2, len(head) + 9), cls="queues", empty="no queues reported",
    )  # fmt: skip


def node_charts(store: Store, node_id: str, since_ms: int, max_charts: int = 12) -> Html:
    charts: list[str] = []
    drift: dict[str, list[Series]] = {}
    thresholds: dict[str, float] = {}
    for s in store.series_names("drift", node_id, since_ms=since_ms):
        pts = store.series("drift", node_id=node_id, pipeline=s["pipeline"], name=s["name"],
                           since_ms=since_ms)  # fmt: skip
        drift.setdefault(s["pipeline"], []).append(
            Series(s["name"], tuple((p["time_ms"], float(p["value"])) for p in pts))
        )
        if pts and pts[-1].get("threshold"):
            thresholds[s["pipeline"]] = float(pts[-1]["threshold"])
    for pipeline, series in drift.items():
        charts.append(line_chart(f"drift · {pipeline}", series, threshold=thresholds.get(pipeline)))
    for s in store.series_names("stats", node_id, since_ms=since_ms)[
        : max(0, max_charts - len(charts))
    ]:
        pts = store.series("stats", node_id=node_id, pipeline=s["pipeline"], name=s["name"],
                           since_ms=since_ms)  # fmt: skip
        one = Series(s["name"], tuple((p["time_ms"], float(p["value"])) for p in pts))
        charts.append(line_chart(f"{s['pipeline']} · {s['name']}", [one]))
    hist = store.queue_history(node_id=node_id, since_ms=since_ms)
    if hist:
        by_link: dict[str, list[tuple[int, float]]] = {}
        for h in hist:
            by_link.setdefault(str(h["link"]), []).append((h["time_ms"], float(h["depth"] or 0)))
        charts.append(line_chart("queue depth", [Series(k, tuple(v)) for k, v in by_link.items()]))
    if not charts:
        return Html('<p class="muted">no drift, stats or queue history yet</p>')
    return Html(f'<div class="charts">{"".join(charts)}</div>')
