"""Rollout of model versions on one consuming node: policies, operators' decisions, canaries.

The synchronous core of the update policies (``node.models.policy`` decides, this module
keeps the state and changes the store); the agent's model exchange is the shell that feeds it
what arrives and carries out what it returns: ``Notice``s (events of the audit trail, each
with who and why) and ``CanaryResult``s (this node's canary verdict, published retained).

What drives it:

- ``on_ready``: a version is stored and verified; the policy decides (activate, hold pending,
  refuse by a gate, or start a canary trial).
- ``on_ruling``: an operator's decision on a version (approve, reject, promote, roll back to
  it), from a retained decision message or a direct command.  Rulings are kept (see
  ``rollout_state``) and applied again to every version that arrives later, so a node that was
  offline catches up from the retained decisions alone, in whatever order they come.
- ``on_canary_verdict``: another node's canary passed (promote here) or failed (drop it).
- ``observe`` / ``tick``: this node's own canary trial: health reports and time.  A trial
  fails (roll back, never take that version again here, publish the failure) as soon as
  drift or the error rate crosses its limit, and passes (publish it) after the hold.

Every public method takes the core's lock, so that ``on_ready`` may run in a worker thread
(the driver does) while the event loop calls the others.

Invariant after every call: the active version is *allowed* (held, not refused by a
component here, not rejected by an operator), or nothing allowed is left to roll back to.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from ion.model.definition import ModelPolicy, PolicyKind
from ion.model.manifest import ModelManifest

from . import policy
from .policy import Activation, CanaryState, CanaryWatch, Ruling, Verdict
from .rollout_outcomes import CanaryResult, EdgeKey, Outcomes
from .rollout_state import EdgeRollout, RolloutBook
from .store import ModelStore, StoredVersion, locked

log = logging.getLogger(__name__)


_RULING_EVENTS = {
    Verdict.APPROVED: "model.approved",
    Verdict.REJECTED: "model.rejected",
    Verdict.PROMOTED: "model.promoted",
    Verdict.ROLLBACK_TARGET: "model.rollback_requested",
}


class Rollout:
    def __init__(self, store: ModelStore, root: Path, node_id: str) -> None:
        self._store = store
        self._book = RolloutBook(root)
        self._node_id = node_id
        self._policies: dict[EdgeKey, ModelPolicy | None] = {}
        self._reconsider: set[EdgeKey] = set()
        # ``on_ready`` runs in a worker thread (its store and state writes fsync, which on a
        # busy disk takes long enough to stall every node of a process); every other call
        # runs on the event loop and waits for it.
        self._lock = threading.RLock()

    @locked
    def set_policies(self, consumed: Mapping[EdgeKey, ModelPolicy | None]) -> None:
        """The policy of every model edge consumed here (from the active definitions).  An
        edge whose policy changed has its held-back versions decided again (``tick``): an
        ION switched from manual to auto activates what was pending."""
        for key, new in consumed.items():
            if key in self._policies and self._policies[key] != new:
                self._reconsider.add(key)
        self._policies = dict(consumed)

    def _policy(self, key: EdgeKey) -> ModelPolicy:
        return self._policies.get(key) or policy.DEFAULT_POLICY

    # -- reading ---------------------------------------------------------------------------

    @locked
    def ruling(self, key: EdgeKey, version: str) -> Ruling | None:
        return self._book.get(*key).rulings.get(version)

    @locked
    def canary_verdict(self, key: EdgeKey, version: str) -> Ruling | None:
        return policy.aggregate_canary(self._book.get(*key).canary.get(version, {}))

    @locked
    def fetchable(self, m: ModelManifest) -> bool:
        """False when the fleet has ruled ``m`` out (rejected, or its canary failed)."""
        key = (m.ion, m.edge)
        return policy.fetch(
            self._policy(key),
            m,
            None,
            rejected=False,
            ruling=self.ruling(key, m.version),
            canary=self.canary_verdict(key, m.version),
        )

    @locked
    def status(self, key: EdgeKey) -> tuple[tuple[str, ...], str]:
        """(pending version labels, newest first; this node's canary state) for its status."""
        state = self._book.get(*key)
        held = [self._store.get(*key, i) for i in state.pending]
        pending = sorted(
            (s.manifest for s in held if s is not None), key=policy.version_key, reverse=True
        )
        labels = tuple(m.version for m in pending)
        if state.watch is not None:
            return labels, f"trial {state.watch.version}"
        if labels and self._policy(key).kind is PolicyKind.CANARY:
            return labels, f"waiting for the canary of {labels[0]}"
        mine = [
            (v, r) for v, by in state.canary.items() if (r := by.get(self._node_id)) is not None
        ]
        if mine:
            version, r = max(mine, key=lambda vr: policy.label_key(vr[0]))
            outcome = "passed" if r.verdict is Verdict.CANARY_PASSED else "failed"
            return labels, f"{outcome} {version}"
        return labels, ""

    @locked
    def watching(self) -> list[tuple[EdgeKey, CanaryWatch]]:
        out = []
        for key in self._policies:
            w = self._book.get(*key).watch
            if w is not None:
                out.append((key, w))
        return out

    # -- a version is ready --------------------------------------------------------------------

    @locked
    def on_ready(self, stored: StoredVersion, now: int) -> Outcomes:
        m = stored.manifest
        key = (m.ion, m.edge)
        state = self._book.get(*key)
        out = Outcomes()
        pol = self._policy(key)
        active = self._store.active(*key)
        d = policy.activation(
            pol,
            m,
            active.manifest if active else None,
            rejected=self._store.is_rejected(*key, m.model_id),
            node_id=self._node_id,
            ruling=state.rulings.get(m.version),
            canary=self.canary_verdict(key, m.version),
        )
        by = d.by or f"policy {pol.kind.value}"
        match d.action:
            case Activation.ACTIVATE:
                self._activate(out, stored, d.reason, by, promoted=d.promoted)
            case Activation.CANARY:
                self._activate(out, stored, d.reason, by)
                state.watch = CanaryWatch(m.model_id, m.version, now)
                out.notice("model.canary_started", m, reason=d.reason, by=self._node_id)
            case Activation.PENDING:
                state.pending[m.model_id] = d.reason
                out.notice("model.pending", m, reason=d.reason, by=by)
            case Activation.REFUSE:
                state.refused[m.model_id] = d.reason
                out.notice("model.refused_by_gate", m, reason=d.reason, by=by, warning=True)
            case Activation.KEEP:
                log.info("model %s/%s version %s kept, not active: %s", *key, m.version, d.reason)
        self._book.save(*key)
        return out

    @locked
    def tidy(self, key: EdgeKey, keep: int) -> list[str]:
        """Remove all but the ``keep`` newest versions of edge ``key`` (never the active
        one), and what its state holds of them; the model ids removed.  Apart from
        ``on_ready``, once its outcome is carried out: deleting a 50 MB model (a discard on
        many disks) took 0.5 s at the end of a 20-node rollout, and must not delay the
        activation (bench/model_rollout.py)."""
        removed = self._store.prune(*key, keep)
        if removed:
            self._forget_unheld(key, self._book.get(*key))
            self._book.save(*key)
        return removed

    # -- operators ---------------------------------------------------------------------------

    @locked
    def on_ruling(self, key: EdgeKey, version: str, ruling: Ruling) -> Outcomes:
        """An operator's decision on ``version`` of edge ``key``."""
        state = self._book.get(*key)
        out = Outcomes()
        held = state.rulings.get(version)
        if held is not None and (
            (ruling.command_id and held.command_id == ruling.command_id)
            or (held.verdict is ruling.verdict and held.at_ms >= ruling.at_ms)
            or (ruling.at_ms and held.at_ms > ruling.at_ms)
        ):
            # Seen before (a retained decision comes again after each subscribe), or older
            # than the decision held (a direct command that lost a race).
            return out
        state.rulings[version] = ruling
        stored = self._held(key, version)
        kind = _RULING_EVENTS[ruling.verdict]
        out.notice(kind, stored.manifest if stored else (*key, version), reason=ruling.reason,
                   by=ruling.by)  # fmt: skip
        if ruling.verdict in (Verdict.APPROVED, Verdict.PROMOTED):
            if stored is not None:
                state.pending.pop(stored.model_id, None)
                state.refused.pop(stored.model_id, None)
                if state.watch is not None and state.watch.model_id == stored.model_id:
                    state.watch = None  # promoted by hand: the trial is over
                self._activate_if_newer(out, stored, f"{ruling.verdict.value} by {ruling.by}",
                                        ruling.by)  # fmt: skip
        elif ruling.verdict is Verdict.REJECTED:
            if stored is not None:
                state.pending.pop(stored.model_id, None)
                state.refused.pop(stored.model_id, None)
            self._settle(out, key, f"version {version} rejected by {ruling.by}", ruling.by)
        else:  # ROLLBACK_TARGET
            self._roll_back_to(out, key, version, ruling)
        self._book.save(*key)
        return out

    @locked
    def rollback_active(self, key: EdgeKey, ruling: Ruling) -> tuple[Outcomes, str]:
        """ "Roll back" with no version named (a direct command): reject the active version
        here.  Returns the outcomes and the version rejected ("" when nothing is active)."""
        active = self._store.active(*key)
        if active is None:
            return Outcomes(), ""
        version = active.manifest.version
        withdraw = replace(ruling, verdict=Verdict.REJECTED)
        return self.on_ruling(key, version, withdraw), version

    def _roll_back_to(self, out: Outcomes, key: EdgeKey, version: str, ruling: Ruling) -> None:
        stored = self._held(key, version)
        why = f"rolled back to {version} by {ruling.by}"
        if stored is None or not self._allowed(key, stored):
            what = "is not held here" if stored is None else "was refused here"
            out.notice("model.rollback_failed", (*key, version),
                       reason=f"cannot roll back to {version}: it {what}", by=ruling.by,
                       warning=True)  # fmt: skip
            self._settle(out, key, why, ruling.by)
            return
        active = self._store.active(*key)
        # A version newer than the target that is still allowed is one made after the
        # rollback (the versions it replaces are rejected along with it), or its rejection
        # has not arrived yet: then ``_settle`` brings the target back when it does.
        if (
            active is None
            or not self._allowed(key, active)
            or not policy.newer(active.manifest, stored.manifest)
        ):
            self._switch(out, key, stored, why, ruling.by)
        self._settle(out, key, why, ruling.by)

    # -- canaries ----------------------------------------------------------------------------

    @locked
    def on_canary_verdict(self, key: EdgeKey, node: str, version: str, verdict: Ruling) -> Outcomes:
        """Another node's canary verdict on ``version`` (CANARY_PASSED or CANARY_FAILED)."""
        out = Outcomes()
        if node == self._node_id:
            return out
        state = self._book.get(*key)
        by_node = state.canary.setdefault(version, {})
        held = by_node.get(node)
        if held is not None and held.verdict is verdict.verdict:
            return out
        by_node[node] = verdict
        pol = self._policy(key)
        stored = self._held(key, version)
        if pol.kind is PolicyKind.CANARY and stored is not None:
            overall = self.canary_verdict(key, version)
            if overall is not None and overall.verdict is Verdict.CANARY_PASSED:
                if state.pending.pop(stored.model_id, None) is not None:
                    reason = f"the canary on {node} passed: {verdict.reason}"
                    self._activate_if_newer(out, stored, reason, node, promoted=True)
            elif state.pending.pop(stored.model_id, None) is not None:
                out.notice("model.rejected", stored.manifest, by=node, warning=True,
                           reason=f"the canary on {node} failed: {verdict.reason}")  # fmt: skip
        self._book.save(*key)
        return out

    @locked
    def observe(
        self,
        key: EdgeKey,
        model_id: str,
        now: int,
        *,
        drift: tuple[str, float] | None = None,
        error_rate: float | None = None,
    ) -> Outcomes:
        """A health or stats report of a pipeline fed by edge ``key``, about ``model_id``
        (empty: the active version)."""
        state = self._book.get(*key)
        w = state.watch
        if w is None or (model_id and model_id != w.model_id):
            return Outcomes()
        state.watch = policy.observe(w, drift=drift, error_rate=error_rate)
        if w.drift_reports == 0 and state.watch.drift_reports > 0:
            self._book.save(*key)  # the first evidence counts for the hold after a restart
        return self._check(key, state, now)

    @locked
    def tick(self, now: int) -> Outcomes:
        out = Outcomes()
        for key, _ in self.watching():
            out.extend(self._check(key, self._book.get(*key), now))
        while self._reconsider:
            key = self._reconsider.pop()
            if key in self._policies:
                out.extend(self._decide_again(key, now))
        return out

    def _decide_again(self, key: EdgeKey, now: int) -> Outcomes:
        """Held-back versions (pending, refused by a gate) under the edge's new policy, newest
        first: the first one the policy takes ends it (older ones are moot then)."""
        state = self._book.get(*key)
        held = [self._store.get(*key, i) for i in (*state.pending, *state.refused)]
        out = Outcomes()
        for stored in sorted(
            (s for s in held if s is not None),
            key=lambda s: policy.version_key(s.manifest),
            reverse=True,
        ):
            m = stored.manifest
            active = self._store.active(*key)
            d = policy.activation(
                self._policy(key),
                m,
                active.manifest if active else None,
                rejected=self._store.is_rejected(*key, m.model_id),
                node_id=self._node_id,
                ruling=state.rulings.get(m.version),
                canary=self.canary_verdict(key, m.version),
            )
            if d.action in (Activation.ACTIVATE, Activation.CANARY):
                self._activate(out, stored, f"policy changed: {d.reason}", d.by or "policy")
                if d.action is Activation.CANARY:
                    state.watch = CanaryWatch(m.model_id, m.version, now)
                    out.notice("model.canary_started", m, reason=d.reason, by=self._node_id)
                break
        self._book.save(*key)
        return out

    @locked
    def on_refused(self, key: EdgeKey, model_id: str, reason: str) -> Outcomes:
        """A component refused ``model_id`` (the store already rolled it back): if it was on
        trial here, the trial failed."""
        state = self._book.get(*key)
        out = Outcomes()
        if state.watch is not None and state.watch.model_id == model_id:
            why = f"a component refused it: {reason}"
            self._end_trial(out, key, state, passed=False, reason=why)
            self._book.save(*key)
        return out

    def _check(self, key: EdgeKey, state: EdgeRollout, now: int) -> Outcomes:
        out = Outcomes()
        w = state.watch
        canary = self._policy(key).canary
        if w is None:
            return out
        if canary is None or self._policy(key).kind is not PolicyKind.CANARY:
            state.watch = None  # the policy changed under the trial
            self._book.save(*key)
            return out
        check = policy.canary_check(canary, w, now)
        if check.state is CanaryState.HOLDING:
            return out
        failed = check.state is CanaryState.FAILED
        self._end_trial(out, key, state, passed=not failed, reason=check.reason)
        if failed and self._store.get(*key, w.model_id) is not None:
            before = self._store.active(*key)
            self._store.reject(*key, w.model_id)  # never again on this node
            why = f"canary of {w.version} failed: {check.reason}"
            self._settle_from(out, key, why, self._node_id, before)
        self._book.save(*key)
        return out

    def _end_trial(
        self, out: Outcomes, key: EdgeKey, state: EdgeRollout, *, passed: bool, reason: str
    ) -> None:
        w = state.watch
        assert w is not None
        state.watch = None
        verdict = Verdict.CANARY_PASSED if passed else Verdict.CANARY_FAILED
        state.canary.setdefault(w.version, {})[self._node_id] = Ruling(
            verdict, self._node_id, reason, w.started_ms
        )
        kind = "model.canary_passed" if passed else "model.canary_failed"
        out.notice(kind, (*key, w.version), model_id=w.model_id, reason=reason,
                   by=self._node_id, warning=not passed)  # fmt: skip
        out.items.append(CanaryResult(*key, w.version, w.model_id, passed, reason))

    # -- changing the active version ---------------------------------------------------------

    def _activate_if_newer(
        self, out: Outcomes, stored: StoredVersion, reason: str, by: str, *, promoted: bool = False
    ) -> None:
        key = (stored.manifest.ion, stored.manifest.edge)
        active = self._store.active(*key)
        if not self._allowed(key, stored):
            return
        if active is None or policy.newer(stored.manifest, active.manifest):
            self._activate(out, stored, reason, by, promoted=promoted)

    def _activate(
        self, out: Outcomes, stored: StoredVersion, reason: str, by: str, *, promoted: bool = False
    ) -> None:
        m = stored.manifest
        key = (m.ion, m.edge)
        state = self._book.get(*key)
        self._store.activate(*key, m.model_id)
        state.pending.pop(m.model_id, None)
        state.refused.pop(m.model_id, None)
        # Held versions older than the active one would never be activated now.
        for table in (state.pending, state.refused):
            for model_id in list(table):
                other = self._store.get(*key, model_id)
                if other is None or not policy.newer(other.manifest, m):
                    del table[model_id]
        if state.watch is not None and state.watch.model_id != m.model_id:
            state.watch = None  # superseded: the trial of an older version is moot
        log.info("model %s/%s version %s active (%s)", *key, m.version, reason)
        if promoted:
            out.notice("model.promoted", m, reason=reason, by=by)
        out.notice("model.activated", m, reason=reason, by=by)
        out.changed.add(key)

    def _switch(
        self, out: Outcomes, key: EdgeKey, stored: StoredVersion, why: str, by: str
    ) -> None:
        before = self._store.active(*key)
        if before is not None and before.model_id == stored.model_id:
            return
        self._store.activate(*key, stored.model_id)
        self._book.get(*key).watch = None
        out.notice("model.rolled_back", stored.manifest, reason=why, by=by, warning=True)
        out.changed.add(key)

    def _settle(self, out: Outcomes, key: EdgeKey, why: str, by: str) -> None:
        self._settle_from(out, key, why, by, self._store.active(*key))

    def _settle_from(
        self, out: Outcomes, key: EdgeKey, why: str, by: str, before: StoredVersion | None
    ) -> None:
        """Restore the invariant: roll back while the active version is not allowed, then go
        to the latest rollback target if it is held and newer than what is active.  An event
        says so when the active version is not ``before`` any more."""
        state = self._book.get(*key)
        active = self._store.active(*key)
        while active is not None and not self._allowed(key, active):
            active = self._store.rollback(*key)
        target = self._target(key, state)
        if target is not None and (
            active is None or policy.newer(target.manifest, active.manifest)
        ):
            self._store.activate(*key, target.model_id)
            active = target
        if (before.model_id if before else None) == (active.model_id if active else None):
            return
        if state.watch is not None and (active is None or state.watch.model_id != active.model_id):
            state.watch = None
        if active is None:
            version = before.manifest.version if before else ""
            out.notice("model.rolled_back", (*key, version), by=by, warning=True,
                       reason=f"{why}; no earlier version is held")  # fmt: skip
        else:
            out.notice("model.rolled_back", active.manifest, reason=why, by=by, warning=True)
        out.changed.add(key)

    def _target(self, key: EdgeKey, state: EdgeRollout) -> StoredVersion | None:
        targets = [
            (r.at_ms, v) for v, r in state.rulings.items() if r.verdict is Verdict.ROLLBACK_TARGET
        ]
        if not targets:
            return None
        _, version = max(targets)
        stored = self._held(key, version)
        return stored if stored is not None and self._allowed(key, stored) else None

    def _allowed(self, key: EdgeKey, stored: StoredVersion) -> bool:
        if self._store.is_rejected(*key, stored.model_id):
            return False
        r = self._book.get(*key).rulings.get(stored.manifest.version)
        return r is None or r.verdict is not Verdict.REJECTED

    def _held(self, key: EdgeKey, version: str) -> StoredVersion | None:
        found = [s for s in self._store.versions(*key) if s.manifest.version == version]
        return max(found, key=lambda s: s.manifest.created_ms) if found else None

    def _forget_unheld(self, key: EdgeKey, state: EdgeRollout) -> None:
        for table in (state.pending, state.refused):
            for model_id in list(table):
                if self._store.get(*key, model_id) is None:
                    del table[model_id]
