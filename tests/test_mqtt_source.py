"""mqtt_source: payload parsing (pure) and readings from a real Mosquitto; the device simulator."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from support import unique_name

from broker.embedded import EmbeddedBroker
from ion.model.definition import PipelineMode
from node.components import mqtt_source as ms
from node.components.values import Batch
from node.runner.component import Args, ArgsError, Context, StopSignal

REPO = Path(__file__).resolve().parents[1]


def load_example(name: str) -> ModuleType:
    module_name = f"ion_example_kmeans_{name}"
    if module_name not in sys.modules:
        path = REPO / "examples" / "kmeans" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


devices = load_example("devices")


@pytest.fixture
def stop() -> Iterator[StopSignal]:
    with StopSignal() as signal:
        yield signal


def make_ctx(tmp_path: Path, stop: StopSignal) -> Context:
    return Context(
        ion="kmeans-anomaly",
        pipeline="inference",
        component="sensors",
        node_id="edge-1",
        version=1,
        mode=PipelineMode.STREAMING,
        work_dir=tmp_path,
        bound_inputs=frozenset(),
        log=logging.getLogger("test.mqtt_source"),
        stop_signal=stop,
    )


def source(args: dict[str, Any], ctx: Context) -> ms.MqttSource:
    a = Args(args)
    component = ms.MqttSource(a, ctx)
    assert a.unread() == []
    return component


# -- pure ------------------------------------------------------------------------------------


def test_parse_json_object_and_list() -> None:
    one = b'{"device": "d7", "ts": 1700000000123, "temperature": 61.5, "rpm": 1800, "ok": true}'
    readings, bad = ms.parse_json(one, "topic-dev")
    assert bad == 0
    assert readings == [ms.Reading("d7", 1700000000123, {"temperature": 61.5, "rpm": 1800.0})]
    many = json.dumps([{"a": 1}, {"a": 2, "b": 3}, "junk", {"name": "no numbers"}]).encode()
    readings, bad = ms.parse_json(many, "dev-2")
    assert [r.values for r in readings] == [{"a": 1.0}, {"a": 2.0, "b": 3.0}]
    assert [r.source for r in readings] == ["dev-2", "dev-2"]
    assert bad == 2
    for junk in (b"{not json", b"\xff\xfe", b"42", b"null"):
        readings, bad = ms.parse_json(junk, "x")
        assert readings == []
        assert bad == 1


def test_parse_csv_header_columns_and_bad_lines() -> None:
    readings, bad = ms.parse_csv(b"a,b\n1,2\n3,x\n5,6,7\n", "d")
    assert [r.values for r in readings] == [{"a": 1.0, "b": 2.0}]
    assert bad == 2
    readings, bad = ms.parse_csv(b"1,2\n3,4", "d", columns=("t", "v"))
    assert [r.values for r in readings] == [{"t": 1.0, "v": 2.0}, {"t": 3.0, "v": 4.0}]
    readings, _ = ms.parse_csv(b"1,2", "d")
    assert readings[0].values == {"c0": 1.0, "c1": 2.0}
    assert ms.parse_csv(b"", "d") == ([], 1)


def test_assemble_same_and_ragged_fields() -> None:
    same = [ms.Reading("d1", 5, {"a": 1.0, "b": 2.0}), ms.Reading("d2", None, {"a": 3.0, "b": 4.0})]
    b = ms.assemble(same)
    assert b.features == ("a", "b")
    assert b.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert b.sources == ("d1", "d2")
    assert b.timestamps_ms is not None
    assert b.timestamps_ms.tolist() == [5, -1]
    ragged = ms.assemble([ms.Reading("d", None, {"a": 1.0}), ms.Reading("d", None, {"b": 2.0})])
    assert ragged.features == ("a", "b")
    assert math.isnan(ragged.values[0, 1])
    assert math.isnan(ragged.values[1, 0])
    assert ragged.timestamps_ms is None
    assert ms.assemble([]).rows == 0


def test_addresses_topics_and_arguments(tmp_path: Path, stop: StopSignal) -> None:
    assert ms.parse_broker_url("mqtt://10.0.0.2:1884") == ms.BrokerAddress("10.0.0.2", 1884)
    assert ms.parse_broker_url("mqtts://u:p%40ss@h") == ms.BrokerAddress(
        "h", 8883, True, "u", "p@ss"
    )
    with pytest.raises(ValueError, match="mqtt://host:port"):
        ms.parse_broker_url("http://h:1")
    assert ms.source_from_topic("sensors/+/readings", "sensors/dev-3/readings") == "dev-3"
    assert ms.source_from_topic("sensors/#", "sensors/a/b") == "sensors/a/b"
    ctx = make_ctx(tmp_path, stop)
    for bad in ("a/#/b", "a/b+", ""):
        with pytest.raises(ArgsError, match="topic"):
            source({"topic": bad}, ctx)
    with pytest.raises(ArgsError, match="broker"):
        source({"topic": "a", "broker": "nope"}, ctx)
    with pytest.raises(ArgsError, match="at least 1"):
        source({"topic": "a", "batch": 0}, ctx)


def test_buffer_drops_the_oldest_when_full() -> None:
    buf = ms.ReadingBuffer(3)
    buf.put([ms.Reading(str(i), None, {"x": float(i)}) for i in range(5)])
    assert buf.dropped == 2
    taken = buf.take(10, 0.0, lambda: False)
    assert [r.source for r in taken] == ["2", "3", "4"]
    started = time.monotonic()
    assert buf.take(1, 0.2, lambda: True) == []  # stopping: no wait
    assert time.monotonic() - started < 0.1


def test_drift_switch_signal_and_file(tmp_path: Path) -> None:
    switch = devices.DriftSwitch(0.0, on_level=0.8, file=tmp_path / "drift")
    switch.toggle()
    assert switch.level == 0.8
    switch.toggle()
    assert switch.level == 0.0
    (tmp_path / "drift").write_text("1.5\n")
    assert switch.poll(10.0) == 1.5
    (tmp_path / "drift").unlink()
    assert switch.poll(10.5) == 1.5  # checked at most once a second
    assert switch.poll(11.0) == 0.0


def test_fleet_readings_follow_the_training_model() -> None:
    fleet = devices.Fleet(4, anomaly_rate=0.0, seed=3)
    rows = [r for t in range(300) for r in fleet.readings(t)]
    assert len(rows) == 1200
    assert {r["device"] for r in rows} == {"dev-1", "dev-2", "dev-3", "dev-4"}
    gen = devices.gen

    def offsets(drift: float) -> np.ndarray:
        """Readings minus their mode's mean, in in-mode standard deviations."""
        out = []
        for t in range(300):
            rs = fleet.readings(t, drift)
            values = np.array([[r[f] for f in gen.FEATURES] for r in rs])
            out.append((values - gen.MEANS[fleet.modes]) / gen.STDS)
        return np.vstack(out)

    calm, worn = offsets(0.0).mean(axis=0), offsets(1.0).mean(axis=0)
    assert np.all(np.abs(calm) < 0.25)
    # Wear: hotter, shakier, lower pressure, one standard deviation each.
    np.testing.assert_allclose(worn[:3], [1.0, 1.0, -1.0], atol=0.25)
    noisy = devices.Fleet(2, anomaly_rate=0.5, seed=4)
    for t in range(100):
        noisy.readings(t)
    assert 60 < noisy.anomalies < 140  # per reading, even with only two devices
    topic, payload = devices.payloads(rows[:1])[0]
    assert topic == "sensors/dev-1/readings"
    assert json.loads(payload)["device"] == "dev-1"


