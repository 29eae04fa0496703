"""The dashboard's HTTP shell (aiohttp): routes, parameters, auth, and the thread hops.

Every request opens the store read-only in a worker thread, builds its page or JSON there
(pure code over rows) and closes it, so a slow query never blocks the event loop and a
store that appears, disappears or grows tables is simply seen on the next request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ion.errors import InputError, IonError, UnavailableError

from . import api
from .actions import decide, load_key, parse_decision
from .assets import CSS, JS
from .auth import COOKIE, Auth
from .markup import Page, document
from .pages import Ctx, fleet, ion_page, ions_index, node_page
from .pages_more import (
    bad_request_page,
    charts_page,
    events_page,
    login_page,
    models_page,
    queues_page,
    unavailable_page,
)
from .params import BadParamError, chart_query, event_query, safe_next
from .settings import DashboardSettings
from .store import Store, StoreUnavailableError, open_store

if TYPE_CHECKING:
    from ion.security.keys import SigningKey

log = logging.getLogger(__name__)

FLASH = "ion_dashboard_flash"
SETTINGS = web.AppKey("settings", DashboardSettings)
AUTH = web.AppKey("auth", Auth)


@dataclass(frozen=True, slots=True)
class Signer:
    """The key decisions are signed with (None: unsigned, as the CLI without --key)."""

    key: SigningKey | None


KEY = web.AppKey("key", Signer)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _operator() -> str:
    from ion.cli.options import default_operator

    return f"{default_operator()} (dashboard)"


def _ctx(request: web.Request) -> Ctx:
    settings, auth = request.app[SETTINGS], request.app[AUTH]
    logged_in = auth.logged_in(request.cookies.get(COOKIE))
    if not auth.enabled:
        why = "no token is configured (start the dashboard with --token)"
    elif settings.broker is None:
        why = "no broker is configured to publish decisions to (--broker)"
    elif not logged_in:
        why = "log in with the token to act"
    else:
        why = ""
    flash = request.cookies.get(FLASH, "")
    kind, _, text = flash.partition(":")
    return Ctx(
        now_ms=now_ms(),
        can_act=not why,
        why_not=why,
        csrf=auth.csrf_value(),
        flash=text,
        flash_kind=kind if kind in ("ok", "bad") else "",
    )


def _respond(request: web.Request, page: Page, ctx: Ctx) -> web.Response:
    auth = request.app[AUTH]
    if not auth.enabled:
        user = '<a href="/login" title="no token configured">read-only</a>'
    elif auth.logged_in(request.cookies.get(COOKIE)):
        user = '<a href="/login">logged in</a>'
    else:
        user = '<a href="/login">log in</a>'
    text = page.body if request.headers.get("X-Partial") else document(page, user=user)
    resp = web.Response(text=text, status=page.status, content_type="text/html")
    if ctx.flash:
        resp.del_cookie(FLASH, path="/")
    return resp


async def _page(request: web.Request, build: Callable[[Store, Ctx], Page]) -> web.Response:
    ctx = _ctx(request)
    path = request.app[SETTINGS].db_path

    def run() -> Page:
        with open_store(path) as store:
            return build(store, ctx)

    try:
        page = await asyncio.to_thread(run)
    except StoreUnavailableError as exc:
        page = unavailable_page(str(exc))
    except BadParamError as exc:
        page = bad_request_page(str(exc))
    return _respond(request, page, ctx)


# -- pages ---------------------------------------------------------------------------------


async def fleet_view(request: web.Request) -> web.Response:
    return await _page(request, fleet)


async def ions_view(request: web.Request) -> web.Response:
    return await _page(request, ions_index)


async def ion_view(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return await _page(request, lambda s, c: ion_page(s, name, c))


async def node_view(request: web.Request) -> web.Response:
    node_id = request.match_info["node"]
    return await _page(request, lambda s, c: node_page(s, node_id, c))


async def models_view(request: web.Request) -> web.Response:
    return await _page(request, models_page)


async def events_view(request: web.Request) -> web.Response:
    try:
        q = event_query(request.query)
    except BadParamError as exc:
        return _respond(request, bad_request_page(str(exc)), _ctx(request))
    return await _page(request, lambda s, c: events_page(s, q, c))


async def charts_view(request: web.Request) -> web.Response:
    try:
        q = chart_query(request.query)
    except BadParamError as exc:
        return _respond(request, bad_request_page(str(exc)), _ctx(request))
    return await _page(request, lambda s, c: charts_page(s, q, c))


async def queues_view(request: web.Request) -> web.Response:
    return await _page(request, queues_page)


# -- login and actions ---------------------------------------------------------------------


def _same_origin(request: web.Request) -> bool:
    """A browser POST names its page's origin; one from another site is refused."""
    origin = request.headers.get("Origin")
    return origin in (None, "null") or origin == f"{request.scheme}://{request.host}"


