"""``csv_source`` for the python engine: a CSV file as a ``Batch`` of its numeric columns.

``path`` is absolute or relative to the work directory.  With ``header`` the first line names
the columns and ``columns`` selects (and orders) some of them; without it ``columns`` names the
fields in order (else ``c0, c1, ...``).  Columns that are not numbers are left out (an error
when ``columns`` asks for one); empty fields are NaN.  A batch pipeline gets one ``Batch``; a
streaming one gets the file in batches of ``CHUNK_ROWS`` rows, then the stream ends.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from node.runner.component import Args, ArgsError, Component, Context

from .common import input_path, str_list
from .values import Batch

CHUNK_ROWS = 1000


def read_csv(
    path: Path,
    *,
    header: bool = True,
    delimiter: str = ",",
    columns: tuple[str, ...] | None = None,
) -> Batch:
    with path.open(newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter) if row]
    if header:
        if not rows:
            raise ValueError(f"{path} is empty: no header line")
        names, rows = [n.strip() for n in rows[0]], rows[1:]
    else:
        width = len(rows[0]) if rows else len(columns or ())
        names = list(columns) if columns is not None else [f"c{i}" for i in range(width)]
        if len(names) != width:
            raise ValueError(f"{path} has {width} fields per line but {len(names)} columns named")
    width = len(names)
    bad = [i for i, row in enumerate(rows) if len(row) != width]
    if bad:
        raise ValueError(f"{path}: line {bad[0] + 1 + header} has a different number of fields")
    table = np.array(rows, dtype=str).reshape(len(rows), width)
    # np.where widens the string dtype: assigning "nan" in place would be cut to the width
    # of the longest field ("na" in a table of two-character fields).
    table = np.where(np.char.strip(table) == "", "nan", table)
    wanted = columns if header and columns is not None else tuple(names)
    index = {n: j for j, n in enumerate(names)}
    unknown = [c for c in wanted if c not in index]
    if unknown:
        raise ValueError(f"{path} has no column(s) {', '.join(unknown)}")
    kept: list[str] = []
    values: list[np.ndarray[Any, np.dtype[np.float64]]] = []
    for name in wanted:
        try:
            values.append(table[:, index[name]].astype(np.float64))
        except ValueError:
            if header and columns is not None:
                raise ValueError(f"{path}: column {name!r} is not numeric") from None
            continue  # a text column (an id, a label): not a feature
        kept.append(name)
    array = np.column_stack(values) if values else np.zeros((len(rows), 0))
    return Batch.of(kept, array.reshape(len(rows), len(kept)))


class CsvSource(Component):
    output_ports = ("data",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.path = input_path(ctx, args.get_str("path"))
        self.header = args.get_bool("header", True)
        self.delimiter = args.get_str("delimiter", ",")
        if len(self.delimiter) != 1:
            raise ArgsError(f"argument 'delimiter' must be one character, not {self.delimiter!r}")
        self.columns = str_list(args, "columns")

    def _read(self) -> Batch:
        return read_csv(
            self.path, header=self.header, delimiter=self.delimiter, columns=self.columns
        )

    def run(self, inputs: Mapping[str, Any]) -> Batch:
        return self._read()

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[Batch]:
        data = self._read()
        for start in range(0, data.rows, CHUNK_ROWS):
            if self.ctx.stopping:
                return
            yield Batch(data.features, data.values[start : start + CHUNK_ROWS])
