"""``mqtt_source``: sensor readings from the node's local broker, as ``Batch`` values.

Arguments: ``topic`` (a filter, e.g. ``sensors/+/readings``), ``format`` (``json`` or ``csv``),
``batch`` (rows per batch), ``max_wait`` (a duration), and, outside the catalog for now,
``columns`` (names of the CSV fields when payloads carry no header) and ``broker`` (default:
the environment's ``ION_BROKER_URL``, else ``mqtt://127.0.0.1:1883``; ``mqtts://`` for TLS,
``user:password@`` for a login).

Payloads:

- ``json``: one reading object or a list of them, e.g.
  ``{"device": "d1", "ts": 1700000000000, "temperature": 61.2, "rpm": 1790}``.  Numbers
  (not booleans) are features; ``device``/``id`` name the source (default: the topic level a
  ``+`` of the filter matched, else the topic); ``ts``/``timestamp``/``time_ms`` is the time in
  milliseconds.  Other fields are ignored.
- ``csv``: lines of numbers; a first line that is not all numbers is a header naming the
  fields of that payload, else ``columns`` names them (else ``c0, c1, ...``).

A payload that cannot be read is counted in ``malformed`` and skipped (logged at most once a
minute): one bad sensor must not stop a pipeline.

Threads: paho's network thread parses payloads and appends readings to a bounded buffer; the
pipeline's thread takes up to ``batch`` readings at a time.  When the buffer is full the
*oldest* readings are dropped (counted in ``dropped``): for live sensor data the newest
readings matter most, and blocking paho's thread would stall its keep-alives.  When nothing
arrives for ``max_wait``, an empty batch is yielded as a tick (see ``node.components.values``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from node.runner.component import Args, ArgsError, Component, Context

from .common import duration_s, str_list
from .values import Batch

log = logging.getLogger(__name__)

BROKER_URL_ENV = "ION_BROKER_URL"
# Set by the agent for its jobs (node.agent.jobenv): the broker's CA, this node's client
# certificate and login, so a source reaches a broker deployed with TLS and ACLs.
CA_FILE_ENV = "ION_BROKER_CA_FILE"
CERT_FILE_ENV = "ION_BROKER_CERT_FILE"
KEY_FILE_ENV = "ION_BROKER_KEY_FILE"
USERNAME_ENV = "ION_BROKER_USERNAME"
PASSWORD_ENV = "ION_BROKER_PASSWORD"  # noqa: S105 - a variable's name


def tls_context() -> ssl.SSLContext:
    """Verifies the broker against the agent's CA file (else the system store) and presents
    the node's client certificate when it has one."""
    ctx = ssl.create_default_context(cafile=os.environ.get(CA_FILE_ENV) or None)
    cert = os.environ.get(CERT_FILE_ENV)
    if cert:
        ctx.load_cert_chain(cert, os.environ.get(KEY_FILE_ENV) or None)
    return ctx


DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"
SOURCE_KEYS = ("device", "device_id", "id", "source")
TIME_KEYS = ("ts", "timestamp", "time_ms")
_REPORT_EVERY_S = 60.0
_POLL_S = 0.05  # how often a waiting take() looks at the stop flag


@dataclass(frozen=True, slots=True)
class Reading:
    """One record from a payload: where it came from, when, and its numeric fields."""

    source: str
    ts_ms: int | None
    values: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://[user:pass@]host[:port]`` (``tcp://`` too) or ``mqtts://`` (``ssl://``)."""
    parts = urlsplit(url)
    tls = parts.scheme in ("mqtts", "ssl")
    if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
        raise ValueError(f"broker URL must look like mqtt://host:port, not {url!r}")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as e:
        raise ValueError(f"bad port in broker URL {url!r}") from e
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return BrokerAddress(parts.hostname, port, tls, user, password)


def check_topic_filter(topic: str) -> None:
    levels = topic.split("/")
    if not topic or "\x00" in topic:
        raise ValueError("a topic filter must not be empty")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"'#' must be a whole last level in {topic!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level in {topic!r}")


