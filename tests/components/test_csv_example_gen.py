"""The CSV ExampleGen executor writes what TFX's stock CsvExampleGen writes: the same examples in the same splits."""

import glob

import pyarrow as pa
import pytest
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as stock
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components import csv_example_gen
from components.csv_example_gen import ColumnType, cell_type, column_type

HEADER = "id,count,score,name,note,empty,big,mixed\n"
# every type rule of the stock inference: ints, a float in a later file makes `count` FLOAT, an integer over
# int64 makes `big` STRING, Python-only numbers (spaces, underscores, nan/inf), empty cells, an all-empty
# column, quoted separators and a quoted field over two lines, non-ASCII text
DAY1 = (
    '1,3,0.5,alice,"a, b",,12,7\n'
    '2,-4, 1.5 ,bob,"two\nlines",,-3, 8\n'
    '3,,nan,,plain,,5,1_000\n'
    '4,0,inf,ünï,,,0,+9\n'
)
DAY2 = (
    '5,2.5,-0.0,carol,x,,99999999999999999999,4\n'
    '6,7,1e3,NA,"q""uote",,1,\n'
)


def run_example_gen(executor_cls, data_root, out_dir, pattern="*/*.csv"):
    """Run an ExampleGen executor (train: 2 hash buckets, eval: 1); split -> sorted records, and the raw ones."""
    examples = standard_artifacts.Examples()
    examples.uri = str(out_dir)
    split = example_gen_pb2.SplitConfig(
        splits=[example_gen_pb2.SplitConfig.Split(name=n, hash_buckets=b) for n, b in (("train", 2), ("eval", 1))]
    )
    props = {
        "input_base": str(data_root),
        "input_config": proto_utils.proto_to_json(
            example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="logs", pattern=pattern)])
        ),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output(split_config=split)),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    }
    context = BaseBeamExecutor.Context(beam_pipeline_args=[], tmp_dir=str(out_dir) + "_tmp", unique_id="1")
    executor_cls(context).Do({}, {"examples": [examples]}, props)
    out = {}
    for name in ("train", "eval"):
        files = glob.glob(f"{out_dir}/Split-{name}/*")
        records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
        out[name] = sorted(tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in records)
        out[name + "_raw"] = sorted(records)
    return out


def _write(root, files):
    for day, body in files.items():
        (root / day).mkdir(parents=True)
        (root / day / "part-00000.csv").write_text(HEADER + body, encoding="utf-8")


def test_same_examples_in_the_same_splits_as_the_stock_executor(tmp_path):
    _write(tmp_path / "logs", {"20260101": DAY1, "20260102": DAY2})
    ours = run_example_gen(csv_example_gen.Executor, tmp_path / "logs", tmp_path / "ours")
    theirs = run_example_gen(stock.Executor, tmp_path / "logs", tmp_path / "stock")
    assert len(ours["train"]) + len(ours["eval"]) == 6
    assert ours["train"] == theirs["train"] and ours["eval"] == theirs["eval"]
    # the records are written in deterministic form (the bytes ExampleGen hashed to choose the split)
    assert ours["train_raw"] == ours["train"] and ours["eval_raw"] == ours["eval"]
    rows = {}
    for r in ours["train"] + ours["eval"]:
        f = tf.train.Example.FromString(r).features.feature
        rows[f["id"].int64_list.value[0]] = f
    assert list(rows[1]["count"].float_list.value) == [3.0]  # FLOAT: 2.5 in the second file
    assert list(rows[3]["count"].float_list.value) == []  # an empty cell: a feature with no value
    assert rows[1]["empty"].WhichOneof("kind") is None  # a column with no value anywhere: a feature of no kind
    assert list(rows[5]["big"].bytes_list.value) == [b"99999999999999999999"]  # over int64: STRING
    assert list(rows[2]["note"].bytes_list.value) == [b"two\nlines"]
    assert list(rows[4]["name"].bytes_list.value) == ["ünï".encode()]
    assert list(rows[3]["mixed"].int64_list.value) == [1000] and list(rows[2]["mixed"].int64_list.value) == [8]


def test_the_same_bytes_on_every_run(tmp_path):
    _write(tmp_path / "logs", {"20260101": DAY1 * 20})
    first = run_example_gen(csv_example_gen.Executor, tmp_path / "logs", tmp_path / "a")
    again = run_example_gen(csv_example_gen.Executor, tmp_path / "logs", tmp_path / "b")
    assert first["train_raw"] == again["train_raw"] and first["eval_raw"] == again["eval_raw"]


@pytest.mark.parametrize(
    "cells,expected",
    [
        (["1", "-2", "007"], ColumnType.INT),
        (["1", "2.5"], ColumnType.FLOAT),
        ([" 3 ", "4"], ColumnType.INT),
        (["Infinity", "1"], ColumnType.FLOAT),
        (["1", "99999999999999999999"], ColumnType.STRING),
        (["1.5", "99999999999999999999"], ColumnType.STRING),
        (["1"] * 100 + ["x"], ColumnType.STRING),
        ([], ColumnType.UNKNOWN),
    ],
)
def test_column_type_is_the_highest_cell_type(cells, expected):
    assert column_type(pa.array(cells, pa.string())) == expected
    assert max([cell_type(c) for c in cells], default=ColumnType.UNKNOWN) == expected


def test_a_ragged_row_names_the_file(tmp_path):
    _write(tmp_path / "logs", {"20260101": DAY1 + "7,1,2\n"})
    with pytest.raises(Exception, match=r"20260101/part-00000\.csv.*Expected 8 columns, got 3"):
        run_example_gen(csv_example_gen.Executor, tmp_path / "logs", tmp_path / "ours")


def test_files_with_different_headers_are_refused(tmp_path):
    _write(tmp_path / "logs", {"20260101": DAY1})
    (tmp_path / "logs" / "20260102").mkdir()
    (tmp_path / "logs" / "20260102" / "part-00000.csv").write_text("id,count\n1,2\n")
    with pytest.raises(RuntimeError, match="different header.*20260102"):
        run_example_gen(csv_example_gen.Executor, tmp_path / "logs", tmp_path / "ours")

