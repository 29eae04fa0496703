"""A model made by a pipeline on one node reaches a running pipeline on another and is
hot-swapped in, through both agents' local sockets and the model exchange (real everything).

The test components live in a plugin installed for the test (an entry point on PYTHONPATH),
the way third-party components are found by the runner.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_support import apply, node_config
from support import async_wait_until
from support.pipelines import install_plugin

from ion.model.definition import (
    Component,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    PortBinding,
)
from node.agent.service import Agent

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

PLUGIN = '''
import json, time
from pathlib import Path
from node.models.artifact import ModelArtifact
from node.runner.component import Component


class FileModel(Component):
    """Batch: writes a directory model holding `value`, returns it."""
    output_ports = ("model",)

    def __init__(self, args, ctx):
        super().__init__(args, ctx)
        self.value = args.get_int("value")

    def run(self, inputs):
        out = self.ctx.work_dir / f"model-{self.value}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.json").write_text(json.dumps({"value": self.value}))
        (out / "weights.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB: several chunks
        return ModelArtifact(out, "test-model/1", metrics={"quality": self.value / 10})


class ModelEcho(Component):
    """Streaming: notes every model version it sees (loading it), reports acceptance."""
    input_ports = ("model",)
    output_ports = ()

    def __init__(self, args, ctx):
        super().__init__(args, ctx)
        self.reject = args.get_int("reject", -1)

    def stream(self, inputs):
        feed = inputs["model"]
        seen = None
        while self.ctx.sleep(0.05):
            m = feed.latest()
            if m is not None and m.model_id != seen:
                seen = m.model_id
                value = json.loads((m.path / "model.json").read_text())["value"]
                ok = value != self.reject
                with open(self.ctx.work_dir / "seen.jsonl", "a") as f:
                    f.write(json.dumps({"value": value, "version": m.version,
                                        "format": m.format, "ok": ok,
                                        "quality": m.metrics.get("quality")}) + "\\n")
                feed.accepted(m, ok, "" if ok else "value refused")
            yield None
'''

ENTRY_POINTS = {"file_model": "ion_modelplug:FileModel", "model_echo": "ion_modelplug:ModelEcho"}


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = install_plugin(
        tmp_path / "plugins", "ion-modelplug", ENTRY_POINTS, module="ion_modelplug", source=PLUGIN
    )
    monkeypatch.setenv("PYTHONPATH", str(root))


def model_ion(value: int, reject: int = -1) -> IonDefinition:
    train = Pipeline(
        name="train",
        engine="python",
        role=PipelineRole.TRAINING,
        mode=PipelineMode.BATCH,
        placement=Placement(nodes=("cloud",)),
        components=(Component("make", "file_model", {"value": value}),),
    )
    serve = Pipeline(
        name="serve",
        engine="python",
        role=PipelineRole.INFERENCE,
        mode=PipelineMode.STREAMING,
        placement=Placement(nodes=("edge",)),
        components=(
            Component("model", "model_subscriber"),
            Component(
                "echo", "model_echo", {"reject": reject}, (PortBinding("model", "model", "model"),)
            ),
        ),
    )
    return IonDefinition(
        name="models",
        pipelines=(train, serve),
        edges=(
            Edge(
                "weights",
                EdgeKind.MODEL,
                Endpoint("train", "make", "model"),
                (Endpoint("serve", "model", "model"),),
            ),
        ),
    )


def seen(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_a_trained_model_reaches_a_running_pipeline_and_is_hot_swapped(
    plugin: None, fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    async with (
        Agent(node_config("cloud", url, tmp_path)) as cloud,
        Agent(node_config("edge", url, tmp_path)) as edge,
    ):
        await cloud.link.wait_connected()
        await edge.link.wait_connected()
        await apply(url, model_ion(1))
        out = tmp_path / "edge" / "work" / "models" / "serve" / "seen.jsonl"
        await async_wait_until(lambda: len(seen(out)) >= 1, 60)
        first = seen(out)[0]
        assert first["value"] == 1
        assert first["format"] == "test-model/1"
        assert first["quality"] == pytest.approx(0.1)
        assert first["ok"]
        serve_pid = edge._pipelines.running_jobs()[("models", "serve")].pid

        # A new version of the ION retrains; the running consumer swaps without a restart.
        await apply(url, model_ion(2))
        await async_wait_until(lambda: len(seen(out)) >= 2, 60)
        assert [s["value"] for s in seen(out)] == [1, 2]
        assert int(seen(out)[1]["version"]) > int(first["version"])
        assert edge._pipelines.running_jobs()[("models", "serve")].pid == serve_pid
        active = edge.models.active("models", "weights")
        assert active is not None
        assert json.loads((active.path / "model.json").read_text()) == {"value": 2}


async def test_a_version_the_pipeline_rejects_is_rolled_back(
    plugin: None, fresh_mosquitto: Any, tmp_path: Path
) -> None:
    url = fresh_mosquitto.url
    async with (
        Agent(node_config("cloud", url, tmp_path)) as cloud,
        Agent(node_config("edge", url, tmp_path)) as edge,
    ):
        await cloud.link.wait_connected()
        await edge.link.wait_connected()
        await apply(url, model_ion(1, reject=2))
        out = tmp_path / "edge" / "work" / "models" / "serve" / "seen.jsonl"
        await async_wait_until(lambda: len(seen(out)) >= 1, 60)
        await apply(url, model_ion(2, reject=2))
        # Version 2 is refused by the pipeline, the node rolls back to 1, and the pipeline
        # (restarted with the new ION version) is handed 1 again.
        await async_wait_until(
            lambda: (
                (a := edge.models.active("models", "weights")) is not None
                and json.loads((a.path / "model.json").read_text()) == {"value": 1}
                and any(s["value"] == 2 and not s["ok"] for s in seen(out))
            ),
            60,
        )
