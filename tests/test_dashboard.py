"""The dashboard: pure parts (graph layout, charts, /metrics, auth, parameters), then the
HTTP server over a seeded store (pages, JSON API, bad input, a missing store)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from test_dashboard_support import ION, XSS, create_store, seed

from broker.dashboard import DashboardSettings, serve_dashboard
from broker.dashboard.auth import Auth
from broker.dashboard.charts import Series, line_chart
from broker.dashboard.graph import build_graph, graph_svg
from broker.dashboard.metrics import Family, exposition
from broker.dashboard.params import BadParamError, event_query, safe_next
from ion.errors import InputError, UnavailableError

NOW = 1_800_000_000_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- pure ----------------------------------------------------------------------------------


def ion_row(edges: list[dict[str, Any]], pipelines: list[str]) -> dict[str, Any]:
    return {
        "name": "x",
        "version": 1,
        "pipelines": [{"name": p, "engine": "python"} for p in pipelines],
        "edges": edges,
    }


def test_graph_ranks_pipelines_and_keeps_cycles_as_back_edges() -> None:
    ion = ion_row(
        [
            {"name": "m", "kind": "model", "from": "train", "to": ["infer.sub.model"]},
            {"name": "h", "kind": "health", "from": "infer", "to": ["train", "cmp"]},
            {"name": "t", "kind": "trigger", "from": {"pipeline": "cmp"}, "to": ["train"]},
        ],
        ["train", "infer", "cmp"],
    )
    rows = [
        {"ion": "x", "pipeline": "infer", "node_id": "e1", "state": "running"},
        {"ion": "x", "pipeline": "infer", "node_id": "e2", "state": "crash_loop"},
        {"ion": "x", "pipeline": "train", "node_id": "c", "state": "running"},
    ]
    g = build_graph(ion, rows)
    x = {b.name: b.x for b in g.boxes}
    assert x["train"] < x["infer"] < x["cmp"]
    back = {(a.source, a.target) for a in g.arrows if a.back}
    assert back == {("infer", "train"), ("cmp", "train")}  # the cycles, drawn underneath
    boxes = {b.name: b for b in g.boxes}
    assert (boxes["train"].health, boxes["train"].summary) == ("ok", "running on 1/1")
    assert boxes["infer"].health == "bad" and "1 of 2 failed" in boxes["infer"].summary
    assert boxes["cmp"].health == "idle"
    svg = graph_svg(g)
    assert svg.count("data-pipeline=") == 3 and svg.count("data-edge=") == 4


def test_graph_live_state_on_edges_and_escaping() -> None:
    ion = ion_row(
        [
            {"name": "w", "kind": "model", "from": "a", "to": ["b"], "policy": "manual"},
            {"name": "d", "kind": "data", "from": "b", "to": ["<c>"]},
        ],
        ["a", "b"],
    )
    models = [
        {"ion": "x", "edge": "w", "node_id": "e1", "active_version": "3", "pending": ["4"]},
        {"ion": "x", "edge": "w", "node_id": "e2", "active_version": "3", "pending": []},
    ]
    streams = [
        {"stream": "ion/v1/ions/x/edges/d/data/e1", "received": 10, "gaps": 2, "repaired": 1,
         "lag_ms": 40},
        {"stream": "ion/v1/ions/x/edges/d/data/e2", "received": 5, "gaps": 0, "repaired": 0,
         "lag_ms": 1500},
        {"stream": "not/a/topic", "received": 99},
    ]  # fmt: skip
    g = build_graph(ion, [], models, streams)
    live = {a.name: a.live for a in g.arrows}
    assert live["w"] == "v3 on 2, v4 pending on 1"
    assert live["d"] == "15 msgs, lag 1.5 s, 1 gaps"
    svg = graph_svg(g)
    assert "<c>" not in svg and "&lt;c&gt;" in svg  # an endpoint not declared still gets a box


def test_line_chart_draws_every_point_and_the_threshold() -> None:
    pts = tuple((NOW + i * 1000, float(i)) for i in range(10))
    svg = line_chart("drift <psi>", [Series("psi", pts), Series("js", pts[:3])], threshold=5.0)
    assert svg.count('class="pt"') == 13
    assert 'class="threshold"' in svg and "drift &lt;psi&gt;" in svg
    assert 'data-points="10"' in svg
    assert "no data in this period" in line_chart("empty", [Series("a", ())])
    flat = line_chart("flat", [Series("a", ((NOW, 2.0),))])  # one point, no range: no crash
    assert flat.count('class="pt"') == 1


def test_metrics_exposition_survives_a_strict_parser() -> None:
    f = Family("ion_node_up", "gauge", "help with \\ and\nnewline")
    f.samples.append(({"node": 'a"b\\c\nd'}, 1.0))
    f.samples.append(({"node": "plain"}, float("nan")))
    c = Family("ion_stream_received_total", "counter", "received")
    c.samples.append(({"source": "s", "stream": "ion/v1/x"}, 12.0))
    [up, received] = list(text_string_to_metric_families(exposition([f, c])))
    assert up.type == "gauge" and up.samples[0].labels == {"node": 'a"b\\c\nd'}
    assert up.samples[0].value == 1.0
    assert received.type == "counter" and received.samples[0].value == 12.0


def test_auth_needs_the_bearer_token_or_the_cookie_and_csrf() -> None:
    off = Auth(None)
    assert not off.may_act(authorization="Bearer x", cookie=None, csrf=None)
    a = Auth("s3cret")
    assert a.may_act(authorization="Bearer s3cret", cookie=None, csrf=None)
    assert not a.may_act(authorization="Bearer wrong", cookie=None, csrf=None)
    assert "s3cret" not in a.session_value()  # the cookie never holds the token
    ok = {"authorization": None, "cookie": a.session_value(), "csrf": a.csrf_value()}
    assert a.may_act(**ok)
    assert not a.may_act(**{**ok, "csrf": None})  # a cross-site form cannot know it
    assert not a.may_act(**{**ok, "csrf": "0" * 64})
    assert not a.may_act(**{**ok, "cookie": Auth("other").session_value()})


def test_parameters_are_strict() -> None:
    assert event_query({"since": "5", "limit": "10"}).limit == 10
    for bad, why in (({"limit": "abc"}, "integer"), ({"limit": "0"}, "between"),
                     ({"since": "-1"}, "between")):  # fmt: skip
        with pytest.raises(BadParamError, match=why):
            event_query(bad)
    assert safe_next("/nodes/a") == "/nodes/a"
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil", None):
        assert safe_next(evil) == "/"


# -- the server over a store ---------------------------------------------------------------

Get = Callable[..., Awaitable[tuple[int, str, dict[str, str]]]]


@pytest_asyncio.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """``await serve(settings)`` -> URL of a running dashboard; all stopped at the end."""
    tasks: list[asyncio.Task[None]] = []

    async def start(settings: DashboardSettings) -> str:
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            serve_dashboard(settings, started=got.set_result), name="dashboard"
        )
        tasks.append(task)
        done, _ = await asyncio.wait({got, task}, timeout=10, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()  # raises what stopped it
        return got.result()

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def fetch(
    http: aiohttp.ClientSession, url: str, method: str = "GET", **kw: Any
) -> tuple[int, str, dict[str, str]]:
    async with http.request(method, url, allow_redirects=False, **kw) as r:
        return r.status, await r.text(), dict(r.headers)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "monitor.db"
    seed(path, now_ms()).close()
    return path


@pytest.mark.asyncio
async def test_pages_show_the_fleet_ion_node_and_events(
    serve: Any, http: aiohttp.ClientSession, store: Path
) -> None:
    url = await serve(DashboardSettings(db_path=store, port=0))
    assert url.startswith("http://127.0.0.1:")
    status, page, headers = await fetch(http, url)
    assert status == 200 and "text/html" in headers["Content-Type"]
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for layer, up, down in (("cloud", 1, 0), ("gateway", 1, 0), ("edge", 2, 1)):
        assert re.search(
            rf'data-layer="{layer}">{layer} <span class="muted">{up} up, {down} down', page
        )
    assert 'data-row="edge-3"' in page and 'data-state="offline"' in page
    assert "2 alert(s) firing" in page
    status, page, _ = await fetch(http, f"{url}ions/{ION}")
    assert status == 200
    assert 'data-pipeline="training"' in page and 'data-edge="retrain"' in page
    assert "v3 on 2, v4 pending on 1" in page and "118 msgs, lag 42 ms, 2 gaps" in page
    status, page, _ = await fetch(http, f"{url}nodes/edge-1")
    assert status == 200
    assert "Approve 4" in page and "disabled" in page and "no token is configured" in page
    assert "upstream" in page and 'class="pt"' in page  # queues and charts
    status, page, _ = await fetch(http, f"{url}events")
    assert status == 200
    assert page.index('data-rule="drift"') < page.index('data-rule="backlog"')  # firing first
    assert page.index("alert.fired") < page.index("model.held")  # newest first
    for path in ("models", "charts", "queues", "charts?node=edge-1&minutes=5", "login"):
        status, page, _ = await fetch(http, url + path)
        assert status == 200, path
    status, part, _ = await fetch(http, url, headers={"X-Partial": "1"})
    assert status == 200 and not part.startswith("<!doctype") and "Fleet" in part


@pytest.mark.asyncio
async def test_everything_from_the_store_is_escaped(
    serve: Any, http: aiohttp.ClientSession, store: Path
) -> None:
    url = await serve(DashboardSettings(db_path=store, port=0))
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE nodes SET error = ? WHERE node_id = 'edge-2'", (XSS,))
    for path in ("events", "nodes/edge-1", "nodes/edge-2"):
        _, page, _ = await fetch(http, url + path)
        assert "<script>window" not in page and "<img src=x" not in page
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in page


@pytest.mark.asyncio
async def test_unknown_things_are_404_and_bad_parameters_400(
    serve: Any, http: aiohttp.ClientSession, store: Path
) -> None:
    url = await serve(DashboardSettings(db_path=store, port=0))
    for path in ("nodes/nope", "ions/nope", "no/such/page", "api/nodes/nope",
                 "api/ions/nope/graph"):  # fmt: skip
        status, body, _ = await fetch(http, url + path)
        assert status == 404, path
        assert "nope" in body or "no page" in body
    for path in ("events?limit=abc", "charts?minutes=0", "api/events?since=-1",
                 "api/series?table=nodes", "api/series?limit=x",
                 "api/events?limit=100000"):  # fmt: skip
        status, body, _ = await fetch(http, url + path)
        assert status == 400, path
        assert "must be" in body


@pytest.mark.asyncio
async def test_json_api_metrics_and_health(
    serve: Any, http: aiohttp.ClientSession, store: Path
) -> None:
    url = await serve(DashboardSettings(db_path=store, port=0))

    async def get_json(path: str) -> Any:
        async with http.get(url + path) as r:
            assert r.status == 200, path
            return await r.json()

    nodes = await get_json("api/nodes")
    assert [n["node_id"] for n in nodes] == ["cloud-1", "edge-1", "edge-2", "edge-3", "gw-1"]
    assert nodes[0]["labels"] == {"site": "lab"}  # *_json columns decoded
    one = await get_json("api/nodes/edge-1")
    assert one["models"][0]["pending"] == ["4"] and one["queues"][0]["depth"] == 12
    assert [i["name"] for i in await get_json("api/ions")] == [ION]
    graph = await get_json(f"api/ions/{ION}/graph")
    assert {e["name"]: e["back"] for e in graph["edges"]} == {
        "weights": False, "drift": True, "retrain": True}  # fmt: skip
    assert (await get_json("api/models"))["decisions"][0]["action"] == "held"
    events = await get_json(f"api/events?since={now_ms() - 25_000}&limit=5")
    assert [e["id"] for e in events] == [3, 2]
    assert [a["rule"] for a in await get_json("api/alerts?state=firing")] == [
        "node_offline",
        "drift",
    ]
    series = await get_json("api/series?table=drift&node=edge-1&name=psi")
    assert len(series["points"]) == 30 and series["points"][-1]["value"] == pytest.approx(0.29)
    assert (await get_json("api/queues"))["streams"][0]["gaps"] == 3
    assert (await get_json("healthz"))["ok"] is True
    async with http.get(url + "metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    up = {s.labels["node"]: s.value for s in fams["ion_node_up"].samples}
    assert up == {"cloud-1": 1, "gw-1": 1, "edge-1": 1, "edge-2": 1, "edge-3": 0}
    states = {(s.labels["node"], s.labels["state"]) for s in fams["ion_pipeline_state"].samples}
    assert ("edge-3", "crash_loop") in states
    [drift] = fams["ion_drift_score"].samples
    assert drift.value == pytest.approx(0.29) and drift.labels["metric"] == "psi"
    firing = {s.labels["rule"]: s.value for s in fams["ion_alerts_firing"].samples}
    assert firing == {"drift": 1, "node_offline": 1}
    depth = {s.labels["class"]: s.value for s in fams["ion_queue_depth"].samples}
    assert depth == {"data": 12, "health": 1}
    assert fams["ion_stream_open_gaps"].samples[0].value == 2
    assert fams["ion_monitor_store_up"].samples[0].value == 1


@pytest.mark.asyncio
async def test_a_missing_empty_or_foreign_store_is_explained(
    serve: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "later.db"
    url = await serve(DashboardSettings(db_path=path, port=0))
    status, page, _ = await fetch(http, url)
    assert status == 503 and "no monitor store at" in page and "ion monitor" in page
    status, body, _ = await fetch(http, url + "api/nodes")
    assert status == 503 and "no monitor store" in body
    assert (await fetch(http, url + "healthz"))[0] == 503
    status, body, _ = await fetch(http, url + "api/changes")
    assert status == 200 and "no monitor store" in body  # the page keeps polling
    status, body, _ = await fetch(http, url + "metrics")
    assert status == 200 and "ion_monitor_store_up 0.0" in body
    path.write_bytes(b"")  # created but empty: no tables yet
    status, page, _ = await fetch(http, url)
    assert status == 200 and "no tables yet" in page
    path.write_bytes(b"this is not sqlite" * 100)
    status, page, _ = await fetch(http, url)
    assert status == 503 and "is not a monitor store" in page
    path.unlink()
    create_store(path).close()  # the monitor starts: the same server now shows it
    status, page, _ = await fetch(http, url)
    assert status == 200 and "no cloud nodes" in page


@pytest.mark.asyncio
async def test_actions_are_refused_without_the_token(
    serve: Any, http: aiohttp.ClientSession, store: Path
) -> None:
    form = {"ion": ION, "edge": "weights", "version": "4"}
    url = await serve(DashboardSettings(db_path=store, port=0))  # no token
    status, page, _ = await fetch(http, url + "actions/approve", "POST", data=form)
    assert status == 403 and "no token is configured" in page
    status, _, _ = await fetch(http, url + "actions/approve")  # GET never acts
    assert status == 405
    url = await serve(DashboardSettings(db_path=store, port=0, token="tok"))
    status, page, _ = await fetch(http, url + "actions/approve", "POST", data=form)
    assert status == 403 and "log in" in page
    status, page, _ = await fetch(http, url + "login", "POST", data={"token": "bad"})
    assert status == 401 and "wrong token" in page
    status, _, headers = await fetch(http, url + "login", "POST", data={"token": "tok"})
    assert status == 303 and "HttpOnly" in headers["Set-Cookie"]
    # Logged in, but the form lacks the CSRF field (as a forged cross-site form would).
    status, page, _ = await fetch(http, url + "actions/approve", "POST", data=form)
    assert status == 403
    # With the token but no broker configured: says so instead of failing somewhere.
    hdr = {"Authorization": "Bearer tok"}
    status, body, _ = await fetch(http, url + "api/actions/approve", "POST", json=form, headers=hdr)
    assert status == 503 and "no broker" in body
    status, body, _ = await fetch(http, url + "api/actions/nope", "POST", json=form, headers=hdr)
    assert status in (400, 503)


@pytest.mark.asyncio
async def test_a_port_in_use_and_a_bad_key_fail_clearly(serve: Any, store: Path) -> None:
    url = await serve(DashboardSettings(db_path=store, port=0))
    port = int(url.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(UnavailableError, match=r"cannot listen on 127\.0\.0\.1"):
        await serve(DashboardSettings(db_path=store, port=port))
    bad = store.parent / "bad.key"
    bad.write_text("not a key")
    bad.chmod(0o600)
    with pytest.raises(InputError, match=r"bad\.key"):
        await serve(DashboardSettings(db_path=store, port=0, signing_key=bad))


# -- the command ---------------------------------------------------------------------------


def ion_cli(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ION_")}
    env["HOME"] = str(Path(__file__).resolve().parents[1] / ".no-home")  # no user config
    return subprocess.Popen(
        [sys.executable, "-m", "ion.cli.main", "dashboard", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.integration
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_ion_dashboard_serves_a_store_until_stopped(store: Path, stop: signal.Signals) -> None:
    proc = ion_cli("--db", str(store), "--port", "0")
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        with urllib.request.urlopen(url + "api/nodes", timeout=10) as r:
            assert len(json.load(r)) == 5
    finally:
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "read-only" in err


@pytest.mark.integration
def test_ion_dashboard_bad_input_is_one_line(tmp_path: Path) -> None:
    proc = ion_cli("--port", "0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "--db" in err
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    bad.chmod(0o600)
    proc = ion_cli("--db", str(tmp_path / "m.db"), "--port", "0", "--key", str(bad))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert "error:" in err and "bad.key" in err and "Traceback" not in err
