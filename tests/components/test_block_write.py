"""Transform's block writer writes the examples TFX's writer writes, into complete files only."""

import glob
import os

import apache_beam as beam
import pyarrow as pa
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components.transform import executor as transform_executor

from components.block_write import BlockWritingTransformProcessor, block_writing

SCHEMA = text_format.Parse("""
feature { name: "id" type: INT }
feature { name: "score" type: FLOAT }
feature { name: "page" type: BYTES }
""", schema_pb2.Schema())


def _batches(n_batches, rows):
    return [(pa.RecordBatch.from_arrays([
        pa.array([[b * rows + i] for i in range(rows)], pa.list_(pa.int64())),
        pa.array([[] if i % 5 == 0 else [i / 4] for i in range(rows)], pa.list_(pa.float32())),
        pa.array([[b"home", b"feed"][i % 2:i % 2 + 1] for i in range(rows)], pa.list_(pa.binary())),
    ], ["id", "score", "page"]), {}) for b in range(n_batches)]


def _write(processor, batches, out):
    with beam.Pipeline() as p:
        _ = (p | beam.Create(batches, reshuffle=False)
             | processor._EncodeAndWrite(schema=SCHEMA, file_format="tfrecords_gzip", output_path=str(out)))


def _records(pattern):
    """The files of ``pattern`` and their examples as sorted (id, score, page) tuples (the serialized feature order
    of a tf.Example map is not fixed)."""
    files = sorted(glob.glob(pattern))

    def row(record):
        f = tf.train.Example.FromString(record.numpy()).features.feature
        return (tuple(f["id"].int64_list.value), tuple(f["score"].float_list.value), tuple(f["page"].bytes_list.value))

    return files, sorted(row(r) for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))


def test_same_examples_as_tfx_writer_in_complete_files(tmp_path):
    batches = _batches(7, 300)
    _write(BlockWritingTransformProcessor, batches, tmp_path / "ours" / "Split-train" / "transformed_examples")
    _write(transform_executor.TransformProcessor, batches, tmp_path / "tfx" / "Split-train" / "transformed_examples")
    files, ours = _records(str(tmp_path / "ours" / "Split-train" / "*"))
    _, theirs = _records(str(tmp_path / "tfx" / "Split-train" / "*"))
    assert len(ours) == 2100 and ours == theirs
    n = len(files)
    assert [os.path.basename(f) for f in files] == [f"transformed_examples-{i:05d}-of-{n:05d}.gz" for i in range(n)]
    assert os.listdir(tmp_path / "ours") == ["Split-train"]  # no .incomplete/ left beside the split


def test_no_batch_still_gives_a_file(tmp_path):
    _write(BlockWritingTransformProcessor, [], tmp_path / "Split-valid" / "transformed_examples")
    files, records = _records(str(tmp_path / "Split-valid" / "*"))
    assert [os.path.basename(f) for f in files] == ["transformed_examples-00000-of-00001.gz"] and records == []


def test_block_writing_swaps_the_processor_only_while_open():
    with pytest.raises(RuntimeError):
        with block_writing():
            assert transform_executor.TransformProcessor is BlockWritingTransformProcessor
            raise RuntimeError("a failing executor")
    assert transform_executor.TransformProcessor is not BlockWritingTransformProcessor
