"""Parquet ExampleGen executor that keeps zeros.

TFX 1.16's stock Parquet executor converts rows with ``example_gen.utils.dict_to_example``,
which writes an *empty* feature for every falsy value — ``click = 0``, ``watch_seconds = 0``,
``hour = 0`` all become missing, and ExampleValidator then (rightly) reports the columns as
not always present. This executor converts only ``None`` / NaN to a missing value, and hands
the records to ``components.block_example_gen`` a block (a Parquet record batch) at a time.
"""

import math
from typing import Any, Dict, Iterator, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from components.block_example_gen import Block, BlockExampleGenExecutor, arrow_source, split_files

BATCH_ROWS = 65536  # rows per block read from a file


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


def example_blocks(indexed_path: Tuple[int, str]) -> Iterator[Block]:
    """(file index, path) -> ((file index, batch index), serialized examples) for each record batch of the file."""
    index, path = indexed_path
    try:
        for i, batch in enumerate(pq.ParquetFile(arrow_source(path)).iter_batches(batch_size=BATCH_ROWS)):
            yield (index, i), [row_to_example(r).SerializeToString(deterministic=True) for r in batch.to_pylist()]
    except (pa.ArrowException, OSError) as e:  # not Parquet, truncated...: name the file
        raise ValueError(f"{path}: {e}") from None


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
def _ParquetToExampleBlocks(pipeline, exec_properties: Dict[str, Any], split_pattern: str):  # noqa: N802 (Beam naming)
    files = split_files(exec_properties, split_pattern)
    return (pipeline | "CreateFilenames" >> beam.Create(list(enumerate(files)))
            | "ToTFExamples" >> beam.FlatMap(example_blocks))


class Executor(BlockExampleGenExecutor):
    def GetInputSourceToBlocksPTransform(self) -> beam.PTransform:  # noqa: N802 (TFX naming)
        return _ParquetToExampleBlocks
