"""The monitor's dashboard: a small web app over the monitor's SQLite store.

Server-rendered HTML with inline SVG (the ION graph, line charts) and one small script that
polls the JSON API and refreshes the page; no build step, nothing from a CDN.  It reads the
store read-only (``broker/monitor/schema.py`` is the contract), so it can look at a store a
running ``ion monitor`` writes (WAL) or at a copy.  Operator actions (approve, reject, roll
back a model version) publish the same retained decisions as ``ion approve|reject|rollback``.

``serve_dashboard`` needs the ``monitor`` extra (aiohttp); importing this package does not.
"""

from __future__ import annotations

from collections.abc import Callable

from .settings import DashboardSettings

__all__ = ["DashboardSettings", "serve_dashboard"]


async def serve_dashboard(
    settings: DashboardSettings, *, started: Callable[[str], None] | None = None
) -> None:
    """Serve the dashboard until cancelled; ``started(url)`` is called once it listens."""
    from .server import serve

    await serve(settings, started=started)