# -- a real broker ---------------------------------------------------------------------------


def publisher(broker: EmbeddedBroker) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique_name("pub"))
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def collect(it: Iterator[Batch], rows: int, timeout: float = 10.0) -> list[Batch]:
    got: list[Batch] = []
    deadline = time.monotonic() + timeout
    while sum(b.rows for b in got) < rows and time.monotonic() < deadline:
        got.append(next(it))
    return got


@pytest.mark.integration
def test_readings_from_mosquitto(
    mosquitto: EmbeddedBroker,
    tmp_path: Path,
    stop: StopSignal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = unique_name("sensors")
    monkeypatch.setenv(ms.BROKER_URL_ENV, f"mqtt://{mosquitto.host}:{mosquitto.port}")
    src = source(
        {"topic": f"{root}/+/readings", "batch": 5, "max_wait": "200ms"}, make_ctx(tmp_path, stop)
    )
    it = iter(src.stream({}))
    first = next(it)  # connects; nothing published yet: an empty tick after max_wait
    assert first.rows == 0
    assert src.subscribed.wait(5.0)

    fleet = devices.Fleet(3, seed=1)
    pub = publisher(mosquitto)
    try:
        sent = 0
        for t in range(4):
            for topic, payload in devices.payloads(fleet.readings(t), root):
                pub.publish(topic, payload, qos=1).wait_for_publish(5.0)
                sent += 1
        pub.publish(f"{root}/dev-9/readings", b"{broken", qos=1).wait_for_publish(5.0)
        many = [{"device": "dev-8", "ts": 1, "temperature": float(i)} for i in range(3)]
        pub.publish(f"{root}/x/readings", json.dumps(many), qos=1).wait_for_publish(5.0)
    finally:
        pub.disconnect()
        pub.loop_stop()

    batches = collect(it, sent + 3)
    assert sum(b.rows for b in batches) == sent + 3
    assert max(b.rows for b in batches) <= 5
    full = [b for b in batches if b.rows and "rpm" in b.features]
    assert full[0].features == devices.gen.FEATURES
    sources = {s for b in batches for s in b.sources}
    assert sources == {"dev-1", "dev-2", "dev-3", "dev-8"}
    assert src.malformed == 1
    assert src.received == sent + 3

    # Asked to stop: the stream ends within a poll interval and the client is gone.
    threads = threading.active_count()
    stop.set()
    started = time.monotonic()
    assert list(it) == []
    assert time.monotonic() - started < 1.0
    assert threading.active_count() < threads


@pytest.mark.integration
def test_no_broker_yet_means_ticks_not_errors(tmp_path: Path, stop: StopSignal) -> None:
    # A port nobody listens on: the source keeps ticking (empty batches) while paho retries.
    src = source(
        {"topic": "t/+", "batch": 2, "max_wait": "100ms", "broker": "mqtt://127.0.0.1:1"},
        make_ctx(tmp_path, stop),
    )
    it = iter(src.stream({}))
    assert [next(it).rows for _ in range(3)] == [0, 0, 0]
    assert not src.subscribed.is_set()
    stop.set()
    assert list(it) == []


@pytest.mark.integration
def test_readings_through_a_tls_broker_that_requires_client_certificates(
    broker_factory: Any,
    tmp_path: Path,
    stop: StopSignal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the agent hands its jobs (node.agent.jobenv): the broker's CA and the node's client
    certificate, so a source reaches a broker deployed by `ion deploy`."""
    from security_support import issue, make_ca

    from broker.settings import BrokerSettings
    from broker.settings import TlsSettings as BrokerTls
    from ion.config.broker import BrokerConfig, TlsSettings
    from node.agent.jobenv import broker_env

    ca = make_ca(tmp_path, "fleet-ca")
    server = issue(tmp_path, "broker", ca, server=True)
    client = issue(tmp_path, "edge-1", ca)
    tls = BrokerTls(certfile=server[0], keyfile=server[1], cafile=ca[0], require_certificate=True)
    broker = broker_factory(settings=BrokerSettings(tls=tls))
    assert broker.tls_port is not None
    node_broker = BrokerConfig(
        host="127.0.0.1",
        port=broker.tls_port,
        tls=TlsSettings(ca_file=ca[0], cert_file=client[0], key_file=client[1]),
    )
    for name, value in broker_env(node_broker).items():
        monkeypatch.setenv(name, value)
    root = unique_name("tls")
    src = source({"topic": f"{root}/+/readings", "max_wait": "200ms"}, make_ctx(tmp_path, stop))
    it = iter(src.stream({}))
    next(it)
    assert src.subscribed.wait(10.0), "the source never subscribed over TLS"
    pub = publisher(broker)  # the loopback admin listener
    try:
        pub.publish(f"{root}/dev-1/readings", json.dumps({"temperature": 1.0}), qos=1)
    finally:
        pub.disconnect()
        pub.loop_stop()
    batches = collect(it, 1)
    assert sum(b.rows for b in batches) == 1
    stop.set()
    assert list(it) == []
