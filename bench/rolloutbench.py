"""The children of bench/model_rollout.py, and what it shares with them.

    consumers: ``--ids`` consumer agents in one process (real ``node.agent.service.Agent``s on
        the benchmarks' null engine); on ``wait`` they report when each got the first chunk of
        the next version, all of its chunks, and had it active.
    raw: ``--ids`` raw paho subscribers in one process, one thread driving all of them through
        paho's socket API; on a request they report when each held every message of a topic.

They answer the parent over stdin/stdout, one JSON object per line, and exit when stdin closes.
Times are CLOCK_MONOTONIC nanoseconds, the same clock in every process.  Run only as children
of the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, Any

import agentbench as ab

ION, EDGE = "rollout", "model"
PRODUCER = "roll-src"
RAW_TOPIC = "bench/rollout-raw"
MiB = 1024 * 1024


def rollout_ion(consumers: list[str]) -> Any:
    from ion.model.definition import (
        Component,
        Edge,
        EdgeKind,
        Endpoint,
        IonDefinition,
        Pipeline,
        PipelineMode,
        PipelineRole,
        Placement,
    )

    def pipeline(name: str, nodes: tuple[str, ...], role: PipelineRole) -> Pipeline:
        return Pipeline(
            name=name,
            engine="python",  # the benchmarks' null engine: nothing runs
            role=role,
            mode=PipelineMode.BATCH,
            placement=Placement(nodes=nodes),
            components=(Component("c", "noop"),),
        )

    return IonDefinition(
        name=ION,
        pipelines=(
            pipeline("training", (PRODUCER,), PipelineRole.TRAINING),
            pipeline("inference", tuple(consumers), PipelineRole.INFERENCE),
        ),
        # The default policy: auto, the last 3 versions kept.
        edges=(Edge(EDGE, EdgeKind.MODEL, Endpoint("training"), (Endpoint("inference"),)),),
    )


def apply_ion(url: str, consumers: list[str]) -> None:
    from ion.client import definitions
    from ion.client.session import connect
    from ion.config.broker import parse_broker_url

    with connect(parse_broker_url(url)) as session:
        now = time.time_ns() // 1_000_000
        plan = definitions.plan_apply(
            rollout_ion(consumers), definitions.fetch(session, ION), now_ms=now, operator="bench"
        )
        if plan.definition is not None:
            definitions.publish(session, plan.definition, now_ms=now)


def producer_key(tmp: Path) -> tuple[Path, str]:
    """A producer signing key (a PEM file) and the trusted-key line the consumers hold."""
    from ion.security.keys import SigningKey

    key = SigningKey.generate()
    path = tmp / "producer.key"
    path.write_bytes(key.to_pem())
    path.chmod(0o600)
    return path, f"{key.public.text()} producer bench-producer"


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the children -------------------------------------------------------------------------------


Child = subprocess.Popen[str]


def ask(child: Child, request: dict[str, Any]) -> dict[str, Any]:
    return ab._ask(child, request)


@contextlib.contextmanager
def children(role: str, groups: list[list[str]], extra: list[str]) -> Iterator[list[Child]]:
    procs: list[Child] = []
    try:
        for ids in groups:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), role, "--ids", ",".join(ids),
                 *extra],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
                cwd=ab.ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            procs.append(proc)
        for p in procs:
            assert p.stdout is not None
            if not p.stdout.readline():
                raise SystemExit(f"a {role} child did not start (exit {p.wait()})")
        yield procs
    finally:
        for p in procs:
            ab._reap(p)


class _Progress:
    """When each agent of a consumer process got the first chunk of the next version, all of
    its chunks, and the version active (CLOCK_MONOTONIC ns, the same clock in every
    process)."""

    def __init__(self, agents: list[Any]) -> None:
        self.agents = agents
        self.active: dict[str, tuple[str, int]] = {}  # node -> (model id, when)

    def listen(self) -> None:
        from node.models.artifact import ModelArtifact

        for a in self.agents:

            def on_change(art: ModelArtifact | None, node: str = a.node_id) -> None:
                if art is not None:
                    self.active[node] = (art.model_id, time.monotonic_ns())

            a.models.watch(ION, EDGE).add_listener(on_change)

    async def next_version(self, chunks: int, deadline: float) -> dict[str, dict[str, Any]]:
        """Poll the chunk counters every 5 ms until every agent activated another version."""
        before = {a.node_id: self.active.get(a.node_id, ("", 0))[0] for a in self.agents}
        base = {a.node_id: a.models.counters["chunk.accepted"] for a in self.agents}
        marks: dict[str, dict[str, Any]] = {a.node_id: {} for a in self.agents}
        while time.monotonic() < deadline:
            now = time.monotonic_ns()
            done = 0
            for a in self.agents:
                m = marks[a.node_id]
                got = a.models.counters["chunk.accepted"] - base[a.node_id]
                if got > 0:
                    m.setdefault("first", now)
                if got >= chunks:
                    m.setdefault("all", now)
                model_id, when = self.active.get(a.node_id, ("", 0))
                if model_id != before[a.node_id]:
                    m["model_id"], m["active"] = model_id, when
                    done += 1
            if done == len(self.agents):
                break
            await asyncio.sleep(0.005)
        return marks


async def _consumers(
    url: str, data_dir: Path, ids: list[str], chunk_kib: int, trusted: str
) -> None:
    """Agents ``ids`` consuming the rollout edge; answers the parent over stdin/stdout."""
    from ion import topics

    async with AsyncExitStack() as stack:
        agents = [
            await stack.enter_async_context(
                ab.new_agent(node, url, data_dir, models={"chunk_size": chunk_kib * 1024},
                             trust={"keys": [trusted], "development_mode": True})
            )
            for node in ids
        ]  # fmt: skip
        for agent in agents:
            await agent.link.wait_connected()
        progress = _Progress(agents)
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            req = json.loads(line)
            deadline = time.monotonic() + float(req["timeout"])
            if req["cmd"] == "subscribe":
                while not all(any(v.name == ION for v in a.status().ions) for a in agents):
                    if time.monotonic() > deadline:
                        raise SystemExit("consumers never learnt the ION")
                    await asyncio.sleep(0.05)
                for a in agents:
                    # Subscribing again returns once the broker confirmed it: listening now.
                    await a.link.subscribe(topics.model_filter(ION, EDGE), 1)
                progress.listen()
                print(json.dumps({"ok": True}), flush=True)
                continue
            marks = await progress.next_version(int(req["chunks"]), deadline)
            counters: dict[str, int] = {}
            for a in agents:
                for k, v in a.models.counters.items():
                    counters[k] = counters.get(k, 0) + v
            print(json.dumps({"marks": marks, "counters": counters,
                              "rss_mib": peak_rss_mib(os.getpid())}), flush=True)  # fmt: skip


def _raw_subscribers(host: str, port: int, ids: list[str]) -> None:
    """Raw paho subscribers, one thread driving all of them through paho's socket API."""
    import paho.mqtt.client as mqtt
    from paho.mqtt import _packet
    from paho.mqtt.enums import CallbackAPIVersion

    # The baseline is paho as installed: not the agents' reader (node.link.paho_publish).
    assert mqtt.Client._packet_read.__module__ == "paho.mqtt.client"
    assert _packet.decode_publish.__module__ == "paho.mqtt._packet"

    lock = threading.Lock()
    got: dict[str, dict[str, list[int]]] = {}  # run topic -> client -> [count, bytes, last ns]
    subscribed: set[str] = set()

    def on_message(client: Any, userdata: str, msg: Any) -> None:
        now = time.monotonic_ns()
        with lock:
            rec = got.setdefault(msg.topic, {}).setdefault(userdata, [0, 0, 0])
            rec[0] += 1
            rec[1] += len(msg.payload)
            rec[2] = now

    clients = []
    for name in ids:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{name}-{uuid.uuid4().hex[:6]}",
                        userdata=name, protocol=mqtt.MQTTv311)  # fmt: skip
        c.on_message = on_message
        c.on_connect = lambda c, *_: c.subscribe(f"{RAW_TOPIC}/#", qos=1)
        c.on_subscribe = lambda c, userdata, *_: subscribed.add(userdata)
        c.connect(host, port, keepalive=60)
        clients.append(c)
    sel = selectors.DefaultSelector()
    for c in clients:
        sock = c.socket()
        assert sock is not None
        sel.register(sock, selectors.EVENT_READ, c)
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            for key, _ in sel.select(0.05):
                key.data.loop_read(100)
            for c in clients:
                if c.want_write():
                    c.loop_write()
                c.loop_misc()

    thread = threading.Thread(target=pump, name="raw subscribers", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(subscribed) < len(ids):
            if time.monotonic() > deadline:
                raise SystemExit("raw subscribers could not subscribe")
            time.sleep(0.01)
        print(json.dumps({"ready": True}), flush=True)
        stdin: IO[str] = sys.stdin
        for line in stdin:
            req = json.loads(line)
            deadline = time.monotonic() + float(req["timeout"])
            topic, count = req["topic"], int(req["count"])
            while time.monotonic() < deadline:
                with lock:
                    recs = got.get(topic, {})
                    if len(recs) == len(ids) and all(r[0] >= count for r in recs.values()):
                        break
                time.sleep(0.002)
            with lock:
                recs = got.get(topic, {})
                print(json.dumps({"times": [r[2] for r in recs.values() if r[0] >= count],
                                  "bytes": [r[1] for r in recs.values()],
                                  "rss_mib": peak_rss_mib(os.getpid())}), flush=True)  # fmt: skip
    finally:
        stop.set()
        thread.join(5)
        for c in clients:
            c.disconnect()


def raw_publish(host: str, port: int, topic: str, data: bytes, chunk: int, inflight: int) -> int:
    """Publish ``data`` in ``chunk``-byte QoS 1 messages; returns monotonic ns at the start."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-pub-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv311)  # fmt: skip
    client.max_inflight_messages_set(inflight)
    client.connect(host, port, keepalive=60)
    client.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not client.is_connected():
            if time.monotonic() > deadline:
                raise SystemExit("raw paho did not connect")
            time.sleep(0.01)
        pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        start = time.monotonic_ns()
        infos = [client.publish(topic, p, qos=1) for p in pieces]
        for info in infos:
            info.wait_for_publish(120)
            if not info.is_published():
                raise SystemExit("raw paho: a publish was not acknowledged")
        return start
    finally:
        client.disconnect()
        client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="a child of bench/model_rollout.py")
    sub = parser.add_subparsers(dest="role", required=True)
    cons = sub.add_parser("consumers")
    cons.add_argument("--url", required=True)
    cons.add_argument("--dir", required=True, type=Path)
    cons.add_argument("--ids", required=True)
    cons.add_argument("--chunk-kib", type=int, required=True)
    cons.add_argument("--trusted", required=True)
    raw = sub.add_parser("raw")
    raw.add_argument("--host", required=True)
    raw.add_argument("--port", required=True, type=int)
    raw.add_argument("--ids", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (stdin closes)
    if args.role == "consumers":
        ids = args.ids.split(",")
        coro = _consumers(args.url, args.dir, ids, args.chunk_kib, args.trusted)
        ab.run_main(f"consumers-{os.getpid()}", coro)
    else:
        _raw_subscribers(args.host, args.port, args.ids.split(","))


if __name__ == "__main__":
    main()
