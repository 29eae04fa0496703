"""The embedded broker (both kinds), ``ion broker``, and the fixtures built on them."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import scaled, unique_name, wait_until
from support.brokers import BrokerFactory, mqtt_client
from support.leaks import children_of, kill_and_reap, new_children, process_table

from broker.cli import broker_command
from broker.embedded import EmbeddedBroker, mosquitto_path, resolve_kind, start_broker
from broker.errors import BrokerConfigError, BrokerStartError, PortInUseError
from broker.mosquitto_conf import MosquittoLayout, render_mosquitto_conf
from broker.probe import mqtt_probe
from broker.process import ChildProcess, read_tail
from broker.settings import MIB, BrokerSettings, TlsSettings

REPO = Path(__file__).resolve().parent.parent

# -- pure parts -------------------------------------------------------------------------------


def test_rendered_config_sets_the_limits_that_otherwise_lose_messages(tmp_path: Path) -> None:
    layout = MosquittoLayout(
        host="127.0.0.1", port=1884, log_file=tmp_path / "b.log", persistence_dir=tmp_path
    )
    text = render_mosquitto_conf(layout, BrokerSettings())
    lines = set(text.splitlines())
    assert "listener 1884 127.0.0.1" in lines
    assert "allow_anonymous true" in lines
    assert "max_queued_messages 1000000" in lines
    assert f"max_queued_bytes {1024 * MIB}" in lines
    assert f"max_packet_size {BrokerSettings().max_packet_size}" in lines
    assert "persistence true" in lines
    assert f"log_dest file {tmp_path / 'b.log'}" in lines
    # Mosquitto's own message_size_limit acknowledges and drops; we never emit it.
    assert "message_size_limit" not in text


def test_rendered_config_without_persistence_and_with_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    settings = BrokerSettings(max_queued_messages=5, tls=TlsSettings(certfile=cert, keyfile=key))
    layout = MosquittoLayout(
        host="127.0.0.1",
        port=1,
        log_file=tmp_path / "b.log",
        persistence_dir=None,
        tls_port=2,
        run_as_user="root",
    )
    lines = render_mosquitto_conf(layout, settings).splitlines()
    assert "persistence false" in lines
    assert "max_queued_messages 5" in lines
    assert lines.index("listener 2 127.0.0.1") < lines.index(f"certfile {cert}")
    assert "user root" in lines


def test_packet_limit_leaves_room_for_topic_and_headers() -> None:
    settings = BrokerSettings(message_size_limit=16 * MIB)
    assert settings.max_packet_size >= 16 * MIB + 65_535 + 64


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_queued_messages": -1},
        {"message_size_limit": 0},
        {"message_size_limit": 300 * MIB},
        {"extra_lines": ("a\nb",)},
        {"allow_anonymous": False},
        {"password_file": Path("x\nlistener 1")},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(BrokerConfigError):
        BrokerSettings(**kwargs)  # type: ignore[arg-type]


def test_missing_mosquitto_is_a_config_error_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ION_MOSQUITTO", str(tmp_path / "no-such-binary"))
    assert mosquitto_path() is None
    with pytest.raises(BrokerConfigError, match="apt-get install mosquitto"):
        resolve_kind("mosquitto")
    assert resolve_kind("auto") == "amqtt"


def test_amqtt_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    with pytest.raises(BrokerConfigError, match="persistence"):
        start_broker(kind="amqtt", settings=BrokerSettings(persistence=True))
    with pytest.raises(BrokerConfigError, match="password_file"):
        start_broker(
            kind="amqtt",
            settings=BrokerSettings(allow_anonymous=False, password_file=tmp_path / "pw"),
        )


# -- both kinds, real processes ---------------------------------------------------------------


@pytest.fixture(params=["mosquitto", "amqtt"])
def any_broker(request: pytest.FixtureRequest, broker_factory: BrokerFactory) -> EmbeddedBroker:
    kind = request.param
    return broker_factory(kind=kind)


@pytest.mark.integration
def test_qos1_retained_message_round_trip(any_broker: EmbeddedBroker) -> None:
    b = any_broker
    assert b.url == f"mqtt://127.0.0.1:{b.port}"
    assert b.host == "127.0.0.1"
    assert b.pid is not None
    assert b.pid in children_of(os.getpid())
    topic = f"{unique_name('t')}/retained"
    with mqtt_client(b.host, b.port) as publisher:
        publisher.publish(topic, b"model-v1", qos=1, retain=True)
    with mqtt_client(b.host, b.port) as subscriber:
        subscriber.subscribe(topic, qos=1)
        got = subscriber.expect()
    assert (got.topic, got.payload, got.qos, got.retain) == (topic, b"model-v1", 1, True)


@pytest.mark.integration
def test_offline_persistent_session_gets_its_qos1_messages(any_broker: EmbeddedBroker) -> None:
    # amqtt's stock anonymous-auth plugin breaks exactly this; broker.amqtt_runner avoids it.
    b = any_broker
    topic = unique_name("queue")
    sub_id = unique_name("sub")
    with mqtt_client(b.host, b.port, client_id=sub_id, clean_session=False) as sub:
        sub.subscribe(topic, qos=1)
    with mqtt_client(b.host, b.port) as pub:
        for i in range(5):
            pub.publish(topic, f"m{i}".encode(), qos=1)
    with mqtt_client(b.host, b.port, client_id=sub_id, clean_session=False) as sub:
        payloads = [sub.expect().payload for _ in range(5)]
    assert payloads == [b"m0", b"m1", b"m2", b"m3", b"m4"]


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_stop_leaves_no_process_and_frees_the_port(
    kind: str, broker_factory: BrokerFactory
) -> None:
    b = broker_factory(kind=kind)  # type: ignore[arg-type]
    pid, port = b.pid, b.port
    assert pid is not None
    b.stop()
    assert not b.is_running()
    assert b.pid is None
    assert pid not in process_table()  # gone, not even a zombie: it was reaped
    with pytest.raises(OSError):
        mqtt_probe("127.0.0.1", port, timeout=1)
    b.stop()  # idempotent


@pytest.mark.integration
def test_restart_keeps_retained_messages_and_queued_sessions(
    fresh_mosquitto: EmbeddedBroker,
) -> None:
    b = fresh_mosquitto
    assert b.persistent
    topic, queue_topic, sub_id = unique_name("def"), unique_name("q"), unique_name("sub")
    with mqtt_client(b.host, b.port, client_id=sub_id, clean_session=False) as sub:
        sub.subscribe(queue_topic, qos=1)
    with mqtt_client(b.host, b.port) as pub:
        pub.publish(topic, b"signed-definition", qos=1, retain=True)
        pub.publish(queue_topic, b"queued", qos=1)
    port, old_pid = b.port, b.pid
    b.restart()
    assert (b.port, b.is_running()) == (port, True)
    assert b.pid != old_pid
    with mqtt_client(b.host, b.port, client_id=sub_id, clean_session=False) as sub:
        assert sub.expect().payload == b"queued"
        sub.subscribe(topic, qos=1)
        got = sub.expect()
    assert (got.payload, got.retain) == (b"signed-definition", True)


@pytest.mark.integration
def test_crash_restart_and_freeze(broker_factory: BrokerFactory) -> None:
    b = broker_factory(kind="mosquitto")
    old_pid = b.pid
    b.restart(crash=True)
    assert b.is_running()
    assert b.pid != old_pid
    b.freeze()
    with pytest.raises(OSError):  # the kernel accepts the connection; nobody answers
        mqtt_probe(b.host, b.port, timeout=0.5)
    b.thaw()
    assert mqtt_probe(b.host, b.port, timeout=scaled(5)) == 0


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_port_in_use_is_a_clear_error(kind: str, occupied_port: int, tmp_path: Path) -> None:
    with pytest.raises(PortInUseError, match=f"port {occupied_port} on 127.0.0.1 is already"):
        start_broker(kind=kind, port=occupied_port, data_dir=tmp_path)  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_port_taken_between_check_and_bind_is_reported_from_the_log(
    kind: str, occupied_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("broker.embedded._port_taken", lambda host, port: False)
    with pytest.raises(PortInUseError) as info:
        start_broker(kind=kind, port=occupied_port, data_dir=tmp_path)  # type: ignore[arg-type]
    assert "Address already in use" in info.value.log_tail


@pytest.mark.integration
def test_a_broker_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    if mosquitto_path() is None:
        pytest.fail("Mosquitto is not installed")
    with pytest.raises(BrokerStartError) as info:
        start_broker(
            kind="mosquitto",
            data_dir=tmp_path,
            settings=BrokerSettings(extra_lines=("no_such_option 1",)),
        )
    assert "no_such_option" in str(info.value)
    assert "exited with status" in info.value.summary


@pytest.mark.integration
def test_deploy_config_is_accepted_by_mosquitto(tmp_path: Path) -> None:
    binary = mosquitto_path()
    if binary is None or shutil.which("openssl") is None:
        pytest.fail("needs mosquitto and openssl: apt-get install mosquitto openssl")
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    var.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=localhost", "-keyout", str(etc / "server.key"), "-out", str(etc / "server.crt")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    shutil.copyfile(etc / "server.crt", etc / "ca.crt")
    (etc / "passwd").write_text("")
    (etc / "acl").write_text("")
    plain_port, tls_port = _free_ports(2)
    conf = (REPO / "deploy" / "mosquitto" / "ion-broker.conf").read_text()
    conf = (
        conf.replace("/etc/mosquitto/ion/", f"{etc}/")
        .replace("/var/lib/mosquitto/", f"{var}/")
        .replace("/var/log/mosquitto/", f"{var}/")
        .replace("listener 1883 127.0.0.1", f"listener {plain_port} 127.0.0.1")
        .replace("listener 8883\n", f"listener {tls_port} 127.0.0.1\n")
    )
    if os.geteuid() == 0:
        conf = conf.replace("user mosquitto", "user root")
    (tmp_path / "ion-broker.conf").write_text(conf)
    child = ChildProcess(
        [str(binary), "-c", str(tmp_path / "ion-broker.conf")], console_log=tmp_path / "out"
    )
    try:
        # Anonymous clients are refused (CONNACK 5), which proves the broker is up and strict.
        code = wait_until(lambda: _probe_code(plain_port), 20, message=lambda: _tail(var, tmp_path))
        assert code == 5
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5):
            pass
    finally:
        assert child.stop() == 0, _tail(var, tmp_path)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _probe_code(port: int) -> int | None:
    try:
        return mqtt_probe("127.0.0.1", port, timeout=1)
    except OSError:
        return None


def _tail(var: Path, tmp_path: Path) -> str:
    return read_tail(var / "mosquitto.log") + read_tail(tmp_path / "out")


# -- ion broker ------------------------------------------------------------------------------


@pytest.mark.integration
def test_cli_runs_until_sigterm_and_exits_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], scaled(30))
        assert ready, "ion broker printed no URL"
        url = proc.stdout.readline().strip()
        match = re.fullmatch(r"mqtt://127\.0\.0\.1:(\d+)", url)
        assert match, url
        port = int(match.group(1))
        assert mqtt_probe("127.0.0.1", port) == 0
        broker_pids = [i.pid for i in children_of(proc.pid).values()]
        assert len(broker_pids) == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=scaled(20))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "broker stopped" in err
    assert "Traceback" not in err
    assert broker_pids[0] not in process_table()
    assert (data_dir / "broker.log").exists()


def test_cli_port_in_use_is_one_line_and_exit_1(occupied_port: int) -> None:
    result = CliRunner().invoke(broker_command, ["--port", str(occupied_port)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [
        f"Error: port {occupied_port} on 127.0.0.1 is already in use "
        "(another broker running? use --port, 0 picks a free one)"
    ]


def test_cli_help() -> None:
    result = CliRunner().invoke(broker_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--kind", "--data-dir"):
        assert option in result.output


# -- the leak check these fixtures install ----------------------------------------------------


def test_leak_helpers_find_and_reap_a_child() -> None:
    baseline = set(children_of(os.getpid()))
    proc = subprocess.Popen(["sleep", "30"])
    try:
        leaked = wait_until(lambda: new_children(baseline))
        assert [info.pid for info in leaked] == [proc.pid]
        assert "sleep 30" in leaked[0].describe()
        kill_and_reap(leaked)
        assert proc.pid not in process_table()
    finally:
        proc.kill()
        proc.wait()


_LEAKY_TESTS = textwrap.dedent(
    """
    import asyncio
    import subprocess

    import pytest


    def test_leaks_a_child():
        subprocess.Popen(["sleep", "30"])


    def test_orphans_a_grandchild():
        subprocess.run(["sh", "-c", "sleep 30 & exit 0"], check=True)


    @pytest.mark.asyncio
    async def test_leaks_a_task():
        asyncio.create_task(asyncio.sleep(30), name="forgotten-sleeper")


    @pytest.mark.asyncio
    async def test_clean_async():
        task = asyncio.create_task(asyncio.sleep(0))
        await task


    def test_clean_sync():
        subprocess.run(["true"], check=True)
    """
)


@pytest.mark.integration
@pytest.mark.slow
def test_leak_check_fails_leaky_tests_and_passes_clean_ones(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ION_LEAK_GRACE", "0.5")
    tests_dir = Path(__file__).parent
    pytester.makeconftest((tests_dir / "conftest.py").read_text())
    support = pytester.mkpydir("support")
    for source in (tests_dir / "support").glob("*.py"):
        (support / source.name).write_text(source.read_text())
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(test_leaky=_LEAKY_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=scaled(120))
    result.assert_outcomes(passed=5, errors=3)
    result.stdout.fnmatch_lines_random(
        [
            "*test leaked 1 child process(es)*",
            "*pid * (running): sleep 30*",
            "*test leaked 1 pending asyncio task(s)*",
            "*forgotten-sleeper running *sleep*",
        ]
    )
    assert not list(pytester.path.glob("test-artifacts/*"))  # nothing failed in a call phase
