"""StatisticsGen with the pipeline's TFDV options: sketched top values that still show a rare new category."""

import tensorflow as tf
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.types import artifact_utils, standard_artifacts

from components import statistics_gen
from models.config import parse_config
from pipeline.pipeline import statistics_options
from tests.conftest import tiny_config_dict

ROWS = 10_000
SCHEMA = """
feature { name: "page" type: BYTES domain: "page" presence { min_fraction: 1.0 } }
feature { name: "user_id" type: BYTES }
string_domain { name: "page" value: "home" value: "feed" value: "search" }
"""


def _example(i):
    # one row in 10,000 carries a page the schema does not know; user ids: 3,000 distinct values
    page = b"brand-new" if i == 4321 else (b"home", b"feed", b"search")[i % 3]
    f = {"page": tf.train.Feature(bytes_list=tf.train.BytesList(value=[page])),
         "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"u%d" % (i * 7 % 3000)]))}
    return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()


def _statistics(tmp_path) -> statistics_pb2.DatasetFeatureStatistics:
    """TFX's StatisticsGen executor (with our reader) on ROWS examples, with the default config's options."""
    split = tmp_path / "examples" / "Split-train"
    split.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(split / "data_tfrecord-00000-of-00001.gz"), "GZIP") as w:
        for i in range(ROWS):
            w.write(_example(i))
    options = statistics_options(parse_config(tiny_config_dict()))
    assert options.use_sketch_based_topk_uniques  # the default
    examples = standard_artifacts.Examples()
    examples.uri = str(split.parent)
    examples.split_names = artifact_utils.encode_split_names(["train"])
    stats = standard_artifacts.ExampleStatistics()
    stats.uri = str(tmp_path / "statistics")
    stats.split_names = artifact_utils.encode_split_names(["train"])
    context = BaseBeamExecutor.Context(beam_pipeline_args=["--direct_num_workers=1"], tmp_dir=str(tmp_path / "t"))
    statistics_gen.Executor(context).Do({"examples": [examples]}, {"statistics": [stats]},
                                        {"exclude_splits": "[]", "stats_options_json": options.to_json()})
    data = (tmp_path / "statistics" / "Split-train" / "FeatureStats.pb").read_bytes()
    return statistics_pb2.DatasetFeatureStatisticsList.FromString(data).datasets[0]


def _string_stats(dataset, name):
    return next(f.string_stats for f in dataset.features if f.path.step == [name])


def test_sketched_statistics_flag_a_new_category_in_one_row_of_ten_thousand(tmp_path):
    sketched = _statistics(tmp_path)
    assert sketched.num_examples == ROWS
    # a column of at most 1,024 distinct values: its exact counts (what TFDV's exact generator gives)
    page = _string_stats(sketched, "page")
    assert page.unique == 4
    assert ({(v.value, v.frequency) for v in page.top_values}
            == {("home", 3334), ("feed", 3332), ("search", 3333), ("brand-new", 1)})  # row 4321 was a feed row
    # 3,000 distinct values: the distinct count is still exact (below the KMV sketch's 16,384)
    assert _string_stats(sketched, "user_id").unique == 3000

    schema = text_format.Parse(SCHEMA, schema_pb2.Schema())
    anomalies = tfdv.validate_statistics(statistics_pb2.DatasetFeatureStatisticsList(datasets=[sketched]), schema)
    page = anomalies.anomaly_info["page"]
    assert anomalies_pb2.AnomalyInfo.ENUM_TYPE_UNEXPECTED_STRING_VALUES in {r.type for r in page.reason}
    assert "brand-new" in page.description

