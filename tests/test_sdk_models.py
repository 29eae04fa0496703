"""The SDK's model API without an agent: ``publish_model`` writes a request naming the model,
``model_feed`` reads models from ``ION_SDK_INPUT``; and the KMeans example's inference pipeline
run alone (``python -m node.runner --spec FILE``) with a model on disk, as docs/engines.md
shows."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from standalone_support import (
    REPO,
    bodies,
    emitted,
    example_pipeline,
    generate,
    numpy_model,
    stats_of,
    write_spec,
)

from ion.errors import ConfigError, InputError
from ion.model.definition import PipelineMode
from ion.model.event import Event
from ion.model.health import HealthReport, Histogram
from ion.model.local import Delivery
from ion.model.manifest import ModelManifest
from ion.wire.local import frame_from_json
from node import sdk
from node.models.artifact import ModelArtifact
from node.sdk.models import artifact_of, delivery_line

ENV = {"ION_ION": "demo", "ION_PIPELINE": "training", "ION_NODE_ID": "laptop"}


def model_dir(root: Path, name: str = "m1") -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "model.json").write_text("{}")
    return directory


def artifact(path: Path, version: str = "") -> ModelArtifact:
    return ModelArtifact(
        path=path,
        format="kmeans-json/1",
        metrics={"silhouette": 0.75},
        baseline=(Histogram("x", (float("-inf"), 0.0, float("inf")), (3, 4)),),
        annotations={"features": "x"},
        version=version,
    )


# -- publishing --------------------------------------------------------------------------------


def test_publish_model_writes_a_request_naming_the_model(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    model = artifact(model_dir(tmp_path))
    with sdk.connect("publish", environ={**ENV, "ION_SDK_OUTPUT": str(out)}) as client:
        client.publish_model("model", model)
    ((edge, envelope),) = emitted(out)
    assert edge == "model"
    manifest = envelope.body
    assert isinstance(manifest, ModelManifest)
    assert (manifest.ion, manifest.edge, manifest.producer_pipeline) == (
        "demo",
        "model",
        "training",
    )
    assert manifest.annotations["local_path"] == str(model.path.absolute())
    assert manifest.model_id == ""  # an agent would pack and hash it; alone nothing is copied
    # Everything the agent would publish travels: format, metrics, baseline, annotations.
    assert artifact_of(manifest) == model


@pytest.mark.parametrize("what", ["missing", "fifo"])
def test_a_model_that_is_not_a_file_or_directory_is_refused(tmp_path: Path, what: str) -> None:
    path = tmp_path / what
    if what == "fifo":
        os.mkfifo(path)
    out = tmp_path / "out.jsonl"
    client = sdk.connect("publish", environ={"ION_SDK_OUTPUT": str(out)})
    with client, pytest.raises(InputError, match=str(path)):
        client.publish_model("model", artifact(path))
    assert out.read_text() == ""  # as an agent, which refuses before anything is queued


# -- following ---------------------------------------------------------------------------------


def test_a_model_feed_takes_the_newest_model_of_its_edge_from_the_input(tmp_path: Path) -> None:
    first, second = model_dir(tmp_path, "v1"), model_dir(tmp_path, "v2")
    data = sdk.connect(environ={"ION_SDK_OUTPUT": str(tmp_path / "data.jsonl")})
    with data:
        data.emit_data(("x",), [(1.0,)], "readings")
    lines = [
        (tmp_path / "data.jsonl").read_text().strip(),
        delivery_line("model", artifact(first, "1"), delivery_id=1),
        delivery_line("other", artifact(model_dir(tmp_path, "elsewhere"), "9"), delivery_id=2),
        delivery_line("model", artifact(second, "2"), delivery_id=3),
    ]
    given = tmp_path / "input.jsonl"
    given.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    env = {**ENV, "ION_SDK_INPUT": str(given), "ION_SDK_OUTPUT": str(out)}
    with sdk.connect("score", environ=env) as client:
        feed = client.model_feed("model")
        # The whole file was read before model_feed returned: no race with the first batch.
        latest = feed.latest()
        assert latest is not None
        assert (latest.path, latest.version) == (second, "2")
        assert latest == artifact(second, "2")
        assert feed.wait(0) == latest
        feed.accepted(latest, True)
    (event,) = bodies(out, Event)
    assert event.type == "model.accepted"
    assert event.attributes == {"edge": "model", "model_id": "", "version": "2"}
    assert (event.pipeline, event.component) == ("training", "score")


def test_a_training_runs_output_is_the_next_runs_model_input(tmp_path: Path) -> None:
    trained = tmp_path / "model.jsonl"
    model = artifact(model_dir(tmp_path))
    with sdk.connect("publish", environ={"ION_SDK_OUTPUT": str(trained)}) as trainer:
        trainer.publish_model("model", model)
    with sdk.connect("score", environ={"ION_SDK_INPUT": str(trained)}) as scorer:
        assert scorer.model_feed("model").latest() == model


def test_without_an_input_no_model_arrives_and_the_sdk_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with sdk.connect("score", environ={}) as client:
        feed = client.model_feed("model")
        assert feed.latest() is None
        assert feed.wait(5.0) is None  # at once: nothing can arrive
    assert "no ION_SDK_INPUT: no model will arrive on edge 'model'" in caplog.text


def test_a_missing_input_is_a_config_error_before_anything_runs(tmp_path: Path) -> None:
    env = {"ION_SDK_INPUT": str(tmp_path / "nope.jsonl")}
    with sdk.connect("score", environ=env) as client, pytest.raises(ConfigError, match="nope"):
        client.model_feed("model")


def test_the_command_line_prints_a_delivery_for_a_model_on_disk(tmp_path: Path) -> None:
    directory = model_dir(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "node.sdk.models", "--format", "kmeans-json/1", "m1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stderr == ""
    message = frame_from_json(done.stdout).message
    assert isinstance(message, Delivery)
    assert message.edge == "model"
    manifest = message.envelope.body
    assert isinstance(manifest, ModelManifest)
    assert manifest.format == "kmeans-json/1"
    assert manifest.annotations == {"local_path": str(directory)}
    missing = subprocess.run(
        [sys.executable, "-m", "node.sdk.models", "--format", "x/1", "gone"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "gone: no such file or directory" in missing.stderr


# -- the example's inference pipeline, alone ---------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["streaming", "batch"])
def test_the_examples_inference_pipeline_runs_alone_with_a_model_on_disk(
    tmp_path: Path, mode: str
) -> None:
    """examples/kmeans/ion.yaml's inference pipeline with its MQTT source swapped for the
    generator's CSV, the model handed over in ION_SDK_INPUT: every reading is scored with the
    model, anomalies and windowed histograms on the model's baseline bins come out."""
    train = generate(tmp_path / "data", "train", 3000, seed=7)
    generate(tmp_path / "data", "test", 2000, seed=8)
    model = numpy_model(train, tmp_path / "models" / "numpy-1")
    given = tmp_path / "model.jsonl"
    given.write_text(delivery_line("model", model) + "\n")
    pipeline, edges = example_pipeline(
        "inference", replace={"sensors": ("csv_source", {"path": "data/test.csv"})}
    )
    pipeline = dataclasses.replace(pipeline, mode=PipelineMode(mode))
    spec = write_spec(tmp_path / "inference.json", pipeline, edges)
    out = tmp_path / "scores.jsonl"
    env = {
        **os.environ,
        "ION_PIPELINE": "inference",
        "ION_SDK_INPUT": str(given),
        "ION_SDK_OUTPUT": str(out),
        "PYTHONPATH": str(REPO),
    }
    env.pop("ION_AGENT_SOCKET", None)
    done = subprocess.run(
        [sys.executable, "-m", "node.runner", "--spec", str(spec)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # everything went to ION_SDK_OUTPUT
    stats = stats_of(out)
    assert stats["records"] == stats["scored"] == 2000, stats
    assert stats["unscored"] == 0
    assert 0.005 <= stats["anomaly_rate"] <= 0.03, stats  # 1 % injected, threshold at q=0.99
    events = bodies(out, Event)
    assert [e.type for e in events].count("model.accepted") == (mode == "streaming")
    assert sum(e.type == "anomaly.detected" for e in events) == stats["anomalies"]
    health = [h for h in bodies(out, HealthReport) if h.histograms]
    assert health
    assert {h.feature for h in health[-1].histograms} == {b.feature for b in model.baseline}
    for live, base in zip(health[-1].histograms, model.baseline, strict=True):
        assert live.bin_edges == base.bin_edges
    assert sum(h.sample_count for h in health) == 2000
