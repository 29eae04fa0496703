"""The KMeans example's components: Spark training (real Spark, local[1]) and edge scoring.

Pure-python tests first (a hand-made model), then one Spark session for the module that trains
on a generated CSV through the components themselves, as a Spark job would.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from ion.model.definition import PipelineMode
from ion.model.event import Event, Severity
from ion.model.health import HealthReport, Histogram, Metric, StatsReport
from node.components.common import ModelPublisher
from node.components.csv_source import CsvSource
from node.components.health import FeatureHistograms, HealthReporter
from node.components.kmeans import KMeansScore
from node.components.kmeans_model import FORMAT, KMeansModel, ModelFormatError
from node.components.python_builtins import PYTHON_BUILTINS
from node.components.sinks import EventSink
from node.components.values import Batch, ScoredBatch
from node.models.artifact import ModelArtifact, ModelFeed
from node.runner.component import Args, ArgsError, Context, StopSignal, ports_of

REPO = Path(__file__).resolve().parents[1]


def load_example(name: str) -> ModuleType:
    """examples/kmeans/<name>.py under a name no other example clashes with."""
    module_name = f"ion_example_kmeans_{name}"
    if module_name not in sys.modules:
        path = REPO / "examples" / "kmeans" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


gen = load_example("generate")


@pytest.fixture
def stop() -> Iterator[StopSignal]:
    with StopSignal() as signal:
        yield signal


def make_ctx(
    work_dir: Path, stop: StopSignal, mode: PipelineMode = PipelineMode.STREAMING, name: str = "c"
) -> Context:
    return Context(
        ion="kmeans-anomaly",
        pipeline="inference",
        component=name,
        node_id="edge-1",
        version=1,
        mode=mode,
        work_dir=work_dir,
        bound_inputs=frozenset(),
        log=logging.getLogger(f"test.{name}"),
        stop_signal=stop,
    )


def build(cls: Any, args: dict[str, Any], ctx: Context) -> Any:
    """Construct like the runner does: every argument must be read."""
    a = Args(args)
    component = cls(a, ctx)
    assert a.unread() == []
    return component


class FakeFeed:
    """A ModelFeed whose current version the test sets."""

    def __init__(self, current: ModelArtifact | None = None) -> None:
        self.current = current
        self.accepts: list[tuple[str, bool, str]] = []

    def latest(self) -> ModelArtifact | None:
        return self.current

    def wait(self, timeout: float | None = None) -> ModelArtifact | None:
        return self.current

    def accepted(self, artifact: ModelArtifact, ok: bool, detail: str = "") -> None:
        self.accepts.append((artifact.version, ok, detail))


# -- a hand-made model -------------------------------------------------------------------------

FEATURES = ("a", "b")


def tiny_model(tmp_path: Path, version: str, threshold: float = 1.0) -> ModelArtifact:
    """Two centroids at (0, 0) and (10, 10) in raw units (mean 0, std 1)."""
    model = KMeansModel.of(FEATURES, [0, 0], [1, 1], [[0, 0], [10, 10]], threshold)
    directory = model.save(tmp_path / f"model-{version}")
    edges = (-math.inf, 0.0, 5.0, math.inf)
    baseline = tuple(Histogram(f, edges, (1, 1, 1)) for f in FEATURES)
    return ModelArtifact(
        directory, FORMAT, baseline=baseline, model_id=f"id-{version}", version=version
    )


def batch(rows: list[list[float]], sources: tuple[str, ...] = ()) -> Batch:
    return Batch.of(FEATURES, np.array(rows, dtype=np.float64), sources)


def test_registry_and_ports() -> None:
    assert set(PYTHON_BUILTINS) == {
        "csv_source",
        "mqtt_source",
        "feature_histograms",
        "kmeans_score",
        "health_reporter",
        "model_publisher",
        "event_sink",
        "tflite_score",
        "data_sampler",
        "window_recorder",
    }
    assert ports_of(KMeansScore) == (("data", "model"), (), ("data", "stats", "health", "events"))
    assert ports_of(ModelPublisher) == (("model",), ("health",), ("model",))


def test_model_json_round_trip_and_refusals(tmp_path: Path) -> None:
    art = tiny_model(tmp_path, "v1")
    doc = json.loads((art.path / "model.json").read_text())
    assert doc["format"] == FORMAT
    assert KMeansModel.load(art.path).to_json() == doc
    for bad, match in (
        ({**doc, "format": "pickle/1"}, "unknown model format"),
        ({**doc, "std": [1, 0]}, "std must be positive"),
        ({**doc, "centroids": [[1, 2, 3]]}, "centroids have shape"),
        ({k: v for k, v in doc.items() if k != "threshold"}, "lacks threshold"),
    ):
        with pytest.raises(ModelFormatError, match=match):
            KMeansModel.from_json(bad)
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(ModelFormatError, match="not JSON"):
        KMeansModel.load(tmp_path / "junk.json")


def test_nearest_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    model = KMeansModel.of(
        ("x", "y", "z"), rng.normal(size=3), rng.uniform(0.5, 2, 3), rng.normal(size=(4, 3)), 1.0
    )
    x = rng.normal(size=(200, 3))
    dist, cluster = model.nearest(x)
    z = (x - model.mean) / model.std
    brute = np.linalg.norm(z[:, None, :] - model.centroids[None], axis=2)
    np.testing.assert_allclose(dist, brute.min(axis=1), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(cluster, brute.argmin(axis=1))


def test_streaming_scores_windows_and_events(tmp_path: Path, stop: StopSignal) -> None:
    art = tiny_model(tmp_path, "v1", threshold=2.0)
    score = build(KMeansScore, {"window": "10s", "max_events": 2}, make_ctx(tmp_path, stop))
    now = [1000.0]
    score.clock = lambda: now[0]

    def data() -> Iterator[Batch]:
        yield batch([[0, 0], [10, 10], [5, 5], [np.nan, 1]], ("d1", "d2", "d3", "d4"))
        yield batch([[20, 20], [-9, 0], [0.5, 0.5]])
        now[0] += 11  # the next item (a tick) closes the window
        yield Batch.empty(FEATURES)

    out = list(score.stream({"data": data(), "model": art}))
    ports = [p for p, _ in out]
    scored = [v for p, v in out if p == "data"]
    assert all(isinstance(s, ScoredBatch) for s in scored)
    assert scored[0].anomaly.tolist() == [False, False, True, False]  # (5,5) is 7.07 away
    assert math.isnan(scored[0].distance[3])
    assert scored[0].cluster[3] == -1
    assert scored[1].anomaly.tolist() == [True, True, False]
    events = [v for p, v in out if p == "events"]
    assert [e.type for e in events] == ["anomaly.detected"] * 2 + ["anomaly.suppressed"]
    assert events[0].attributes["source"] == "d3"
    assert events[0].attributes["feature.a"] == "5"
    assert events[0].subject == "kmeans-anomaly/inference@edge-1/d3"
    assert events[2].attributes["count"] == "1"
    (stats,) = [v for p, v in out if p == "stats"]
    assert isinstance(stats, StatsReport)
    s = {m.name: m.value for m in stats.scalars}
    assert s["records"] == 7
    assert s["scored"] == 6
    assert s["missing"] == 1
    assert s["anomalies"] == 3
    assert s["anomaly_rate"] == pytest.approx(0.5)
    assert s["events_suppressed"] == 1
    (health,) = [v for p, v in out if p == "health"]
    assert isinstance(health, HealthReport)
    assert (health.model_id, health.model_version, health.sample_count) == ("id-v1", "v1", 6)
    assert health.window_start_ms == 1_000_000
    assert health.window_end_ms == 1_011_000
    a_hist = health.histograms[0]
    assert a_hist.bin_edges == art.baseline[0].bin_edges
    # a: 0, 10, 5, nan, 20, -9, 0.5 -> [-inf,0): -9; [0,5): 0, 0.5; [5,inf): 10, 5, 20
    assert a_hist.counts == (1, 2, 3)
    assert a_hist.missing == 1
    # The window closed before the stream ended, so nothing is left to flush.
    assert ports[-1] == "events"


def test_hot_swap_between_batches(tmp_path: Path, stop: StopSignal) -> None:
    v1 = tiny_model(tmp_path, "v1", threshold=100.0)  # nothing is an anomaly
    v2 = tiny_model(tmp_path, "v2", threshold=0.0)  # everything off-centre is
    broken = replace(tiny_model(tmp_path, "v3"), format="onnx/1")
    feed = FakeFeed()
    score = build(KMeansScore, {}, make_ctx(tmp_path, stop))
    assert isinstance(feed, ModelFeed)

    def data() -> Iterator[Batch]:
        yield batch([[1, 1]])  # no model yet: not scored
        feed.current = v1
        yield batch([[1, 1]])
        feed.current = v2
        yield batch([[1, 1]])
        feed.current = broken  # refused: v2 stays
        yield batch([[1, 1]])
        yield batch([[1, 1]])

    out = list(score.stream({"data": data(), "model": feed}))
    scored = [v for p, v in out if p == "data"]
    assert [s.model_version for s in scored] == ["v1", "v2", "v2", "v2"]
    assert [s.anomalies for s in scored] == [0, 1, 1, 1]
    assert feed.accepts[:2] == [("v1", True, ""), ("v2", True, "")]
    assert len(feed.accepts) == 3  # the broken version is refused once, not per batch
    version, ok, detail = feed.accepts[2]
    assert (version, ok) == ("v3", False)
    assert "unknown model format 'onnx/1'" in detail
    # One window per model: the swap closed v1's window.
    health = [v for p, v in out if p == "health"]
    assert [h.model_version for h in health] == ["v1", "v2"]
    stats = [{m.name: m.value for m in v.scalars} for p, v in out if p == "stats"]
    assert stats[0]["unscored"] == 1
    assert stats[0]["scored"] == 1
    assert stats[1]["model_swaps"] == 1
    assert stats[1]["scored"] == 3


def test_batch_mode_and_bad_inputs(tmp_path: Path, stop: StopSignal) -> None:
    art = tiny_model(tmp_path, "v1", threshold=2.0)
    ctx = make_ctx(tmp_path, stop, PipelineMode.BATCH)
    out = build(KMeansScore, {"threshold": 8.0}, ctx).run(
        {"data": batch([[0, 0], [5, 5], [30, 30]]), "model": art}
    )
    assert out["data"].anomaly.tolist() == [False, False, True]  # the argument wins
    assert len(out["events"]) == 1
    assert isinstance(out["stats"], StatsReport)
    with pytest.raises(ModelFormatError):
        build(KMeansScore, {}, ctx).run(
            {"data": batch([[0, 0]]), "model": replace(art, format="x/1")}
        )
    with pytest.raises(ArgsError, match="duration"):
        build(KMeansScore, {"window": "soon"}, ctx)
    with pytest.raises(TypeError, match="ModelFeed"):
        list(build(KMeansScore, {}, ctx).stream({"data": iter([]), "model": object()}))


def test_reporter_sink_and_python_histograms(tmp_path: Path, stop: StopSignal) -> None:
    ctx = make_ctx(tmp_path, stop, PipelineMode.BATCH)
    data = batch([[float(i), float(-i)] for i in range(100)])
    base = build(FeatureHistograms, {"bins": 4, "method": "quantile"}, ctx).run({"data": data})
    assert base.name == "baseline"
    assert [sum(h.counts) for h in base.histograms] == [100, 100]
    assert base.histograms[0].bin_edges[0] == -math.inf

    def rep(counts: tuple[int, ...], start: int, end: int) -> HealthReport:
        return HealthReport(
            "inference",
            "score",
            window_start_ms=start,
            window_end_ms=end,
            model_version="v1",
            sample_count=sum(counts),
            histograms=(replace(base.histograms[0], counts=counts),),
            scalars=(Metric("r", 1.0),),
        )

    reporter = build(HealthReporter, {"interval": "30s"}, make_ctx(tmp_path, stop))
    t = [0.0]
    reporter.clock = lambda: t[0]

    def reports() -> Iterator[HealthReport]:
        yield rep((1, 2, 3, 4), 0, 10)
        t[0] = 31.0
        yield rep((1, 1, 1, 1), 10, 20)  # interval passed: both go out, merged
        yield rep((5, 0, 0, 0), 20, 30)  # flushed at the end

    merged = list(reporter.stream({"health": reports()}))
    assert [m.histograms[0].counts for m in merged] == [(2, 3, 4, 5), (5, 0, 0, 0)]
    assert (merged[0].window_start_ms, merged[0].window_end_ms) == (0, 20)
    assert merged[0].sample_count == 14

    sink = build(EventSink, {"path": "var/events.jsonl"}, ctx)
    event = Event("anomaly.detected", Severity.WARNING)
    list(sink.stream({"events": iter([event, event])}))
    sink.close()
    lines = (tmp_path / "var" / "events.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["severity"] == "warning"
    with pytest.raises(ArgsError, match="inside the work dir"):
        build(EventSink, {"path": "../x"}, ctx)


def test_publisher_attaches_baseline_and_metrics(tmp_path: Path, stop: StopSignal) -> None:
    art = replace(tiny_model(tmp_path, "v1"), baseline=(), metrics={"silhouette": 0.5})
    ctx = make_ctx(tmp_path, stop, PipelineMode.BATCH)
    health = HealthReport("training", histograms=tiny_model(tmp_path, "v0").baseline)
    out = build(ModelPublisher, {"metrics": {"auc": 1}}, ctx).run({"model": art, "health": health})
    assert out.baseline == health.histograms
    assert out.metrics == {"silhouette": 0.5, "auc": 1.0}
    with pytest.raises(ArgsError, match="must be a number"):
        build(ModelPublisher, {"metrics": {"auc": "high"}}, ctx)


def test_python_csv_source(tmp_path: Path, stop: StopSignal) -> None:
    (tmp_path / "a.csv").write_text("id,x,y\nm1,1,2\nm2,,4\n")
    (tmp_path / "b.csv").write_text("1;2\n3;4\n")
    ctx = make_ctx(tmp_path, stop, PipelineMode.BATCH)
    data = build(CsvSource, {"path": "a.csv"}, ctx).run({})
    assert data.features == ("x", "y")  # the text column is not a feature
    assert np.isnan(data.values[1, 0])
    args = {
        "path": str(tmp_path / "b.csv"),
        "header": False,
        "delimiter": ";",
        "columns": ["u", "v"],
    }
    data = build(CsvSource, args, ctx).run({})
    assert data.features == ("u", "v")
    assert data.values.tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match="no column"):
        build(CsvSource, {"path": "a.csv", "columns": ["z"]}, ctx).run({})
    with pytest.raises(ValueError, match="not numeric"):
        build(CsvSource, {"path": "a.csv", "columns": ["id"]}, ctx).run({})
    chunks = list(build(CsvSource, {"path": "a.csv"}, make_ctx(tmp_path, stop)).stream({}))
    assert [c.rows for c in chunks] == [2]


def test_generated_drift_crosses_the_example_threshold() -> None:
    """examples/kmeans/ion.yaml scores drift with PSI, threshold 0.2, 200 samples at least:
    generated data without drift stays well below, drift 1 (what devices.py switches on) far
    above."""
    from ion.model.definition import DriftMetric
    from node.health.drift import feature_drift
    from node.health.histograms import baseline, histogram

    train = gen.generate(10_000, 6, anomaly_rate=0.01, seed=1)
    base = baseline(train.features, train.values, 10, "quantile")

    def psi(drift: float, seed: int) -> float:
        live = gen.generate(200, 6, anomaly_rate=0.01, drift=drift, seed=seed)
        hs = [histogram(b.feature, live.values[:, j], b.bin_edges) for j, b in enumerate(base)]
        return feature_drift(base, hs, DriftMetric.PSI).worst

    assert max(psi(0.0, seed) for seed in range(3, 8)) < 0.15  # sampling noise alone
    assert min(psi(1.0, seed) for seed in range(3, 8)) > 0.4


# -- Spark -------------------------------------------------------------------------------------

TRAIN_ROWS = 10_000


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        session = (
            SparkSession.builder.master("local[1]")
            .appName("test-kmeans-components")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "1")
            .config("spark.default.parallelism", "1")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


@pytest.fixture(scope="module")
def trained(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """csv_source -> feature_histograms + kmeans_train -> model_publisher, as the ION says."""
    from node.components.spark import BUILTINS

    work = tmp_path_factory.mktemp("spark-work")
    train = gen.generate(TRAIN_ROWS, 6, anomaly_rate=0.01, seed=1)
    gen.write(train, work / "data", "train")
    with StopSignal() as stop:
        ctx = make_ctx(work, stop, PipelineMode.BATCH, "read")
        df = build(BUILTINS["csv_source"], {"path": "data/train.csv"}, ctx).run({})
        baseline = build(BUILTINS["feature_histograms"], {"bins": 10}, ctx).run({"data": df})
        args = {"k": 4, "max_iter": 20, "seed": 7, "threshold_quantile": 0.99}
        model = build(BUILTINS["kmeans_train"], args, ctx).run({"data": df})
        published = build(BUILTINS["model_publisher"], {}, ctx).run(
            {"model": model, "health": baseline}
        )
    return {"work": work, "train": train, "baseline": baseline, "artifact": published}


@pytest.mark.integration
@pytest.mark.slow
def test_spark_training_writes_a_plain_json_model(trained: dict[str, Any]) -> None:
    art: ModelArtifact = trained["artifact"]
    assert art.format == FORMAT
    assert art.path.is_dir()
    assert [p.name for p in art.path.iterdir()] == ["model.json"]
    doc = json.loads((art.path / "model.json").read_text())
    assert set(doc) == {"format", "features", "mean", "std", "centroids", "threshold"}
    model = KMeansModel.from_json(doc)
    assert model.features == gen.FEATURES
    assert model.centroids.shape == (4, 6)
    train = trained["train"]
    np.testing.assert_allclose(model.mean, train.values.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(model.std, train.values.std(axis=0, ddof=1), rtol=1e-4)
    # The threshold is the 0.99 quantile of the training distances (approxQuantile: +- 1 rank).
    dist, cluster = model.nearest(train.values)
    ranked = np.sort(dist)
    rank = int(np.searchsorted(ranked, model.threshold))
    assert abs(rank - 0.99 * TRAIN_ROWS) <= 2
    # The four operating modes are found: each cluster is (almost) one mode.
    for k in range(4):
        modes = train.mode[(cluster == k) & ~train.anomaly]
        assert np.bincount(modes).max() / len(modes) > 0.99
    m = art.metrics
    assert m["k"] == 4
    assert m["rows"] == TRAIN_ROWS
    assert 0.5 < m["silhouette"] <= 1.0
    assert m["training_cost"] > 0
    assert m["threshold"] == pytest.approx(model.threshold)


@pytest.mark.integration
@pytest.mark.slow
def test_spark_baseline_histograms(trained: dict[str, Any]) -> None:
    art: ModelArtifact = trained["artifact"]
    assert [h.feature for h in art.baseline] == list(gen.FEATURES)
    for h in art.baseline:
        assert h.bin_edges[0] == -math.inf
        assert h.bin_edges[-1] == math.inf
        assert len(h.counts) == 10
        assert sum(h.counts) == TRAIN_ROWS
        assert h.missing == 0
        # Quantile bins: about a tenth of the rows each.
        assert max(h.counts) < 0.13 * TRAIN_ROWS


@pytest.mark.integration
@pytest.mark.slow
def test_spark_and_python_histograms_agree(
    spark: Any, trained: dict[str, Any], stop: StopSignal
) -> None:
    from node.components.spark import BUILTINS

    work = trained["work"]
    ctx = make_ctx(work, stop, PipelineMode.BATCH)
    cols = ["temperature", "rpm"]
    args = {"path": "data/train.csv", "columns": cols}
    df = build(BUILTINS["csv_source"], args, ctx).run({})
    hist_args = {"bins": 5, "method": "uniform"}
    spark_h = build(BUILTINS["feature_histograms"], hist_args, ctx).run({"data": df})
    data = build(CsvSource, args, ctx).run({})
    assert data.features == tuple(cols)
    py_h = build(FeatureHistograms, hist_args, ctx).run({"data": data})
    for a, b in zip(spark_h.histograms, py_h.histograms, strict=True):
        np.testing.assert_allclose(a.bin_edges[1:-1], b.bin_edges[1:-1], rtol=1e-12)
        assert a.counts == b.counts


@pytest.mark.integration
@pytest.mark.slow
def test_trained_model_flags_injected_anomalies(
    trained: dict[str, Any], tmp_path: Path, stop: StopSignal
) -> None:
    live = gen.generate(4000, 6, anomaly_rate=0.01, seed=2)
    art: ModelArtifact = trained["artifact"]
    score = build(KMeansScore, {"max_events": 1000}, make_ctx(tmp_path, stop))
    batches = [Batch.of(live.features, part) for part in np.array_split(live.values, 80)]
    out = list(score.stream({"data": iter(batches), "model": FakeFeed(art)}))
    flagged = np.concatenate([s.anomaly for p, s in out if p == "data"])
    tp = int(np.sum(flagged & live.anomaly))
    precision = tp / max(int(flagged.sum()), 1)
    recall = tp / int(live.anomaly.sum())
    assert precision >= 0.85, (precision, recall)
    assert recall >= 0.85, (precision, recall)
    assert sum(1 for p, _ in out if p == "events") == int(flagged.sum())
    (health,) = [v for p, v in out if p == "health"]
    assert [h.bin_edges for h in health.histograms] == [h.bin_edges for h in art.baseline]
    assert health.sample_count == 4000
    assert os.fspath(art.path).startswith(os.fspath(trained["work"]))
