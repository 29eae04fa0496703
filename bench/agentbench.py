"""Shared parts of the agent benchmarks (``agent_throughput``, ``agent_drain``, ``agent_rtt``).

The set-up every one of them uses, on one machine:

    agent A (this process) --[FaultProxy, own process, optional]--> Mosquitto (own process)
        --> agent B (own process, ``python bench/agentbench.py sink ...``) --> B's consumer

A and B are real ``node.agent.service.Agent`` instances with their SQLite outbox and inbox in a
temporary directory.  They run one ION, ``bench``, with edges ``feed`` and ``live`` (both DATA)
from a pipeline placed on A to one placed on B; the pipelines themselves run on a null engine
(no child process), so the benchmark measures the agents, not a pipeline.  Each message is a
``DataRecords`` with a 100-byte application payload whose first bytes say which phase and
index it belongs to and when ``emit`` was called (CLOCK_MONOTONIC, the same in every process),
so B measures the latency from the publish call to its consumer.

B answers the parent over stdin/stdout, one JSON object per line: ``wait`` returns once a phase
has its expected count (or its timeout passed) with the arrival statistics.  The proxy, when
used, also runs in its own process (``python bench/agentbench.py proxy ...``), so its byte
pumping competes with neither agent for the GIL.  Every child is killed and reaped on exit.

Run directly only as a child of the benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
ION_NAME = "bench"
SOURCE, TARGET = "bench-a", "bench-b"
PAYLOAD_SIZE = 100  # the application payload of every message
_HEADER = struct.Struct("!IIq")  # phase, index, monotonic ns at the publish call
T = TypeVar("T")


# -- messages ----------------------------------------------------------------------------------


def body(phase: int, index: int) -> Any:
    """A ``DataRecords`` with a 100-byte payload stamped now."""
    from ion.model.messages import DataRecords

    head = _HEADER.pack(phase, index, time.monotonic_ns())
    return DataRecords(payload=head + bytes(PAYLOAD_SIZE - len(head)))


def stamp(body: object) -> tuple[int, int, int]:
    """``(phase, index, ns at the publish call)`` of a message made by ``body``."""
    from ion.model.messages import DataRecords

    if not isinstance(body, DataRecords):
        raise SystemExit(f"unexpected {type(body).__name__} on a bench edge")
    phase, index, t0 = _HEADER.unpack_from(body.payload)
    return phase, index, t0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


# -- the ION and the agents --------------------------------------------------------------------


def bench_ion() -> Any:
    """``producer`` on A sends along ``feed`` and ``live`` to ``consumer`` on B."""
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
        PortBinding,
    )

    def pipeline(name: str, node: str) -> Pipeline:
        return Pipeline(
            name=name,
            engine="python",
            role=PipelineRole.OTHER,
            mode=PipelineMode.STREAMING,
            placement=Placement(nodes=(node,)),
            components=(
                Component("src", "counter_source", {"rate": 1.0}),
                Component("sink", "log_sink", {"every": 100}, (PortBinding("in", "src", "out"),)),
            ),
        )

    edges = tuple(
        # Ends that name no component: the benchmark's own API calls send and consume them.
        Edge(name, EdgeKind.DATA, Endpoint("producer", "api", "out"),
             (Endpoint("consumer", "api", "in"),))
        for name in ("feed", "live")
    )  # fmt: skip
    return IonDefinition(
        name=ION_NAME,
        pipelines=(pipeline("producer", SOURCE), pipeline("consumer", TARGET)),
        edges=edges,
    )


def apply_ion(url: str) -> None:
    """Publish the bench ION (retained, as ``ion apply`` does)."""
    from ion.client import definitions
    from ion.client.session import connect
    from ion.config.broker import parse_broker_url

    with connect(parse_broker_url(url)) as session:
        now = time.time_ns() // 1_000_000
        plan = definitions.plan_apply(
            bench_ion(), definitions.fetch(session, ION_NAME), now_ms=now, operator="bench"
        )
        if plan.definition is not None:
            definitions.publish(session, plan.definition, now_ms=now)


class _NullJob:
    """A pipeline that does nothing until stopped: the benchmarks drive the agent API."""

    def __init__(self) -> None:
        self._done = asyncio.Event()

    @property
    def pid(self) -> int:
        return 0

    async def wait(self) -> Any:
        from node.engines.base import JobExit

        await self._done.wait()
        return JobExit.killed(signal.SIGTERM)

    async def stop(self, grace_s: float) -> Any:
        from node.engines.base import JobExit

        self._done.set()
        return JobExit.killed(signal.SIGTERM)

    def stats(self) -> None:
        return None


class NullEngine:
    name = "python"

    def check_available(self) -> str | None:
        return None

    async def start(self, job: Any) -> _NullJob:
        return _NullJob()


def agent_config(node_id: str, url: str, data_dir: Path, **extra: Any) -> Any:
    from node.config import config_from_mapping

    return config_from_mapping(
        {
            "node": {"id": node_id},
            "broker": {"url": url},
            "data_dir": str(data_dir / node_id),
            "log_level": "warning",
            # The bench ION is applied unsigned (signing is measured on its own, not here).
            "trust": {"development_mode": True},
            **extra,
        }
    )


def new_agent(node_id: str, url: str, data_dir: Path, **extra: Any) -> Any:
    from node.agent.service import Agent

    return Agent(agent_config(node_id, url, data_dir, **extra), engines={"python": NullEngine()})


# -- child processes ---------------------------------------------------------------------------


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(BrokenPipeError, OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ask(proc: subprocess.Popen[str], request: Mapping[str, Any]) -> dict[str, Any]:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"a bench child ({request}) died (exit {proc.wait()})")
    answer: dict[str, Any] = json.loads(line)
    return answer


@dataclass
class Sink:
    """Agent B in its own process; ``wait`` returns a phase's arrival statistics."""

    proc: subprocess.Popen[str]

    def wait(self, phase: int, count: int, timeout_s: float) -> PhaseStats:
        answer = _ask(self.proc, {"cmd": "wait", "phase": phase, "count": count,
                                  "timeout": timeout_s})  # fmt: skip
        return PhaseStats(**answer)

    def pid(self) -> int:
        return self.proc.pid


