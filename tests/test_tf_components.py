"""The TensorFlow components for real: a tiny autoencoder trained by the tensorflow engine on
synthetic sensor data, exported to TFLite (plain, dynamic-range and float16), then scored at
"the edge" by ``tflite_score`` in this process (LiteRT only), in batch and streaming mode."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tf_support import (
    BATCH,
    FEATURES,
    REPO,
    TINY_MODEL,
    anomalous_readings,
    child_env,
    comp,
    normal_readings,
    plugin_dir,
    run_job,
    tf_pipe,
    write_csv,
)

from ion.model.definition import PipelineMode
from ion.model.event import DataRecords, Event
from ion.model.health import HealthReport, Histogram, StatsReport
from node.components.tensorflow.batches import as_batch
from node.components.tensorflow.model_format import (
    ERROR_FEATURE,
    KERAS_FORMAT,
    TFLITE_FILE,
    TFLITE_FORMAT,
    AutoencoderMeta,
    ModelFormatError,
    read_meta,
)
from node.components.tensorflow.training import KerasAutoencoderTrain, TfliteExport
from node.components.tflite_score import ReconstructionScores, TfliteScore
from node.components.values import Batch
from node.engines.base import JobSpec
from node.engines.tensorflow_engine import TensorFlowEngine
from node.engines.tfevents import EventTailer
from node.models.artifact import ModelArtifact
from node.runner import Args, ArgsError, Context
from node.runner.component import StopSignal

QUANTIZE = ("none", "dynamic", "float16")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tensorflow job: train, export three ways, score held-out data inside the job too."""
    root = tmp_path_factory.mktemp("tf-components")
    work = root / "work"
    rng = np.random.default_rng(11)
    write_csv(work / "train.csv", normal_readings(600, rng))
    write_csv(
        work / "test.csv", np.vstack([normal_readings(200, rng), anomalous_readings(50, rng)])
    )
    pipeline = tf_pipe(
        "train",
        BATCH,
        comp("read", "test_csv", {"path": "train.csv"}),
        comp("fit", "keras_autoencoder_train", TINY_MODEL, "data=read.data"),
        comp("keras", "artifact_sink", {"path": "keras.json"}, "model=fit.model"),
        *(
            c
            for q in QUANTIZE
            for c in (
                comp(f"export-{q}", "tflite_export", {"quantize": q}, "model=fit.model"),
                comp(
                    f"sink-{q}", "artifact_sink", {"path": f"{q}.json"}, f"model=export-{q}.model"
                ),
            )
        ),
        comp("held-out", "test_csv", {"path": "test.csv"}),
        comp("score", "tflite_score", {}, "data=held-out.data", "model=export-none.model"),
        comp("scores", "scores_sink", {"path": "scores.json"}, "in=score.data"),
    )
    spec = JobSpec(
        ion="tf-test",
        pipeline=pipeline,
        node_id="node-1",
        work_dir=work,
        env=child_env(plugin_dir(root / "plugins")),
    )
    exit = asyncio.run(run_job(TensorFlowEngine(), spec))
    assert exit.ok, "\n".join(exit.tail)
    return {
        "work": work,
        "tail": exit.tail,
        "models": {n: json.loads((work / f"{n}.json").read_text()) for n in ("keras", *QUANTIZE)},
        "scores": json.loads((work / "scores.json").read_text()),
    }


def artifact(doc: dict[str, Any], version: str = "v1") -> ModelArtifact:
    return ModelArtifact(
        path=Path(doc["path"]),
        format=doc["format"],
        metrics=doc["metrics"],
        baseline=tuple(
            Histogram(h["feature"], tuple(h["bin_edges"]), tuple(h["counts"]), h["missing"])
            for h in doc["baseline"]
        ),
        annotations=doc["annotations"],
        model_id=f"id-{version}",
        version=version,
    )


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    with StopSignal() as stop:
        yield Context(
            ion="tf-test",
            pipeline="inference",
            component="score",
            node_id="edge-1",
            version=1,
            mode=PipelineMode.STREAMING,
            work_dir=tmp_path,
            bound_inputs=frozenset({"data", "model"}),
            log=logging.getLogger("component.score"),
            stop_signal=stop,
        )


class Feed:
    """A ModelFeed whose active version the test sets."""

    def __init__(self) -> None:
        self.current: ModelArtifact | None = None
        self.reports: list[tuple[str, bool, str]] = []

    def latest(self) -> ModelArtifact | None:
        return self.current

    def wait(self, timeout: float | None = None) -> ModelArtifact | None:
        return self.current

    def accepted(self, artifact: ModelArtifact, ok: bool, detail: str = "") -> None:
        self.reports.append((artifact.version, ok, detail))


def batch_of(values: np.ndarray) -> Batch:
    return Batch.of(FEATURES, values)


