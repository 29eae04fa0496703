"""``ion check``: diagnose a node's set-up and its broker connection, step by step.

Each check ends OK, WARN, FAIL or SKIP (could not be judged because an earlier step failed, or
does not apply), with one line of detail and, unless OK, one line saying what to do.  The
steps, in order: the node config loads; TCP reaches the broker; TLS handshake and certificate
(mqtts); the broker answers MQTT; the login is accepted; subscribe and publish work (a round
trip through the broker on our own probe topic, and a subscription to the node's own status
topic); the node's last status; clock skew against the other nodes' statuses; free disk space
under the data dir; the outbox backlog per traffic class; the trust settings.

The judgments (``judge_*``) are pure and take ``now``; ``run_checks`` does the I/O
(``node.check_probes`` and an operator session) and calls them.
"""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ion import topics
from ion.client.fleet import STALE_HEARTBEATS
from ion.client.session import RetainedMessage
from ion.config.broker import BrokerConfig
from ion.errors import ConfigError, DecodeError, IonError, RefusedError
from ion.model.messages import NodeState, NodeStatus
from ion.security.trust import TrustConfig
from ion.wire.codec import decode

from .check_probes import (
    CONNACK_REASONS,
    OutboxClassFacts,
    ProbeFailed,
    TlsFacts,
    mqtt_connect,
    probe_client_id,
    read_outbox,
    tcp_connect,
    tls_handshake,
)
from .config import NodeConfig, load_config

log = logging.getLogger(__name__)

Verdict = Literal["OK", "WARN", "FAIL", "SKIP"]
_DAY_S = 86_400

