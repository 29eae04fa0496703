"""``csv_source`` for Spark: a CSV file (or directory of them) as a DataFrame.

``path`` is absolute, relative to the pipeline's work directory, or a URI Spark reads
(``hdfs://``, ``s3a://``, ``file://``).  Column types are inferred.  With ``header`` the
``columns`` argument selects (and orders) columns by name; without a header it names the fields
in order (Spark would call them ``_c0, _c1, ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import NumericType

from node.components.common import input_path, str_list
from node.runner.component import Args, ArgsError, Component, Context


def numeric_columns(df: DataFrame) -> list[str]:
    return [f.name for f in df.schema.fields if isinstance(f.dataType, NumericType)]


class SparkCsvSource(Component):
    output_ports = ("data",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        path = args.get_str("path")
        self.path = path if "://" in path else str(input_path(ctx, path))
        self.header = args.get_bool("header", True)
        self.delimiter = args.get_str("delimiter", ",")
        if not self.delimiter:
            raise ArgsError("argument 'delimiter' must not be empty")
        self.columns = str_list(args, "columns")

    def run(self, inputs: Mapping[str, Any]) -> DataFrame:
        spark = SparkSession.builder.getOrCreate()
        df = spark.read.csv(self.path, header=self.header, sep=self.delimiter, inferSchema=True)
        if self.columns is None:
            return df
        if not self.header:
            if len(self.columns) != len(df.columns):
                raise ValueError(
                    f"{self.path} has {len(df.columns)} fields per line but "
                    f"{len(self.columns)} columns are named"
                )
            return df.toDF(*self.columns)
        unknown = [c for c in self.columns if c not in df.columns]
        if unknown:
            raise ValueError(f"{self.path} has no column(s) {', '.join(unknown)}")
        return df.select(*self.columns)
