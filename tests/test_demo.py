"""The README's main command, run for a short while: every step a newcomer should see happens.

``ion demo`` starts its own broker, four node agents (child processes), Spark training,
simulated devices; the test checks the printed story and that nothing is left running (the
suite's leak check also fails the test on any leftover process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_the_example_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ion.cli.main",
            "demo",
            "--duration",
            "200",
            "--drift-after",
            "75",
            "--work-dir",
            str(work),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=330,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for expected in (
        "broker (",
        "cloud-1: online",
        "edge-3: online",
        "applied ION 'kmeans-anomaly' version 1, signed",
        "cloud-1: pipeline training succeeded",
        "edge-1: pipeline inference running",
        "injecting drift",
        "stopped; no process left behind",
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    assert "model version" in out, out  # activated / accepted on an edge node
    assert "readings scored" in out, out
    # The drift is noticed on the edge: a drift event, or a canary rolled back because of it.
    assert "DRIFT" in out or "rolled_back" in out, out
    # Every agent drained and said so before the end.
    assert out.count(": offline") >= 4, out
    # Logs are kept in the work directory for a look afterwards.
    assert (work / "logs" / "cloud-1.log").exists()


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
