"""Parquet ExampleGen executor that keeps zeros.

TFX 1.16's stock Parquet executor converts rows with ``example_gen.utils.dict_to_example``,
which writes an *empty* feature for every falsy value — ``click = 0``, ``watch_seconds = 0``,
``hour = 0`` all become missing, and ExampleValidator then (rightly) reports the columns as
not always present. This executor converts only ``None`` / NaN to a missing value.
"""

import math
import os
from typing import Any, Dict

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.types import standard_component_specs


def row_to_example(row: Dict[str, Any]) -> tf.train.Example:
    feature = {}
    for key, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            feature[key] = tf.train.Feature()
        elif isinstance(value, bool) or isinstance(value, int):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        elif isinstance(value, float):
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        elif isinstance(value, str):
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))
        else:
            raise ValueError(f"parquet column {key!r}: unsupported value type {type(value).__name__}")
    return tf.train.Example(features=tf.train.Features(feature=feature))


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _ParquetToExample(pipeline, exec_properties: Dict[str, Any], split_pattern: str):  # noqa: N802 (Beam naming)
    pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)
    return pipeline | "ReadFromParquet" >> beam.io.ReadFromParquet(pattern) | "ToTFExample" >> beam.Map(row_to_example)


class Executor(BaseExampleGenExecutor):
    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 (TFX API)
        return _ParquetToExample
