"""The TFT preprocessing_fn (the one preprocessing) on a hand-written frame, value by value."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from models.config import parse_config

CONFIG = {
    "dataset": {"name": "hand", "columns": ["cat", "cat2", "multi", "tie", "hashed", "num", "click", "watch", "dur"],
                "duration_column": "dur"},
    "features": [
        {"name": "cat", "type": "categorical", "vocab_size": 2, "oov_buckets": 2},
        {"name": "cat2", "type": "categorical", "shared_embedding": "cat"},
        {"name": "multi", "type": "multi_categorical", "vocab_size": 3, "max_length": 2, "separator": "|"},
        {"name": "tie", "type": "categorical", "vocab_size": 3},
        {"name": "hashed", "type": "categorical", "hash_buckets": 5},
        {"name": "num", "type": "numeric", "log": True},
    ],
    "tasks": [
        {"name": "ctr", "type": "binary", "label": {"column": "click"}},
        {"name": "cvr", "type": "regression", "label": {"ratio": ["watch", "dur"]}, "where": "click == 1", "loss": "mse"},
    ],
    "tuning": {"gradient_conflict": {"enabled": True, "task": "cvr", "watch_column": "watch", "duration_column": "dur",
                                     "thresholds": [[60, 3], [1e9, 10]], "weight": 2.0}},
    "pipeline": {"slices": [], "duration_buckets": [60, 300]},
}

FRAME = pd.DataFrame({
    # table "cat" counts a 3+2, b 2+2, c 1+1, z 1 over cat and cat2 (shared vocabulary): top 2 = a, b
    "cat": ["a", "a", "a", "b", "b", "c"],
    "cat2": ["b", "c", "a", "a", "z", "b"],
    # after max_length 2: x 4, y 3, z 2 (the third token of the last row is cut)
    "multi": ["x|y", "x|y", "x", "z", "x", "y|z|x"],
    # p 2, q 2, r 1, s 1: equal counts are ordered by the token, largest first (TFT's order), so the top 3 = q, p, s
    "tie": ["p", "q", "r", "p", "q", "s"],
    "hashed": ["h1", "h2", "h3", "h1", "h4", "h5"],
    "num": [0.0, 1.0, 3.0, 10.0, -2.0, 100.0],
    "click": [1.0, 0.0, 1.0, 1.0, 0.0, 1.0],
    "watch": [30.0, 0.0, 2.0, 500.0, 0.0, 5.0],
    "dur": [60.0, 120.0, 100.0, 400.0, 50.0, 1000.0],
})


@pytest.fixture(scope="module")
def transformed_rows(tmp_path_factory):
    import tensorflow_transform as tft

    from models.data import ROW_ID, split_files
    from pipeline.local_transform import run_local_transform

    config = parse_config(CONFIG)
    out = run_local_transform(config, {"train": FRAME, "valid": FRAME, "test": FRAME}, tmp_path_factory.mktemp("tft"),
                              log=lambda m: None)
    tft_output = tft.TFTransformOutput(str(out / "transform"))
    spec = tft_output.transformed_feature_spec()
    rows = tf.data.TFRecordDataset(split_files(str(out), "train"), compression_type="GZIP").batch(100)
    cols = {k: v.numpy() for k, v in tf.io.parse_example(next(iter(rows)), spec).items()}
    order = np.argsort(cols[ROW_ID])
    return {k: v[order] for k, v in cols.items()}, tft_output


def test_vocabulary_with_oov_buckets_and_shared_vocabulary(transformed_rows):
    cols, tft_output = transformed_rows
    vocab = [w.decode() for w in tft_output.vocabulary_by_name("vocab_cat")]
    assert vocab == ["a", "b"]  # most frequent first, counted over both features of the table
    cat, cat2 = cols["cat"].reshape(-1), cols["cat2"].reshape(-1)
    assert cat[:5].tolist() == [1, 1, 1, 2, 2]  # 0 is padding, vocabulary ids from 1
    assert cat[5] in (3, 4)  # "c": one of the 2 OOV buckets after the vocabulary
    assert cat2[[0, 2, 3, 5]].tolist() == [2, 1, 1, 2]  # the shared table's ids
    assert cat2[1] == cat[5]  # the same OOV token hashes to the same bucket in both features
    assert cat2[4] in (3, 4)


def test_vocabulary_order_is_count_then_token_and_counts_multi_valued_tokens(transformed_rows):
    _, tft_output = transformed_rows
    assert [w.decode() for w in tft_output.vocabulary_by_name("vocab_tie")] == ["q", "p", "s"]
    assert [w.decode() for w in tft_output.vocabulary_by_name("vocab_multi")] == ["x", "y", "z"]


def test_multi_valued_feature_is_padded_and_truncated(transformed_rows):
    cols, _ = transformed_rows
    assert cols["multi"].tolist() == [[1, 2], [1, 2], [1, 0], [3, 0], [1, 0], [2, 3]]


def test_hashing_matches_tensorflow_hash_buckets(transformed_rows):
    cols, _ = transformed_rows
    want = tf.strings.to_hash_bucket_fast(FRAME["hashed"].tolist(), 5).numpy() + 1
    assert cols["hashed"].reshape(-1).tolist() == want.tolist()
    assert cols["hashed"].min() >= 1 and cols["hashed"].max() <= 5


def test_numeric_is_log1p_then_z_scored(transformed_rows):
    cols, _ = transformed_rows
    x = np.log1p(np.maximum(FRAME["num"].to_numpy(), 0.0))  # a negative value counts as 0
    np.testing.assert_allclose(cols["num"].reshape(-1), (x - x.mean()) / x.std(), rtol=1e-4, atol=1e-5)


def test_labels_sample_spaces_and_conflict_weights(transformed_rows):
    cols, _ = transformed_rows
    np.testing.assert_array_equal(cols["label__ctr"].reshape(-1), FRAME["click"].to_numpy())
    np.testing.assert_array_equal(cols["space__ctr"].reshape(-1), np.ones(6))
    # clip(watch / dur, 0, 1): 500 s of a 400 s video counts as 1
    np.testing.assert_allclose(cols["label__cvr"].reshape(-1), [0.5, 0.0, 0.02, 1.0, 0.0, 0.005], rtol=1e-6)
    np.testing.assert_array_equal(cols["space__cvr"].reshape(-1), FRAME["click"].to_numpy())
    # clicked rows watched less than their duration bucket's minimum (3 s up to 60 s, else 10 s) weigh 2;
    # rows outside the sample space weigh 0 (row 0: 30 s of a 60 s video is no conflict)
    np.testing.assert_array_equal(cols["weight__cvr"].reshape(-1), [1.0, 0.0, 2.0, 1.0, 0.0, 2.0])
    np.testing.assert_array_equal(cols["weight__ctr"].reshape(-1), np.ones(6))


def test_duration_bucket(transformed_rows):
    cols, _ = transformed_rows
    got = [b.decode() for b in cols["duration_bucket"].reshape(-1)]
    assert got == ["60-300s", "60-300s", "60-300s", ">=300s", "<60s", ">=300s"]
