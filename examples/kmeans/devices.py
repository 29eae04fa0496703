"""Simulated machines publishing sensor readings as JSON to ``sensors/<device>/readings``.

    python examples/kmeans/devices.py --broker mqtt://127.0.0.1:1883 --devices 3 --rate 10
    python examples/kmeans/devices.py --drift-file /tmp/drift   # echo 1 > /tmp/drift: wear
    kill -USR1 <pid>                                            # toggles drift on and off
    python examples/kmeans/devices.py --broker mqtts://gw-north.lan:8883 --name dev-n1 \
        --ca-file ca.crt --cert-file client.crt --key-file client.key  # one deployed device

A device deployed by ``ion deploy`` (a ``devices:`` entry of the inventory) has its own
certificate and may publish only on its own topic, so run one process per device there:
``--name`` is its id, the certificate's common name.  Without ``--ca-file`` an ``mqtts://``
broker is verified against the system's CA store.

Each device runs in one operating mode at a time and changes mode now and then; its readings
come from the same machine model as ``generate.py`` (so a model trained on generated data
recognises them), with ``--anomaly-rate`` anomalies.  A message is one reading object, or a
list of ``--batch`` readings: ``{"device": "dev-1", "ts": <ms>, "temperature": ..., ...}``.

Drift can be switched while running: SIGUSR1 toggles between no drift and ``--drift-level``;
with ``--drift-file`` the file's content (a number; empty means ``--drift-level``) is the drift
while the file exists, checked once a second.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np


def _sibling(name: str) -> ModuleType:
    """Load ``<this dir>/<name>.py`` under a name no other example can clash with."""
    module_name = f"ion_example_kmeans_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(
        module_name, Path(__file__).with_name(f"{name}.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before running it: dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import generate as gen
else:
    gen = _sibling("generate")

# Chance per reading that a device stays in its operating mode: about ten readings per mode,
# so a few devices together soon show the mix of modes the model was trained on (a slower
# switch makes a small fleet's live histograms look drifted when nothing changed).
MODE_STAY = 0.9


@dataclass(slots=True)
class DriftSwitch:
    """The drift level now: set at start, toggled by SIGUSR1, overridden by a file."""

    level: float
    on_level: float = 1.0
    file: Path | None = None
    _checked: float = 0.0
    _from_file: bool = False

    def toggle(self) -> None:
        self.level = 0.0 if self.level > 0 else self.on_level

    def poll(self, now: float) -> float:
        if self.file is not None and now - self._checked >= 1.0:
            self._checked = now
            try:
                text = self.file.read_text().strip()
            except OSError:
                if self._from_file:  # the file went away: drift ends with it
                    self.level, self._from_file = 0.0, False
                return self.level
            try:
                self.level = float(text) if text else self.on_level
            except ValueError:
                self.level = self.on_level
            self._from_file = True
        return self.level


class Fleet:
    """Devices and their operating modes; ``readings`` makes one reading per device."""

    def __init__(
        self,
        devices: int,
        *,
        features: int = 6,
        anomaly_rate: float = 0.0,
        seed: int = 7,
        prefix: str = "dev",
        names: Sequence[str] = (),
    ) -> None:
        """``names``: the devices' names (then ``devices`` must be their number)."""
        self.rng = np.random.default_rng(seed)
        self.names = list(names) or [f"{prefix}-{i + 1}" for i in range(devices)]
        assert len(self.names) == devices
        self.features = gen.feature_names(features)
        self.anomaly_rate = anomaly_rate
        self.modes = self.rng.choice(len(gen.MODES), size=devices, p=gen.mode_weights(0.0))
        self.sent = 0
        self.anomalies = 0

    def readings(self, now_ms: int, drift: float = 0.0) -> list[dict[str, Any]]:
        n = len(self.names)
        change = self.rng.random(n) > MODE_STAY
        if change.any():
            new = self.rng.choice(len(gen.MODES), size=n, p=gen.mode_weights(drift))
            self.modes = np.where(change, new, self.modes)
        values, _ = gen.sample(
            self.rng, n, len(self.features), drift=drift, modes=self.modes.astype(np.int64)
        )
        # Each reading is an anomaly with probability anomaly_rate (a fixed share per call
        # would round to none for a few devices).
        anomaly = self.rng.random(n) < self.anomaly_rate
        gen.push(self.rng, values, anomaly)
        self.anomalies += int(anomaly.sum())
        out = []
        for i, name in enumerate(self.names):
            reading: dict[str, Any] = {"device": name, "ts": now_ms}
            reading.update(zip(self.features, np.round(values[i], 4).tolist(), strict=True))
            out.append(reading)
        self.sent += n
        return out