def source_from_topic(topic_filter: str, topic: str) -> str:
    """The topic level the filter's first ``+`` matched (the device), else the topic."""
    levels = topic_filter.split("/")
    if "+" in levels:
        i = levels.index("+")
        parts = topic.split("/")
        if i < len(parts):
            return parts[i]
    return topic


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _reading(obj: object, default_source: str) -> Reading | None:
    if not isinstance(obj, dict):
        return None
    source = default_source
    ts: int | None = None
    values: dict[str, float] = {}
    for key, value in obj.items():
        if key in SOURCE_KEYS and isinstance(value, str | int) and not isinstance(value, bool):
            source = str(value)
        elif key in TIME_KEYS:
            t = _number(value)
            ts = int(t) if t is not None and math.isfinite(t) else None
        else:
            x = _number(value)
            if x is not None:
                values[key] = x
    return Reading(source, ts, values) if values else None


def parse_json(payload: bytes, source: str) -> tuple[list[Reading], int]:
    """Readings in a JSON payload, and how many records could not be read."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return [], 1
    records = doc if isinstance(doc, list) else [doc]
    readings = [r for r in (_reading(obj, source) for obj in records) if r is not None]
    return readings, len(records) - len(readings)


def parse_csv(
    payload: bytes, source: str, columns: Sequence[str] | None = None, delimiter: str = ","
) -> tuple[list[Reading], int]:
    """Readings in CSV lines (an optional header line first), and how many lines were bad."""
    try:
        lines = [line for line in payload.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        return [], 1
    if not lines:
        return [], 1
    names: Sequence[str] | None = columns
    first = [f.strip() for f in lines[0].split(delimiter)]
    if not all(_is_number(f) for f in first):
        names = first
        lines = lines[1:]
    readings: list[Reading] = []
    bad = 0
    for line in lines:
        fields = line.split(delimiter)
        try:
            row = [float(f) for f in fields]
        except ValueError:
            bad += 1
            continue
        keys = names if names is not None else [f"c{i}" for i in range(len(row))]
        if len(keys) != len(row):
            bad += 1
            continue
        readings.append(Reading(source, None, dict(zip(keys, row, strict=True))))
    return readings, bad


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def assemble(readings: Sequence[Reading]) -> Batch:
    """One ``Batch`` from readings; a feature absent from a reading is NaN there."""
    if not readings:
        return Batch.empty()
    first = tuple(readings[0].values)
    sources = tuple(r.source for r in readings)
    stamps = None
    if any(r.ts_ms is not None for r in readings):
        stamps = np.array([r.ts_ms if r.ts_ms is not None else -1 for r in readings], np.int64)
    if all(tuple(r.values) == first for r in readings):
        # The usual case (every sensor sends the same fields): one array conversion.
        values = np.array([list(r.values.values()) for r in readings], dtype=np.float64)
        return Batch(first, values.reshape(len(readings), len(first)), sources, stamps)
    names: dict[str, int] = {}
    for r in readings:
        for key in r.values:
            names.setdefault(key, len(names))
    out = np.full((len(readings), len(names)), np.nan, dtype=np.float64)
    for i, r in enumerate(readings):
        for key, value in r.values.items():
            out[i, names[key]] = value
    return Batch(tuple(names), out, sources, stamps)


class ReadingBuffer:
    """A bounded FIFO of readings between paho's thread and the pipeline's thread."""

    def __init__(self, capacity: int) -> None:
        self._items: collections.deque[Reading] = collections.deque(maxlen=capacity)
        self._ready = threading.Condition()
        self.capacity = capacity
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, readings: Sequence[Reading]) -> None:
        with self._ready:
            over = len(self._items) + len(readings) - self.capacity
            if over > 0:
                self.dropped += over
            self._items.extend(readings)  # maxlen: the oldest fall out
            self._ready.notify()

    def take(self, n: int, timeout: float, stopping: Any) -> list[Reading]:
        """Up to ``n`` readings, as soon as ``n`` are there or ``timeout`` passed (or stopping:
        ``stopping()`` returns True)."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while len(self._items) < n and not stopping():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(min(left, _POLL_S))
            count = min(n, len(self._items))
            return [self._items.popleft() for _ in range(count)]


