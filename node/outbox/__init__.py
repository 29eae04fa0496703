"""The durable outbox: traffic classes, the pure send/admission policy, and its SQLite store.

How the agent's shell drives it (``now`` from its injected clock)::

    store = OutboxStore(path, config)
    store.requeue_in_flight()                 # at start-up: whatever was in flight goes again
    scheduler = SendScheduler(config)
    results = store.enqueue(items)            # per item: its id, or Rejected(reason)
    scheduler.link_up(store.newest_id())      # on every (re)connect: older ids are backlog
    # whenever in-flight slots are free:
    queues = store.candidates(scheduler.live_after_id, scheduler.candidate_limit(free))
    plan = scheduler.next_sends(queues, free, now)
    store.expire(plan.expired)
    for send in plan.sends:                   # one MQTT message each (a batch if send.batched)
        publish(send.topic, store.mark_in_flight(send.ids))
    store.ack(ids)                            # only after the broker's PUBACK
    store.release(ids)                        # publish failed without a crash: queue again
    store.expire()                            # now and then (a table scan): TTLs, retention
"""

from __future__ import annotations

from node.outbox.classes import (
    DEFAULT_CLASSES,
    ClassConfig,
    OnFull,
    OutboxConfig,
    TrafficClass,
)
from node.outbox.policy import (
    Admit,
    ClassQueue,
    ClassUsage,
    EnqueuePlan,
    OutboundItem,
    Pending,
    Rejected,
    RejectReason,
    Send,
    SendPlan,
    SendScheduler,
    plan_enqueue,
)
from node.outbox.records import (
    ClassStats,
    OutboxFullError,
    OutboxStats,
    OutboxUnavailableError,
    RetainedItem,
    StoredItem,
)
from node.outbox.store import OutboxStore

__all__ = [
    "DEFAULT_CLASSES",
    "Admit",
    "ClassConfig",
    "ClassQueue",
    "ClassStats",
    "ClassUsage",
    "EnqueuePlan",
    "OnFull",
    "OutboundItem",
    "OutboxConfig",
    "OutboxFullError",
    "OutboxStats",
    "OutboxStore",
    "OutboxUnavailableError",
    "Pending",
    "RejectReason",
    "Rejected",
    "RetainedItem",
    "Send",
    "SendPlan",
    "SendScheduler",
    "StoredItem",
    "TrafficClass",
    "plan_enqueue",
]
