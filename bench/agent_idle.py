"""Idle resident memory and CPU of a node agent with no pipelines, as a real process, against
a bare paho client process idling on the same broker in the same run.

    .venv/bin/python bench/agent_idle.py [--quick] [--warmup 10] [--seconds 30]

The agent runs as ``python -m node run -c FILE`` (default settings: 10 s heartbeat, status
retained, the outbox and inbox in SQLite) against an embedded Mosquitto; once it logs that it
runs, and after ``--warmup`` seconds, its resident set (VmRSS, with any children) and CPU time
(utime + stime) are read from /proc every second for ``--seconds``.  Baseline, measured over
the same seconds: ``python -c`` with a paho client connected (``loop_forever``, keepalive 60)
and nothing else.  Targets (issue 3, item 8d): <= 40 MB RSS and < 1 % CPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import agentbench as ab

_PAHO_IDLE = """
import sys, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-idle-paho")
c.connect(sys.argv[1], int(sys.argv[2]), keepalive=60)
print("connected", flush=True)
c.loop_forever()
"""


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux: /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def rss_bytes(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def cpu_of_tree(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            total += ab.cpu_seconds(p)
        except OSError:
            continue
    return total


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout_s: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"process exited before saying {needle!r} (exit {proc.wait()})")
        if needle in line:
            return
    raise SystemExit(f"no {needle!r} within {timeout_s} s")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (under 30 s)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds measured")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.seconds = 3.0, 10.0
    print(ab.load_note())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp, ab.mosquitto(Path(tmp)) as broker:
        print(f"broker: embedded Mosquitto at {broker.url}")
        cfg = Path(tmp) / "node.yaml"
        cfg.write_text(
            f"node: {{id: idle-1}}\nbroker: {{url: '{broker.url}'}}\n"
            f"data_dir: {Path(tmp) / 'idle-1'}\nlog_level: info\n"
        )
        agent = subprocess.Popen(
            [sys.executable, "-m", "node", "run", "-c", str(cfg)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ab.ROOT, env=env,
        )  # fmt: skip
        paho = subprocess.Popen(
            [sys.executable, "-c", _PAHO_IDLE, broker.connect_host, str(broker.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        try:
            wait_for_line(agent, "running", 30)
            wait_for_line(paho, "connected", 30)
            time.sleep(args.warmup)
            procs = {"agent": agent.pid, "paho": paho.pid}
            rss: dict[str, list[int]] = {n: [] for n in procs}
            cpu0 = {n: cpu_of_tree(p) for n, p in procs.items()}
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.seconds:
                for n, p in procs.items():
                    rss[n].append(rss_bytes(p))
                time.sleep(1.0)
            wall = time.monotonic() - t0
            cpu = {n: (cpu_of_tree(p) - cpu0[n]) / wall for n, p in procs.items()}
            if agent.poll() is not None:
                raise SystemExit(f"the agent exited (code {agent.returncode})")
        finally:
            stop(agent)
            stop(paho)

    mib = 1024 * 1024
    a_rss, p_rss = max(rss["agent"]), max(rss["paho"])
    rows = [
        ("agent RSS (max over the window)", f"{a_rss / mib:.1f} MiB",
         f"median {statistics.median(rss['agent']) / mib:.1f} MiB; "
         f"target <= 40 MB (38.1 MiB): {'met' if a_rss <= 40e6 else 'MISSED'}"),
        ("agent CPU", f"{cpu['agent']:.2%}",
         f"of one core over {wall:.0f} s; "
         f"target < 1 %: {'met' if cpu['agent'] < 0.01 else 'MISSED'}"),
        ("baseline: bare paho client RSS", f"{p_rss / mib:.1f} MiB", ""),
        ("baseline: bare paho client CPU", f"{cpu['paho']:.2%}", ""),
        ("ratio agent / baseline", f"{a_rss / p_rss:.2f}x RSS", ""),
    ]  # fmt: skip
    ab.print_table(
        f"idle agent, no pipelines: {args.seconds:.0f} s measured after {args.warmup:.0f} s",
        rows,
    )


if __name__ == "__main__":
    main()
