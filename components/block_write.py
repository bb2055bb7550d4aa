"""Transform's materialized examples written a batch of records at a time.

TFX's Transform executor encodes each transformed RecordBatch into ``tf.Example``s and hands them to Beam's
``WriteToTFRecord`` one record per Beam element: Beam's Python TFRecord writer then frames, checksums and
compresses every record in Python (about a tenth of the executor's time on 200,000 rows, profiled). Here each
RecordBatch stays one Beam element: it is encoded by the same tfx_bsl encoder and its records are written by
TensorFlow's C++ TFRecord writer, GZIP-compressed as TFX writes them.

Files: one per Beam bundle, written under a temporary name in ``.incomplete/`` beside the split folders, renamed to
``<prefix>-NNNNN-of-MMMMM.gz`` (the names Beam's sink gives) once every bundle has finished, so a split folder
never holds a partial file. Record order within a file is the order of the batches (training shuffles).

``block_writing()`` makes TFX's Transform executor write this way while its ``Do`` runs (TFX has no hook for the
writer); Parquet output keeps TFX's writer.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Dict, Iterable, Iterator, List, Tuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms import window
from tfx.components.transform import executor as transform_executor
from tfx.components.transform import labels
from tfx.dsl.io import fileio
from tfx_bsl.coders import example_coder

from components.block_example_gen import gzip_writer, incomplete_dir, shard_path


class _EncodeBatch(beam.DoFn):
    """``(RecordBatch, pass-through features)`` -> the batch's serialized ``tf.Example``s, one list."""

    def __init__(self, schema):
        self._schema = schema
        self._encoder = None

    def setup(self):
        self._encoder = example_coder.RecordBatchToExamplesEncoder(self._schema)

    def process(self, element: Tuple[pa.RecordBatch, Dict[str, pa.Array]]) -> Iterator[List[bytes]]:
        record_batch, _ = element
        key_column = transform_executor._TRANSFORM_INTERNAL_FEATURE_FOR_KEY  # TFX drops its internal key column
        if key_column in record_batch.schema.names:
            record_batch = transform_executor._FilterInternalColumn(
                record_batch, record_batch.schema.names.index(key_column))
        yield self._encoder.encode(record_batch)


class _WriteBundle(beam.DoFn):
    """Lists of records -> one GZIP TFRecord file per bundle in ``temp_dir``; emits the file's path at the end."""

    def __init__(self, temp_dir: str):
        self._temp_dir = temp_dir
        self._writer = None
        self._path = None

    def start_bundle(self):
        self._writer, self._path = None, None

    def process(self, records: List[bytes]) -> None:
        if self._writer is None:
            fileio.makedirs(self._temp_dir)
            self._path = os.path.join(self._temp_dir, f"{uuid.uuid4().hex}.gz")
            self._writer = gzip_writer(self._path)
        for record in records:
            self._writer.write(record)

    def finish_bundle(self) -> Iterable[window.WindowedValue]:
        if self._writer is not None:
            self._writer.close()
            yield window.GlobalWindows.windowed_value(self._path)


def _publish(temp_paths: List[str], output_path: str, temp_dir: str) -> int:
    """Renames the finished bundles' files to ``<output_path>-NNNNN-of-MMMMM.gz`` (one empty file when no batch came);
    returns the number of files."""
    paths = sorted(temp_paths)
    fileio.makedirs(os.path.dirname(output_path))
    if not paths:
        with gzip_writer(shard_path(output_path, 0, 1)):
            pass
        return 1
    for i, path in enumerate(paths):
        fileio.rename(path, shard_path(output_path, i, len(paths)), overwrite=True)
    if fileio.exists(temp_dir):
        fileio.rmtree(temp_dir)
    parent = os.path.dirname(temp_dir)
    try:  # the last split to finish removes .incomplete/ (on worker processes two splits may finish together)
        if not fileio.listdir(parent):
            fileio.rmtree(parent)
    except fileio.NotFoundError:
        pass
    return len(paths)


@beam.ptransform_fn
def WriteBatchesToTFRecord(batches: beam.PCollection, output_path: str) -> beam.PCollection:  # noqa: N802 - Beam style
    """Lists of serialized records -> GZIP TFRecord files ``<output_path>-NNNNN-of-MMMMM.gz``; a PCollection of
    the file count."""
    split_dir = os.path.dirname(output_path)
    temp_dir = os.path.join(incomplete_dir(split_dir), os.path.basename(split_dir))  # one folder per split
    return (batches
            | "WriteBundles" >> beam.ParDo(_WriteBundle(temp_dir))
            | "Finished" >> beam.combiners.ToList()
            | "Publish" >> beam.Map(_publish, output_path, temp_dir))


class BlockWritingTransformProcessor(transform_executor.TransformProcessor):
    """TFX's TransformProcessor, writing TFRecord output a RecordBatch at a time."""

    @staticmethod
    @beam.ptransform_fn
    def _EncodeAndWrite(pcoll: beam.PCollection, schema, file_format: str, output_path: str):  # noqa: N802 - TFX's
        if file_format != labels.FORMAT_TFRECORD:
            return pcoll | "TFXWriter" >> transform_executor.TransformProcessor._EncodeAndWrite(
                schema, file_format, output_path)
        return (pcoll
                | "EncodeBatches" >> beam.ParDo(_EncodeBatch(schema))
                | "WriteBatches" >> WriteBatchesToTFRecord(output_path))


@contextlib.contextmanager
def block_writing():
    """While open, TFX's Transform executor builds ``BlockWritingTransformProcessor``s."""
    original = transform_executor.TransformProcessor
    transform_executor.TransformProcessor = BlockWritingTransformProcessor
    try:
        yield
    finally:
        transform_executor.TransformProcessor = original