# Training and export -----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_training_produces_a_keras_artifact_with_metrics_and_baseline(
    trained: dict[str, Any],
) -> None:
    doc = trained["models"]["keras"]
    assert doc["format"] == KERAS_FORMAT
    metrics = doc["metrics"]
    assert {"loss", "val_loss", "threshold", "train_rows", "epochs"} <= set(metrics)
    assert metrics["epochs"] == TINY_MODEL["epochs"]
    assert metrics["train_rows"] == 480  # 600 rows, a fifth held out for val_loss
    assert metrics["val_loss"] < 0.05  # the curve is learnt
    assert [h["feature"] for h in doc["baseline"]] == [*FEATURES, ERROR_FEATURE]
    assert all(sum(h["counts"]) == 600 for h in doc["baseline"])
    meta = read_meta(Path(doc["path"]), KERAS_FORMAT)
    assert meta.features == FEATURES
    assert meta.threshold == pytest.approx(metrics["threshold"])
    assert (Path(doc["path"]) / "model.keras").is_file()
    assert "tensorflow 2." in doc["annotations"]["framework"]
    # Every epoch went to TensorBoard, readable without TensorFlow.
    tailer = EventTailer(trained["work"] / "tensorboard")
    while tailer.poll():
        pass
    run = next(iter(k for k in tailer.values() if k.endswith("/epoch_loss")))
    assert tailer.latest[run].step == TINY_MODEL["epochs"] - 1


@pytest.mark.integration
@pytest.mark.slow
def test_export_writes_tflite_models_that_match_keras(trained: dict[str, Any]) -> None:
    sizes = {}
    for q in QUANTIZE:
        doc = trained["models"][q]
        assert doc["format"] == TFLITE_FORMAT
        meta = read_meta(Path(doc["path"]), TFLITE_FORMAT)
        assert meta.quantize == q
        assert doc["metrics"]["threshold"] == trained["models"]["keras"]["metrics"]["threshold"]
        assert len(doc["baseline"]) == len(FEATURES) + 1
        sizes[q] = doc["metrics"]["tflite_bytes"]
        assert (Path(doc["path"]) / TFLITE_FILE).stat().st_size == sizes[q]
        # Unquantised, TFLite computes what Keras does; quantised, close to it.
        limit = 1e-4 if q == "none" else 0.1
        assert doc["metrics"]["tflite_max_abs_diff"] < limit, (q, doc["metrics"])
    assert sizes["dynamic"] <= sizes["none"]


@pytest.mark.integration
@pytest.mark.slow
def test_the_tflite_scorer_runs_inside_the_tensorflow_engine(trained: dict[str, Any]) -> None:
    scores = trained["scores"]
    assert scores["type"] == "ReconstructionScores"
    assert scores["rows"] == 250
    assert 45 <= scores["anomalies"] <= 55  # the 50 anomalies, give or take a normal row


# Scoring at the edge ----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("quantize", QUANTIZE)
def test_batch_scoring_flags_the_anomalies(
    trained: dict[str, Any], ctx: Context, quantize: str
) -> None:
    scorer = TfliteScore(Args({"window": "1m"}), ctx)
    rng = np.random.default_rng(5)
    normal, odd = normal_readings(1000, rng), anomalous_readings(200, rng)
    out = scorer.run(
        {"data": batch_of(np.vstack([normal, odd])), "model": artifact(trained["models"][quantize])}
    )
    scores: ReconstructionScores = out["data"]
    assert scores.rows == 1200
    false_alarms = float(scores.anomaly[:1000].mean())
    caught = float(scores.anomaly[1000:].mean())
    assert false_alarms < 0.03, false_alarms
    assert caught > 0.9, caught
    stats: StatsReport = out["stats"]
    scalars = {m.name: m.value for m in stats.scalars}
    assert scalars["records"] == 1200
    assert scalars["anomalies"] == scores.anomalies
    health: HealthReport = out["health"]
    assert [h.feature for h in health.histograms] == [*FEATURES, ERROR_FEATURE]
    assert health.sample_count == 1200
    assert all(h.total == 1200 for h in health.histograms)
    events: list[Event] = out["events"]
    assert len(events) == 101  # max_events one by one, then one summing up the rest
    assert {e.type for e in events[:-1]} == {"anomaly.detected"}
    assert events[-1].type == "anomaly.suppressed"
    assert float(events[0].attributes["error"]) > float(events[0].attributes["threshold"])


