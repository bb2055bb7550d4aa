import dataclasses

import numpy as np
import pytest

from models.features import embedding_tables
from models.variants import build_model
from models.warm_start import WarmStartError, load_warm_start, remap_embedding, save_warm_start


def _built(cfg, tables, variant="connection", seed=0):
    return build_model(cfg, tables, variant=variant, seed=seed)


def test_remap_embedding_moves_rows_by_token_and_keeps_padding_oov_and_fresh_rows():
    base = np.arange(12, dtype=np.float32).reshape(6, 2)  # pad, a, b, c, oov0, oov1
    fresh = -np.ones((6, 2), np.float32)  # pad, c, x, a, oov0, oov1
    out, carried = remap_embedding(base, ["a", "b", "c"], ["c", "x", "a"], 2, fresh)
    np.testing.assert_array_equal(out[0], base[0])  # padding row
    np.testing.assert_array_equal(out[1], base[3])  # c
    np.testing.assert_array_equal(out[2], fresh[2])  # x is new: fresh initialization
    np.testing.assert_array_equal(out[3], base[1])  # a
    np.testing.assert_array_equal(out[4:], base[4:])  # OOV rows by position
    assert carried == 5


def test_remap_embedding_rejects_a_matrix_that_does_not_fit_its_vocabulary():
    with pytest.raises(WarmStartError, match="do not match"):
        remap_embedding(np.zeros((3, 2)), ["a", "b", "c"], ["a"], 0, np.zeros((2, 2)))


def test_warm_start_across_a_changed_vocabulary(prepared, tmp_path):
    cfg, tables, *_ = prepared
    old = _built(cfg, tables, seed=1)
    save_warm_start(old, tables, str(tmp_path))

    # tomorrow: one video dropped out, a new one came in, the order changed
    vt = tables["video_id"]
    new_vocab = ("brand-new-video",) + tuple(reversed(vt.vocabulary[1:]))
    new_tables = dict(tables, video_id=dataclasses.replace(vt, vocabulary=new_vocab, size=1 + len(new_vocab) + vt.oov_buckets))
    new = _built(cfg, new_tables, seed=2)
    report = load_warm_start(new, new_tables, str(tmp_path))

    assert report["video_id"] == {"carried": 1 + len(vt.vocabulary) - 1 + vt.oov_buckets, "rows": new_tables["video_id"].size}
    name = [w.name for w in new.weights if "emb_video_id/" in w.name][0]
    old_emb = {w.name: w.numpy() for w in old.weights}[name]
    new_emb = {w.name: w.numpy() for w in new.weights}[name]
    token = vt.vocabulary[-1]  # last yesterday, first known token today
    np.testing.assert_array_equal(new_emb[1 + new_vocab.index(token)], old_emb[1 + vt.vocabulary.index(token)])
    # every other weight (MLP, masks, heads, hashed tables) is copied as is
    for w_old, w_new in zip(old.weights, new.weights):
        if "emb_video_id/" not in w_new.name:
            np.testing.assert_array_equal(w_old.numpy(), w_new.numpy())


def test_warm_start_from_another_architecture_names_the_weight(prepared, tmp_path):
    cfg, tables, *_ = prepared
    save_warm_start(_built(cfg, tables, "layer"), tables, str(tmp_path))
    with pytest.raises(WarmStartError, match="weights, the model built from this config has|different architecture"):
        load_warm_start(_built(cfg, tables, "connection"), tables, str(tmp_path))


def test_missing_warm_start_files_are_named(prepared, tmp_path):
    cfg, tables, *_ = prepared
    with pytest.raises(WarmStartError, match="lacks weights.npz, weights.json"):
        load_warm_start(_built(cfg, tables), tables, str(tmp_path))


def test_hashed_tables_need_no_vocabulary(tiny_config):
    vocabularies = {f.name: ["v1", "v2"] for f in tiny_config.features if getattr(f, "vocab_size", None)}
    tables = embedding_tables(tiny_config, vocabularies)
    assert tables["user_id"].vocabulary is None and tables["user_id"].size == 1 + 20000