async def login_view(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    ctx = _ctx(request)
    logged_in = auth.logged_in(request.cookies.get(COOKIE))
    if request.method == "GET":
        return _respond(request, login_page(ctx, enabled=auth.enabled, logged_in=logged_in), ctx)
    form = await request.post()
    if not auth.enabled or not auth.check_token(str(form.get("token", ""))):
        why = "no token is configured" if not auth.enabled else "wrong token"
        page = login_page(ctx, enabled=auth.enabled, logged_in=False, error=why)
        return _respond(request, page, ctx)
    resp = web.HTTPSeeOther("/")
    resp.set_cookie(COOKIE, auth.session_value(), httponly=True, samesite="Strict", path="/")
    resp.set_cookie(FLASH, "ok:logged in", httponly=True, samesite="Strict", path="/", max_age=60)
    raise resp


async def logout_view(request: web.Request) -> web.Response:
    form = await request.post()
    if form.get("csrf") != request.app[AUTH].csrf_value():
        raise web.HTTPForbidden(text="bad or missing csrf field")
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


async def _act(request: web.Request, fields: dict[str, str]) -> tuple[int, str, Any]:
    """(HTTP status, message, outcome or None) of one action request."""
    settings, auth = request.app[SETTINGS], request.app[AUTH]
    if not auth.enabled:
        return 403, "actions are disabled: no token is configured (start with --token)", None
    allowed = _same_origin(request) and auth.may_act(
        authorization=request.headers.get("Authorization"),
        cookie=request.cookies.get(COOKIE),
        csrf=fields.get("csrf"),
    )
    if not allowed:
        return 403, "not allowed: log in with the token (or send Authorization: Bearer)", None
    if settings.broker is None:
        return 503, "no broker is configured to publish decisions to (--broker)", None
    action = request.match_info["action"]
    try:
        d = parse_decision(action, fields, _operator())
        outcome = await asyncio.to_thread(decide, settings.broker, request.app[KEY].key, d)
    except InputError as exc:
        return 400, str(exc), None
    except (UnavailableError, IonError) as exc:
        return 502, f"could not publish: {exc}", None
    return 200, outcome.summary(d), outcome


async def action_view(request: web.Request) -> web.Response:
    form = await request.post()
    fields = {k: str(v) for k, v in form.items()}
    status, message, _ = await _act(request, fields)
    if status != 200:
        ctx = _ctx(request)
        page = Page("Not done", bad_request_page(message).body, status=status)
        return _respond(request, page, ctx)
    resp = web.HTTPSeeOther(safe_next(fields.get("next")))
    # Cookie values must be plain: the flash is shown escaped on the next page.
    flash = "ok:" + message.encode("ascii", "replace").decode().replace(";", ",")
    resp.set_cookie(FLASH, flash, httponly=True, samesite="Strict", path="/", max_age=60)
    raise resp


async def api_action_view(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "the body must be a JSON object"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "the body must be a JSON object"}, status=400)
    status, message, outcome = await _act(request, {k: str(v) for k, v in body.items()})
    if outcome is None:
        return web.json_response({"error": message}, status=status)
    return web.json_response(
        {"message": message, "decisions": list(outcome.published), "notes": list(outcome.notes)}
    )


# -- static, health, metrics ---------------------------------------------------------------


async def css_view(_request: web.Request) -> web.Response:
    return web.Response(text=CSS, content_type="text/css")


async def js_view(_request: web.Request) -> web.Response:
    return web.Response(text=JS, content_type="application/javascript")


@web.middleware
async def headers_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        resp: web.StreamResponse = await handler(request)
    except web.HTTPNotFound:
        page = Page("Not found", bad_request_page(f"no page at {request.path}").body, 404)
        resp = _respond(request, page, _ctx(request))
    # Nothing is loaded from elsewhere and the page is never framed.
    resp.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    )
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def make_app(settings: DashboardSettings, key: SigningKey | None = None) -> web.Application:
    app = web.Application(middlewares=[headers_middleware], client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[AUTH] = Auth(settings.token)
    app[KEY] = Signer(key)
    r = app.router
    r.add_get("/", fleet_view)
    r.add_get("/ions", ions_view)
    r.add_get("/ions/{name}", ion_view)
    r.add_get("/nodes/{node}", node_view)
    r.add_get("/models", models_view)
    r.add_get("/events", events_view)
    r.add_get("/charts", charts_view)
    r.add_get("/queues", queues_view)
    r.add_route("*", "/login", login_view)
    r.add_post("/logout", logout_view)
    r.add_post("/actions/{action}", action_view)
    r.add_post("/api/actions/{action}", api_action_view)
    r.add_get("/static/dashboard.css", css_view)
    r.add_get("/static/dashboard.js", js_view)
    api.register(app, settings.db_path, now_ms)
    return app


async def serve(
    settings: DashboardSettings, *, started: Callable[[str], None] | None = None
) -> None:
    key = load_key(settings.signing_key)  # a bad key file fails now, not on the first click
    runner = web.AppRunner(make_app(settings, key), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            raise UnavailableError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from None
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        url = f"http://{shown}:{port}/"
        log.info("dashboard on %s (store %s)", url, settings.db_path)
        if started is not None:
            started(url)
        await asyncio.Event().wait()  # until cancelled
    finally:
        await runner.cleanup()