@dataclass
class PhaseStats:
    phase: int
    count: int
    first_ns: int = 0
    last_ns: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    in_order: bool = True
    duplicates: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@contextlib.contextmanager
def sink_process(url: str, data_dir: Path) -> Iterator[Sink]:
    proc = _spawn(["sink", "--url", url, "--dir", str(data_dir)])
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        if not ready:
            raise SystemExit(f"agent B did not start (exit {proc.wait()})")
        yield Sink(proc)
    finally:
        _reap(proc)


@dataclass
class Watcher:
    """A bare paho subscriber in its own process (see ``_watch``)."""

    proc: subprocess.Popen[str]

    def latencies(self, phase: int) -> list[float]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        got: dict[str, list[float]] = json.loads(self.proc.stdout.readline())
        return sorted(got.get(str(phase), []))


@contextlib.contextmanager
def watcher_process(host: str, port: int, topic: str) -> Iterator[Watcher]:
    proc = _spawn(["watch", "--host", host, "--port", str(port), "--topic", topic])
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline():
            raise SystemExit(f"the watcher did not start (exit {proc.wait()})")
        yield Watcher(proc)
    finally:
        _reap(proc)


@dataclass
class Proxy:
    """A ``FaultProxy`` in its own process."""

    proc: subprocess.Popen[str]
    url: str

    def cut(self) -> None:
        _ask(self.proc, {"cmd": "cut"})

    def restore(self) -> None:
        _ask(self.proc, {"cmd": "restore"})

    def set_delay(self, seconds: float) -> None:
        _ask(self.proc, {"cmd": "delay", "seconds": seconds})


@contextlib.contextmanager
def proxy_process(host: str, port: int) -> Iterator[Proxy]:
    proc = _spawn(["proxy", "--host", host, "--port", str(port)])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"the proxy did not start (exit {proc.wait()})")
        yield Proxy(proc, json.loads(line)["url"])
    finally:
        _reap(proc)