def topic_for(device: str, root: str = "sensors") -> str:
    return f"{root}/{device}/readings"


def payloads(readings: Sequence[dict[str, Any]], root: str = "sensors") -> list[tuple[str, bytes]]:
    """One (topic, JSON payload) per reading."""
    return [(topic_for(r["device"], root), json.dumps(r).encode()) for r in readings]


@dataclass(frozen=True, slots=True)
class Tls:
    """The broker's CA and this device's client certificate (all optional)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def _connect(url: str, client_id: str, tls: Tls = Tls()) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    parts = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    secure = parts.scheme in ("mqtts", "ssl")
    if secure:
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
        )
    port = parts.port or (8883 if secure else 1883)
    client.connect(parts.hostname or "127.0.0.1", port, keepalive=30)
    client.loop_start()
    return client


def run(ns: argparse.Namespace) -> int:
    switch = DriftSwitch(ns.drift, ns.drift_level, ns.drift_file)
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        if signum == signal.SIGUSR1:
            switch.toggle()  # the loop reports the change
        else:
            stop = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, on_signal)
    names = [ns.name] if ns.name else []
    fleet = Fleet(
        ns.devices, features=ns.features, anomaly_rate=ns.anomaly_rate, seed=ns.seed, names=names
    )
    # A deployed device's client id is its name: one session per device, as the ACL expects.
    client_id = ns.name or f"ion-devices-{ns.seed}-{time.time_ns() % 10**9}"
    client = _connect(ns.broker, client_id, Tls(ns.ca_file, ns.cert_file, ns.key_file))
    pending: dict[str, list[dict[str, Any]]] = {name: [] for name in fleet.names}
    interval = 1.0 / ns.rate
    due = time.monotonic()
    ends = due + ns.duration if ns.duration > 0 else None
    last_drift = switch.level
    try:
        while not stop and (ends is None or time.monotonic() < ends):
            drift = switch.poll(time.monotonic())
            if drift != last_drift:
                print(f"drift now {drift:g}", flush=True)
                last_drift = drift
            for r in fleet.readings(int(time.time() * 1000), drift):
                batch = pending[r["device"]]
                batch.append(r)
                if len(batch) >= ns.batch:
                    body = batch[0] if ns.batch == 1 else batch
                    client.publish(topic_for(r["device"], ns.root), json.dumps(body), qos=ns.qos)
                    batch.clear()
            due += interval
            time.sleep(max(due - time.monotonic(), 0.0))
    finally:
        client.disconnect()
        client.loop_stop()
    print(f"sent {fleet.sent} readings ({fleet.anomalies} anomalies)", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulated machines publishing sensor readings.")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port")
    parser.add_argument("--devices", type=int, default=None, help="how many devices (3)")
    parser.add_argument("--rate", type=float, default=10.0, help="readings/s per device (10)")
    parser.add_argument("--batch", type=int, default=1, help="readings per message (1)")
    parser.add_argument("--features", type=int, default=6, help="sensors per reading (6)")
    parser.add_argument("--anomaly-rate", type=float, default=0.01, help="share of anomalies")
    parser.add_argument("--drift", type=float, default=0.0, help="drift at start (0)")
    parser.add_argument("--drift-level", type=float, default=1.0, help="drift when on (1)")
    parser.add_argument("--drift-file", type=Path, default=None, help="drift while it exists")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until ^C")
    parser.add_argument("--root", default="sensors", help="first topic level (sensors)")
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1), help="MQTT QoS (0)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    parser.add_argument("--name", default="", help="one device of this name (dev-1, dev-2, ...)")
    parser.add_argument("--ca-file", type=Path, default=None, help="the broker's CA (mqtts://)")
    parser.add_argument("--cert-file", type=Path, default=None, help="the device's certificate")
    parser.add_argument("--key-file", type=Path, default=None, help="the certificate's key")
    ns = parser.parse_args(argv)
    if ns.devices is None:
        ns.devices = 1 if ns.name else 3
    if ns.devices < 1 or ns.rate <= 0 or ns.batch < 1:
        parser.error("--devices and --batch must be >= 1 and --rate > 0")
    if ns.name and ns.devices != 1:
        parser.error("--name names one device: it cannot go with --devices above 1")
    if (ns.ca_file or ns.cert_file) and urlsplit(ns.broker).scheme not in ("mqtts", "ssl"):
        parser.error("--ca-file and --cert-file need an mqtts:// broker")
    if bool(ns.cert_file) != bool(ns.key_file):
        parser.error("--cert-file and --key-file go together")
    return run(ns)


if __name__ == "__main__":
    sys.exit(main())
