"""Synthetic machine-sensor readings for the KMeans example: several operating modes (the
clusters), correlated features, injected anomalies and optional drift.

    python examples/kmeans/generate.py --out data --rows 20000 --features 6 \\
        --anomaly-rate 0.01 --drift 0.0 --seed 7

writes ``<out>/<name>.csv`` (the features only, so "every numeric column" is the feature set)
and ``<out>/<name>_labels.csv`` (``anomaly`` 0/1 and the operating ``mode`` of each row, for
evaluation).

The model of a machine: each reading is in one of four operating modes (idle, low, nominal,
high load), each with its own mean per sensor.  Within a mode a hidden "load" factor moves
temperature, vibration, pressure, current and rpm together (correlation ``RHO``); humidity
near the machine falls as it runs hotter.  Every sensor's in-mode spread is 10-25 % of its
spread over all modes: a sensor that no mode explains (pure noise after standardising) would
dominate every distance and hide anomalies elsewhere.  An anomaly is a normal reading with one
or two sensors pushed 8 to 12 in-mode standard deviations away (a hot bearing, a pressure
drop, a current spike): with 1 % anomalies, ``threshold_quantile: 0.99`` separates them well.
Drift ``d`` models wear: means move by ``d`` in-mode standard deviations in a fixed direction,
spreads grow by ``50 * d`` per cent, and the machine runs in the high-load mode more often.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FEATURES = ("temperature", "vibration", "pressure", "current", "rpm", "humidity")
MODES = ("idle", "low", "nominal", "high")
MODE_WEIGHTS = np.array([0.15, 0.25, 0.40, 0.20])
# Mean per mode (rows) and feature (columns), in the sensors' units.
MEANS = np.array(
    [
        [35.0, 0.5, 1.0, 2.0, 600.0, 55.0],
        [50.0, 2.0, 3.0, 10.0, 1200.0, 48.0],
        [65.0, 3.5, 5.0, 18.0, 1800.0, 42.0],
        [80.0, 6.0, 7.5, 30.0, 3000.0, 35.0],
    ]
)
# In-mode standard deviation per feature.
STDS = np.array([2.0, 0.3, 0.2, 1.0, 100.0, 1.5])
# How strongly each feature follows the hidden load within a mode.
RHO = np.array([0.6, 0.6, 0.5, 0.7, 0.6, -0.2])
# Which way each feature moves under drift (wear: hotter, shakier, lower pressure).
DRIFT_DIRECTION = np.array([1.0, 1.0, -1.0, 0.5, 0.0, 0.5])
ANOMALY_SHIFT = (8.0, 12.0)


@dataclass(frozen=True, slots=True, eq=False)
class Dataset:
    features: tuple[str, ...]
    values: npt.NDArray[np.float64]  # (rows, features)
    anomaly: npt.NDArray[np.bool_]  # (rows,)
    mode: npt.NDArray[np.int64]  # (rows,)


def feature_names(n: int) -> tuple[str, ...]:
    """The first ``n`` sensor names; past six, extra generic sensors ``sensor_7, ...``."""
    if n < 1:
        raise ValueError("at least one feature")
    return FEATURES[:n] + tuple(f"sensor_{i + 1}" for i in range(len(FEATURES), n))


def _tables(n: int) -> tuple[npt.NDArray[np.float64], ...]:
    """Means, stds, correlation and drift direction for ``n`` features (extra sensors get
    fixed pseudo-random per-mode levels, the same for every seed)."""
    if n <= len(FEATURES):
        return MEANS[:, :n], STDS[:n], RHO[:n], DRIFT_DIRECTION[:n]
    extra = n - len(FEATURES)
    fixed = np.random.default_rng(12345)
    means = np.hstack([MEANS, fixed.uniform(0, 100, (len(MODES), extra))])
    stds = np.concatenate([STDS, fixed.uniform(1, 5, extra)])
    rho = np.concatenate([RHO, fixed.uniform(-0.5, 0.5, extra)])
    direction = np.concatenate([DRIFT_DIRECTION, fixed.choice([-1.0, 1.0], extra)])
    return means, stds, rho, direction


def mode_weights(drift: float) -> npt.NDArray[np.float64]:
    """Drift moves time from the idle and low modes to the high-load one."""
    shift = min(max(drift, 0.0), 1.0) * 0.2
    w = MODE_WEIGHTS + np.array([-shift / 2, -shift / 2, 0.0, shift])
    w = np.maximum(w, 0.01)
    out: npt.NDArray[np.float64] = w / w.sum()
    return out


def sample(
    rng: np.random.Generator,
    rows: int,
    n_features: int = 6,
    *,
    drift: float = 0.0,
    modes: npt.NDArray[np.int64] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """``rows`` normal readings (no anomalies) and their modes."""
    means, stds, rho, direction = _tables(n_features)
    if modes is None:
        modes = rng.choice(len(MODES), size=rows, p=mode_weights(drift)).astype(np.int64)
    load = rng.standard_normal((rows, 1))
    noise = rng.standard_normal((rows, n_features))
    z = rho * load + np.sqrt(1.0 - rho**2) * noise  # unit variance, correlated via the load
    scale = stds * (1.0 + 0.5 * drift)
    values = means[modes] + drift * direction * stds + z * scale
    return values, modes


def inject(
    rng: np.random.Generator, values: npt.NDArray[np.float64], rate: float
) -> npt.NDArray[np.bool_]:
    """Turn ``round(rate * rows)`` random rows into anomalies, in place; return the mask."""
    rows = values.shape[0]
    anomaly = np.zeros(rows, dtype=bool)
    count = round(rate * rows)
    if count:
        anomaly[rng.choice(rows, size=count, replace=False)] = True
        push(rng, values, anomaly)
    return anomaly


def push(
    rng: np.random.Generator, values: npt.NDArray[np.float64], rows: npt.NDArray[np.bool_]
) -> None:
    """Make the rows selected by the mask ``rows`` anomalies, in place: one or two sensors
    each pushed 8 to 12 in-mode standard deviations up or down."""
    picked = np.flatnonzero(rows)
    count = len(picked)
    if not count:
        return
    _, stds, _, _ = _tables(values.shape[1])
    for k in range(2):
        feature = rng.integers(0, values.shape[1], size=count)
        size = rng.uniform(*ANOMALY_SHIFT, size=count) * rng.choice([-1.0, 1.0], size=count)
        # The second push happens for half of the anomalies only.
        size *= 1.0 if k == 0 else rng.integers(0, 2, size=count)
        values[picked, feature] += size * stds[feature]


def generate(
    rows: int,
    features: int = 6,
    anomaly_rate: float = 0.01,
    drift: float = 0.0,
    seed: int = 7,
) -> Dataset:
    if rows < 1:
        raise ValueError("rows must be at least 1")
    if not 0.0 <= anomaly_rate <= 1.0:
        raise ValueError("anomaly rate must be within [0, 1]")
    if drift < 0:
        raise ValueError("drift must be >= 0")
    rng = np.random.default_rng(seed)
    values, modes = sample(rng, rows, features, drift=drift)
    anomaly = inject(rng, values, anomaly_rate)
    return Dataset(feature_names(features), values, anomaly, modes)


def write(data: Dataset, out: Path, name: str = "train") -> tuple[Path, Path]:
    """Write ``<name>.csv`` and ``<name>_labels.csv`` into ``out``; return both paths."""
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"{name}.csv"
    labels = out / f"{name}_labels.csv"
    header = ",".join(data.features)
    np.savetxt(csv, data.values, fmt="%.4f", delimiter=",", header=header, comments="")
    np.savetxt(
        labels,
        np.column_stack([data.anomaly.astype(np.int64), data.mode]),
        fmt="%d",
        delimiter=",",
        header="anomaly,mode",
        comments="",
    )
    return csv, labels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate machine-sensor readings for the KMeans anomaly example."
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--name", default="train", help="file stem (default: train)")
    parser.add_argument("--rows", type=int, default=20_000, help="readings (default: 20000)")
    parser.add_argument("--features", type=int, default=6, help="sensors per reading (6)")
    parser.add_argument("--anomaly-rate", type=float, default=0.01, help="share of anomalies")
    parser.add_argument(
        "--drift", type=float, default=0.0, help="wear: 0 none, 1 strong (default: 0)"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    ns = parser.parse_args(argv)
    try:
        data = generate(ns.rows, ns.features, ns.anomaly_rate, ns.drift, ns.seed)
    except ValueError as e:
        parser.error(str(e))
    csv, labels = write(data, ns.out, ns.name)
    print(
        f"wrote {len(data.values)} rows x {len(data.features)} features to {csv} "
        f"({int(data.anomaly.sum())} anomalies; labels in {labels})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
