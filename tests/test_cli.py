"""The operator CLI as a user runs it: real subprocesses against a real Mosquitto."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ion.authoring import load_ion_file, parse_ion
from ion.client.definitions import authored

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "kmeans" / "ion.yaml"
BROKEN = ROOT / "examples" / "broken" / "ion.yaml"


def ion(
    *args: str, broker: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ION_")}
    env["HOME"] = str(ROOT / ".no-home")  # no user config file leaks in
    if broker:
        env["ION_BROKER"] = broker
    return subprocess.run(
        [sys.executable, "-m", "ion.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def renamed(tmp_path: Path, name: str, *, extra: str = "") -> Path:
    """A copy of the example ION under another name (tests share one broker)."""
    text = EXAMPLE.read_text()
    text = re.sub(r"(?m)^(\s+name:\s*)kmeans-anomaly\b", rf"\g<1>{name}", text, count=1)
    assert name in text
    out = tmp_path / f"{name}.yaml"
    out.write_text(text + extra)
    return out


@pytest.fixture
def broker_url(mosquitto: Any) -> str:
    return str(mosquitto.url)


def test_every_command_has_help() -> None:
    for cmd in ([], ["validate"], ["apply"], ["get"], ["list"], ["delete"], ["broker"], ["demo"]):
        r = ion(*cmd, "--help")
        assert r.returncode == 0, r.stderr
        assert "Usage:" in r.stdout


def test_validate_accepts_the_example() -> None:
    r = ion("validate", str(EXAMPLE))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid ION 'kmeans-anomaly'" in r.stdout


def test_validate_reports_every_error_with_its_line_and_exits_2() -> None:
    r = ion("validate", str(BROKEN))
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert len(errors) >= 8, r.stderr
    # Every error names the file and a line number.
    for line in errors:
        assert re.match(rf"{re.escape(str(BROKEN))}:\d+: error: ", line), line
    assert "error(s)" in r.stderr.splitlines()[-1]


def test_validate_json_output() -> None:
    import json

    r = ion("validate", "--json", str(EXAMPLE), str(BROKEN))
    assert r.returncode == 2
    results = json.loads(r.stdout)
    assert [x["valid"] for x in results] == [True, False]
    assert all(p["line"] for p in results[1]["problems"] if p["severity"] == "error")


def test_validate_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    r = ion("validate", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "nope.yaml" in r.stderr


def test_missing_tls_files_are_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "client.crt"
    r = ion("list", "--broker", "mqtts://127.0.0.1:8883", "--cert-file", str(missing),
            "--key-file", str(tmp_path / "client.key"))  # fmt: skip
    assert r.returncode in (1, 2), r.stderr
    assert "Traceback" not in r.stderr
    assert "TLS files" in r.stderr and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.integration
def test_apply_then_get_round_trips_exactly(broker_url: str, tmp_path: Path) -> None:
    f = renamed(tmp_path, "roundtrip")
    r = ion("apply", str(f), broker=broker_url)
    assert r.returncode == 0, r.stderr
    assert "roundtrip created: version 1" in r.stdout
    got = ion("get", "roundtrip", broker=broker_url)
    assert got.returncode == 0, got.stderr
    back = parse_ion(got.stdout)
    assert back.problems == ()
    original = load_ion_file(f).definition
    assert original is not None and back.definition is not None
    assert authored(back.definition) == authored(original)
    # And what `get` printed applies again as "unchanged".
    again = tmp_path / "again.yaml"
    again.write_text(got.stdout)
    r2 = ion("apply", str(again), broker=broker_url)
    assert r2.returncode == 0, r2.stderr
    assert "unchanged" in r2.stdout


@pytest.mark.integration
def test_apply_bumps_the_version_only_on_change(broker_url: str, tmp_path: Path) -> None:
    f = renamed(tmp_path, "versions")
    assert "version 1" in ion("apply", str(f), broker=broker_url).stdout
    assert "unchanged (version 1)" in ion("apply", str(f), broker=broker_url).stdout
    assert "version 2" in ion("apply", "--force", str(f), broker=broker_url).stdout
    text = f.read_text().replace("description:", "description: changed.", 1)
    f.write_text(text)
    assert "updated: version 3" in ion("apply", str(f), broker=broker_url).stdout


@pytest.mark.integration
def test_list_and_delete(broker_url: str, tmp_path: Path) -> None:
    ion("apply", str(renamed(tmp_path, "to-delete")), broker=broker_url)
    listed = ion("list", broker=broker_url)
    assert listed.returncode == 0
    assert re.search(r"(?m)^to-delete\s+1\s+active", listed.stdout), listed.stdout
    d = ion("delete", "to-delete", broker=broker_url)
    assert d.returncode == 0, d.stderr
    assert "deleted (version 2)" in d.stdout
    assert "to-delete" not in ion("list", broker=broker_url).stdout
    assert re.search(
        r"(?m)^to-delete\s+2\s+deleted", ion("list", "--all", broker=broker_url).stdout
    )
    g = ion("get", "to-delete", broker=broker_url)
    assert g.returncode == 1 and "was deleted" in g.stderr
    # Deleting again is an error; re-applying continues the version sequence.
    assert ion("delete", "to-delete", broker=broker_url).returncode == 1
    assert (
        "created: version 3"
        in ion("apply", str(tmp_path / "to-delete.yaml"), broker=broker_url).stdout
    )


@pytest.mark.integration
def test_get_unknown_ion(broker_url: str) -> None:
    r = ion("get", "no-such-ion", broker=broker_url)
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: no ION named 'no-such-ion' on {broker_url}"


@pytest.mark.integration
def test_apply_refuses_an_invalid_file_and_publishes_nothing(broker_url: str) -> None:
    r = ion("apply", str(BROKEN), broker=broker_url)
    assert r.returncode == 2
    assert "nothing was applied" in r.stderr
    assert "broken" not in ion("list", "--all", broker=broker_url).stdout


@pytest.mark.integration
def test_captured_message_decodes_with_stock_protoc(broker_url: str, tmp_path: Path) -> None:
    protoc = shutil.which("protoc")
    assert protoc, "protoc is missing: apt-get install protobuf-compiler (or ./dev setup)"
    sub = shutil.which("mosquitto_sub")
    assert sub, "mosquitto_sub is missing: apt-get install mosquitto-clients (or ./dev setup)"
    ion("apply", str(renamed(tmp_path, "captured")), broker=broker_url)
    host, port = broker_url.removeprefix("mqtt://").split(":")
    raw = subprocess.run(
        [sub, "-h", host, "-p", port, "-t", "ion/v1/ions/captured/def", "-C", "1", "-N"],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    decoded = subprocess.run(
        [protoc, "--decode=ion.v1.Envelope", f"-I{ROOT / 'proto'}", *protos],
        input=raw,
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    assert 'name: "captured"' in decoded
    assert "version: 1" in decoded
    assert 'engine: "spark"' in decoded
    assert re.search(r'content_sha256: "[0-9a-f]{64}"', decoded)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never says a word (a broker that hangs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


@pytest.mark.parametrize("cmd", [["list"], ["get", "x"], ["delete", "x"], ["apply", str(EXAMPLE)]])
def test_unreachable_broker_gives_one_clear_line(cmd: list[str], closed_port: int) -> None:
    r = ion(*cmd, broker=f"mqtt://127.0.0.1:{closed_port}")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"error: cannot reach broker at mqtt://127.0.0.1:{closed_port}: Connection refused"
    )


def test_silent_broker_times_out_clearly(silent_server: int) -> None:
    r = ion("list", "--timeout", "1", broker=f"mqtt://127.0.0.1:{silent_server}")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "did not answer within 1s" in r.stderr


def test_bad_broker_url_is_input_error() -> None:
    r = ion("list", broker="http://example")
    assert r.returncode == 2
    assert "scheme must be mqtt:// or mqtts://" in r.stderr


@pytest.mark.integration
def test_refusing_broker_gives_one_clear_line(broker_factory: Any, tmp_path: Path) -> None:
    from broker.settings import BrokerSettings

    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile = tmp_path / "passwd"
    subprocess.run([passwd, "-b", "-c", str(pwfile), "alice", "right"], check=True, timeout=30)
    broker = broker_factory(settings=BrokerSettings(allow_anonymous=False, password_file=pwfile))
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong\n")
    for args in (["--username", "alice", "--password-file", str(wrong)], []):
        r = ion("list", *args, broker=broker.url)
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.startswith(f"error: broker at {broker.url} refused the connection: ")
        assert len(r.stderr.strip().splitlines()) == 1
    right = tmp_path / "right"
    right.write_text("right\n")
    ok = ion("list", "--username", "alice", "--password-file", str(right), broker=broker.url)
    assert ok.returncode == 0, ok.stderr
