"""Live progress from the driver's REST API (``/api/v1/applications/<app>/...`` on its UI port).

The event log is flushed for job and stage boundaries but not for every task, so the progress
of what runs now comes from the driver itself: the running jobs and the active stages, with
their task counts.  Blocking (urllib) with short timeouts: call from a thread.  Any failure
(refused, timeout, not JSON, UI disabled, the driver gone) is ``None``, never an exception:
the REST API is an extra, and the job must not care whether anyone watches it.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 1.0
MAX_RESPONSE_BYTES = 8 << 20

STAT_NAMES = (
    "spark.active.jobs",
    "spark.active.stages",
    "spark.active.tasks_running",
    "spark.active.tasks_total",
    "spark.active.tasks_completed",
    "spark.active.tasks_failed",
    "spark.active.progress",
)
"""Every value ``progress`` reports."""

# No proxies: the driver is on this machine (or on the cluster's network), and an
# ``http_proxy`` in the agent's environment must not send these requests elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def progress(jobs: Any, stages: Any) -> dict[str, float]:
    """The running jobs and active stages (the API's JSON) as stats values.  Pure.

    ``spark.active.progress`` is the share of the running jobs' tasks that are done (0 when
    nothing runs); the task counts are summed over the running jobs.
    """
    running = [j for j in _objects(jobs) if j.get("status", "RUNNING") == "RUNNING"]
    active = [s for s in _objects(stages) if s.get("status", "ACTIVE") == "ACTIVE"]
    total = math.fsum(_num(j, "numTasks") for j in running)
    done = math.fsum(_num(j, "numCompletedTasks") + _num(j, "numSkippedTasks") for j in running)
    return {
        "spark.active.jobs": float(len(running)),
        "spark.active.stages": float(len(active)),
        "spark.active.tasks_running": math.fsum(_num(j, "numActiveTasks") for j in running),
        "spark.active.tasks_total": total,
        "spark.active.tasks_completed": done,
        "spark.active.tasks_failed": math.fsum(_num(j, "numFailedTasks") for j in running),
        "spark.active.progress": min(done / total, 1.0) if total > 0 else 0.0,
    }


def _objects(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def _num(obj: Mapping[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return 0.0


def fetch_progress(
    ui_url: str, app_id: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[str, float] | None:
    """Ask the driver at ``ui_url`` about ``app_id``; None when it cannot answer."""
    base = _api_base(ui_url, app_id)
    if base is None:
        return None
    jobs = _get_json(f"{base}/jobs?status=running", timeout_s)
    if jobs is None:
        return None
    stages = _get_json(f"{base}/stages?status=active", timeout_s)
    if stages is None:
        return None
    return progress(jobs, stages)


def _api_base(ui_url: str, app_id: str) -> str | None:
    parts = urllib.parse.urlsplit(ui_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or not app_id:
        return None
    app = urllib.parse.quote(app_id, safe="")
    return f"{parts.scheme}://{parts.netloc}/api/v1/applications/{app}"


def _get_json(url: str, timeout_s: float) -> Any:
    try:
        # The scheme was checked in _api_base: only http(s) to the driver's own UI.
        with _OPENER.open(url, timeout=timeout_s) as response:
            body = response.read(MAX_RESPONSE_BYTES + 1)
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as e:
        log.debug("Spark REST %s: %s", url, e)
        return None
    if len(body) > MAX_RESPONSE_BYTES:
        log.debug("Spark REST %s: response over %d bytes; ignored", url, MAX_RESPONSE_BYTES)
        return None
    try:
        return json.loads(body)
    except ValueError as e:
        log.debug("Spark REST %s: not JSON: %s", url, e)
        return None