class MqttSource(Component):
    output_ports = ("data",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.topic = args.get_str("topic")
        try:
            check_topic_filter(self.topic)
        except ValueError as e:
            raise ArgsError(f"argument 'topic': {e}") from e
        self.format = args.get_str("format", "json", choices=("json", "csv"))
        self.batch = args.get_int("batch", 100, min=1, max=1_000_000)
        self.max_wait = duration_s(args, "max_wait", "1s")
        self.columns = str_list(args, "columns")
        url = args.get_str("broker", None) or os.environ.get(BROKER_URL_ENV) or DEFAULT_BROKER_URL
        try:
            self.address = parse_broker_url(url)
        except ValueError as e:
            raise ArgsError(f"broker: {e}") from e
        self.buffer = ReadingBuffer(max(10 * self.batch, 10_000))
        self.received = 0
        self.malformed = 0
        self.subscribed = threading.Event()
        """Set once the broker acknowledged the subscription (tests wait on it)."""
        self._client: Any = None
        self._last_report = 0.0

    # -- paho's thread ---------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.log.warning("broker %s refused the connection: %s", self.address.host, reason)
            return
        # A clean session forgets subscriptions: subscribe on every (re)connect.
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
        if any(r.is_failure for r in reasons):
            self.log.error("the broker refused the subscription to %s: %s", self.topic, reasons)
            return
        self.subscribed.set()
        self.log.info("subscribed to %s on %s:%d", self.topic, self.address.host, self.address.port)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.subscribed.clear()
        if reason.is_failure:
            self.log.warning("lost the broker (%s); reconnecting", reason)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            source = source_from_topic(self.topic, message.topic)
            if self.format == "json":
                readings, bad = parse_json(message.payload, source)
            else:
                readings, bad = parse_csv(message.payload, source, self.columns)
        except Exception:  # whatever a payload does, paho's thread survives
            log.exception("cannot read a payload on %s", message.topic)
            readings, bad = [], 1
        self.malformed += bad
        self.received += len(readings)
        if readings:
            self.buffer.put(readings)

    # -- the pipeline's thread -------------------------------------------------------------

    def _connect(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client_id = f"ion-{self.ctx.node_id}-{self.ctx.pipeline}-{self.ctx.component}-{os.getpid()}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        username, password = self.address.username, self.address.password
        if username is None and os.environ.get(USERNAME_ENV):
            # The agent's own login to its broker (see node.agent.jobenv).
            username, password = os.environ[USERNAME_ENV], os.environ.get(PASSWORD_ENV)
        if username is not None:
            client.username_pw_set(username, password)
        if self.address.tls:
            client.tls_set_context(tls_context())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.connect_async(self.address.host, self.address.port, keepalive=30)
        client.loop_start()  # retries the first connection too
        return client

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[Batch]:
        self._client = self._connect()
        try:
            while not self._stopping():
                readings = self.buffer.take(self.batch, self.max_wait, self._stopping)
                self._report()
                if not readings and self._stopping():
                    return
                yield assemble(readings)
        finally:
            self._disconnect()

    def _stopping(self) -> bool:
        return self.ctx.stopping

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_report < _REPORT_EVERY_S:
            return
        self._last_report = now
        if self.malformed or self.buffer.dropped:
            self.log.warning(
                "%d reading(s) so far, %d malformed payload record(s) skipped, "
                "%d dropped (buffer of %d full)",
                self.received,
                self.malformed,
                self.buffer.dropped,
                self.buffer.capacity,
            )

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()

    def close(self) -> None:
        self._disconnect()
