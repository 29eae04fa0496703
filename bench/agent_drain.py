"""Drain rate after an outage of agent A's link, and the latency of live messages sent during
the drain; against raw paho QoS 1 publishing of the same messages, same broker, same run.

    .venv/bin/python bench/agent_drain.py [--quick] [--backlog 100000] [--live-every 0.05]

Agent A talks to Mosquitto through a ``FaultProxy`` (its own process); agent B directly.  The
proxy cuts A's link; A stores ``--backlog`` messages on edge ``feed`` (each ``emit`` durable in
its SQLite outbox) while the link is down; then the proxy lets A through again.  From the
moment A's link is back, A emits one live message on edge ``live`` every ``--live-every``
seconds until B has the whole backlog.  Reported: the drain rate (backlog / time from A's
reconnection to B's consumer holding the last backlog message; and from the proxy's restore,
which adds A's reconnect backoff), and the latency of the live messages from the ``emit`` call
to B's consumer, and to a bare paho subscriber of the live edge (A's outbox and the broker
only, without B's queue).  Both edges carry the same traffic class (DATA), so the live
messages rely on the outbox interleaving live traffic with the backlog, not on a priority.
Baseline: raw paho (``loop_start``, the better of in-flight limits 20 and 100) publishing
``--raw`` 100-byte QoS 1 messages to the same broker directly.  Targets (issue 3, item 8b):
>= 20,000 msg/s, live messages within 1 s.  See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import agentbench as ab

BACKLOG, LIVE = 2, 3


async def bench(broker: Any, tmp: Path, args: argparse.Namespace) -> None:
    from ion import topics
    from ion.topics import Channel
    from node.link.base import LinkState

    url = broker.url
    live_topic = topics.edge(ab.ION_NAME, "live", Channel.DATA, ab.SOURCE)
    host, port = broker.connect_host, broker.port
    with ab.proxy_process(host, port) as proxy, ab.sink_process(url, tmp) as sink, \
            ab.watcher_process(host, port, live_topic) as watcher:  # fmt: skip
        async with ab.new_agent(ab.SOURCE, proxy.url, tmp) as a:
            await a.link.wait_connected()
            await ab.until_flowing(a, sink)
            # B's acknowledgements (every 100 ms) reach A before the outage, as they do on
            # any link that carried traffic for a moment: A then paces the backlog from its
            # first round after the reconnection (without, it learns of B only after most of
            # the backlog was handed to the broker, and the run measures that race).
            feed_topic = topics.edge(ab.ION_NAME, "feed", Channel.DATA, ab.SOURCE)
            await ab.poll_until(
                lambda: (
                    a.sender.pacing.stream_budget(feed_topic, time.time_ns() // 10**6) is not None
                )
            )

            proxy.cut()
            await ab.poll_until(lambda: a.link.state is not LinkState.CONNECTED, 0.01)
            t0 = time.monotonic()
            await ab.emit_flat_out(a, "feed", BACKLOG, args.backlog)
            stored_s = time.monotonic() - t0
            queued = a.queued()
            connects = a.link.status.connects
            published0, items0 = a.sender.published, a.sender.items_acked

            cpu = ab.CpuMeter({"A": os.getpid(), "B": sink.pid(), "mosquitto": broker.pid,
                               "proxy": proxy.proc.pid})  # fmt: skip
            restored = time.monotonic_ns()
            proxy.restore()
            await ab.poll_until(lambda: a.link.status.connects != connects)
            reconnected = time.monotonic_ns()
            cpu.start()

            done = asyncio.Event()
            sent_live = 0

            async def live() -> None:
                nonlocal sent_live
                start = time.monotonic()
                async with asyncio.TaskGroup() as group:
                    while not done.is_set():
                        group.create_task(a.emit(ab.ION_NAME, "live", ab.body(LIVE, sent_live)))
                        sent_live += 1
                        due = start + sent_live * args.live_every
                        await asyncio.sleep(max(0.0, due - time.monotonic()))

            async def sent_all() -> int:
                # The backlog fully acknowledged by the broker: how fast A hands it over.
                await ab.poll_until(lambda: a.sender.items_acked - items0 >= args.backlog)
                return time.monotonic_ns()

            live_task = asyncio.create_task(live(), name="live")
            acked_task = asyncio.create_task(sent_all(), name="acked")
            got = await asyncio.to_thread(sink.wait, BACKLOG, args.backlog, 600)
            done.set()
            await live_task
            acked = await acked_task
            cpu.stop()
            lived = await asyncio.to_thread(sink.wait, LIVE, sent_live, 30)
            watched = await asyncio.to_thread(watcher.latencies, LIVE)
            pacing = a.sender.pacing
            print(
                f"  pacing: {pacing.held_rounds} round(s) held the backlog; streams "
                f"{ {k: (v.sent, v.receivers) for k, v in pacing._streams.items()} }",
                flush=True,
            )
            mqtt = a.sender.published - published0
            per_message = (a.sender.items_acked - items0) / max(1, mqtt)
        ab.check_complete("backlog", got, args.backlog)
        ab.check_complete("live", lived, sent_live)
        raw, raw_name = await asyncio.to_thread(
            ab.best_raw_paho, broker.connect_host, broker.port, args.raw
        )

    drain_s = (got.last_ns - reconnected) / 1e9
    rate = args.backlog / drain_s
    rate_restore = args.backlog / ((got.last_ns - restored) / 1e9)
    a_rate = args.backlog / ((acked - reconnected) / 1e9)
    rows = [
        ("backlog stored while the link was down", f"{args.backlog:,} msgs",
         f"in {stored_s:.2f} s ({args.backlog / stored_s:,.0f} msg/s); {queued:,} queued"),
        ("reconnect after the restore", f"{(reconnected - restored) / 1e9:.2f} s",
         "A's jittered backoff"),
        ("drain: reconnect -> all at B's consumer", f"{rate:,.0f} msg/s",
         f"{drain_s:.2f} s; {per_message:.1f} items per MQTT message; "
         f"target >= 20,000: {'met' if rate >= 20_000 else 'MISSED'}"),
        ("drain: restore -> all at B's consumer", f"{rate_restore:,.0f} msg/s",
         "includes the reconnect backoff"),
        ("A: reconnect -> backlog acked by the broker", f"{a_rate:,.0f} msg/s",
         f"{(acked - reconnected) / 1e9:.2f} s: what is not consumed yet queues for B"),
        ("baseline: raw paho QoS 1 publishes", f"{raw:,.0f} msg/s",
         f"{args.raw:,} messages, {raw_name} (the better of 20 and 100)"),
        ("ratio drain / raw paho", f"{rate / raw:.2f}x", ""),
        (f"live messages during the drain ({lived.count}), at B's consumer",
         f"{lived.p50_ms:.0f} ms",
         f"median; p99 {lived.p99_ms:.0f} ms, max {lived.max_ms:.0f} ms; target all <= 1000 ms: "
         f"{'met' if lived.max_ms <= 1000 else 'MISSED'}"),
        (f"the same at a bare subscriber ({len(watched)})",
         f"{statistics.median(watched) if watched else float('nan'):.0f} ms",
         f"median; p99 {ab.percentile(watched, 0.99):.0f} ms, max "
         f"{max(watched, default=float('nan')):.0f} ms: A's outbox and the broker only"),
        ("CPU during the drain (of one core)", "", cpu.describe(args.backlog)),
    ]  # fmt: skip
    ab.print_table(
        f"agent drain: {args.backlog:,} messages of {ab.PAYLOAD_SIZE} B queued during an outage, "
        f"a live message every {args.live_every * 1000:.0f} ms",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (~20 s)")
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--live-every", type=float, default=0.05, help="seconds")
    parser.add_argument("--raw", type=int, default=50_000, help="raw paho messages")
    args = parser.parse_args()
    if args.quick:
        args.backlog, args.raw = 20_000, 10_000
    print(ab.load_note())
    with tempfile.TemporaryDirectory() as tmp, ab.mosquitto(Path(tmp)) as broker:
        print(f"broker: embedded Mosquitto at {broker.url}")
        ab.run_main("agent-a", bench(broker, Path(tmp), args))


if __name__ == "__main__":
    main()
