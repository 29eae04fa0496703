"""The models, events, charts, queues and login pages (pure: rows in, ``Page`` out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import format as fmt
from .charts import Series, line_chart
from .markup import Html, Page, badge, esc, node_link, notice, table
from .pages import Ctx, _flash, models_table, queues_table
from .store import Store


def timeline(events: Sequence[Mapping[str, Any]], now_ms: int) -> Html:
    if not events:
        return Html('<p class="muted">no events yet</p>')
    items = []
    for e in events:
        sev = str(e.get("severity") or "info")
        where = " · ".join(str(x) for x in (e.get("ion"), e.get("pipeline")) if x)
        items.append(
            f'<li class="event sev-{esc(sev)}" data-type="{esc(e.get("type"))}">'
            f'<span class="when" title="{esc(fmt.clock(e.get("time_ms")))}">'
            f"{esc(fmt.age(now_ms, e.get('time_ms')))}</span>{badge(sev)} "
            f'<span class="type">{esc(e.get("type"))}</span>'
            f"{node_link(e['node_id']) if e.get('node_id') else ''} "
            f'<span class="muted">{esc(where)}</span> '
            f'<span class="message">{esc(e.get("message"))}</span></li>'
        )
    return Html(f'<ol class="timeline events">{"".join(items)}</ol>')


def alerts_list(alerts: Sequence[Mapping[str, Any]], now_ms: int) -> Html:
    if not alerts:
        return Html('<p class="muted">no alerts</p>')
    items = []
    for a in alerts:
        firing = a.get("state") == "firing"
        sev = str(a.get("severity") or "warning")
        since = (
            f"firing for {fmt.duration_ms(now_ms - int(a.get('started_ms') or now_ms))}"
            if firing
            else f"resolved {fmt.age(now_ms, a.get('resolved_ms'))}"
        )
        value = (
            f" (value {fmt.number(a.get('value'))}, threshold {fmt.number(a.get('threshold'))})"
            if a.get("value") is not None
            else ""
        )
        items.append(
            f'<li class="alert sev-{esc(sev)} {"alert-firing" if firing else ""}" '
            f'data-rule="{esc(a.get("rule"))}" data-state="{esc(a.get("state"))}">'
            f'<span class="when">{esc(since)}</span>'
            f"{badge(a.get('state'), 'bad' if firing else 'ok')} "
            f"{badge(sev)} <b>{esc(a.get('rule'))}</b> {esc(a.get('key'))} "
            f"{node_link(a['node_id']) if a.get('node_id') else ''} "
            f'<span class="message">{esc(a.get("message"))}</span>{esc(value)}</li>'
        )
    return Html(f'<ol class="timeline alerts">{"".join(items)}</ol>')


@dataclass(frozen=True, slots=True)
class EventQuery:
    since_ms: int = 0
    limit: int = 100
    node_id: str | None = None


def events_page(store: Store, q: EventQuery, ctx: Ctx) -> Page:
    alerts = store.alerts(limit=50)
    body = [
        "<h1>Events and alerts</h1>",
        _flash(ctx),
        "<h2>Alerts</h2>",
        alerts_list(alerts, ctx.now_ms),
        f"<h2>Events{f' of {esc(q.node_id)}' if q.node_id else ''} "
        '<span class="muted">newest first</span></h2>',
        timeline(store.events(since_ms=q.since_ms, limit=q.limit, node_id=q.node_id), ctx.now_ms),
    ]
    return Page("Events", Html("".join(body)), section="events")


def models_page(store: Store, ctx: Ctx) -> Page:
    body = ["<h1>Models</h1>", _flash(ctx)]
    if not ctx.can_act:
        body.append(notice(f"Actions are disabled: {ctx.why_not}"))
    rows = store.node_models()
    versions = store.model_versions()
    policies = {
        (i["name"], str(e.get("name"))): str(e.get("policy") or "")
        for i in store.ions()
        for e in i.get("edges") or []
        if isinstance(e, Mapping)
    }
    keys = sorted({(m["ion"], m["edge"]) for m in rows} | {(v["ion"], v["edge"]) for v in versions})
    if not keys:
        body.append('<p class="muted">no model edges reported yet</p>')
    for ion, edge in keys:
        mine = [m for m in rows if (m["ion"], m["edge"]) == (ion, edge)]
        pending = sorted({v for m in mine for v in (m.get("pending") or [])})
        policy = policies.get((ion, edge), "")
        body.append(
            f'<h2 data-model-edge="{esc(ion)}/{esc(edge)}">{esc(ion)}/{esc(edge)} '
            f'<span class="muted">{esc("policy " + policy if policy else "")}</span></h2>'
        )
        if pending:
            body.append(notice(f"waiting for approval: {', '.join(pending)}", "bad"))
        body.append(models_table(mine, ctx, "/models", by_node=True))
        published = [v for v in versions if (v["ion"], v["edge"]) == (ion, edge)][:10]
        body.append(table(
            ["version", "model", "size", "producer", "metrics", "created"],
            [[v["version"], str(v.get("model_id") or "")[:12], fmt.size(v.get("size_bytes")),
              v.get("producer_node") or "",
              ", ".join(f"{k} {fmt.number(x)}" for k, x in (v.get("metrics") or {}).items()),
              fmt.age(ctx.now_ms, v.get("created_ms"))] for v in published],
            empty="no version published yet", cls="versions"))  # fmt: skip
    body.append("<h2>Decisions <span class=muted>audit trail, newest first</span></h2>")
    body.append(table(
        ["when", "ion/edge", "version", "node", "action", "by", "reason"],
        [[fmt.age(ctx.now_ms, d.get("time_ms")), f"{d['ion']}/{d['edge']}", d.get("version"),
          d.get("node_id") or "(operator)", d.get("action"), d.get("actor") or "",
          d.get("reason") or ""] for d in store.decisions(limit=100)],
        cls="decisions", empty="no decisions yet"))  # fmt: skip
    return Page("Models", Html("".join(body)), section="models")


@dataclass(frozen=True, slots=True)
class ChartQuery:
    node_id: str | None = None
    pipeline: str | None = None
    window_ms: int = 3_600_000


def charts_page(store: Store, q: ChartQuery, ctx: Ctx, max_charts: int = 24) -> Page:
    since = ctx.now_ms - q.window_ms
    charts: list[str] = []
    # Drift: one chart per (node, pipeline), a line per metric, the threshold dashed.
    drift: dict[tuple[str, str], list[Series]] = {}
    limits: dict[tuple[str, str], float] = {}
    for s in store.series_names("drift", q.node_id, since_ms=since):
        if q.pipeline and s["pipeline"] != q.pipeline:
            continue
        key = (s["node_id"], s["pipeline"])
        pts = store.series("drift", node_id=key[0], pipeline=key[1], name=s["name"],
                           since_ms=since)  # fmt: skip
        drift.setdefault(key, []).append(
            Series(s["name"], tuple((p["time_ms"], float(p["value"])) for p in pts))
        )
        if pts and pts[-1].get("threshold"):
            limits[key] = float(pts[-1]["threshold"])
    for (node, pipeline), series in sorted(drift.items())[:max_charts]:
        charts.append(
            line_chart(
                f"drift · {node} · {pipeline}", series, threshold=limits.get((node, pipeline))
            )
        )
    # Stats: one chart per (pipeline, name), a line per node.
    stats: dict[tuple[str, str], list[Series]] = {}
    for s in store.series_names("stats", q.node_id, since_ms=since):
        if q.pipeline and s["pipeline"] != q.pipeline:
            continue
        pts = store.series("stats", node_id=s["node_id"], pipeline=s["pipeline"],
                           name=s["name"], since_ms=since)  # fmt: skip
        stats.setdefault((s["pipeline"], s["name"]), []).append(
            Series(s["node_id"], tuple((p["time_ms"], float(p["value"])) for p in pts))
        )
    room = max(0, max_charts - len(charts))
    for (pipeline, name), series in sorted(stats.items())[:room]:
        charts.append(line_chart(f"{pipeline} · {name}", series))
    what = " · ".join(x for x in (q.node_id, q.pipeline) if x) or "all nodes"
    body = [
        f"<h1>Charts <span class=muted>{esc(what)}, last {esc(fmt.duration_ms(q.window_ms))}"
        "</span></h1>",
        _flash(ctx),
        '<form method="get" class="filters">node <input type="text" name="node" '
        f'value="{esc(q.node_id or "")}"> pipeline <input type="text" name="pipeline" '
        f'value="{esc(q.pipeline or "")}"> minutes <input type="text" name="minutes" size="5" '
        f'value="{q.window_ms // 60000}"> <button>show</button></form>',
        f'<div class="charts">{"".join(charts)}</div>'
        if charts
        else '<p class="muted">no drift or stats in this period</p>',
    ]
    return Page("Charts", Html("".join(body)), section="charts")


def queues_page(store: Store, ctx: Ctx, window_ms: int = 3_600_000) -> Page:
    streams = store.streams()
    body = [
        "<h1>Queues and lag</h1>",
        _flash(ctx),
        "<h2>Outbox queues per link and traffic class</h2>",
        queues_table(store.queues(), by_node=True),
        "<h2>Streams as the monitor receives them</h2>",
        table(
            ["source", "stream", "received", "last seq", "gaps", "repaired", "lag", "hops",
             "updated"],
            [[node_link(s["source_node"]), s["stream"], s.get("received") or 0,
              s.get("last_sequence") or 0, s.get("gaps") or 0, s.get("repaired") or 0,
              fmt.duration_ms(s.get("lag_ms")), s.get("hops") or 0,
              fmt.age(ctx.now_ms, s.get("updated_ms"))] for s in streams],
            numeric=(2, 3, 4, 5, 6, 7), cls="streams", empty="no streams seen yet"),
    ]  # fmt: skip
    hist = store.queue_history(since_ms=ctx.now_ms - window_ms)
    by_node: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for h in hist:
        by_node.setdefault(str(h["node_id"]), {}).setdefault(str(h["link"]), []).append(
            (h["time_ms"], float(h["depth"] or 0))
        )
    if by_node:
        body.append("<h2>Queue depth over time</h2><div class=charts>")
        body.extend(
            line_chart(f"{node} queue depth", [Series(k, tuple(v)) for k, v in links.items()])
            for node, links in sorted(by_node.items())[:24]
        )
        body.append("</div>")
    return Page("Queues", Html("".join(body)), section="queues")


def login_page(ctx: Ctx, *, enabled: bool, logged_in: bool, error: str = "") -> Page:
    body = ["<h1>Log in</h1>", _flash(ctx)]
    if error:
        body.append(notice(error, "bad"))
    if not enabled:
        body.append(notice(
            "No token is configured, so the dashboard is read-only: start it with --token "
            "(or ION_DASHBOARD_TOKEN) to approve, reject and roll back from here."))  # fmt: skip
    elif logged_in:
        body.append(notice("You are logged in.", "ok"))
        body.append(
            '<form method="post" action="/logout">'
            f'<input type="hidden" name="csrf" value="{esc(ctx.csrf)}">'
            "<button>Log out</button></form>"
        )
    else:
        body.append(
            '<form method="post" action="/login">'
            '<label>Token <input type="password" name="token" autocomplete="current-password">'
            "</label> <button class=primary>Log in</button></form>"
        )
    return Page("Log in", Html("".join(body)), status=401 if error else 200)


def unavailable_page(message: str) -> Page:
    return Page(
        "Store unavailable",
        Html(
            f"<h1>No data yet</h1>{notice(message, 'bad')}"
            "<p>This page refreshes by itself once the store appears.</p>"
        ),
        status=503,
    )


def bad_request_page(message: str) -> Page:
    return Page("Bad request", Html(f"<h1>Bad request</h1>{notice(message, 'bad')}"), status=400)
