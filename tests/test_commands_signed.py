"""Nodes act only on commands signed by a key trusted as operator (development mode relaxes
only "unsigned"); every refusal is a result that says why plus a ``command.refused`` event.
The pure gate first, then real agents on a real Mosquitto, then the CLI."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config, ticker
from security_support import (
    OPERATOR,
    PRODUCER,
    STRANGER,
    TRUSTED,
    Events,
    command,
    is_running,
    result_of,
    run_count,
    secure_config,
    send,
    tampered,
)
from support import async_wait_until
from support.brokers import mqtt_client

from ion.errors import ConfigError
from ion.model.command import (
    ApproveModel,
    ModelRef,
    Ping,
    PipelineRef,
    RestartPipeline,
    RunPipeline,
)
from ion.model.definition import IonDefinition
from ion.security import Keyring, Role, TrustConfig, TrustedKey, trust_from_mapping
from ion.security.keystore import KeyStore
from node.agent.commands import (
    WINDOW_FILE,
    CommandGate,
    ReplayWindow,
    action_name,
    decide,
    run_here,
)
from node.agent.service import Agent

RING = Keyring.of(
    [
        TrustedKey(OPERATOR.public, frozenset({Role.OPERATOR}), "alice"),
        TrustedKey(PRODUCER.public, frozenset({Role.PRODUCER}), "trainer"),
    ]
)
TRUST = TrustConfig(keyring=RING)
DEV = TrustConfig(keyring=RING, development_mode=True)
NOW = 1_700_000_000_000

# -- pure --------------------------------------------------------------------------------------


def test_only_commands_signed_by_an_operator_key_are_admitted() -> None:
    w = ReplayWindow()
    ok = decide(command(Ping(), issued_ms=NOW), TRUST, w, NOW)
    assert ok.accepted and "alice" in ok.signer
    cases = {
        "unsigned": command(Ping(), None, issued_ms=NOW),
        "untrusted key": command(Ping(), STRANGER, issued_ms=NOW),
        "not trusted as operator": command(Ping(), PRODUCER, issued_ms=NOW),
        "bad signature": tampered(command(Ping(), issued_ms=NOW), action=RunPipeline(
            PipelineRef("plant", "training"))),
    }  # fmt: skip
    for reason, cmd in cases.items():
        verdict = decide(cmd, TRUST, w, NOW)
        assert not verdict.accepted and reason in verdict.reason, (reason, verdict)
    # The id, the issue time and the reason are signed too: changing them breaks it.
    genuine = command(Ping(), issued_ms=NOW)
    for changed in (
        tampered(genuine, command_id="f" * 32),
        tampered(genuine, issued_ms=NOW + 1),
        tampered(genuine, reason="because"),
    ):
        assert decide(changed, TRUST, w, NOW).kind == "bad signature"


def test_development_mode_admits_unsigned_commands_but_never_bad_signatures() -> None:
    w = ReplayWindow()
    assert decide(command(Ping(), None, issued_ms=NOW), DEV, w, NOW).accepted
    unsigned_no_time = tampered(command(Ping(), None, issued_ms=NOW), issued_ms=0)
    assert decide(unsigned_no_time, DEV, w, NOW).accepted  # older test tools send no time
    assert decide(command(Ping(), STRANGER, issued_ms=NOW), DEV, w, NOW).kind == "untrusted key"
    forged = tampered(command(Ping(), issued_ms=NOW), issued_by="mallory")
    assert decide(forged, DEV, w, NOW).kind == "bad signature"


def test_stale_future_expired_and_timeless_commands_are_refused() -> None:
    w = ReplayWindow()
    age, skew = TRUST.command_max_age_ms, TRUST.clock_skew_ms
    assert decide(command(Ping(), issued_ms=NOW - age), TRUST, w, NOW).accepted
    assert decide(command(Ping(), issued_ms=NOW - age - 1), TRUST, w, NOW).kind == "stale"
    assert decide(command(Ping(), issued_ms=NOW + skew), TRUST, w, NOW).accepted
    future = decide(command(Ping(), issued_ms=NOW + skew + 1), TRUST, w, NOW)
    assert future.kind == "from the future" and "ahead of this node's clock" in future.reason
    from ion.client.commands import make_command

    expired = make_command(Ping(), operator="t", now_ms=NOW - 10, key=OPERATOR, ttl_ms=5)
    assert decide(expired, TRUST, w, NOW).kind == "expired"
    from ion.security import sign

    timeless = sign(tampered(command(Ping(), None), issued_ms=0), OPERATOR, now_ms=NOW)
    assert decide(timeless, TRUST, w, NOW).reason.startswith("stale: a signed command must")
    no_id = sign(tampered(command(Ping(), None, issued_ms=NOW), command_id=""), OPERATOR,
                 now_ms=NOW)  # fmt: skip
    assert decide(no_id, TRUST, w, NOW).kind == "invalid"


def test_the_replay_window_is_bounded_and_raises_its_floor() -> None:
    w = ReplayWindow()
    for i in range(5):
        w.record(f"c{i}", NOW + i, now_ms=NOW + 10, horizon_ms=60_000, size=3)
    assert sorted(w.seen) == ["c2", "c3", "c4"] and w.floor_ms == NOW + 1
    assert w.refusal("c3", NOW + 3).startswith("replay")
    assert w.refusal("c0", NOW).startswith("stale")  # forgotten, but below the floor
    assert w.refusal("c9", NOW + 1).startswith("stale")
    assert w.refusal("c9", NOW + 2) == ""
    # Ids older than the horizon are dropped: their replays are refused as stale anyway.
    w.record("late", NOW + 100_000, now_ms=NOW + 100_000, horizon_ms=60_000, size=3)
    assert list(w.seen) == ["late"]


def test_the_gate_persists_its_window_and_never_reopens_replays(tmp_path: Path) -> None:
    gate = CommandGate.open(tmp_path, TRUST, now_ms=NOW)
    cmd = command(Ping(), issued_ms=NOW)
    assert gate.admit(cmd, NOW).accepted
    assert gate.admit(cmd, NOW + 1).kind == "replay"
    assert gate.admit(command(Ping(), None, issued_ms=NOW), NOW).kind == "unsigned"
    assert gate.refused == {"replay": 1, "unsigned": 1}
    again = CommandGate.open(tmp_path, TRUST, now_ms=NOW + 5)  # a restarted node
    assert again.admit(cmd, NOW + 5).kind == "replay"
    # A damaged window file: everything issued before the restart is refused as stale.
    (tmp_path / WINDOW_FILE).write_text("{not json")
    damaged = CommandGate.open(tmp_path, TRUST, now_ms=NOW + 9)
    assert damaged.admit(command(Ping(), issued_ms=NOW + 8), NOW + 9).kind == "stale"
    assert damaged.admit(command(Ping(), issued_ms=NOW + 10), NOW + 10).accepted


def test_refused_commands_do_not_fill_the_window(tmp_path: Path) -> None:
    gate = CommandGate.open(tmp_path, TRUST, now_ms=NOW)
    for _ in range(20):
        gate.admit(command(Ping(), STRANGER, issued_ms=NOW), NOW)
    assert gate.window.seen == {} and not (tmp_path / WINDOW_FILE).exists()


class Pipes:
    def __init__(self) -> None:
        self.done: list[tuple[str, tuple[str, str]]] = []

    def restart(self, key: tuple[str, str]) -> bool:
        self.done.append(("restart", key))
        return key == ("plant", "here")

    def trigger(self, key: tuple[str, str]) -> bool:
        self.done.append(("trigger", key))
        return False


def test_admitted_commands_are_dispatched() -> None:
    p = Pipes()
    assert run_here(command(Ping()), p) == (True, "pong")
    assert run_here(command(RestartPipeline(PipelineRef("plant", "here"))), p) == (
        True,
        "restarting",
    )
    assert run_here(command(RunPipeline(PipelineRef("plant", "gone"))), p) == (
        False,
        "plant/gone is not here",
    )
    assert run_here(command(ApproveModel(ModelRef("plant", "m", "3"))), p) is None
    assert [d[0] for d in p.done] == ["restart", "trigger"]
    assert action_name(ApproveModel(ModelRef("a", "b", "1"))) == "approve"


def test_an_outcome_is_ok_only_when_every_node_answered_ok() -> None:
    from ion.client.commands import Outcome
    from ion.model.command import CommandResult

    yes, no = CommandResult("c", "a", ok=True), CommandResult("c", "b", ok=False, message="x")
    assert Outcome((yes,), ()).ok
    assert not Outcome((yes, no), ()).ok
    assert not Outcome((yes,), ("b",)).ok


def test_trust_section_command_bounds() -> None:
    t = trust_from_mapping({"command_max_age": "30s", "clock_skew": "2s", "command_window": 5})
    assert (t.command_max_age_ms, t.clock_skew_ms, t.command_window) == (30_000, 2_000, 5)
    d = trust_from_mapping({})
    assert (d.command_max_age_ms, d.clock_skew_ms, d.command_window) == (600_000, 60_000, 10_000)
    for bad, message in (
        ({"command_max_age": "soon"}, "command_max_age"),
        ({"clock_skew": "-1s"}, "clock_skew must be positive"),
        ({"command_window": 0}, "command_window must be a positive integer"),
        ({"command_window": True}, "command_window must be a positive integer"),
    ):
        with pytest.raises(ConfigError, match=message):
            trust_from_mapping(bad)


# -- real agents ------------------------------------------------------------------------------


def job(name: str, node: str) -> IonDefinition:
    return IonDefinition(name=name, pipelines=(ticker("job", (node,)),))


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_node_runs_only_signed_operator_commands_and_says_why_not(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    with mqtt_client(fresh_mosquitto.host, fresh_mosquitto.port) as client:
        events = Events(client, "sec-1")
        async with Agent(secure_config("sec-1", url, tmp_path)) as agent:
            await agent.link.wait_connected()
            await apply(url, job("cmds", "sec-1"), key=OPERATOR)
            await async_wait_until(lambda: is_running(agent, "cmds", "job"), 30)
            runs = run_count(agent, "cmds", "job")
            restart = RestartPipeline(PipelineRef("cmds", "job"))

            refused = {
                "unsigned": command(restart, None),
                "untrusted key": command(restart, STRANGER),
                "not trusted as operator": command(restart, PRODUCER),
                "bad signature": tampered(command(Ping()), action=restart),
            }
            for reason, cmd in refused.items():
                result = await result_of(url, cmd, "sec-1")
                assert not result.ok and result.message.startswith("refused: "), result
                assert reason in result.message
                await async_wait_until(functools.partial(events.has, "command.refused", reason), 10)
            assert run_count(agent, "cmds", "job") == runs  # nothing was restarted
            assert agent.command_gate is not None
            assert sum(agent.command_gate.refused.values()) == 4

            # Signed by the operator: done, on the node's topic and on the ION's.
            pong = await result_of(url, command(Ping()), "sec-1")
            assert pong.ok and pong.message == "pong"
            outcome = await send(url, command(restart), "sec-1", ion="cmds")
            assert outcome.ok and outcome.results[0].message == "restarting"
            await async_wait_until(lambda: run_count(agent, "cmds", "job") > runs, 30)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_development_mode_runs_unsigned_commands(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    cfg = node_config("dev-c", url, tmp_path, trust={"keys": TRUSTED, "development_mode": True})
    async with Agent(cfg) as agent:
        await agent.link.wait_connected()
        assert (await result_of(url, command(Ping(), None), "dev-c")).ok
        forged = await result_of(url, command(Ping(), STRANGER), "dev-c")
        assert not forged.ok and "untrusted key" in forged.message


# -- the CLI -----------------------------------------------------------------------------------


def ion_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ion.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.integration
@pytest.mark.asyncio
async def test_ion_ping_and_restart_sign_with_key_and_report_refusals(
    fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    keys = KeyStore(tmp_path / "keys")
    alice = keys.create("alice", [Role.OPERATOR])
    keys.create("mallory", [Role.OPERATOR])  # a valid key, but no node trusts it
    env = {k: v for k, v in os.environ.items() if not k.startswith("ION_")}
    env |= {"HOME": str(tmp_path), "ION_KEYS_DIR": str(keys.directory), "ION_BROKER": url}
    cfg = node_config("cli-1", url, tmp_path, trust={"keys": [alice.line()]})
    async with Agent(cfg) as agent:
        await agent.link.wait_connected()
        ok = await asyncio.to_thread(ion_cli, "ping", "cli-1", "--key", "alice", env=env)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == "cli-1: ok: pong"
        unsigned = await asyncio.to_thread(ion_cli, "ping", "cli-1", "--wait", "10", env=env)
        assert unsigned.returncode == 1
        assert "cli-1: FAILED: refused: unsigned" in unsigned.stdout
        assert "nodes outside development mode will refuse it" in unsigned.stderr
        other = await asyncio.to_thread(
            ion_cli, "ping", "cli-1", "--key", "mallory", "--json", env=env
        )
        assert other.returncode == 1 and '"ok": false' in other.stdout
        assert "untrusted key" in other.stdout
        await apply(url, job("clijob", "cli-1"), key=keys.signing_key("alice"))
        await async_wait_until(lambda: is_running(agent, "clijob", "job"), 30)
        before = run_count(agent, "clijob", "job")
        restarted = await asyncio.to_thread(
            ion_cli, "restart", "clijob", "job", "--key", "alice", "--reason", "test", env=env
        )
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert "cli-1: ok: restarting" in restarted.stdout
        await async_wait_until(lambda: run_count(agent, "clijob", "job") > before, 30)
        silent = await asyncio.to_thread(
            ion_cli, "ping", "nobody", "--key", "alice", "--wait", "0.5", env=env
        )
        assert silent.returncode == 1 and "nobody: no result in time" in silent.stdout
        nowhere = await asyncio.to_thread(ion_cli, "run", "ghost", "job", "--key", "alice", env=env)
        assert nowhere.returncode == 2
        assert "no node reports a pipeline of ION 'ghost'" in nowhere.stderr
