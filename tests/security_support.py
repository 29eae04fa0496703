"""Helpers for the signed-command, replay and attack tests: keys, sending commands as the
CLI does (or as an attacker would), and reading a node's results and events."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent_support import node_config
from test_signatures_agent import Events, publish_as_is

from ion import topics
from ion.client import commands
from ion.client.commands import Outcome
from ion.client.session import connect
from ion.config.broker import parse_broker_url
from ion.model.command import Command, CommandAction, CommandResult
from ion.model.messages import new_envelope
from ion.security import Role, SigningKey, TrustedKey
from ion.wire.codec import encode
from node.agent.service import Agent
from node.config import NodeConfig
from node.pipelines.lifecycle import State

__all__ = ["Events", "publish_as_is"]

OPERATOR = SigningKey.generate()
PRODUCER = SigningKey.generate()
STRANGER = SigningKey.generate()


def line(key: SigningKey, *roles: Role, name: str = "") -> str:
    return TrustedKey(key.public, frozenset(roles), name).line()


TRUSTED = [line(OPERATOR, Role.OPERATOR, name="alice"), line(PRODUCER, Role.PRODUCER)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def secure_config(node_id: str, url: str, tmp_path: Path, **trust: Any) -> NodeConfig:
    """A node outside development mode that trusts ``TRUSTED``."""
    return node_config(node_id, url, tmp_path, trust={"keys": TRUSTED, **trust})


def command(
    action: CommandAction, key: SigningKey | None = OPERATOR, *, issued_ms: int | None = None
) -> Command:
    """A command as ``ion ping``/``restart``/``run`` make it (issued now unless told)."""
    at = now_ms() if issued_ms is None else issued_ms
    return commands.make_command(action, operator="tester", now_ms=at, key=key)


def send_sync(url: str, cmd: Command, *nodes: str, ion: str | None = None) -> Outcome:
    """Publish ``cmd`` in a fresh envelope (a replay this way passes the receivers' message-id
    dedup, as an attacker's would) and collect the nodes' results."""
    with connect(parse_broker_url(url)) as session:
        return commands.send(session, cmd, nodes=nodes, ion=ion, wait_s=15)


async def send(url: str, cmd: Command, *nodes: str, ion: str | None = None) -> Outcome:
    return await asyncio.to_thread(send_sync, url, cmd, *nodes, ion=ion)


async def result_of(url: str, cmd: Command, node: str) -> CommandResult:
    outcome = await send(url, cmd, node)
    assert not outcome.silent, f"{node} sent no result for {cmd.command_id}"
    return outcome.results[0]


def publish_raw(url: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
    with connect(parse_broker_url(url)) as session:
        session.publish(topic, payload, retain=retain)


def command_envelope(cmd: Command, source: str = "ops") -> bytes:
    return encode(new_envelope(cmd, source_node=source, now_ms=now_ms()))


def tampered(cmd: Command, **changes: Any) -> Command:
    """``cmd`` changed after it was signed (its signature kept)."""
    return replace(cmd, **changes)


def run_count(agent: Agent, ion: str, pipeline: str) -> int:
    report = agent.pipelines().get((ion, pipeline))
    return report[1].run if report is not None else -1


def is_running(agent: Agent, ion: str, pipeline: str) -> bool:
    report = agent.pipelines().get((ion, pipeline))
    return report is not None and report[1].state is State.RUNNING


def node_results_topic(node: str) -> str:
    return topics.node_topic(node, topics.TopicKind.NODE_RESULTS)


# -- a throwaway PKI (``cryptography``) ---------------------------------------------------------


def make_ca(directory: Path, name: str) -> tuple[Path, Any, Any]:
    """A self-signed CA: its certificate file, key and certificate (valid for a day)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def issue(
    directory: Path, name: str, ca: tuple[Path, Any, Any], *, server: bool = False
) -> tuple[Path, Path]:
    """A certificate for ``name`` signed by ``ca``: (certificate file, key file)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    _, ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if server:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path