@contextlib.contextmanager
def mosquitto(tmp: Path) -> Iterator[Any]:
    """An embedded Mosquitto without persistence (the figures are about the agents)."""
    from broker.embedded import start_broker
    from broker.settings import BrokerSettings

    settings = BrokerSettings(persistence=False)
    with start_broker(kind="mosquitto", data_dir=tmp / "broker", settings=settings) as broker:
        yield broker


# -- agent A helpers ---------------------------------------------------------------------------


async def until_flowing(a: Any, sink: Sink, phase: int = 0, timeout_s: float = 30.0) -> None:
    """Emit probes on both edges until B receives them (B subscribed, A knows the ION)."""
    deadline = time.monotonic() + timeout_s
    sent = 0
    while time.monotonic() < deadline:
        if any(d.name == ION_NAME for d in a.status().ions):
            for edge in ("feed", "live"):
                await a.emit(ION_NAME, edge, body(phase, sent))
            sent += 1
            got = await asyncio.to_thread(sink.wait, phase, 2, 0.3)
            if got.count >= 2:
                return
        else:
            await asyncio.sleep(0.1)
    raise SystemExit("agent B never received A's probes")


async def poll_until(done: Callable[[], bool], step_s: float = 0.001) -> None:
    """Wait until ``done()``: for figures the agent does not signal (its queue length)."""
    while not done():  # noqa: ASYNC110 - nothing to wait on but the figure itself
        await asyncio.sleep(step_s)


def check_complete(what: str, got: PhaseStats, expected: int) -> None:
    """Exit unless B got every message of the phase, once each, in order."""
    if got.count < expected or not got.in_order or got.duplicates:
        raise SystemExit(
            f"{what}: {got.count}/{expected} arrived, in order {got.in_order}, "
            f"duplicates {got.duplicates}"
        )


async def emit_flat_out(a: Any, edge: str, phase: int, n: int, workers: int = 1000) -> None:
    """``n`` emits by ``workers`` concurrent callers, each awaiting its own (durable) emit."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            await a.emit(ION_NAME, edge, body(phase, i))

    async with asyncio.TaskGroup() as group:
        for _ in range(min(workers, n)):
            group.create_task(worker())


async def emit_many_flat_out(
    a: Any, edge: str, phase: int, n: int, batch: int, callers: int
) -> None:
    """``n`` messages by ``callers`` concurrent callers, each awaiting its own (durable)
    ``emit_many`` of ``batch`` messages at a time."""
    next_index = 0

    async def caller() -> None:
        nonlocal next_index
        while next_index < n:
            first = next_index
            next_index = min(n, first + batch)
            bodies = [body(phase, i) for i in range(first, next_index)]
            await a.emit_many(ION_NAME, edge, bodies)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(callers, n // max(1, batch)))):
            group.create_task(caller())


async def emit_paced(a: Any, edge: str, phase: int, n: int, rate: float) -> None:
    """``n`` emits at ``rate`` per second, each started on time whatever the last one did."""
    start = time.monotonic()
    async with asyncio.TaskGroup() as group:
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            group.create_task(a.emit(ION_NAME, edge, body(phase, i)))


def raw_paho_rate(host: str, port: int, n: int, max_inflight: int) -> float:
    """QoS 1 publishes of 100-byte payloads with paho (loop_start thread): n / time until the
    last PUBACK, as in bench/link_publish.py."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    client.max_inflight_messages_set(max_inflight)
    client.connect(host, port, keepalive=60)
    client.loop_start()
    payload = bytes(PAYLOAD_SIZE)
    try:
        deadline = time.monotonic() + 10
        while not client.is_connected():
            if time.monotonic() > deadline:
                raise SystemExit("raw paho did not connect")
            time.sleep(0.01)
        start = time.perf_counter()
        infos = [client.publish("bench/raw", payload, qos=1) for _ in range(n)]
        for info in infos:
            info.wait_for_publish(120)
            if not info.is_published():
                raise SystemExit("raw paho: a publish was not acknowledged")
        return n / (time.perf_counter() - start)
    finally:
        client.disconnect()
        client.loop_stop()


