"""The JSON API, ``/metrics`` and ``/healthz`` (rows as the store holds them, JSON decoded).

Errors are JSON too: ``{"error": ...}`` with 400 (bad parameter), 404 (unknown node or ION)
or 503 (no store yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ion.errors import NotFoundError

from .graph import build_graph, graph_json
from .metrics import CONTENT_TYPE, exposition, families
from .params import BadParamError, event_query, int_param, series_table, text_param
from .store import Store, StoreUnavailableError, open_store

# /metrics exports a drift score while it is at most this old (a silent node's goes stale).
DRIFT_WINDOW_MS = 3_600_000


def register(app: web.Application, db_path: Path, clock: Callable[[], int]) -> None:
    async def run(fn: Callable[[Store], Any]) -> web.Response:
        def work() -> Any:
            with open_store(db_path) as store:
                return fn(store)

        try:
            return web.json_response(await asyncio.to_thread(work))
        except StoreUnavailableError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        except BadParamError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except NotFoundError as exc:
            return web.json_response({"error": str(exc)}, status=404)

    async def nodes(_r: web.Request) -> web.Response:
        return await run(lambda s: s.nodes())

    async def node(r: web.Request) -> web.Response:
        node_id = r.match_info["node"]

        def one(s: Store) -> dict[str, Any]:
            n = s.node(node_id)
            if n is None:
                raise NotFoundError(f"no node {node_id!r}")
            return {
                "node": n,
                "pipelines": s.pipelines(node_id=node_id),
                "links": s.links(node_id),
                "queues": s.queues(node_id),
                "models": s.node_models(node_id=node_id),
            }

        return await run(one)

    async def ions(_r: web.Request) -> web.Response:
        return await run(lambda s: s.ions())

    async def ion_graph(r: web.Request) -> web.Response:
        name = r.match_info["name"]

        def graph(s: Store) -> dict[str, Any]:
            ion = s.ion(name)
            if ion is None:
                raise NotFoundError(f"no ION {name!r}")
            g = build_graph(ion, s.pipelines(ion=name), s.node_models(ion=name), s.streams())
            return graph_json(g)

        return await run(graph)

    async def models(_r: web.Request) -> web.Response:
        return await run(
            lambda s: {
                "node_models": s.node_models(),
                "versions": s.model_versions(),
                "decisions": s.decisions(limit=200),
            }
        )

    async def events(r: web.Request) -> web.Response:
        try:
            q = event_query(r.query)
        except BadParamError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return await run(lambda s: s.events(since_ms=q.since_ms, limit=q.limit, node_id=q.node_id))

    async def alerts(r: web.Request) -> web.Response:
        firing = r.query.get("state") == "firing"
        return await run(lambda s: s.alerts(firing_only=firing))

    async def series(r: web.Request) -> web.Response:
        try:
            table = series_table(r.query)
            since = int_param(r.query, "since", 0, 0, 2**62)
            limit = int_param(r.query, "limit", 5000, 1, 50_000)
            node_id, pipeline = text_param(r.query, "node"), text_param(r.query, "pipeline")
            name = text_param(r.query, "name")
        except BadParamError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return await run(
            lambda s: {
                "table": table,
                "series": s.series_names(table, node_id, since_ms=since),
                "points": s.series(
                    table,
                    node_id=node_id,
                    pipeline=pipeline,
                    name=name,
                    since_ms=since,
                    limit=limit,
                ),
            }
        )

    async def queues(_r: web.Request) -> web.Response:
        return await run(lambda s: {"queues": s.queues(), "streams": s.streams()})

    async def changes(_r: web.Request) -> web.Response:
        def stamp() -> dict[str, Any]:
            try:
                with open_store(db_path) as s:
                    return {"stamp": s.stamp(), "now_ms": clock()}
            except StoreUnavailableError as exc:
                # 200: the page shows the reason and keeps polling until the store appears.
                return {"stamp": "", "now_ms": clock(), "error": str(exc)}

        return web.json_response(await asyncio.to_thread(stamp))

    async def healthz(_r: web.Request) -> web.Response:
        def check() -> tuple[int, dict[str, Any]]:
            try:
                with open_store(db_path) as s:
                    s.stamp()
                    return 200, {"ok": True, "store": str(db_path), "empty": s.empty}
            except StoreUnavailableError as exc:
                return 503, {"ok": False, "error": str(exc)}

        status, body = await asyncio.to_thread(check)
        return web.json_response(body, status=status)

    async def metrics(_r: web.Request) -> web.Response:
        def scrape() -> str:
            now = clock()
            try:
                with open_store(db_path) as s:
                    fams = families(
                        now_ms=now,
                        nodes=s.nodes(),
                        pipelines=s.pipelines(),
                        queues=s.queues(),
                        drift=s.latest_drift(now - DRIFT_WINDOW_MS),
                        alerts=s.alerts(firing_only=True, limit=100_000),
                        streams=s.streams(),
                    )
                    up = 1.0
            except StoreUnavailableError:
                fams, up = [], 0.0
            from .metrics import Family

            store_up = Family("ion_monitor_store_up", "gauge", "1 when the store is readable.")
            store_up.samples.append(({}, up))
            return exposition([store_up, *fams])

        text = await asyncio.to_thread(scrape)
        resp = web.Response(body=text.encode())
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp

    r = app.router
    r.add_get("/api/nodes", nodes)
    r.add_get("/api/nodes/{node}", node)
    r.add_get("/api/ions", ions)
    r.add_get("/api/ions/{name}/graph", ion_graph)
    r.add_get("/api/models", models)
    r.add_get("/api/events", events)
    r.add_get("/api/alerts", alerts)
    r.add_get("/api/series", series)
    r.add_get("/api/queues", queues)
    r.add_get("/api/changes", changes)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