@pytest.mark.integration
@pytest.mark.slow
def test_streaming_swaps_models_between_batches_and_refuses_bad_ones(
    trained: dict[str, Any], ctx: Context, tmp_path: Path
) -> None:
    scorer = TfliteScore(Args({"window": "10s", "max_events": 5}), ctx)
    now = [1000.0]
    scorer.clock = lambda: now[0]
    feed = Feed()
    v1 = artifact(trained["models"]["none"], "v1")
    v2 = artifact(trained["models"]["float16"], "v2")
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    (broken_dir / "meta.json").write_text((v1.path / "meta.json").read_text())
    (broken_dir / TFLITE_FILE).write_bytes(b"not a flatbuffer")
    broken = ModelArtifact(broken_dir, TFLITE_FORMAT, model_id="id-v3", version="v3")
    rng = np.random.default_rng(9)

    def source() -> Iterator[Batch]:
        yield batch_of(normal_readings(20, rng))  # no model yet: not scored
        feed.current = v1
        yield batch_of(np.vstack([normal_readings(40, rng), anomalous_readings(10, rng)]))
        now[0] += 11  # the window is over: the next item closes it
        yield Batch.empty(FEATURES)
        feed.current = v2
        yield batch_of(normal_readings(30, rng))
        feed.current = broken
        yield batch_of(anomalous_readings(3, rng))
        yield batch_of(normal_readings(10, rng))

    out = list(scorer.stream({"data": source(), "model": feed}))
    by_port: dict[str, list[Any]] = {}
    for port, value in out:
        by_port.setdefault(port, []).append(value)
    assert feed.reports[:2] == [("v1", True, ""), ("v2", True, "")]
    assert feed.reports[2][:2] == ("v3", False)  # refused once, and the previous model kept
    assert len(feed.reports) == 3
    assert [s.model_version for s in by_port["data"]] == ["v1", "v2", "v2", "v2"]
    stats = [{m.name: m.value for m in s.scalars} for s in by_port["stats"]]
    assert [s["records"] for s in stats] == [70, 43]  # closed by the tick, then by the end
    assert stats[0]["unscored"] == 20
    assert stats[0]["anomalies"] >= 9
    assert stats[1]["model_swaps"] == 1
    health = by_port["health"]
    assert [h.model_version for h in health] == ["v1", "v2"]
    # Histograms use the baseline's bins, so they merge and compare with it exactly.
    baseline = {h.feature: h.bin_edges for h in v1.baseline}
    assert all(h.bin_edges == baseline[h.feature] for r in health for h in r.histograms)
    types = [e.type for e in by_port["events"]]
    # The first window: max_events one by one, then one event summing up the rest.
    assert types[:6] == ["anomaly.detected"] * 5 + ["anomaly.suppressed"]
    assert types[6:].count("anomaly.detected") >= 3  # the second window's three anomalies


@pytest.mark.integration
@pytest.mark.slow
def test_a_network_that_does_not_fit_its_meta_is_refused(
    trained: dict[str, Any], ctx: Context, tmp_path: Path
) -> None:
    source = Path(trained["models"]["none"]["path"])
    meta = json.loads((source / "meta.json").read_text())
    meta.update(features=meta["features"][:3], mean=meta["mean"][:3], std=meta["std"][:3])
    del meta["feature_edges"][FEATURES[3]]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / TFLITE_FILE).write_bytes((source / TFLITE_FILE).read_bytes())
    scorer = TfliteScore(Args({}), ctx)
    feed = Feed()
    feed.current = ModelArtifact(tmp_path, TFLITE_FORMAT, model_id="x", version="v9")
    out = list(
        scorer.stream(
            {"data": iter([batch_of(normal_readings(5, np.random.default_rng()))]), "model": feed}
        )
    )
    assert feed.reports == [("v9", False, feed.reports[0][2])]
    assert "does not take rows of 3 float32 features" in feed.reports[0][2]
    stats = {m.name: m.value for m in out[0][1].scalars}
    assert stats["unscored"] == 5


