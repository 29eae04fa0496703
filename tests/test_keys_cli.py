"""``ion keys`` and signing with ``ion apply --key`` / ``ion delete --key`` (click's runner;
the apply tests publish to the session's Mosquitto and read back what nodes would get)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ion.cli import keys as keys_cli
from ion.cli.main import cli
from ion.client import definitions
from ion.client.session import connect
from ion.config.broker import parse_broker_url
from ion.model.definition import IonDefinition, IonDeleted
from ion.security import Keyring, Role, parse_trusted_line, verify
from ion.security.keyring import ROLE_NAMES
from ion.security.keystore import ENV_DIR

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "kmeans" / "ion.yaml"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``run(*args)``: the CLI in-process, with no user config, keys in ``tmp_path/keys``."""
    for name in list(os.environ):
        if name.startswith("ION_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "keys"))

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


def test_the_cli_role_choices_and_env_match_the_security_package() -> None:
    assert keys_cli.ROLE_CHOICES == ROLE_NAMES
    assert keys_cli.ENV_DIR == ENV_DIR


@pytest.mark.parametrize("args", [["keys"], ["keys", "create"], ["keys", "list"], ["keys", "show"]])
def test_every_keys_command_has_help(run: Any, args: list[str]) -> None:
    r = run(*args, "--help")
    assert r.exit_code == 0 and "Usage:" in r.output


def test_create_list_show(run: Any, tmp_path: Path) -> None:
    r = run("keys", "create", "alice")
    assert r.exit_code == 0, r.output
    assert "(keep it secret" in r.output
    line = r.output.strip().splitlines()[-1].strip()
    trusted = parse_trusted_line(line)
    assert trusted.roles == {Role.OPERATOR} and trusted.name == "alice"  # operator by default
    assert os.stat(tmp_path / "keys" / "alice.key").st_mode & 0o777 == 0o600

    r = run("keys", "create", "trainer", "--role", "producer", "--role", "operator")
    assert r.exit_code == 0, r.output
    listed = run("keys", "list")
    assert listed.exit_code == 0
    assert re.search(rf"(?m)^alice\s+{trusted.key_id}\s+operator\s+yes$", listed.output)
    assert re.search(r"(?m)^trainer\s+[0-9a-f]{16}\s+operator,producer\s+yes$", listed.output)

    shown = run("keys", "show", "alice")
    assert shown.exit_code == 0 and shown.output.strip() == line
    data = json.loads(run("keys", "show", "trainer", "--json").output)
    assert data["roles"] == ["operator", "producer"] and data["line"].startswith("ed25519:")
    assert [k["name"] for k in json.loads(run("keys", "list", "--json").output)] == [
        "alice",
        "trainer",
    ]


def test_key_errors_are_one_clear_line(run: Any, tmp_path: Path) -> None:
    assert run("keys", "create", "alice").exit_code == 0
    again = run("keys", "create", "alice")
    assert again.exit_code == 2 and "already exists" in again.output
    assert run("keys", "create", "Bad Name").exit_code == 2
    missing = run("keys", "show", "bob")
    assert missing.exit_code == 1 and "no key named 'bob'" in missing.output
    other = tmp_path / "elsewhere"
    assert "no keys in" in run("keys", "list", "--dir", str(other)).output
    assert run("keys", "create", "carol", "--dir", str(other)).exit_code == 0
    assert (other / "carol.pub").exists()


# -- signing on apply and delete ---------------------------------------------------------------


def renamed(tmp_path: Path, name: str) -> Path:
    text = re.sub(
        r"(?m)^(\s+name:\s*)kmeans-anomaly\b", rf"\g<1>{name}", EXAMPLE.read_text(), count=1
    )
    out = tmp_path / f"{name}.yaml"
    out.write_text(text)
    return out


def stored(url: str, name: str) -> IonDefinition | IonDeleted | None:
    with connect(parse_broker_url(url)) as session:
        return definitions.fetch(session, name)


@pytest.mark.integration
def test_apply_and_delete_sign_with_the_named_key(run: Any, tmp_path: Path, mosquitto: Any) -> None:
    url = str(mosquitto.url)
    assert run("keys", "create", "alice").exit_code == 0
    ring = Keyring.of([parse_trusted_line(run("keys", "show", "alice").output)])

    r = run("apply", str(renamed(tmp_path, "signed-cli")), "--key", "alice", "--broker", url)
    assert r.exit_code == 0, r.output
    assert "signed by key" in r.output and "warning" not in r.output
    d = stored(url, "signed-cli")
    assert isinstance(d, IonDefinition) and verify(d, ring).accepted

    r = run("delete", "signed-cli", "--key", "alice", "--broker", url)
    assert r.exit_code == 0, r.output
    tomb = stored(url, "signed-cli")
    assert isinstance(tomb, IonDeleted) and verify(tomb, ring).accepted


@pytest.mark.integration
def test_signing_key_from_env_or_config_and_unsigned_warns(
    run: Any, tmp_path: Path, mosquitto: Any
) -> None:
    url = str(mosquitto.url)
    assert run("keys", "create", "ops").exit_code == 0
    ring = Keyring.of([parse_trusted_line(run("keys", "show", "ops").output)])
    key_file = str(tmp_path / "keys" / "ops.key")

    f = renamed(tmp_path, "signed-env")
    r = run("apply", str(f), "--broker", url, env={"ION_SIGNING_KEY": key_file})
    assert r.exit_code == 0, r.output
    d = stored(url, "signed-env")
    assert isinstance(d, IonDefinition) and verify(d, ring).accepted

    config = tmp_path / "client.yaml"
    config.write_text("signing_key: ops\n")
    r = run("apply", str(f), "--force", "--broker", url, "--config", str(config))
    assert r.exit_code == 0, r.output
    d2 = stored(url, "signed-env")
    assert isinstance(d2, IonDefinition) and d2.version == 2 and verify(d2, ring).accepted

    r = run("apply", str(f), "--force", "--broker", url)
    assert r.exit_code == 0 and "warning: publishing unsigned" in r.output
    d3 = stored(url, "signed-env")
    assert isinstance(d3, IonDefinition) and d3.signature is None

    bad = run("apply", str(f), "--broker", url, "--key", "nobody")
    assert bad.exit_code == 1 and "no key named 'nobody'" in bad.output