def best_raw_paho(
    host: str, port: int, n: int, windows: tuple[int, ...] = (20, 100)
) -> tuple[float, str]:
    """The fastest of paho with these in-flight limits (20 is its default; which is fastest
    varies from run to run, so the baseline is the best of them)."""
    rates = {f"max_inflight {w}": raw_paho_rate(host, port, n, w) for w in windows}
    name = max(rates, key=lambda k: rates[k])
    return rates[name], name


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by named processes between ``start`` and ``stop``, as a share of one core."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self._pids = {name: pid for name, pid in pids.items() if pid}
        self._t0 = 0.0
        self._cpu0: dict[str, float] = {}
        self._busy0 = self._steal0 = 0.0
        self.wall = 0.0
        self.used: dict[str, float] = {}  # CPU seconds per process
        self.others = 0.0  # CPU seconds used by every other process on the machine
        self.stolen = 0.0  # CPU seconds the hypervisor gave to other guests

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = {n: cpu_seconds(p) for n, p in self._pids.items()}
        self._busy0, self._steal0 = machine_seconds()

    def stop(self) -> None:
        self.wall = time.monotonic() - self._t0
        self.used = {n: cpu_seconds(p) - self._cpu0[n] for n, p in self._pids.items()}
        busy, stolen = machine_seconds()
        self.others = max(0.0, busy - self._busy0 - sum(self.used.values()))
        self.stolen = stolen - self._steal0

    def describe(self, messages: int = 0) -> str:
        """Each process's share of one core (and CPU microseconds per message)."""
        parts = []
        for n, used in self.used.items():
            per = f" = {used / messages * 1e6:.0f} us/msg" if messages else ""
            parts.append(f"{n} {used / self.wall:.0%}{per}")
        parts.append(f"other processes {self.others / self.wall:.0%}")
        parts.append(f"stolen by the host {self.stolen / self.wall:.0%}")
        return ", ".join(parts)


def machine_seconds() -> tuple[float, float]:
    """CPU seconds, all cores, since boot: busy (anything but idle, iowait and steal), and
    stolen (a virtual machine's cores running someone else: /proc/stat's steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
    return busy / tick, v[7] / tick


def run_main(name: str, coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, under cProfile when $ION_BENCH_PROFILE names a directory (the
    stats go to ``<dir>/<name>.prof``; read them with ``python -m pstats``; CPU time of the main
    thread instead of wall time with $ION_BENCH_PROFILE_CLOCK=cpu)."""
    where = os.environ.get("ION_BENCH_PROFILE")
    if not where:
        return asyncio.run(coro)
    import cProfile

    # $ION_BENCH_PROFILE_CLOCK=cpu: the main thread's CPU time instead of wall time, so that
    # waiting for the CPU on a loaded machine is not charged to whatever ran before it.
    cpu = os.environ.get("ION_BENCH_PROFILE_CLOCK") == "cpu"
    profiler = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
    try:
        return profiler.runcall(asyncio.run, coro)
    finally:
        Path(where).mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(Path(where) / f"{name}.prof"))


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.2f} (1 min) {five:.2f} (5 min) at start"


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(title)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{w0}}  {value:>{w1}}  {note}")


# -- the throughput benchmarks ((a) and (c)) ---------------------------------------------------


@dataclass
class Throughput:
    """What ``measure_throughput`` found; rates in messages per second."""

    agent: list[float] = field(default_factory=list)
    batched: list[float] = field(default_factory=list)  # with emit_many (if asked for)
    raw: list[float] = field(default_factory=list)
    raw_names: list[str] = field(default_factory=list)
    items_per_mqtt: list[float] = field(default_factory=list)
    cpu: list[str] = field(default_factory=list)
    timelines: list[str] = field(default_factory=list)
    batched_items_per_mqtt: list[float] = field(default_factory=list)
    batched_cpu: list[str] = field(default_factory=list)
    batched_timelines: list[str] = field(default_factory=list)
    light: PhaseStats | None = None


