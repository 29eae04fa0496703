"""An idle agent (no ION, no pipelines) must not load what only some nodes need.

The idle memory target (issue 3: <= 40 MB RSS, docs/benchmarks.md) is met by keeping the
model machinery (store, transfers, rollouts, archives), the gateway relay, the engine adapters
and the heavy libraries (numpy, cryptography) out of an idle agent.  An import added at module
level anywhere on the agent's path would bring them back silently; this test runs the real
``python -m node run`` against a real broker, lets it publish its status twice (connected,
then a heartbeat), and asks it for its ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.brokers import mqtt_client

from ion import topics
from ion.model.messages import NodeState, NodeStatus
from ion.wire.codec import decode

pytestmark = pytest.mark.integration

# Runs the agent exactly as `python -m node run -c FILE`; SIGUSR1 writes sys.modules (as JSON)
# to the file named by argv[1] and says "dumped" on stdout.
_CHILD = """
import json, runpy, signal, sys
out = sys.argv.pop(1)
def dump(*_):
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
    print("dumped", flush=True)
signal.signal(signal.SIGUSR1, dump)
sys.argv[0] = "node"
runpy.run_module("node", run_name="__main__", alter_sys=True)
"""

# Modules an idle agent must not have imported, each loaded on first use by whatever needs it.
HEAVY = (
    "numpy",
    "cryptography",
    "tarfile",  # model archives (node.models.pack)
    "node.models.transfer",
    "node.models.store",
    "node.models.rollout",
    "node.models.incoming",
    "node.models.sending",
    "node.models.gateway",
    "node.agent.relay",  # gateways only
    "node.allocator",  # model traffic only (and with it ctypes)
    "node.engines.python_engine",
    "node.engines.spark_engine",
    "node.engines.tensorflow_engine",
    "node.health.drift",
)


def _statuses(host: str, port: int, node: str, count: int, proc: subprocess.Popen[str]) -> None:
    """Wait for ``count`` online statuses of ``node`` (the retained one, then heartbeats)."""
    with mqtt_client(host, port) as client:
        client.subscribe(topics.node_status(node))
        seen = 0
        while seen < count:
            if proc.poll() is not None:
                raise AssertionError(f"the agent exited: {proc.communicate()[0]}")
            body = decode(client.expect(timeout=20).payload).body
            if isinstance(body, NodeStatus) and body.state is NodeState.ONLINE:
                seen += 1


def _read_until(proc: subprocess.Popen[str], needle: str) -> list[str]:
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"the agent exited before {needle!r}: {''.join(lines)}")


def heavy_loaded(modules: list[str]) -> list[str]:
    """The modules of ``HEAVY`` (or their submodules) among ``modules``."""
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_heavy_loaded_sees_modules_and_their_submodules() -> None:
    assert heavy_loaded(["numpy.linalg", "numpyx", "node.models.config", "tarfile"]) == [
        "numpy.linalg",
        "tarfile",
    ]


def test_an_idle_agent_loads_nothing_heavy(fresh_mosquitto: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        f"node: {{id: idle-1}}\nbroker: {{url: '{fresh_mosquitto.url}'}}\n"
        f"data_dir: {tmp_path / 'd'}\nheartbeat_interval: 1s\n"
    )
    dump = tmp_path / "modules.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(dump), "run", "-c", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _read_until(proc, "running")
        _statuses(fresh_mosquitto.host, fresh_mosquitto.port, "idle-1", 2, proc)
        proc.send_signal(signal.SIGUSR1)
        _read_until(proc, "dumped")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    modules = json.loads(dump.read_text())
    assert "node.agent.service" in modules  # the dump is of a running agent
    assert heavy_loaded(modules) == []
