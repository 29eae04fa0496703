"""The monitor's ingest rate into SQLite, against raw paho receiving the same messages in the
same run, from the same embedded Mosquitto.

    .venv/bin/python bench/monitor_ingest.py [--quick] [--messages 200000] [--nodes 20]
                                             [--batch 1] [--fold-only]

How: both subscribers (the monitor, through ``broker.monitor.service.Monitor`` with its real
link, core and store, and a bare paho client) first register a persistent session
(``clean_session=False``) subscribed to ``ion/v1/#`` and disconnect.  Then one paho publisher
sends N envelopes (QoS 1) of a realistic mix from ``--nodes`` simulated nodes: 60 % stats
reports (4 scalars), 15 % health reports with drift scores (3 scores, 2 histograms of 10
bins), 15 % events, 10 % node statuses (2 pipelines, 6 queues, a link, a model); each
sequenced per (node, topic) as agents send them (``--batch K`` packs K envelopes into one
``EnvelopeBatch`` per MQTT message, as an agent does with a backlog).  The broker queues them
for both sessions.  Then each subscriber reconnects alone and drains its queue:

- raw paho: ``loop_forever`` in a thread, counting messages; rate = N / (last - first receive);
- monitor: rate = N / (last commit covering message N - first receive), every envelope decoded,
  folded, and its rows committed (WAL, batched transactions).

Target (issue 6): >= 10,000 messages/s.  ``--fold-only`` also times ``core.ingest`` +
``store.apply`` in-process without MQTT (where the time goes).  See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ion import topics  # noqa: E402
from ion.model.event import Event, Severity  # noqa: E402
from ion.model.health import DriftScore, HealthReport, Histogram, Metric, StatsReport  # noqa: E402
from ion.model.messages import Envelope, EnvelopeBatch, new_envelope  # noqa: E402
from ion.model.status import (  # noqa: E402
    LinkStatus,
    ModelStatus,
    NodeState,
    NodeStatus,
    PipelineState,
    PipelineStatus,
    QueueStatus,
    ResourceUsage,
)
from ion.topics import Channel  # noqa: E402
from ion.wire.codec import encode  # noqa: E402

ION = "bench"
_WINDOW = 30_000
CLASSES = ("control", "model", "events", "health", "stats", "data")


def workload(n: int, nodes: int, batch: int, seed: int = 1) -> list[tuple[str, bytes, int]]:
    """(topic, payload, envelopes in it) for ``n`` envelopes."""
    rng = random.Random(seed)
    now = time.time_ns() // 1_000_000
    seqs: dict[str, int] = {}
    pending: dict[str, list[Envelope]] = {}
    out: list[tuple[str, bytes, int]] = []
    names = [f"edge-{i:03d}" for i in range(nodes)]
    edges = tuple(float(x) for x in range(11))
    for i in range(n):
        node = names[i % nodes]
        r = rng.random()
        body: Any
        if r < 0.60:
            topic = topics.pipeline(ION, "infer", Channel.STATS, node)
            body = StatsReport("infer", "model", (
                Metric("rate", rng.uniform(50, 150)), Metric("latency_ms", rng.uniform(1, 9)),
                Metric("batch", 32.0), Metric("errors", float(rng.randrange(3))),
            ))  # fmt: skip
        elif r < 0.75:
            topic = topics.pipeline(ION, "infer", Channel.HEALTH, node)
            score = rng.uniform(0, 0.3)
            body = HealthReport(
                "infer", "drift", sample_count=500, model_version="3",
                histograms=tuple(
                    Histogram(f, edges, tuple(rng.randrange(100) for _ in range(10)))
                    for f in ("x", "y")
                ),
                drift=(DriftScore("", "psi", score, 0.25, "3"),
                       DriftScore("x", "psi", score * 1.1, 0.25, "3"),
                       DriftScore("y", "psi", score * 0.9, 0.25, "3")),
            )  # fmt: skip
        elif r < 0.90:
            topic = topics.pipeline(ION, "infer", Channel.EVENTS, node)
            body = Event("inference.window", Severity.INFO, subject=f"{ION}/infer@{node}",
                         message="window closed", attributes={"rows": "512", "window": str(i)},
                         pipeline="infer")  # fmt: skip
        else:
            topic = topics.node_status(node)
            body = status(node, now + i)
        if isinstance(body, NodeStatus):
            e = new_envelope(body, source_node=node, now_ms=now + i // 50)
            out.append((topic, encode(e), 1))
            continue
        seq = seqs[topic] = seqs.get(topic, 0) + 1
        e = new_envelope(body, source_node=node, now_ms=now + i // 50, ion=ION, sequence=seq,
                         stream=topic)  # fmt: skip
        if batch <= 1:
            out.append((topic, encode(e), 1))
            continue
        group = pending.setdefault(topic, [])
        group.append(e)
        if len(group) >= batch:
            out.append(_batch(topic, group, node, now))
            pending[topic] = []
    for topic, group in pending.items():
        if group:
            out.append(_batch(topic, group, group[0].source_node, now))
    return out


def _batch(topic: str, group: list[Envelope], node: str, now: int) -> tuple[str, bytes, int]:
    e = new_envelope(EnvelopeBatch(tuple(group)), source_node=node, now_ms=now)
    return topic, encode(e), len(group)


def status(node: str, now: int) -> NodeStatus:
    return NodeStatus(
        node_id=node, state=NodeState.ONLINE, agent_version="0.1", labels={"site": "north"},
        layer="edge", parent="gw-1", started_ms=now - 60_000, heartbeat_interval_ms=3_600_000,
        pipelines=(PipelineStatus(ION, "infer", PipelineState.RUNNING, engine="python"),
                   PipelineStatus(ION, "collect", PipelineState.RUNNING, engine="python")),
        queues=tuple(QueueStatus("upstream", c, depth=3, bytes=300, oldest_age_ms=40)
                     for c in CLASSES),
        resources=ResourceUsage(cpu_percent=10.0, rss_bytes=40 << 20, disk_free_bytes=1 << 33),
        models=(ModelStatus(ION, "model", active_version="3", versions=("3", "2")),),
        links=(LinkStatus("upstream", "mqtt://gw-1:1883", connected=True, since_ms=now),),
    )  # fmt: skip


# -- the parts -----------------------------------------------------------------------------------


def paho_client(client_id: str, port: int, *, clean: bool) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                    protocol=mqtt.MQTTv311)  # fmt: skip
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port, keepalive=60)
    return c


def register_raw(port: int) -> None:
    c = paho_client("bench-raw-sub", port, clean=False)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.loop_start()
    c.subscribe(topics.EVERYTHING, qos=1)
    if not done.wait(10):
        raise SystemExit("raw subscriber: no SUBACK")
    c.disconnect()
    c.loop_stop()


def publish_all(port: int, messages: list[tuple[str, bytes, int]]) -> float:
    c = paho_client("bench-pub", port, clean=True)
    c.loop_start()
    start = time.perf_counter()
    infos: list[Any] = []
    step = max(len(messages) // 10, 1)
    for i, (topic, payload, _) in enumerate(messages):
        if i >= _WINDOW:  # MQTT packet ids are 16 bits: bound what is unacknowledged
            infos[i - _WINDOW].wait_for_publish(300)
        infos.append(c.publish(topic, payload, qos=1, retain=topic.endswith("/status")))
        if i % step == step - 1:
            print(f"  published {i + 1:,}/{len(messages):,}", flush=True)
    for info in infos:
        info.wait_for_publish(300)
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    return len(messages) / elapsed


def drain_raw(port: int, count: int) -> float:
    c = paho_client("bench-raw-sub", port, clean=False)
    got = [0]
    times: list[float] = []
    done = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        if not got[0]:
            times.append(time.perf_counter())
        got[0] += 1
        if got[0] >= count:
            times.append(time.perf_counter())
            done.set()

    c.on_message = on_message
    cpu0 = cpu_s()
    c.loop_start()
    if not done.wait(600):
        raise SystemExit(f"raw subscriber got {got[0]:,} of {count:,}")
    CPU["raw"] = cpu_s() - cpu0
    c.disconnect()
    c.loop_stop()
    return count / (times[1] - times[0])


CPU: dict[str, float] = {}


def cpu_s() -> float:
    """CPU seconds of this process (all threads) so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def process_cpu_s(pid: int) -> float:
    """CPU seconds of another process so far (Linux: /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drain_monitor(
    port: int, db: Path, mqtt_count: int, register: bool, lag_s: float = 60.0
) -> Any:
    from broker.monitor.alerts import AlertBounds
    from broker.monitor.service import Monitor, MonitorSettings
    from ion.config.broker import BrokerConfig

    settings = MonitorSettings(broker=BrokerConfig(port=port), db_path=db, monitor_id="bench",
                               bounds=AlertBounds(lag_ms=int(lag_s * 1000)))  # fmt: skip
    # Before the connection: the queued messages flow as soon as the broker has us, and
    # Mosquitto answers our re-subscription only after them (see docs/benchmarks.md).
    cpu0 = cpu_s()
    async with Monitor(settings) as m:
        await m.wait_connected(60)
        if register:
            return None
        writer_pid = m.writer.proc.pid
        writer0 = process_cpu_s(writer_pid)
        last_print = time.monotonic()
        while m.committed < mqtt_count:
            await asyncio.sleep(0.05)
            if time.monotonic() - last_print > 2:
                last_print = time.monotonic()
                print(f"  monitor committed {m.committed:,}/{mqtt_count:,}", flush=True)
        assert m.first_received is not None
        assert m.last_committed is not None
        CPU["writer"] = process_cpu_s(writer_pid) - writer0
        CPU["monitor"] = cpu_s() - cpu0 + CPU["writer"]
        elapsed = m.last_committed - m.first_received
        counters = dict(m.counters)
    return elapsed, counters


def fold_only(messages: list[tuple[str, bytes, int]], tmp: Path) -> tuple[float, float]:
    """Seconds in ``core.ingest`` and in ``store.apply`` for all messages, in-process."""
    from broker.monitor.core import MonitorCore
    from broker.monitor.store import MonitorStore

    store = MonitorStore(tmp / "fold.db")
    core = MonitorCore("fold")
    fold = commit = 0.0
    now = time.time_ns() // 1_000_000
    for i in range(0, len(messages), 5000):
        t0 = time.perf_counter()
        for topic, payload, _ in messages[i : i + 5000]:
            core.ingest(topic, payload, now)
        w = core.take()
        t1 = time.perf_counter()
        store.apply(w)
        commit += time.perf_counter() - t1
        fold += t1 - t0
    store.close()
    return fold, commit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200_000, help="envelopes to send")
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--batch", type=int, default=1, help="envelopes per MQTT message")
    p.add_argument("--quick", action="store_true", help="20,000 envelopes: a smoke run")
    p.add_argument("--fold-only", action="store_true", help="also time fold and commit alone")
    p.add_argument(
        "--lag",
        type=float,
        default=60.0,
        help="the monitor's lag alert bound in seconds (the queued messages are old)",
    )
    args = p.parse_args()
    n = 20_000 if args.quick else args.messages
    one, five, _ = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {one:.2f} (1 min) {five:.2f} (5 min) at start")
    messages = workload(n, args.nodes, args.batch)
    mqtt_count = len(messages)
    size = sum(len(m[1]) for m in messages) / mqtt_count
    print(f"{n:,} envelopes in {mqtt_count:,} MQTT messages (mean {size:.0f} B) "
          f"from {args.nodes} nodes")  # fmt: skip
    from agentbench import mosquitto

    with tempfile.TemporaryDirectory() as tmp_name, mosquitto(Path(tmp_name)) as broker:
        tmp = Path(tmp_name)
        print(f"broker: embedded Mosquitto at {broker.url}")
        if args.fold_only:
            fold, commit = fold_only(messages, tmp)
            print(f"in-process: fold {n / fold:,.0f} env/s ({fold / n * 1e6:.1f} us each), "
                  f"commit {n / commit:,.0f} env/s ({commit / n * 1e6:.1f} us each)")  # fmt: skip
        db = tmp / "monitor.db"
        asyncio.run(drain_monitor(broker.port, db, 0, register=True))
        register_raw(broker.port)
        print("publishing (QoS 1; queued by the broker for both persistent sessions)")
        pub_rate = publish_all(broker.port, messages)
        print(f"  publisher: {pub_rate:,.0f} msg/s")
        print("raw paho draining its queue")
        raw_rate = drain_raw(broker.port, mqtt_count)
        print("monitor draining its queue")
        elapsed, counters = asyncio.run(
            drain_monitor(broker.port, db, mqtt_count, register=False, lag_s=args.lag)
        )
    rate = n / elapsed
    raw_env = raw_rate * n / mqtt_count
    print(f"monitor counters: envelopes {counters.get('envelopes', 0):,}, malformed "
          f"{sum(v for k, v in counters.items() if k.startswith('malformed'))}")  # fmt: skip
    print(f"monitor ingest into SQLite : {rate:>10,.0f} envelopes/s ({elapsed:.2f} s)")
    print(f"raw paho receive (baseline): {raw_env:>10,.0f} envelopes/s")
    print(f"ratio monitor / raw paho   : {rate / raw_env:>10.2f}")
    print(f"CPU per envelope           : monitor {CPU['monitor'] / n * 1e6:.1f} us (both "
          f"processes; the writer {CPU['writer'] / n * 1e6:.1f} us), raw paho "
          f"{CPU['raw'] / n * 1e6:.1f} us")  # fmt: skip
    print(f"target >= 10,000 msg/s     : {'met' if rate >= 10_000 else 'MISSED'}")


if __name__ == "__main__":
    main()
