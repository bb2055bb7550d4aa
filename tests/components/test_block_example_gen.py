"""ExampleGen's block-at-a-time split and write (components/block_example_gen.py), through both executors on it."""

import glob
import os

import pandas as pd
import pytest
import tensorflow as tf
from tfx.components.example_gen.base_example_gen_executor import _PartitionFn
from tfx.proto import example_gen_pb2

from components import csv_example_gen, parquet_example_gen
from components.parquet_example_gen import row_to_example
from tests.components.test_csv_example_gen import run_example_gen


def _ids(path):
    return [tf.train.Example.FromString(r.numpy()).features.feature["id"].int64_list.value[0]
            for r in tf.data.TFRecordDataset([path], compression_type="GZIP")]


def _write_days(root, days=3, rows=300):
    for d in range(days):
        (root / f"2026010{d + 1}").mkdir(parents=True)
        body = "".join(f"{d * rows + i},{i % 7},page{i % 3}\n" for i in range(rows))
        (root / f"2026010{d + 1}" / "part-00000.csv").write_text("id,n,page\n" + body)


def _files(out, split):
    return sorted(glob.glob(f"{out}/Split-{split}/*"))


def test_a_split_is_one_shuffled_file_per_input_file_and_the_same_bytes_every_run(tmp_path):
    _write_days(tmp_path / "logs")
    run_example_gen(csv_example_gen.Executor, tmp_path / "logs", tmp_path / "a")
    run_example_gen(csv_example_gen.Executor, tmp_path / "logs", tmp_path / "b")
    seen = []
    for split in ("train", "eval"):
        files = _files(tmp_path / "a", split)
        # one file per input file, but at least MIN_SHARDS (so several workers can read a one-file day)
        assert [os.path.basename(f) for f in files] == [f"data_tfrecord-0000{i}-of-00004.gz" for i in range(4)]
        for f in files:  # a complete file under its final name only, and identical on a rerun
            with open(f, "rb") as a, open(f.replace("/a/", "/b/"), "rb") as b:
                assert a.read() == b.read()
        for f in files:
            ids = _ids(f)
            seen += ids
            # rows of every day in each shard, not in the files' order: shuffled across the split as Reshuffle does
            assert {i // 300 for i in ids} == {0, 1, 2} and ids != sorted(ids)
    assert sorted(seen) == list(range(900))
    assert sorted(os.listdir(tmp_path / "a")) == ["Split-eval", "Split-train"]  # no shard left half-written


def test_a_split_no_row_falls_into_still_has_a_file(tmp_path):
    (tmp_path / "logs" / "20260101").mkdir(parents=True)
    (tmp_path / "logs" / "20260101" / "part-00000.csv").write_text("id,n,page\n1,2,home\n")
    got = run_example_gen(csv_example_gen.Executor, tmp_path / "logs", tmp_path / "out")
    assert len(got["train"]) + len(got["eval"]) == 1
    # the empty split still has a file; the other has the one row in the one shard it fell into
    assert len(_files(tmp_path / "out", "train")) == len(_files(tmp_path / "out", "eval")) == 1


def test_parquet_rows_keep_their_zeros_and_land_in_tfx_hash_splits(tmp_path):
    rows = [{"id": i, "click": i % 2, "watch_seconds": float(i % 3), "page": ["home", None][i % 5 == 0]}
            for i in range(300)]
    for d in range(2):
        (tmp_path / "logs" / f"2026010{d + 1}").mkdir(parents=True)
        pd.DataFrame(rows[d * 150:(d + 1) * 150]).to_parquet(tmp_path / "logs" / f"2026010{d + 1}" / "p.parquet")
    got = run_example_gen(parquet_example_gen.Executor, tmp_path / "logs", tmp_path / "out", pattern="*/*.parquet")
    config = example_gen_pb2.SplitConfig()
    expected = {"train": [], "eval": []}
    for row in rows:
        record = row_to_example(row).SerializeToString(deterministic=True)
        expected[["train", "eval"][_PartitionFn(record, 2, [2, 3], config)]].append(record)
    assert got["train"] == sorted(expected["train"]) and got["eval"] == sorted(expected["eval"])
    zero = tf.train.Example.FromString(next(r for r in got["train"] + got["eval"]
                                            if tf.train.Example.FromString(r).features.feature["id"].int64_list.value == [0]))
    assert list(zero.features.feature["click"].int64_list.value) == [0]
    assert zero.features.feature["page"].WhichOneof("kind") is None  # None: a missing value


def test_a_corrupt_parquet_file_is_named(tmp_path):
    (tmp_path / "logs" / "20260101").mkdir(parents=True)
    bad = tmp_path / "logs" / "20260101" / "p.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(Exception, match=r"20260101/p\.parquet"):
        run_example_gen(parquet_example_gen.Executor, tmp_path / "logs", tmp_path / "out", pattern="*/*.parquet")
