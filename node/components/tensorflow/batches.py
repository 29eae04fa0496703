"""The data values the autoencoder components accept, turned into one ``Batch``.

``Batch`` (``node.components.values``: a 2-D float64 array plus feature names, what
``csv_source`` and ``mqtt_source`` produce) is the native form.  Also accepted, for data that
comes from elsewhere (a JSON data edge, a hand-written source):

- a list or tuple of ``Batch`` values: rows stacked, on the features of the first;
- ``DataRecords`` (``ion.model.event``): its columns and row-major values;
- a list of records (mappings of name to number): the features are the keys holding numbers
  (in first-seen order), a key a record lacks or holds something else for is NaN.

NaN means missing everywhere: rows with one are not trained on and not scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import numpy as np

from ion.model.event import DataRecords
from node.components.values import Batch


def as_batch(value: Any) -> Batch:
    """``value`` as one ``Batch`` (see the module docstring); TypeError for anything else."""
    if isinstance(value, Batch):
        return value
    if isinstance(value, DataRecords):
        width = len(value.columns)
        values = np.asarray(value.values, dtype=np.float64).reshape(value.row_count, width)
        stamps = value.timestamps_ms or None
        return Batch.of(value.columns, values, timestamps_ms=stamps)
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, Batch) for v in value):
            return _stack(value)
        if all(isinstance(v, Mapping) for v in value):
            return _from_records(value)
    raise TypeError(
        "data must be a Batch, a list of Batch, DataRecords or a list of records (mappings), "
        f"not {type(value).__name__}"
    )


def _stack(batches: Sequence[Batch]) -> Batch:
    features = batches[0].features
    values = np.vstack([b.columns(features) for b in batches])
    return Batch.of(features, values)


def _is_number(x: object) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _from_records(records: Sequence[Mapping[str, Any]]) -> Batch:
    features: dict[str, None] = {}  # an ordered set
    for record in records:
        for key, x in record.items():
            if _is_number(x):
                features.setdefault(str(key), None)
    names = tuple(features)
    values = np.full((len(records), len(names)), np.nan, dtype=np.float64)
    for i, record in enumerate(records):
        for j, name in enumerate(names):
            x = record.get(name)
            if _is_number(x):
                values[i, j] = float(x)
    return Batch.of(names, values)
