"""Drift scored on the node: each inference pipeline's live histograms against its model.

A pipeline reports windowed feature histograms (a ``HealthReport``) as telemetry; when a model
edge with ``drift`` settings feeds that pipeline, the agent scores the report against the
baseline histograms of the model version active on that edge (``node.health.drift``), puts
the scores into the report it publishes, and raises ``health.drift`` /
``health.drift_cleared`` events when the state changes.  Decided here, on the node, so it
works while the cloud is unreachable; the monitor and trigger edges see the same scores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from ion.model.definition import EdgeKind
from ion.model.event import Event
from ion.model.health import HealthReport
from node.models.artifact import ModelArtifact

from .edgeports import IonEdges

if TYPE_CHECKING:
    from node.health.drift import DriftMonitor

log = logging.getLogger(__name__)


class NodeDrift:
    def __init__(
        self,
        *,
        node_id: str,
        edges_of: Callable[[str], IonEdges | None],
        active_model: Callable[[str, str], ModelArtifact | None],
        clock: Callable[[], int],
    ) -> None:
        self._edges_of = edges_of
        self._active = active_model
        self._clock = clock
        self._node_id = node_id
        # Made on first use: numpy is imported only by nodes that score drift (an idle agent
        # stays small).
        self._monitor: DriftMonitor | None = None
        self.scored = 0

    def set_edges(self, edges_of: Callable[[str], IonEdges | None]) -> None:
        self._edges_of = edges_of

    def score(
        self, ion: str, pipeline: str, report: HealthReport
    ) -> tuple[HealthReport, Event | None]:
        """The report with drift scores added (unchanged when nothing to score against), and
        the event to raise, if any."""
        if not report.histograms:
            return report, None
        edges = self._edges_of(ion)
        if edges is None:
            return report, None
        for edge in edges.incoming(pipeline):
            if edge.kind is not EdgeKind.MODEL or edge.drift is None:
                continue
            model = self._active(ion, edge.name)
            if model is None or not model.baseline:
                continue
            if report.model_id and model.model_id and report.model_id != model.model_id:
                # Scored by another version than the active one (a swap in progress): its
                # histograms say nothing about the active model.
                continue
            live = replace(
                report,
                pipeline=report.pipeline or pipeline,
                model_id=report.model_id or model.model_id,
                model_version=report.model_version or model.version,
            )
            if self._monitor is None:
                from node.health.drift import DriftMonitor

                self._monitor = DriftMonitor(subject=self._node_id)
            try:
                verdict = self._monitor.observe(live, model.baseline, edge.drift, self._clock())
            except ValueError as exc:
                log.warning("drift of %s/%s not scored: %s", ion, pipeline, exc)
                return report, None
            self.scored += 1
            if not verdict.known:
                return live, None
            return replace(live, drift=verdict.scores), verdict.event
        return report, None