@pytest.mark.integration
@pytest.mark.slow
def test_the_edge_scorer_never_loads_tensorflow(trained: dict[str, Any]) -> None:
    script = textwrap.dedent(
        f"""
        import logging, sys
        from pathlib import Path
        import numpy as np
        from ion.model.definition import PipelineMode
        from node.components.tflite_score import TfliteScore
        from node.models.artifact import ModelArtifact
        from node.components.values import Batch
        from node.runner import Args, Context
        from node.runner.component import StopSignal
        ctx = Context("i", "p", "c", "n", 1, PipelineMode.BATCH, Path("."), frozenset(),
                      logging.getLogger("c"), StopSignal())
        model = ModelArtifact(Path({str(trained["models"]["none"]["path"])!r}),
                              "tflite-autoencoder/1")
        data = Batch.of({list(FEATURES)!r}, np.zeros((5, 4)) + [20, 50, 1000, 0.5])
        out = TfliteScore(Args({{}}), ctx).run({{"data": data, "model": model}})
        assert out["data"].rows == 5
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        print("heavy:", heavy)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "heavy: []" in done.stdout


# Arguments, formats and values (no TensorFlow) ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"hidden": [0]}, "argument 'hidden' must be a list"),
        ({"hidden": []}, "argument 'hidden' must be a list"),
        ({"hidden": "32,16"}, "argument 'hidden' must be a list"),
        ({"hidden": [True]}, "argument 'hidden' must be a list"),
        ({"epochs": 0}, "argument 'epochs' must be at least 1"),
        ({"threshold_quantile": 0}, "'threshold_quantile' must be above 0"),
        ({"threshold_quantile": 1.5}, "'threshold_quantile' must be at most 1"),
        ({"learning_rate": 0}, "'learning_rate' must be above 0"),
    ],
)
def test_trainer_arguments_are_checked(ctx: Context, args: dict[str, Any], message: str) -> None:
    with pytest.raises(ArgsError, match=message):
        KerasAutoencoderTrain(Args(args), ctx)


def test_trainer_defaults_follow_the_catalog(ctx: Context) -> None:
    from ion.catalog import builtin_catalog

    spec = builtin_catalog().get("keras_autoencoder_train")
    assert spec is not None
    settings = KerasAutoencoderTrain(Args({}), ctx).settings
    for name, arg in spec.args.items():
        default = arg.default
        assert getattr(settings, name) == (tuple(default) if isinstance(default, list) else default)
    with pytest.raises(ArgsError, match="must be one of none, dynamic, float16"):
        TfliteExport(Args({"quantize": "int8"}), ctx)


def test_export_refuses_other_model_formats(ctx: Context, tmp_path: Path) -> None:
    kmeans = ModelArtifact(tmp_path, "kmeans-json/1")
    with pytest.raises(ModelFormatError, match="converts keras-autoencoder/1 models"):
        TfliteExport(Args({}), ctx).run({"model": kmeans})


def _meta_doc() -> dict[str, Any]:
    return {
        "format": TFLITE_FORMAT,
        "features": ["a", "b"],
        "mean": [0.0, 1.0],
        "std": [1.0, 2.0],
        "threshold": 0.5,
        "threshold_quantile": 0.99,
        "feature_edges": {"a": [0.0, 1.0]},
        "error_edges": [0.1, 0.2],
        "quantize": "none",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "pickle/1"}, "unknown model format"),
        ({"features": ["a", "a"]}, "distinct"),
        ({"mean": [0.0]}, "mean must hold 2"),
        ({"std": [1.0, 0.0]}, "std must be positive"),
        ({"threshold": "high"}, "expected a number"),
        ({"threshold": True}, "expected a number"),
        ({"error_edges": [0.2, 0.1]}, "strictly increasing"),
        ({"feature_edges": {"z": [1.0]}}, "unknown features"),
        ({"quantize": "int4"}, "unknown quantize"),
        ({"code": "import os"}, "unknown keys"),
    ],
)
def test_meta_json_is_read_strictly(change: dict[str, Any], message: str) -> None:
    assert AutoencoderMeta.from_json(_meta_doc()).features == ("a", "b")
    with pytest.raises(ModelFormatError, match=message):
        AutoencoderMeta.from_json({**_meta_doc(), **change})


def test_a_model_directory_of_the_wrong_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text(json.dumps(_meta_doc()))
    assert read_meta(tmp_path, TFLITE_FORMAT).threshold == 0.5
    with pytest.raises(ModelFormatError, match="not 'keras-autoencoder/1'"):
        read_meta(tmp_path, KERAS_FORMAT)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="cannot read"):
        read_meta(tmp_path, TFLITE_FORMAT)


def test_accepted_data_forms() -> None:
    b = Batch.of(("a", "b"), [[1.0, 2.0]])
    assert as_batch(b) is b
    stacked = as_batch([b, Batch.of(("b", "a"), [[4.0, 3.0]])])
    assert stacked.features == ("a", "b")
    assert stacked.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    records = as_batch([{"a": 1, "id": "x", "ok": True}, {"b": 2.5, "a": None}])
    assert records.features == ("a", "b")
    assert np.isnan(records.values[0, 1])
    assert np.isnan(records.values[1, 0])
    data = as_batch(DataRecords(columns=("a", "b"), values=(1.0, 2.0, 3.0, 4.0)))
    assert data.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(TypeError, match="data must be a Batch"):
        as_batch("1,2,3")


def test_scores_travel_as_data_records() -> None:
    batch = Batch.of(("a",), [[1.0], [2.0]], timestamps_ms=[10, 20])
    scores = ReconstructionScores(
        batch, np.array([0.1, np.nan]), np.array([False, False]), threshold=0.5
    )
    records = scores.to_data_records()
    assert records.columns == ("a", "score", "anomaly")
    assert records.row(0) == (1.0, 0.1, 0.0)
    assert np.isnan(records.row(1)[1])
    assert records.timestamps_ms == (10, 20)
