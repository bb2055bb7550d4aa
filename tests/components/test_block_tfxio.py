"""The block-reading TFXIO gives the RecordBatches tfx_bsl's TFExampleRecord gives; TFX executors read through it."""

import apache_beam as beam
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components.statistics_gen import executor as stock_statistics_gen
from tfx.components.util import tfxio_utils
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.types import artifact_utils, standard_artifacts
from tfx_bsl.tfxio import tf_example_record

from components import statistics_gen
from components.block_tfxio import BlockTFExampleRecord, block_reader_of, block_reading, read_batches

SCHEMA = """
feature { name: "id" type: INT }
feature { name: "score" type: FLOAT }
feature { name: "page" type: BYTES }
feature { name: "tags" type: BYTES }
"""


def _example(i):
    f = {"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
         "score": tf.train.Feature(float_list=tf.train.FloatList(value=[] if i % 4 == 0 else [i / 10])),
         "page": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"home", b"feed", "ünï".encode()][i % 3:i % 3 + 1])),
         "tags": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"t%d" % j for j in range(i % 3)]))}
    return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()


@pytest.fixture
def split_dir(tmp_path):
    """Split-train/ with 3 GZIP TFRecord files of 700 examples in all (more than one batch per file)."""
    d = tmp_path / "examples" / "Split-train"
    d.mkdir(parents=True)
    for shard in range(3):
        with tf.io.TFRecordWriter(str(d / f"data_tfrecord-{shard:05d}-of-00003.gz"), "GZIP") as w:
            for i in range(shard, 700, 3):
                w.write(_example(i))
    return d


def _rows(tfxio, out, batch_size=None):
    """Every row the TFXIO's Beam source produces (a list of dicts, by id)."""
    import ast
    import glob

    with beam.Pipeline() as p:
        _ = (p | tfxio.BeamSource(batch_size) | beam.FlatMap(lambda rb: rb.to_pylist()) | beam.Map(repr)
             | beam.io.WriteToText(str(out)))
    rows = [ast.literal_eval(line) for f in glob.glob(f"{out}*") for line in open(f)]
    return sorted(rows, key=lambda r: r["id"])


@pytest.mark.parametrize("raw_column", [None, "__raw__"])
def test_same_rows_as_tfx_bsl_reader_whole_and_projected(split_dir, tmp_path, raw_column):
    from google.protobuf import text_format

    schema = text_format.Parse(SCHEMA, schema_pb2.Schema())
    stock = tf_example_record.TFExampleRecord(str(split_dir / "*"), schema=schema, raw_record_column_name=raw_column)
    ours = block_reader_of(stock)
    assert isinstance(ours, BlockTFExampleRecord)
    assert ours.ArrowSchema() == stock.ArrowSchema()
    got = _rows(ours, tmp_path / "ours", batch_size=64)
    assert len(got) == 700 and got == _rows(stock, tmp_path / "stock")
    projected = ours.Project(["id", "tags"])
    assert isinstance(projected.projected, BlockTFExampleRecord)
    got = _rows(projected, tmp_path / "ours_projected")
    assert got == _rows(stock.Project(["id", "tags"]), tmp_path / "stock_projected")
    assert set(got[0]) == {"id", "tags"} | ({raw_column} if raw_column else set())


def test_block_reading_swaps_tfx_reader_factory_only_while_open(split_dir):
    def made():
        return tfxio_utils.make_tfxio(file_pattern=str(split_dir / "*"), file_format="tfrecords_gzip",
                                      telemetry_descriptors=["test"], payload_format="FORMAT_TF_EXAMPLE")

    assert type(made()) is tf_example_record.TFExampleRecord
    with pytest.raises(RuntimeError):
        with block_reading():
            assert isinstance(made(), BlockTFExampleRecord)
            raise RuntimeError("a failing executor")
    assert type(made()) is tf_example_record.TFExampleRecord


def test_statistics_gen_computes_what_tfx_statistics_gen_computes(split_dir, tmp_path):
    from tensorflow_metadata.proto.v0 import statistics_pb2

    examples = standard_artifacts.Examples()
    examples.uri = str(split_dir.parent)
    examples.split_names = artifact_utils.encode_split_names(["train"])

    def run(executor_cls, name):
        stats = standard_artifacts.ExampleStatistics()
        stats.uri = str(tmp_path / name)
        stats.split_names = artifact_utils.encode_split_names(["train"])
        context = BaseBeamExecutor.Context(beam_pipeline_args=["--direct_num_workers=1"], tmp_dir=str(tmp_path / "t"))
        executor_cls(context).Do({"examples": [examples]}, {"statistics": [stats]}, {"exclude_splits": "[]"})
        data = (tmp_path / name / "Split-train" / "FeatureStats.pb").read_bytes()
        return statistics_pb2.DatasetFeatureStatisticsList.FromString(data)

    ours, theirs = run(statistics_gen.Executor, "ours"), run(stock_statistics_gen.Executor, "stock")
    assert ours.datasets[0].num_examples == 700
    assert ours == theirs


def _cut_between_records(path, keep):
    """Rewrites the GZIP file ``path`` as if cut where its first ``keep`` records end (compressed with a full flush
    there, so the cut file decompresses to exactly those records). Returns the records."""
    import zlib

    records = [r.numpy() for r in tf.data.TFRecordDataset([str(path)], compression_type="GZIP")]
    plain = path.with_suffix(".plain")
    with tf.io.TFRecordWriter(str(plain)) as w:  # TensorFlow's framing, uncompressed
        for r in records:
            w.write(r)
    data = plain.read_bytes()
    plain.unlink()
    boundary = sum(len(r) + 16 for r in records[:keep])
    gzip_stream = zlib.compressobj(wbits=31)
    path.write_bytes(gzip_stream.compress(data[:boundary]) + gzip_stream.flush(zlib.Z_FULL_FLUSH))
    return records


def test_a_gzip_file_cut_between_two_records_is_named(split_dir):
    path = split_dir / "data_tfrecord-00001-of-00003.gz"
    _cut_between_records(path, keep=100)
    # TensorFlow's reader alone takes the cut file for a shorter, whole one
    assert sum(1 for _ in tf.data.TFRecordDataset([str(path)], compression_type="GZIP")) == 100
    with pytest.raises(ValueError, match=r"data_tfrecord-00001-of-00003\.gz: truncated or corrupt GZIP"):
        list(read_batches(str(path), 64))


@pytest.mark.parametrize("cut", [5, 200, -1])
def test_a_gzip_file_cut_anywhere_is_named(split_dir, cut):
    path = split_dir / "data_tfrecord-00001-of-00003.gz"
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(ValueError, match=r"data_tfrecord-00001-of-00003\.gz: "):
        list(read_batches(str(path), 64))


def test_a_gzip_file_of_two_members_is_read_whole(split_dir):
    one = split_dir / "data_tfrecord-00001-of-00003.gz"
    two = split_dir.parent / "two.gz"
    two.write_bytes(one.read_bytes() * 2)
    assert sum(map(len, read_batches(str(two), 64))) == 2 * sum(map(len, read_batches(str(one), 64))) == 466


def test_a_corrupt_file_is_named_by_the_beam_source(split_dir, tmp_path):
    _cut_between_records(split_dir / "data_tfrecord-00001-of-00003.gz", keep=2)
    with pytest.raises(Exception, match=r"data_tfrecord-00001-of-00003\.gz"):
        _rows(BlockTFExampleRecord(str(split_dir / "*")), tmp_path / "rows")
