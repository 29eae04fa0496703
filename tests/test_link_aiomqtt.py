"""The aiomqtt link against real Mosquitto: the conformance suite through a FaultProxy, plus
broker restarts, credentials, TLS, silent dead links and the aiomqtt internals we rely on."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from link_conformance import (
    FAST,
    LinkConformance,
    running,
    take,
    topic,
    wait_connects,
)
from support import async_wait_until, unique_name
from support.brokers import BrokerFactory
from support.proxy import FaultProxy

from broker.embedded import EmbeddedBroker
from broker.settings import BrokerSettings
from broker.settings import TlsSettings as BrokerTls
from ion.config.broker import BrokerConfig, TlsSettings
from ion.errors import ConfigError, RefusedError, UnavailableError
from node.link.aiomqtt_link import AiomqttLink, missing_internals
from node.link.base import (
    LinkDown,
    LinkOptions,
    LinkRefusedError,
    LinkState,
    OutgoingMessage,
    Will,
)

pytestmark = pytest.mark.integration

USER, PASSWORD = "node-a", "correct horse"


def config(host: str, port: int, **kwargs: Any) -> BrokerConfig:
    kwargs.setdefault("keepalive_s", 5)
    kwargs.setdefault("connect_timeout_s", 2.0)
    return BrokerConfig(host=host, port=port, **kwargs)


def password_file(directory: Path) -> Path:
    path = directory / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(path), USER, PASSWORD],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


def auth_broker(factory: BrokerFactory, directory: Path) -> EmbeddedBroker:
    directory.mkdir(parents=True, exist_ok=True)
    return factory(
        settings=BrokerSettings(allow_anonymous=False, password_file=password_file(directory))
    )


class AiomqttEnv:
    def __init__(
        self,
        broker: EmbeddedBroker,
        proxy: FaultProxy,
        broker_factory: BrokerFactory,
        proxy_factory: Callable[[str, int], FaultProxy],
        tmp_path: Path,
    ) -> None:
        self.broker = broker
        self.proxy = proxy
        self._broker_factory = broker_factory
        self._proxy_factory = proxy_factory
        self._tmp_path = tmp_path
        self._refusing: FaultProxy | None = None

    def link(
        self,
        client_id: str,
        *,
        will: Will | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_connect_publish: Sequence[OutgoingMessage] = (),
        options: LinkOptions = FAST,
    ) -> AiomqttLink:
        return AiomqttLink(
            config(self.proxy.host, self.proxy.port),
            client_id,
            will=will,
            subscriptions=subscriptions,
            on_connect_publish=on_connect_publish,
            options=options,
        )

    def observer(self, client_id: str, **kwargs: Any) -> AiomqttLink:
        kwargs.setdefault("options", FAST)
        return AiomqttLink(config(self.broker.connect_host, self.broker.port), client_id, **kwargs)

    def refused_link(self, client_id: str) -> AiomqttLink:
        if self._refusing is None:
            broker = auth_broker(self._broker_factory, self._tmp_path / "auth")
            self._refusing = self._proxy_factory(broker.connect_host, broker.port)
        cfg = config(self._refusing.host, self._refusing.port, username=USER, password="wrong")
        return AiomqttLink(cfg, client_id, options=FAST)

    def refused_attempts(self) -> int:
        return self._refusing.accepted if self._refusing is not None else 0

    async def cut(self) -> None:
        self.proxy.cut()

    async def stall(self) -> None:
        self.proxy.blackhole()

    async def restore(self) -> None:
        self.proxy.restore()


@pytest.fixture
def env(
    mosquitto: EmbeddedBroker,
    proxy_factory: Callable[[str, int], FaultProxy],
    broker_factory: BrokerFactory,
    tmp_path: Path,
) -> AiomqttEnv:
    proxy = proxy_factory(mosquitto.connect_host, mosquitto.port)
    return AiomqttEnv(mosquitto, proxy, broker_factory, proxy_factory, tmp_path)


class TestAiomqttLinkConformance(LinkConformance):
    pass


# -- aiomqtt only --------------------------------------------------------------------------


def test_the_aiomqtt_and_paho_internals_we_override_exist() -> None:
    """aiomqtt~=2.5 is pinned; a release that renames these must fail here, not in the field."""
    assert missing_internals() == []


@pytest.mark.asyncio
async def test_broker_restart_reconnects_with_the_persistent_session(
    fresh_mosquitto: EmbeddedBroker,
) -> None:
    t = topic("restart")
    opts = LinkOptions(persistent_session=True, backoff_initial_s=0.05, backoff_max_s=0.5)
    cfg = config(fresh_mosquitto.connect_host, fresh_mosquitto.port)
    node = AiomqttLink(cfg, unique_name("node"), subscriptions=[(t, 1)], options=opts)
    obs = AiomqttLink(cfg, unique_name("obs"), options=FAST)
    async with running(node, obs):
        await obs.publish(t, b"before")
        assert (await take(node, 1))[0].payload == b"before"
        await asyncio.to_thread(fresh_mosquitto.restart)
        await wait_connects(node, 2, within=15)
        await wait_connects(obs, 2, within=15)
        assert node.session_present is True  # the broker kept the session on disk
        await obs.publish(t, b"after")
        assert (await take(node, 1))[0].payload == b"after"


@pytest.mark.asyncio
async def test_broker_killed_then_back_reconnects(fresh_mosquitto: EmbeddedBroker) -> None:
    t = topic("crash")
    cfg = config(fresh_mosquitto.connect_host, fresh_mosquitto.port)
    node = AiomqttLink(cfg, unique_name("node"), subscriptions=[(t, 1)], options=FAST)
    async with running(node):
        await asyncio.to_thread(fresh_mosquitto.restart, crash=True)
        await wait_connects(node, 2, within=15)
        await node.publish(t, b"again")
        assert (await take(node, 1))[0].payload == b"again"


@pytest.mark.asyncio
async def test_valid_credentials_connect(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    broker = auth_broker(broker_factory, tmp_path)
    cfg = config(broker.connect_host, broker.port, username=USER, password=PASSWORD)
    async with running(AiomqttLink(cfg, unique_name("node"), options=FAST)):
        pass


@pytest.mark.asyncio
@pytest.mark.parametrize("credentials", [(USER, "wrong"), ("nobody", "x"), (None, None)])
async def test_refused_logins_are_fatal_at_once(
    broker_factory: BrokerFactory,
    proxy_factory: Callable[[str, int], FaultProxy],
    tmp_path: Path,
    credentials: tuple[str | None, str | None],
) -> None:
    broker = auth_broker(broker_factory, tmp_path)
    proxy = proxy_factory(broker.connect_host, broker.port)
    user, password = credentials
    cfg = config(proxy.host, proxy.port, username=user, password=password)
    link = AiomqttLink(cfg, unique_name("node"), options=FAST)
    loop = asyncio.get_running_loop()
    async with link:
        start = loop.time()
        with pytest.raises(LinkRefusedError) as refused:
            await link.wait_connected()
        assert loop.time() - start < 2
        await asyncio.sleep(1.0)  # long enough for several attempts, were it retrying
    assert isinstance(refused.value, RefusedError)
    assert not isinstance(refused.value, UnavailableError)
    assert refused.value.code in (0x86, 0x87)  # bad user name or password / not authorised
    assert proxy.accepted == 1


@pytest.mark.asyncio
async def test_unreachable_broker_is_retried_not_fatal(
    proxy_factory: Callable[[str, int], FaultProxy], mosquitto: EmbeddedBroker
) -> None:
    proxy = proxy_factory(mosquitto.connect_host, mosquitto.port)
    proxy.cut()
    link = AiomqttLink(config(proxy.host, proxy.port), unique_name("node"), options=FAST)
    async with link:
        await async_wait_until(lambda: proxy.accepted >= 3)
        assert link.state in (LinkState.BACKOFF, LinkState.CONNECTING)
        with pytest.raises(LinkDown):
            await link.publish("a/b", b"x")
        proxy.restore()
        async with asyncio.timeout(10):
            await link.wait_connected()


@pytest.mark.asyncio
async def test_silent_dead_link_is_found_by_the_ack_timeout(
    mosquitto: EmbeddedBroker, proxy_factory: Callable[[str, int], FaultProxy]
) -> None:
    proxy = proxy_factory(mosquitto.connect_host, mosquitto.port)
    opts = LinkOptions(ack_timeout_s=1.0, backoff_initial_s=0.05, backoff_max_s=0.2)
    link = AiomqttLink(config(proxy.host, proxy.port), unique_name("node"), options=opts)
    loop = asyncio.get_running_loop()
    async with running(link):
        proxy.blackhole()
        start = loop.time()
        results = await asyncio.gather(
            *(link.publish("a/b", b"x") for _ in range(10)), return_exceptions=True
        )
        assert loop.time() - start < 3
        assert all(isinstance(r, LinkDown) for r in results), results
        proxy.restore()
        await wait_connects(link, 2)


@pytest.mark.asyncio
async def test_cancel_while_waiting_for_connack_leaves_nothing_behind(
    mosquitto: EmbeddedBroker, proxy_factory: Callable[[str, int], FaultProxy]
) -> None:
    proxy = proxy_factory(mosquitto.connect_host, mosquitto.port)
    proxy.blackhole()  # TCP accepted, CONNECT never forwarded
    cfg = config(proxy.host, proxy.port, connect_timeout_s=30.0)
    link = AiomqttLink(cfg, unique_name("node"), options=FAST)

    async def owner() -> None:
        async with link:
            await link.wait_connected()

    task = asyncio.create_task(owner())
    await async_wait_until(lambda: proxy.accepted >= 1)
    await asyncio.sleep(0.2)
    assert link.state is LinkState.CONNECTING
    task.cancel()
    async with asyncio.timeout(1.5):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert link.status.state is LinkState.CLOSED
    proxy.restore()


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_protocol_versions_roundtrip_and_keep_sessions(
    mosquitto: EmbeddedBroker, protocol: str
) -> None:
    t = topic("proto")
    cfg = config(mosquitto.connect_host, mosquitto.port)
    client_id = unique_name("durable")
    opts = LinkOptions(protocol=protocol, persistent_session=True)  # type: ignore[arg-type]
    async with running(AiomqttLink(cfg, client_id, subscriptions=[(t, 1)], options=opts)):
        pass
    obs = AiomqttLink(cfg, unique_name("obs"), options=FAST)
    node = AiomqttLink(cfg, client_id, subscriptions=[(t, 1)], options=opts)
    async with running(obs, node):
        assert node.session_present is True
        await obs.publish(t, b"v" + protocol.encode())
        (msg,) = await take(node, 1)
    assert msg.payload == b"v" + protocol.encode()
    async with running(AiomqttLink(cfg, client_id, options=LinkOptions(protocol=protocol))):  # type: ignore[arg-type]
        pass  # clean session: leave nothing behind on the shared broker


def test_bad_client_id_and_missing_tls_files_are_config_errors(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(ConfigError):
            AiomqttLink(BrokerConfig(), "")
        tls = TlsSettings(ca_file=tmp_path / "missing.pem")
        with pytest.raises(ConfigError):
            AiomqttLink(BrokerConfig(port=8883, tls=tls), "n1")

    asyncio.run(main())


# -- TLS -----------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN={name}", cwd=directory,
    )  # fmt: skip


def _make_cert(directory: Path, name: str, ca: str, ext: str) -> None:
    (directory / f"{name}.ext").write_text(ext)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with a server certificate for 127.0.0.1, a client certificate, and a stranger CA."""
    directory = tmp_path_factory.mktemp("pki")
    _make_ca(directory, "ca")
    _make_ca(directory, "stranger")
    _make_cert(directory, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _make_cert(directory, "client", "ca", "extendedKeyUsage=clientAuth\n")
    return directory


def tls_broker(factory: BrokerFactory, pki: Path, *, require_certificate: bool) -> EmbeddedBroker:
    tls = BrokerTls(
        certfile=pki / "server.crt",
        keyfile=pki / "server.key",
        cafile=pki / "ca.crt",
        require_certificate=require_certificate,
    )
    return factory(settings=BrokerSettings(tls=tls))


def tls_config(broker: EmbeddedBroker, tls: TlsSettings) -> BrokerConfig:
    assert broker.tls_port is not None
    return config("127.0.0.1", broker.tls_port, tls=tls)


@pytest.mark.asyncio
async def test_tls_roundtrip(broker_factory: BrokerFactory, pki: Path) -> None:
    broker = tls_broker(broker_factory, pki, require_certificate=False)
    cfg = tls_config(broker, TlsSettings(ca_file=pki / "ca.crt"))
    t = topic("tls")
    link = AiomqttLink(cfg, unique_name("node"), subscriptions=[(t, 1)], options=FAST)
    async with running(link):
        await link.publish(t, b"secret")
        assert (await take(link, 1))[0].payload == b"secret"


@pytest.mark.asyncio
async def test_untrusted_broker_certificate_is_fatal(
    broker_factory: BrokerFactory, pki: Path
) -> None:
    broker = tls_broker(broker_factory, pki, require_certificate=False)
    cfg = tls_config(broker, TlsSettings(ca_file=pki / "stranger.crt"))
    link = AiomqttLink(cfg, unique_name("node"), options=FAST)
    async with link:
        async with asyncio.timeout(5):
            with pytest.raises(LinkRefusedError, match="certificate"):
                await link.wait_connected()
        assert link.status.failed_attempts == 0  # failed at once, no retries counted


@pytest.mark.asyncio
async def test_client_certificate_required(broker_factory: BrokerFactory, pki: Path) -> None:
    broker = tls_broker(broker_factory, pki, require_certificate=True)
    without = tls_config(broker, TlsSettings(ca_file=pki / "ca.crt"))
    link = AiomqttLink(without, unique_name("node"), options=FAST)
    async with link:
        async with asyncio.timeout(5):
            with pytest.raises(LinkRefusedError):
                await link.wait_connected()
    with_cert = tls_config(
        broker,
        TlsSettings(
            ca_file=pki / "ca.crt", cert_file=pki / "client.crt", key_file=pki / "client.key"
        ),
    )
    async with running(AiomqttLink(with_cert, unique_name("node"), options=FAST)):
        pass


@pytest.mark.asyncio
async def test_session_backlog_bigger_than_the_queue_arrives_whole_on_one_connection(
    mosquitto: EmbeddedBroker,
) -> None:
    """The broker floods a reconnecting persistent session with its backlog before our
    SUBACK: reading pauses during set-up, and set-up must simply wait, not time out."""
    t = topic("backlog")
    n = 500
    cfg = config(mosquitto.connect_host, mosquitto.port)
    client_id = unique_name("durable")
    opts = LinkOptions(
        persistent_session=True, incoming_queue=20, ack_timeout_s=0.5, backoff_initial_s=0.05
    )
    async with running(AiomqttLink(cfg, client_id, subscriptions=[(t, 1)], options=opts)):
        pass
    obs = AiomqttLink(cfg, unique_name("obs"), options=FAST)
    async with running(obs):
        await asyncio.gather(*(obs.publish(t, b"%d" % i) for i in range(n)))
    node = AiomqttLink(cfg, client_id, subscriptions=[(t, 1)], options=opts)
    async with node:
        got: list[int] = []
        async with asyncio.timeout(20):
            async for msg in node.messages():
                got.append(int(msg.payload))
                await asyncio.sleep(0.002)  # a slow consumer: > ack_timeout_s in all
                if len(got) == n:
                    break
        await node.wait_connected()
        assert node.status.connects == 1
        assert node.session_present is True
    assert got == list(range(n))
    async with running(AiomqttLink(cfg, client_id, options=FAST)):
        pass  # end the session on the shared broker