LIGHT_PHASE = 1


async def measure_throughput(
    broker: Any, tmp: Path, args: argparse.Namespace, *, rtt_s: float = 0.0
) -> Throughput:
    """Light load, then ``args.runs`` flat-out runs of ``args.messages`` from A to B (one
    ``emit`` per message, then, unless ``args.batch`` is 0, ``emit_many`` of ``args.batch``
    at a time), each followed by a raw paho run of as many messages; with ``rtt_s``, A and raw
    paho talk to the broker through a proxy adding that round trip (B does not)."""

    out = Throughput()
    with contextlib.ExitStack() as stack:
        host, port = broker.connect_host, broker.port
        proxy = None
        if rtt_s:
            proxy = stack.enter_context(proxy_process(host, port))
            proxy.set_delay(rtt_s / 2)
            host, port = "127.0.0.1", int(proxy.url.rsplit(":", 1)[1])
        sink = stack.enter_context(sink_process(broker.url, tmp))
        pids = {"A": os.getpid(), "B": sink.pid(), "mosquitto": broker.pid}
        if proxy is not None:
            pids["proxy"] = proxy.proc.pid
        async with new_agent(SOURCE, f"mqtt://{host}:{port}", tmp) as a:
            await a.link.wait_connected()
            await until_flowing(a, sink)

            # Light load first, on a quiet pair of agents.
            n_light = int(args.rate * args.light_seconds)
            await emit_paced(a, "feed", LIGHT_PHASE, n_light, args.rate)
            out.light = await asyncio.to_thread(sink.wait, LIGHT_PHASE, n_light, 60)
            if out.light.count < n_light:
                raise SystemExit(f"light load: only {out.light.count}/{n_light} arrived")

            for run in range(args.runs):
                phase = 10 + run
                rate, per_mqtt, used, timeline = await _agent_run(
                    a, sink, pids, phase, args.messages, lambda p: emit_flat_out(
                        a, "feed", p, args.messages)
                )  # fmt: skip
                out.agent.append(rate)
                out.items_per_mqtt.append(per_mqtt)
                out.cpu.append(used)
                out.timelines.append(timeline)
                if args.batch:
                    rate, per_mqtt, used, timeline = await _agent_run(
                        a, sink, pids, 100 + phase, args.messages,
                        lambda p: emit_many_flat_out(
                            a, "feed", p, args.messages, args.batch, args.batch_callers),
                    )  # fmt: skip
                    out.batched.append(rate)
                    out.batched_items_per_mqtt.append(per_mqtt)
                    out.batched_cpu.append(used)
                    out.batched_timelines.append(timeline)
                # Over a long round trip only a large window counts (20 in flight make 400 msg/s
                # at 50 ms); on loopback paho's default 20 and 100 are faster than 1,000.
                windows = (1000,) if rtt_s else (20, 100)
                rate, name = await asyncio.to_thread(best_raw_paho, host, port, args.messages,
                                                     windows)  # fmt: skip
                out.raw.append(rate)
                out.raw_names.append(name)
    return out


async def _agent_run(
    a: Any,
    sink: Sink,
    pids: Mapping[str, int | None],
    phase: int,
    n: int,
    send: Callable[[int], Coroutine[Any, Any, None]],
) -> tuple[float, float, str, str]:
    """One flat-out agent run of ``n`` messages sent by ``send(phase)``: the rate, items per
    MQTT message, the CPU line and the timeline."""
    published0, items0 = a.sender.published, a.sender.items_acked
    cpu = CpuMeter(pids)
    cpu.start()
    start = time.monotonic_ns()
    await send(phase)
    stored = time.monotonic_ns()
    await poll_until(lambda: not a.queued())
    acked = time.monotonic_ns()
    got = await asyncio.to_thread(sink.wait, phase, n, 300)
    cpu.stop()
    check_complete(f"phase {phase}", got, n)
    timeline = (
        f"stored by A {(stored - start) / 1e9:.2f} s, acked by the broker "
        f"{(acked - start) / 1e9:.2f} s, all at B {(got.last_ns - start) / 1e9:.2f} s"
    )
    mqtt = a.sender.published - published0
    per_mqtt = (a.sender.items_acked - items0) / max(1, mqtt)
    return n / ((got.last_ns - start) / 1e9), per_mqtt, cpu.describe(n), timeline


