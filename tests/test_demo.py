"""The README's main command, run for a short while: every step a newcomer should see happens.

``ion demo`` starts its own broker, four node agents (child processes), Spark training,
simulated devices; the test checks the printed story and that nothing is left running (the
suite's leak check also fails the test on any leftover process).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(1000)  # the whole story: two Spark trainings, a canary hold, drift windows
def test_demo_runs_the_whole_loop_and_stops_cleanly(tmp_path: Path) -> None:
    """Every step of the README's main command: brokers, monitor and dashboard, five agents
    (one a gateway), Spark training with progress, canary then promotion through the gateway,
    drift detected at the edge, a drift alert from the monitor, the retrain trigger, the
    retrained model on every edge node, and a clean stop."""
    work = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ion.cli.main",
            "demo",
            "--duration",
            "840",
            "--drift-after",
            "30",
            "--until-retrained",
            "--dashboard-port",
            "0",
            "--work-dir",
            str(work),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=960,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for expected in (
        "cloud broker (",
        "gateway broker (",
        "dashboard at http://127.0.0.1:",
        "cloud-1: online",
        "gw-1: online",
        "edge-3: online",
        "applied ION 'kmeans-anomaly' version 1, signed",
        "cloud-1: training on Spark:",
        "cloud-1: pipeline training succeeded",
        "edge-1: pipeline inference running",
        "edge-1: canary started with model version",
        "edge-2: promoted model version",
        "injecting drift",
        "DRIFT",
        "ALERT.FIRED drift:",
        "cloud-1: TRIGGER.FIRED: drift above",
        "the retrained model runs on every edge node",
        "stopped; no process left behind",
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    assert "readings scored" in out, out
    assert out.count("cloud-1: pipeline training succeeded") >= 2, out  # trained, retrained
    # Every agent drained and said so before the end.
    assert out.count(": offline") >= 5, out
    # Logs and the monitor's store are kept in the work directory for a look afterwards.
    assert (work / "logs" / "cloud-1.log").exists()
    assert (work / "logs" / "monitor.log").exists()
    import sqlite3

    with contextlib.closing(sqlite3.connect(work / "monitor.db")) as db:
        nodes = dict(db.execute("SELECT node_id, layer FROM nodes").fetchall())
        assert nodes == {
            "cloud-1": "cloud", "gw-1": "gateway",
            "edge-1": "edge", "edge-2": "edge", "edge-3": "edge",
        }  # fmt: skip
        rules = {r for (r,) in db.execute("SELECT rule FROM alerts")}
        assert "drift" in rules, rules
        versions = db.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0]
        assert versions >= 2


def test_demo_stops_on_sigint(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ion.cli.main", "demo", "--work-dir", str(tmp_path / "d")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "edge-3: online" in line or "applied ION" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, rest
    assert "stopped; no process left behind" in rest
