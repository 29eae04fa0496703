"""QoS 1 publish rate of 100-byte messages: the MQTT link (a window of 1,000 publishes awaited
concurrently) against raw paho-mqtt (``loop_start`` thread, ``publish`` everything, then
``wait_for_publish`` on all), to the same Mosquitto in the same run.  A message counts once
its PUBACK is back.

    .venv/bin/python bench/link_publish.py [--messages 50000] [--size 100] [--window 1000]
                                           [--runs 3] [--url mqtt://host:port]

Without --url an embedded Mosquitto is started on a free loopback port (and stopped).  Each
variant runs --runs times, interleaved; the median is printed.  Raw paho is measured with its
in-flight limit at the same window and at its default (20); the ratio is against the faster.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker.embedded import start_broker
from broker.settings import BrokerSettings
from ion.config.broker import BrokerConfig, parse_broker_url
from node.link.aiomqtt_link import AiomqttLink
from node.link.base import LinkOptions

TOPIC = "bench/link-publish"


def raw_paho(cfg: BrokerConfig, n: int, payload: bytes, max_inflight: int) -> float:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    client.max_inflight_messages_set(max_inflight)
    client.connect(cfg.host, cfg.port, keepalive=60)
    client.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not client.is_connected():
            if time.monotonic() > deadline:
                raise SystemExit("raw paho did not connect")
            time.sleep(0.01)
        start = time.perf_counter()
        infos = [client.publish(TOPIC, payload, qos=1) for _ in range(n)]
        for info in infos:
            info.wait_for_publish(60)
            if not info.is_published():
                raise SystemExit("raw paho: a publish was not acknowledged")
        return n / (time.perf_counter() - start)
    finally:
        client.disconnect()
        client.loop_stop()


async def _link(cfg: BrokerConfig, n: int, payload: bytes, window: int) -> float:
    options = LinkOptions(inflight_window=window)
    async with AiomqttLink(cfg, f"bench-link-{uuid.uuid4().hex[:8]}", options=options) as link:
        await link.wait_connected()
        left = n

        async def sender() -> None:
            # One of ``window`` senders: together they keep the window full, as the agent's
            # outbox pipeline does.
            nonlocal left
            while left > 0:
                left -= 1
                await link.publish(TOPIC, payload, qos=1)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(window):
                group.create_task(sender())
        return n / (time.perf_counter() - start)


def link_rate(cfg: BrokerConfig, n: int, payload: bytes, window: int) -> float:
    return asyncio.run(_link(cfg, n, payload, window))


def run(cfg: BrokerConfig, where: str, args: argparse.Namespace) -> None:
    payload = b"x" * args.size
    variants: dict[str, Callable[[], float]] = {
        f"raw paho (loop_start, max_inflight {args.window})": lambda: raw_paho(
            cfg, args.messages, payload, args.window
        ),
        "raw paho (loop_start, max_inflight 20, its default)": lambda: raw_paho(
            cfg, args.messages, payload, 20
        ),
        f"link (AiomqttLink, window {args.window})": lambda: link_rate(
            cfg, args.messages, payload, args.window
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, fn in variants.items():
            results[name].append(fn())
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    print(f"broker: {where}")
    print(
        f"{args.messages} messages of {args.size} bytes, QoS 1, PUBACK awaited; "
        f"median of {args.runs} interleaved runs"
    )
    width = max(len(name) for name in medians)
    for name, rate in medians.items():
        spread = ", ".join(f"{r:,.0f}" for r in results[name])
        print(f"  {name:<{width}}  {rate:>9,.0f} msg/s   (runs: {spread})")
    raw_best = max(rate for name, rate in medians.items() if name.startswith("raw"))
    link = next(rate for name, rate in medians.items() if name.startswith("link"))
    print(f"ratio link / best raw paho: {link / raw_best:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url", help="an existing broker (default: start a Mosquitto)")
    args = parser.parse_args()
    if args.url:
        run(parse_broker_url(args.url), args.url, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        # Persistence off: the figures are about the client, not the broker's disk.
        settings = BrokerSettings(persistence=False)
        with start_broker(kind="mosquitto", data_dir=Path(tmp), settings=settings) as broker:
            cfg = BrokerConfig(host=broker.connect_host, port=broker.port)
            run(cfg, f"embedded Mosquitto at {broker.url}", args)


if __name__ == "__main__":
    main()