def throughput_rows(t: Throughput) -> list[tuple[str, str, str]]:
    """The rows every throughput table shares: agent rate, raw paho rate, CPU, timelines."""
    agent, raw = statistics.median(t.agent), statistics.median(t.raw)
    return [
        ("agent: A.emit -> B's consumer", f"{agent:,.0f} msg/s",
         "runs: " + ", ".join(f"{r:,.0f}" for r in t.agent)
         + f"; {statistics.median(t.items_per_mqtt):.1f} items per MQTT message"),
        ("baseline: raw paho QoS 1 publishes", f"{raw:,.0f} msg/s",
         "runs: " + ", ".join(f"{r:,.0f} ({n})" for r, n in zip(t.raw, t.raw_names, strict=True))),
        ("ratio agent / raw paho", f"{agent / raw:.2f}x", ""),
        ("CPU during the agent runs", "", "; ".join(t.cpu)),
        ("timeline of each agent run", "", "; ".join(t.timelines)),
    ]  # fmt: skip


def batched_rows(t: Throughput, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """The rows of the ``emit_many`` runs (none when they were not asked for)."""
    if not t.batched:
        return []
    rate, raw = statistics.median(t.batched), statistics.median(t.raw)
    return [
        (f"agent: A.emit_many ({args.batch} per call, {args.batch_callers} callers) -> B",
         f"{rate:,.0f} msg/s",
         "runs: " + ", ".join(f"{r:,.0f}" for r in t.batched)
         + f"; {statistics.median(t.batched_items_per_mqtt):.1f} items per MQTT message"),
        ("ratio emit_many / raw paho", f"{rate / raw:.2f}x", ""),
        ("CPU during the emit_many runs", "", "; ".join(t.batched_cpu)),
        ("timeline of each emit_many run", "", "; ".join(t.batched_timelines)),
    ]  # fmt: skip


def throughput_args(description: str, messages: int, *, rtt: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    if rtt:
        parser.add_argument("--rtt-ms", type=float, default=50.0, help="added round trip")
    parser.add_argument("--quick", action="store_true", help="a smoke run (under 30 s)")
    parser.add_argument("--messages", type=int, default=messages, help="per run, agent and raw")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0, help="light load, msg/s")
    parser.add_argument("--light-seconds", type=float, default=10.0)
    parser.add_argument(
        "--batch", type=int, default=100, help="messages per emit_many call (0: no such runs)"
    )
    parser.add_argument(
        "--batch-callers", type=int, default=10, help="concurrent emit_many callers"
    )
    args = parser.parse_args()
    if args.quick:
        args.messages, args.runs, args.light_seconds = 10_000, 1, 3.0
    return args


# -- the children ------------------------------------------------------------------------------


class _Phase:
    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.first_ns = 0
        self.last_ns = 0
        self.last_index = -1
        self.in_order = True
        self.seen: set[int] = set()
        self.duplicates = 0

    def add(self, index: int, t0: int, now: int) -> None:
        if index in self.seen:
            self.duplicates += 1
            return
        self.seen.add(index)
        if index < self.last_index:
            self.in_order = False
        self.last_index = index
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        self.latencies_ns.append(now - t0)


def _report(phase: int, parts: list[_Phase]) -> dict[str, Any]:
    """One phase's figures (a phase may span both edges: the probes do)."""
    lat = sorted(x / 1e6 for p in parts for x in p.latencies_ns)
    firsts = [p.first_ns for p in parts if p.first_ns]
    return {
        "phase": phase,
        "count": sum(len(p.seen) for p in parts),
        "first_ns": min(firsts, default=0),
        "last_ns": max((p.last_ns for p in parts), default=0),
        "p50_ms": statistics.median(lat) if lat else float("nan"),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": lat[-1] if lat else float("nan"),
        "in_order": all(p.in_order for p in parts),
        "duplicates": sum(p.duplicates for p in parts),
        "latencies_ms": lat if len(lat) <= 10_000 else [],
    }


async def _sink(url: str, data_dir: Path) -> None:
    from node.agent.receiver import Arrival

    phases: dict[tuple[str, int], _Phase] = {}
    per_phase: dict[int, list[_Phase]] = {}

    def phase_of(edge: str, phase: int) -> _Phase:
        key = (edge, phase)
        if key not in phases:
            phases[key] = _Phase()
            per_phase.setdefault(phase, []).append(phases[key])
        return phases[key]

    def mine(arrival: Arrival) -> bool:
        return arrival.topic.ion == ION_NAME

    async with new_agent(TARGET, url, data_dir) as agent:
        await agent.link.wait_connected()
        await asyncio.to_thread(apply_ion, url)

        async def consume() -> None:
            # A list at a time (``consume_batches``): what B's consumer costs per message is
            # then mostly what it does with it.
            async for arrivals in agent.consume_batches(mine):
                now = time.monotonic_ns()
                for arrival in arrivals:
                    phase, index, t0 = stamp(arrival.envelope.body)
                    phase_of(arrival.topic.edge, phase).add(index, t0, now)

        consumer = asyncio.create_task(consume(), name="bench consumer")
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            req = json.loads(line)
            phase, want = int(req["phase"]), int(req["count"])
            deadline = time.monotonic() + float(req["timeout"])
            while True:
                parts = per_phase.get(phase, [])
                if sum(len(p.seen) for p in parts) >= want or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.002)
            report = _report(phase, parts)
            print(json.dumps(report), flush=True)
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer


def _proxy(host: str, port: int) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.support.proxy import FaultProxy

    with FaultProxy(host, port) as proxy:
        print(json.dumps({"url": proxy.url}), flush=True)
        stdin: IO[str] = sys.stdin
        for line in stdin:
            req = json.loads(line)
            if req["cmd"] == "cut":
                proxy.cut()
            elif req["cmd"] == "restore":
                proxy.restore()
            elif req["cmd"] == "delay":
                proxy.set_delay(float(req["seconds"]))
            print(json.dumps({"ok": True}), flush=True)


def _watch(host: str, port: int, topic: str) -> None:
    """A bare paho subscriber: when a line arrives on stdin, prints the latencies (ms) of the
    stamped messages it got on ``topic`` so far, per phase, from the emit call at A."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from ion.wire.codec import decode_all

    got: dict[int, list[float]] = {}

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic_ns()
        for e in decode_all(msg.payload):
            phase, _, t0 = stamp(e.body)
            got.setdefault(phase, []).append((now - t0) / 1e6)

    client_id = f"bench-watch-{uuid.uuid4().hex[:8]}"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    subscribed = threading.Event()
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(host, port, keepalive=60)
    client.loop_start()
    try:
        if not subscribed.wait(20):
            raise SystemExit("the watcher could not subscribe")
        print(json.dumps({"ready": True}), flush=True)
        for _ in sys.stdin:
            print(json.dumps({str(k): v for k, v in got.items()}), flush=True)
    finally:
        client.loop_stop()
        client.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description="a child of the agent benchmarks")
    sub = parser.add_subparsers(dest="role", required=True)
    sink = sub.add_parser("sink")
    sink.add_argument("--url", required=True)
    sink.add_argument("--dir", required=True, type=Path)
    proxy = sub.add_parser("proxy")
    proxy.add_argument("--host", required=True)
    proxy.add_argument("--port", required=True, type=int)
    watch = sub.add_parser("watch")
    watch.add_argument("--host", required=True)
    watch.add_argument("--port", required=True, type=int)
    watch.add_argument("--topic", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (stdin closes)
    if args.role == "sink":
        run_main("agent-b", _sink(args.url, args.dir))
    elif args.role == "watch":
        _watch(args.host, args.port, args.topic)
    else:
        _proxy(args.host, args.port)


if __name__ == "__main__":
    main()