_LOOPBACK = ("127.", "::1", "localhost")


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    verdict: Verdict
    detail: str
    hint: str = ""  # what to do about a WARN or FAIL


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where OK turns into WARN or FAIL; every one a command-line option of ``ion check``."""

    min_free_percent: float = 10.0  # FAIL below this free share of the data dir's disk
    max_queue_age_s: float = 600.0  # FAIL when an outbox item waited longer (WARN at 1/10)
    max_skew_s: float = 2.0  # WARN beyond this clock difference; FAIL beyond 15x
    cert_warn_days: float = 30.0  # WARN when the broker's certificate expires sooner


@dataclass(frozen=True, slots=True)
class CheckPlan:
    """What to check: a node config and/or a broker, and a data dir when no config says."""

    node_config: Path | None = None
    broker: BrokerConfig | None = None  # overrides the config's broker
    data_dir: Path | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    timeout_s: float = 5.0


# -- pure judgments -------------------------------------------------------------------------


def judge_certificate(facts: TlsFacts, *, now_s: float, warn_days: float) -> CheckResult:
    days = (facts.not_after_s - now_s) / _DAY_S
    when = time.strftime("%Y-%m-%d", time.gmtime(facts.not_after_s))
    detail = f"{facts.version}, certificate {facts.subject} by {facts.issuer}, expires {when}"
    if days < 0:
        return CheckResult("tls", "FAIL", f"{detail}: expired", "renew the broker's certificate")
    if days < warn_days:
        return CheckResult(
            "tls", "WARN", f"{detail}: in {days:.0f} day(s)", "renew the broker's certificate soon"
        )
    return CheckResult("tls", "OK", f"{detail} ({days:.0f} days)")


def judge_disk(path: Path, free: int, total: int, *, min_free_percent: float) -> CheckResult:
    percent = 100.0 * free / total if total else 0.0
    detail = f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB ({percent:.1f}%) at {path}"
    hint = "free space on that disk or move data_dir: a full disk stops the outbox taking messages"
    if percent < min_free_percent:
        return CheckResult("disk", "FAIL", f"{detail}, below {min_free_percent:g}%", hint)
    if percent < 2 * min_free_percent:
        return CheckResult("disk", "WARN", f"{detail}, below {2 * min_free_percent:g}%", hint)
    return CheckResult("disk", "OK", detail)


def judge_outbox(
    classes: Sequence[OutboxClassFacts], config: NodeConfig | None, *, now_ms: int,
    max_age_s: float,
) -> CheckResult:  # fmt: skip
    """FAIL when a queued item waited over ``max_age_s`` or a class is at 90 % of its item
    cap; WARN from a tenth of that age or half the cap."""
    if not classes:
        return CheckResult("outbox", "OK", "empty: everything was delivered")
    verdict: Verdict = "OK"
    parts = []
    for c in classes:
        age = (now_ms - c.oldest_created_ms) / 1000 if c.oldest_created_ms else 0.0
        cap = _class_cap(config, c.traffic_class)
        fill = c.depth / cap if cap else 0.0
        parts.append(f"{c.traffic_class} {c.depth} queued, oldest {_age(age)}")
        if age > max_age_s or fill >= 0.9:
            verdict = "FAIL"
        elif (age > max_age_s / 10 or fill >= 0.5) and verdict == "OK":
            verdict = "WARN"
    detail = "; ".join(parts)
    if verdict == "OK":
        return CheckResult("outbox", "OK", detail)
    return CheckResult(
        "outbox", verdict, f"backlog: {detail}",
        "the node cannot deliver: check its broker link (ion status, the node's log) and "
        "that the broker's ACL lets it publish its topics",
    )  # fmt: skip


def _class_cap(config: NodeConfig | None, name: str) -> int:
    if config is None:
        return 0
    for cls, settings in config.outbox.classes.items():
        if cls.value == name:
            return int(settings.max_items or 0)
    return 0


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def judge_skew(
    statuses: Sequence[tuple[NodeStatus, int]], *, own_node: str | None, now_ms: int,
    max_skew_s: float,
) -> CheckResult:  # fmt: skip
    """Our clock against the created times of the other nodes' online statuses.

    A status from the future means our clock is behind: unambiguous.  Being ahead is only
    bounded: a node publishes its status every heartbeat, so with our clock ``d`` ahead a live
    node's status looks ``d`` to ``d + heartbeat`` old, and ``d`` is at least the largest
    ``age - heartbeat`` among nodes heard from within three heartbeats.  A node that went
    silent without its last will looks the same as a clock far ahead, so that case is a SKIP
    with both explanations, never a FAIL.
    """
    ages = [
        ((now_ms - sent) / 1000, s.heartbeat_interval_ms / 1000)
        for s, sent in statuses
        if s.node_id != own_node and s.state is NodeState.ONLINE and sent
    ]
    if not ages:
        return CheckResult("clock", "SKIP", "no other online node's status to compare with")
    hint = "run an NTP client (chrony, systemd-timesyncd) on this machine and the nodes"
    behind = -min(age for age, _ in ages)
    if behind > max_skew_s:
        verdict: Verdict = "FAIL" if behind > 15 * max_skew_s else "WARN"
        detail = f"this clock is at least {behind:.1f}s behind (a status from the future)"
        return CheckResult("clock", verdict, detail, hint)
    fresh = [(age, hb) for age, hb in ages if hb and age <= STALE_HEARTBEATS * hb]
    if not fresh:
        oldest = min(age for age, _ in ages)
        return CheckResult(
            "clock", "SKIP",
            f"every online status is over three heartbeats old (the newest {oldest:.0f}s): "
            f"those nodes went silent, or this clock is about {oldest:.0f}s ahead",
        )  # fmt: skip
    ahead = max(age - hb for age, hb in fresh)
    detail = (
        f"within {max(ahead, 0.0):.1f}..{min(age for age, _ in fresh):.1f}s of "
        f"{len(fresh)} live node(s)"
    )
    if ahead > max_skew_s:
        verdict = "FAIL" if ahead > 15 * max_skew_s else "WARN"
        return CheckResult("clock", verdict, f"{detail}: at least {ahead:.1f}s ahead", hint)
    return CheckResult("clock", "OK", detail)


def judge_trust(trust: TrustConfig) -> CheckResult:
    if trust.development_mode:
        return CheckResult(
            "trust", "WARN", "development_mode is on: unsigned definitions and models are run",
            "turn development_mode off outside development and list the operators' keys",
        )  # fmt: skip
    if len(trust.keyring) == 0:
        return CheckResult(
            "trust", "WARN", "no trusted key: the node refuses every definition and model",
            "add the operators' public keys under trust.keys (ion keys export NAME)",
        )  # fmt: skip
    signing = ", signs its models" if trust.signing_key is not None else ""
    return CheckResult("trust", "OK", f"{len(trust.keyring)} trusted key(s){signing}")


def judge_status(node_id: str, status: NodeStatus | None, *, age_s: float | None) -> CheckResult:
    topic = topics.node_status(node_id)
    if status is None:
        return CheckResult(
            "status", "WARN", f"no status from {node_id} on this broker",
            f"start the agent (ion node run -c ...); if it runs, the ACL must let it publish "
            f"{topic} and this login read it",
        )  # fmt: skip
    when = f", {_age(age_s)} ago" if age_s is not None else ""
    if status.state is NodeState.ONLINE:
        return CheckResult("status", "OK", f"{node_id} reported online{when}")
    why = f": {status.error}" if status.error else ""
    return CheckResult(
        "status", "WARN", f"{node_id} last reported {status.state.value}{when}{why}",
        "start the agent (ion node run -c ...) and see its log",
    )  # fmt: skip


# -- the run --------------------------------------------------------------------------------


def run_checks(plan: CheckPlan, *, clock_ms: Callable[[], int] | None = None) -> list[CheckResult]:
    """Every check in order.  Never raises for what it diagnoses."""
    now_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
    out: list[CheckResult] = []
    config: NodeConfig | None = None
    if plan.node_config is not None:
        try:
            config = load_config(plan.node_config)
        except ConfigError as exc:
            out.append(CheckResult("config", "FAIL", str(exc), "fix the file (see docs/node.md)"))
        else:
            out.append(
                CheckResult(
                    "config", "OK",
                    f"node {config.node_id} ({config.identity.layer or 'edge'}), "
                    f"data dir {config.data_dir}",
                )
            )  # fmt: skip
    broker = plan.broker or (config.broker if config else None)
    node_id = config.node_id if config else None
    if broker is not None:
        out += _broker_checks(broker, node_id, plan, now_ms)
    if config is not None and config.upstream is not None and plan.broker is None:
        # A gateway lives on two brokers; its relay needs the upstream one as much.
        up = _broker_checks(config.upstream, node_id, plan, now_ms)
        out += [replace(r, name=f"upstream.{r.name}") for r in up]
    data_dir = plan.data_dir or (config.data_dir if config else None)
    if data_dir is not None:
        out.append(_disk_check(data_dir, plan.thresholds))
        out.append(_outbox_check(data_dir, config, plan.thresholds, now_ms()))
    if config is not None:
        out.append(judge_trust(config.trust))
    return out


def _skip_rest(names: Sequence[str], why: str) -> list[CheckResult]:
    return [CheckResult(n, "SKIP", why) for n in names]


def _broker_checks(
    broker: BrokerConfig, node_id: str | None, plan: CheckPlan, now_ms: Callable[[], int]
) -> list[CheckResult]:
    later = ["mqtt", "login", "pubsub", *(["status"] if node_id else []), "clock"]
    out: list[CheckResult] = []
    timeout = plan.timeout_s
    try:
        sock, ms = tcp_connect(broker.host, broker.port, timeout)
    except ProbeFailed as exc:
        out.append(
            CheckResult(
                "tcp", "FAIL", str(exc),
                f"is the broker running and listening on {broker.host}:{broker.port}? "
                "check the URL's host and port and any firewall",
            )
        )  # fmt: skip
        return out + _skip_rest(["tls", *later], "broker unreachable")
    out.append(CheckResult("tcp", "OK", f"{broker.host}:{broker.port} connected in {ms:.1f} ms"))
    try:
        if broker.tls is not None:
            result, sock = _tls_check(sock, broker, plan)
            out.append(result)
            if result.verdict == "FAIL" and not isinstance(sock, ssl.SSLSocket):
                return out + _skip_rest(later, "no TLS session")
        elif broker.host.startswith(_LOOPBACK):
            out.append(CheckResult("tls", "SKIP", "plain mqtt:// on loopback"))
        else:
            out.append(
                CheckResult(
                    "tls", "WARN", "plain mqtt://: credentials and data travel unencrypted",
                    "use an mqtts:// listener (see deploy/mosquitto)",
                )
            )  # fmt: skip
        mqtt, login = _mqtt_checks(sock, broker, node_id, timeout)
    finally:
        sock.close()
    out.append(mqtt)
    if login is None:
        return out + _skip_rest(later[1:], "no MQTT session")
    out.append(login)
    if login.verdict == "FAIL":
        return out + _skip_rest(later[2:], "login refused")
    return out + _session_checks(broker, node_id, plan, now_ms)


def _tls_check(
    sock: socket.socket, broker: BrokerConfig, plan: CheckPlan
) -> tuple[CheckResult, socket.socket]:
    from node.link.refusals import tls_context

    assert broker.tls is not None
    try:
        context = tls_context(broker.tls)
    except ConfigError as exc:
        return CheckResult("tls", "FAIL", str(exc), "check ca_file, cert_file and key_file"), sock
    try:
        wrapped, facts = tls_handshake(sock, broker.host, context, plan.timeout_s)
    except ProbeFailed as exc:
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            hint = (
                "ca_file must hold the CA that signed the broker's certificate, and the "
                f"certificate must name {broker.host}"
            )
        else:
            hint = (
                f"is {broker.host}:{broker.port} a TLS listener? a plain one needs mqtt://; "
                "else compare TLS versions and ciphers in the broker's log"
            )
        return CheckResult("tls", "FAIL", str(exc), hint), sock
    return (
        judge_certificate(facts, now_s=time.time(), warn_days=plan.thresholds.cert_warn_days),
        wrapped,
    )


def _mqtt_checks(
    sock: socket.socket, broker: BrokerConfig, node_id: str | None, timeout: float
) -> tuple[CheckResult, CheckResult | None]:
    try:
        code, ms = mqtt_connect(sock, broker, probe_client_id(node_id), timeout)
    except ProbeFailed as exc:
        if broker.tls is None:
            hint = "is this an MQTT port? if it is a TLS listener, use mqtts://"
        elif broker.tls.cert_file is None:
            hint = "the broker may require a client certificate: set cert_file and key_file"
        else:
            hint = "see the broker's log for why it closed the connection"
        return CheckResult("mqtt", "FAIL", str(exc), hint), None
    mqtt = CheckResult("mqtt", "OK", f"MQTT 3.1.1 CONNACK in {ms:.1f} ms")
    who = f"as {broker.username!r}" if broker.username else "anonymously"
    if code == 0:
        return mqtt, CheckResult("login", "OK", f"accepted {who}")
    reason = CONNACK_REASONS.get(code, f"code {code}")
    hint = (
        "check the user name and password (broker.username, password_file; mosquitto_passwd)"
        if code in (4, 5)
        else "see the broker's log"
    )
    return mqtt, CheckResult("login", "FAIL", f"refused {who}: {reason}", hint)


def _session_checks(
    broker: BrokerConfig, node_id: str | None, plan: CheckPlan, now_ms: Callable[[], int]
) -> list[CheckResult]:
    from ion.client.session import connect

    out: list[CheckResult] = []
    own_topic = topics.node_status(node_id) if node_id else None
    prefix = f"{node_id[:40]}-check" if node_id else "ion-check"
    with_timeout = replace(broker, connect_timeout_s=plan.timeout_s)
    try:
        with connect(with_timeout, client_prefix=prefix) as session:
            start = time.perf_counter()
            try:
                own = session.read_retained([own_topic] if own_topic else [], plan.timeout_s)
            except IonError as exc:
                hint = (
                    f"the ACL must let this login subscribe to {own_topic or 'its topics'} and "
                    f"publish and subscribe {topics.client_probe(session.client_id)}"
                )
                return [CheckResult("pubsub", "FAIL", str(exc), hint), *_skip_rest(
                    ["status", "clock"] if node_id else ["clock"], "no round trip")]  # fmt: skip
            ms = (time.perf_counter() - start) * 1000
            what = f"subscribed to {own_topic}, " if own_topic else ""
            out.append(
                CheckResult(
                    "pubsub", "OK", f"{what}probe round trip through the broker {ms:.1f} ms"
                )
            )
            if node_id:
                mine, age = _status_in(own, node_id, now_ms())
                out.append(judge_status(node_id, mine, age_s=age))
            try:
                every = session.read_retained([topics.ALL_NODE_STATUS], plan.timeout_s)
            except RefusedError as exc:
                out.append(CheckResult("clock", "SKIP", f"cannot read other statuses: {exc}"))
                return out
            pairs = []
            for msg in every:
                try:
                    env = decode(msg.payload)
                except DecodeError:
                    continue
                if isinstance(env.body, NodeStatus):
                    pairs.append((env.body, env.created_ms))
            out.append(
                judge_skew(
                    pairs, own_node=node_id, now_ms=now_ms(), max_skew_s=plan.thresholds.max_skew_s
                )
            )
    except IonError as exc:
        if not out:
            rest = ["status", "clock"] if node_id else ["clock"]
            return [CheckResult("pubsub", "FAIL", str(exc), "see the broker's log"),
                    *_skip_rest(rest, "no session")]  # fmt: skip
        out.append(CheckResult("clock", "SKIP", f"session lost: {exc}"))
    return out


def _status_in(
    msgs: Sequence[RetainedMessage], node_id: str, now: int
) -> tuple[NodeStatus | None, float | None]:
    for msg in msgs:
        try:
            env = decode(msg.payload)
        except DecodeError:
            continue
        if isinstance(env.body, NodeStatus) and env.body.node_id == node_id:
            return env.body, (now - env.created_ms) / 1000
    return None, None


def _disk_check(data_dir: Path, thresholds: Thresholds) -> CheckResult:
    path = data_dir.expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError as exc:
        return CheckResult("disk", "FAIL", f"cannot stat {probe}: {exc.strerror or exc}")
    result = judge_disk(
        probe, usage.free, usage.total, min_free_percent=thresholds.min_free_percent
    )
    if probe != path:
        detail = f"{result.detail} (data dir {path} does not exist yet)"
        return CheckResult(result.name, result.verdict, detail, result.hint)
    return result


def _outbox_check(
    data_dir: Path, config: NodeConfig | None, thresholds: Thresholds, now_ms: int
) -> CheckResult:
    db = data_dir.expanduser() / "agent.db"
    if not db.exists():
        return CheckResult("outbox", "SKIP", f"no outbox at {db} (the agent has not run here)")
    try:
        classes = read_outbox(db)
    except ProbeFailed as exc:
        return CheckResult("outbox", "FAIL", str(exc), "is the file readable by this user?")
    return judge_outbox(classes, config, now_ms=now_ms, max_age_s=thresholds.max_queue_age_s)
