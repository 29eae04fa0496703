"""``ion demo``: the KMeans example on one machine, with real agents, Spark and simulated devices.

What happens, printed as it happens:

1. an embedded broker starts on 127.0.0.1;
2. a second broker for the gateway, and five node agents as child processes: ``cloud-1``
   (tier=cloud) on the cloud broker, the gateway ``gw-1`` relaying between its local broker and
   the cloud one, and ``edge-1..3`` (tier=edge) behind it, each with its own data directory
   under the demo's work directory;
3. training data is generated for the cloud node, and the ION is applied (signed with a
   throw-away operator key the nodes are told to trust);
4. the monitor starts with its dashboard (its address and a token are printed);
5. Spark trains KMeans on the cloud node (its progress is shown) and publishes the model; the
   edge nodes take it under the edge's canary policy (edge-1 first, the others once its
   health held) and hot-swap it into their running inference pipelines, fed by simulated
   devices behind the gateway; a sample of the readings goes back to the cloud's recorder;
6. after ``drift_after`` seconds of scoring the devices start to wear (drift): the edge nodes
   notice on their own and raise drift events, the monitor raises drift alerts, and the
   ION's retrain trigger starts training again on the recent readings; the new model rolls
   out under the same policy and drift falls back;
7. on Ctrl-C (or after ``duration``, or with ``until_retrained`` once the new model runs on
   every edge node) everything stops and no process is left behind.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ion.errors import InputError
from ion.model.definition import IonDefinition
from node.demo import (
    REPO_ROOT,
    DemoFleet,
    DemoNode,
    FleetView,
    become_subreaper,
    reap_orphans,
)

DEFAULT_ION = REPO_ROOT / "examples" / "kmeans" / "ion.yaml"
EDGES = 3
GATEWAY = "gw-1"


@contextlib.contextmanager
def _devices(url: str, drift_file: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own example program
            [
                sys.executable,
                str(REPO_ROOT / "examples" / "kmeans" / "devices.py"),
                "--broker",
                url,
                "--devices",
                "6",
                "--rate",
                "20",
                "--anomaly-rate",
                "0.01",
                "--drift-file",
                str(drift_file),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _relay_for(definition: IonDefinition, nodes: list[DemoNode]) -> dict[str, list[str]]:
    """The gateway's relay lists as `ion deploy` plans them from the ION's placements (the
    defaults, plus what must cross: here the `fresh` data edge going up)."""
    from broker.deploy.placement import place
    from broker.deploy.relayplan import relay_plan
    from ion.validate.inventory import Inventory, InventoryNode

    inventory = Inventory(
        nodes=tuple(InventoryNode(n.node_id, n.labels, n.layer, n.parent) for n in nodes)
    )
    plan, problems = relay_plan(GATEWAY, inventory, place([definition], inventory))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise InputError(f"the demo's gateway cannot relay this ION: {errors[0]}")
    return {"up": list(plan.up), "down": list(plan.down)}


@contextlib.contextmanager
def _monitor(
    url: str, root: Path, port: int, token: str, key_file: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``ion monitor`` with its dashboard, as a child process; yields it and the address."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:  # taken: any free port will do
            probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (root / "logs").mkdir(parents=True, exist_ok=True)
    log = (root / "logs" / "monitor.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own command
        [
            sys.executable,
            "-m",
            "ion.cli.main",
            "monitor",
            "--broker",
            url,
            "--db",
            str(root / "monitor.db"),
            "--http",
            f"127.0.0.1:{port}",
            "--token",
            token,
            "--key",
            str(key_file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        start_new_session=True,
    )
    log.close()
    try:
        yield proc, f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()  # SIGTERM: commits what it has and closes the store
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(address: str, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Whether the dashboard answers ``/healthz`` within ``timeout_s`` (not once ``proc``,
    which serves it, has exited)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(address + "healthz", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False


def _generate(out: Path, rows: int, *, name: str) -> None:
    subprocess.run(  # noqa: S603 - our own example program
        [
            sys.executable,
            str(REPO_ROOT / "examples" / "kmeans" / "generate.py"),
            "--out",
            str(out),
            "--rows",
            str(rows),
            "--name",
            name,
        ],
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def _watch(host: str, port: int, view: FleetView) -> Iterator[None]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ion-demo-view-{time.time_ns()}")

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe("ion/v1/#", qos=1)

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        view.on_message(msg.topic, bytes(msg.payload))

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    try:
        yield
    finally:
        client.disconnect()
        client.loop_stop()


def run_demo(
    *,
    ion_file: Path,
    port: int,
    duration: float | None,
    drift_after: float,
    work_dir: Path | None,
    say: Callable[[str], None],
    stop: threading.Event,
    dashboard_port: int = 8321,
    until_retrained: bool = False,
) -> int:
    """Run the demo until ``stop`` is set or ``duration`` passed; returns the exit status."""
    started = time.monotonic()
    become_subreaper()
    try:
        status = _run(
            ion_file=ion_file,
            port=port,
            duration=duration,
            drift_after=drift_after,
            work_dir=work_dir,
            say=say,
            stop=stop,
            started=started,
            dashboard_port=dashboard_port,
            until_retrained=until_retrained,
        )
    finally:
        reap_orphans()
    # Said however the run ended (Ctrl-C while the agents start up included), once every
    # child is gone.
    say("stopped; no process left behind")
    return status


def _run(
    *,
    ion_file: Path,
    port: int,
    duration: float | None,
    drift_after: float,
    work_dir: Path | None,
    say: Callable[[str], None],
    stop: threading.Event,
    started: float,
    dashboard_port: int,
    until_retrained: bool,
) -> int:
    from broker.embedded import start_broker
    from ion.authoring import load_ion_file
    from ion.client import definitions
    from ion.client.session import connect
    from ion.config.broker import parse_broker_url
    from ion.security.keys import SigningKey
    from ion.validate import validate_parsed

    def expired() -> bool:
        return stop.is_set() or (duration is not None and time.monotonic() - started > duration)

    parsed = load_ion_file(ion_file)
    errors = [p for p in validate_parsed(parsed).problems if p.severity == "error"]
    if errors or parsed.definition is None:
        for p in errors:
            say(f"error: {p}")
        return 2
    definition = parsed.definition
    with contextlib.ExitStack() as stack:
        root = work_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="ion-demo-"))
        )
        root.mkdir(parents=True, exist_ok=True)
        say(f"work directory {root} (node data, logs)")
        broker = stack.enter_context(start_broker(port=port, data_dir=root / "broker"))
        say(f"cloud broker ({broker.kind}) listening at {broker.url}")
        # The gateway's own local broker: the edge nodes and the devices sit behind it, and
        # the gateway relays between it and the cloud broker through its durable outbox.
        local = stack.enter_context(start_broker(data_dir=root / "gateway-broker"))
        say(f"gateway broker ({local.kind}) listening at {local.url}")
        key = SigningKey.generate()
        nodes = [
            DemoNode("cloud-1", {"tier": "cloud"}, layer="cloud"),
            DemoNode(
                GATEWAY,
                {"tier": "gateway"},
                layer="gateway",
                broker_url=local.url,
                upstream_url=broker.url,
            ),
        ] + [
            DemoNode(
                f"edge-{i}", {"tier": "edge"}, layer="edge", parent=GATEWAY, broker_url=local.url
            )
            for i in range(1, EDGES + 1)
        ]
        edge_ids = [n.node_id for n in nodes if n.layer == "edge"]
        # One throw-away key signs the ION (operator) and the cloud node's models (producer);
        # every node trusts it for both.
        key_file = root / "demo-signing.key"
        key_file.write_bytes(key.to_pem())
        key_file.chmod(0o600)
        trusted = f"{key.public.text()} operator,producer demo"
        fleet = DemoFleet(
            broker.url,
            root,
            nodes,
            extra_config={"trust": {"keys": [trusted]}},
            per_node={
                "cloud-1": {"trust": {"keys": [trusted], "signing_key": str(key_file)}},
                GATEWAY: {"relay": _relay_for(definition, nodes)},
            },
        )
        view = FleetView(say)
        stack.enter_context(_watch(broker.host, broker.port, view))
        token = secrets.token_urlsafe(9)
        monitor, address = stack.enter_context(
            _monitor(broker.url, root, dashboard_port, token, key_file)
        )
        if _answers(address, monitor, 30):
            say(f"dashboard at {address} (token {token} for approve/reject/rollback)")
        else:
            say(f"warning: the monitor's dashboard did not answer; see {root / 'logs'}")
        # Training reads the recorder's window of recent readings; the generated set seeds it
        # and the edge nodes' samples push it out (see examples/kmeans/ion.yaml).
        window_dir = fleet.data_dir("cloud-1") / "work" / definition.name / "recorder"
        say("generating training data (20,000 sensor readings with 1 % anomalies)")
        _generate(window_dir, 20_000, name="window")
        say(
            f"starting {len(nodes)} node agents: cloud-1 on the cloud broker, {GATEWAY} "
            f"relaying, {', '.join(n.node_id for n in nodes[2:])} behind {GATEWAY}"
        )
        stack.enter_context(fleet)
        deadline = time.monotonic() + 60
        while len(view.online()) < len(nodes) and time.monotonic() < deadline:
            if expired():
                return 0
            if not fleet.alive():
                say(f"error: the node agents exited; see {root / 'logs'}")
                return 1
            time.sleep(0.2)
        cfg = parse_broker_url(broker.url)
        with connect(cfg, client_prefix="ion-demo") as session:
            plan = definitions.plan_apply(
                definition,
                definitions.fetch(session, definition.name),
                now_ms=time.time_ns() // 1_000_000,
                operator="demo",
            )
            if plan.definition is not None:
                definitions.publish(
                    session, plan.definition, now_ms=time.time_ns() // 1_000_000, key=key
                )
                say(
                    f"applied ION {definition.name!r} version {plan.definition.version}, "
                    f"signed by the demo operator key {key.key_id}; Spark is starting on "
                    "cloud-1 (the first run takes a minute)"
                )
        drift_file = root / "drift"
        stack.enter_context(_devices(local.url, drift_file, root / "logs" / "devices.log"))
        say(
            f"6 simulated devices publish sensor readings on sensors/<device>/readings to the "
            f"{GATEWAY} broker"
        )
        scoring_since: float | None = None
        drifting = False
        last_summary = time.monotonic()
        while not expired():
            time.sleep(0.5)
            if not fleet.alive():
                say("error: every node agent has exited; see the logs")
                return 1
            if monitor.poll() is not None:
                view.once("monitor-exit", f"warning: the monitor exited; see {root / 'logs'}")
            if scoring_since is None and any(v > 0 for v in dict(view.scored).values()):
                scoring_since = time.monotonic()
                say(f"the edge is scoring; drift is injected in {drift_after:.0f} s")
            if (
                not drifting
                and scoring_since is not None
                and time.monotonic() - scoring_since > drift_after
            ):
                drift_file.write_text("1")
                drifting = True
                say("injecting drift: the devices' readings shift (wear)")
            if until_retrained and view.retrained_everywhere(edge_ids):
                say("the retrained model runs on every edge node: the loop is closed")
                break
            if time.monotonic() - last_summary > 15:
                last_summary = time.monotonic()
                for line in view.summary():
                    say(line)
        say("stopping: node agents drain and stop their pipelines")
    return 0
