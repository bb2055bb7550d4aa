import numpy as np
import pandas as pd

from models.features import FeatureEncoder, embedding_tables, encode_frame, fit_stats


def test_vocab_oov_hash_and_padding(tiny_config, small_frame):
    stats = fit_stats(small_frame, tiny_config)
    tables = embedding_tables(tiny_config, stats)
    enc = FeatureEncoder(tiny_config.model_dump_json(), stats.to_json())
    frame = small_frame.head(3).copy()
    frame.loc[0, "page"] = "never_seen_page"
    frame.loc[1, "interests"] = ""
    frame.loc[2, "interests"] = "t01|zz_unknown"
    out = encode_frame(frame, enc)
    page = tables["page"]
    assert out["page"][0] > len(page.vocabulary)  # OOV bucket, after the vocabulary
    assert out["page"][0] < page.size
    assert 1 <= out["page"][1] <= len(page.vocabulary)
    assert np.all(out["interests"][1] == 0)  # empty list -> all padding
    assert out["interests"][2][0] == stats.vocabularies["interests"].index("t01") + 1
    assert out["interests"][2][1] > len(stats.vocabularies["interests"])
    assert out["interests"].shape[1] == 4
    # hashed feature ids live in [1, hash_buckets]
    assert np.all((out["user_id"] >= 1) & (out["user_id"] <= 20000))
    # shared embedding: tags read the interests table, fitted on both columns
    assert "tags" not in tables and out["tags"].max() < tables["interests"].size


def test_numeric_is_log_normalized(tiny_config, small_frame):
    stats = fit_stats(small_frame, tiny_config)
    enc = FeatureEncoder(tiny_config.model_dump_json(), stats.to_json())
    out = encode_frame(small_frame, enc)
    assert abs(out["duration"].mean()) < 1e-3 and abs(out["duration"].std() - 1) < 1e-2


def test_stats_round_trip_and_encoder_config(tiny_config, small_frame):
    stats = fit_stats(small_frame, tiny_config)
    again = type(stats).from_json(stats.to_json())
    assert again == stats
    enc = FeatureEncoder(tiny_config.model_dump_json(), stats.to_json())
    clone = FeatureEncoder.from_config(enc.get_config())
    frame = pd.DataFrame(small_frame.head(5))
    a, b = encode_frame(frame, enc), encode_frame(frame, clone)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
