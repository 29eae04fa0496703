"""Alert rules, pure: conditions in, fire/resolve transitions out.

An alert is identified by ``(rule, key)`` (e.g. ``("node_offline", "edge-1")``).  Invariant:
at most one alert per ``(rule, key)`` is firing at a time.  ``observe`` is told, each time the
monitor learns something about a key, whether the rule's condition holds now:

- not firing and the condition holds  -> ``fired`` (a new alert id)
- firing and the condition no longer holds -> ``resolved``
- otherwise nothing (a condition that keeps holding does not fire again)

Rules with no natural "clear" signal (a rejected model) also resolve after ``hold_ms``;
``expire`` finds those.  The engine never reads a clock: every call takes ``now_ms``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ion.errors import ConfigError
from ion.model.event import Event, Severity

RULES = ("drift", "node_offline", "crash_loop", "backlog", "lag", "model_rejected")


@dataclass(frozen=True, slots=True)
class AlertBounds:
    """Where the rules draw the line.  Every bound has a working default.

    drift_threshold: used when a drift score carries no threshold of its own (0).
    backlog_depth: messages queued on one link of one node (all traffic classes).
    backlog_age_ms: age of the oldest queued message on one link.
    lag_ms: receive time at the monitor minus creation time at the source, per stream.
    model_rejected_hold_ms: a model_rejected alert resolves on a later accepted/activated
        version on the same node and edge, or after this long.
    """

    drift_threshold: float = 0.2
    backlog_depth: int = 10_000
    backlog_age_ms: int = 300_000
    lag_ms: int = 60_000
    model_rejected_hold_ms: int = 3_600_000

    def __post_init__(self) -> None:
        if not self.drift_threshold > 0:
            raise ConfigError("the drift alert threshold must be positive")
        for name in ("backlog_depth", "backlog_age_ms", "lag_ms", "model_rejected_hold_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"alert bound {name} must be positive")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert episode, as stored in the ``alerts`` table."""

    id: int
    rule: str
    key: str
    state: str  # firing | resolved
    severity: str
    node_id: str
    ion: str
    pipeline: str
    message: str
    value: float
    threshold: float
    started_ms: int
    updated_ms: int
    resolved_ms: int = 0

    def row(self) -> dict[str, object]:
        return {
            "id": self.id,
            "rule": self.rule,
            "key": self.key,
            "state": self.state,
            "severity": self.severity,
            "node_id": self.node_id,
            "ion": self.ion,
            "pipeline": self.pipeline,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            "started_ms": self.started_ms,
            "updated_ms": self.updated_ms,
            "resolved_ms": self.resolved_ms,
        }


@dataclass(frozen=True, slots=True)
class Condition:
    """What the monitor knows about one key of one rule right now."""

    rule: str
    key: str
    holds: bool
    value: float = 0.0
    threshold: float = 0.0
    message: str = ""
    severity: str = "warning"
    node_id: str = ""
    ion: str = ""
    pipeline: str = ""


class AlertEngine:
    def __init__(self, firing: Iterable[Alert] = (), next_id: int = 1) -> None:
        self._firing: dict[tuple[str, str], Alert] = {(a.rule, a.key): a for a in firing}
        self._next_id = max([next_id, *(a.id + 1 for a in self._firing.values())])

    @property
    def firing(self) -> dict[tuple[str, str], Alert]:
        return dict(self._firing)

    def is_firing(self, rule: str, key: str) -> bool:
        return (rule, key) in self._firing

    def observe(self, c: Condition, now_ms: int) -> Alert | None:
        """The transition ``c`` causes (a fired or resolved alert), or None."""
        if c.rule not in RULES:
            raise ValueError(f"unknown alert rule {c.rule!r}")
        current = self._firing.get((c.rule, c.key))
        if current is None:
            if not c.holds:
                return None
            alert = Alert(
                id=self._next_id,
                rule=c.rule,
                key=c.key,
                state="firing",
                severity=c.severity,
                node_id=c.node_id,
                ion=c.ion,
                pipeline=c.pipeline,
                message=c.message,
                value=c.value,
                threshold=c.threshold,
                started_ms=now_ms,
                updated_ms=now_ms,
            )
            self._next_id += 1
            self._firing[(c.rule, c.key)] = alert
            return alert
        if c.holds:
            return None
        del self._firing[(c.rule, c.key)]
        return replace(
            current,
            state="resolved",
            value=c.value,
            message=c.message or current.message,
            updated_ms=now_ms,
            resolved_ms=now_ms,
        )

    def resolve(self, rule: str, key: str, now_ms: int, message: str = "") -> Alert | None:
        """Resolve ``(rule, key)`` if it is firing, keeping its last value."""
        current = self._firing.get((rule, key))
        if current is None:
            return None
        return self.observe(
            Condition(rule, key, holds=False, value=current.value, message=message), now_ms
        )

    def expire(self, rule: str, hold_ms: int, now_ms: int) -> list[Alert]:
        """Resolve every alert of ``rule`` that has been firing for ``hold_ms`` or more."""
        old = [
            a for a in self._firing.values() if a.rule == rule and now_ms - a.started_ms >= hold_ms
        ]
        out = []
        for a in old:
            resolved = self.resolve(rule, a.key, now_ms, f"{a.message} (expired)")
            if resolved is not None:
                out.append(resolved)
        return out


def alert_event(alert: Alert, monitor_id: str) -> Event:
    """The ``alert.fired`` / ``alert.resolved`` event announcing a transition on the bus."""
    fired = alert.state == "firing"
    return Event(
        type="alert.fired" if fired else "alert.resolved",
        severity=Severity(alert.severity) if fired else Severity.INFO,
        subject=f"{alert.rule}:{alert.key}",
        message=alert.message,
        attributes={
            "rule": alert.rule,
            "key": alert.key,
            "value": f"{alert.value:g}",
            "threshold": f"{alert.threshold:g}",
            "alert_id": str(alert.id),
            "node_id": alert.node_id,
            "ion": alert.ion,
            "pipeline": alert.pipeline,
            "monitor": monitor_id,
        },
        pipeline=alert.pipeline,
    )
