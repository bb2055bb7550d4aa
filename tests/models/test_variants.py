import numpy as np
import pytest
import tensorflow as tf

from models.config import VARIANTS, parse_config
from models.data import make_dataset
from models.training import predict, train_model
from models.variants import CUSTOM_OBJECTS, MaskedNetwork, build_model, esmm_parents
from tests.conftest import tiny_config_dict


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_builds_trains_and_predicts_in_unit_interval(variant, prepared):
    cfg, tables, split = prepared
    model = build_model(cfg, tables, variant=variant, seed=1)
    predict(model, split)  # builds the weights
    before = [w.numpy().copy() for w in model.trainable_weights]
    hist = train_model(model, split, cfg, epochs=1)
    assert np.isfinite(hist.history["loss"][-1])
    preds = predict(model, split)
    assert set(preds) == {"ctr", "cvr"}
    for t, p in preds.items():
        assert p.shape == (len(split),)
        assert np.all((p >= 0) & (p <= 1)), t
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


def test_three_tasks_every_variant(prepared):
    cfg, tables, split = prepared
    d = tiny_config_dict()
    d["tasks"].append(
        {"name": "finish", "type": "binary", "label": {"column": "click"}, "where": "click == 1", "loss": "focal", "weight": 0.2}
    )
    cfg3 = parse_config(d)
    labels = dict(split.labels, finish=(split.labels["cvr"] > 0.9).astype(np.float32))
    spaces = dict(split.spaces, finish=split.spaces["cvr"])
    ds = make_dataset(split.inputs, labels, spaces, 512)
    for variant in ("single", "ple", "masked", "mmoe"):
        model = build_model(cfg3, tables, variant=variant, seed=0)
        model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), weighted_metrics=[])
        model.fit(ds, epochs=1, verbose=0)
        out = model.predict(ds.map(lambda x, y, w: x), verbose=0)
        assert set(out) == {"ctr", "cvr", "finish"}


def test_ple_has_at_least_two_levels(prepared):
    cfg, tables, _ = prepared
    model = build_model(cfg, tables, variant="ple")
    assert len(model.levels) >= 2
    with pytest.raises(Exception):
        parse_config(tiny_config_dict(ple_levels=1))


def test_esmm_requires_chained_sample_space():
    d = tiny_config_dict()
    assert esmm_parents(parse_config(d)) == {"cvr": "ctr"}
    d["tasks"][1]["where"] = "duration > 10"
    with pytest.raises(ValueError, match="esmm: task 'cvr'"):
        esmm_parents(parse_config(d))


def test_masked_network_all_ones_masks_share_everything(prepared):
    cfg, tables, split = prepared
    model = build_model(cfg, tables, variant="masked", seed=0)
    preds = predict(model, split)
    for layer in model.masked_layers:
        assert layer.mask.shape[0] == 2 and np.all(layer.mask.numpy() == 1.0)
    # same trunk for both tasks: hidden activations are identical with all-ones masks
    x = model.interaction(model.embedding({k: v[:8] for k, v in split.inputs.items()}))
    np.testing.assert_array_equal(model.mlp(x, task=0).numpy(), model.mlp(x, task=1).numpy())
    assert preds["ctr"].shape == preds["cvr"].shape


def test_model_round_trips_via_config_and_weights(prepared, tmp_path):
    cfg, tables, split = prepared
    model = build_model(cfg, tables, variant="masked", seed=0)
    predict(model, split)
    model.masked_layers[0].set_mask(1, np.zeros(model.masked_layers[0].mask.shape[1:], np.float32))
    ref = predict(model, split)
    model.save_weights(tmp_path / "ckpt")
    clone = MaskedNetwork.from_config(model.get_config())
    predict(clone, split)
    clone.load_weights(tmp_path / "ckpt")
    out = predict(clone, split)
    for t in ref:
        np.testing.assert_allclose(out[t], ref[t], rtol=1e-6)
    assert "MaskedNetwork" in CUSTOM_OBJECTS


def test_seed_makes_initialization_reproducible(prepared):
    cfg, tables, split = prepared
    a = predict(build_model(cfg, tables, variant="layer", seed=7), split)
    b = predict(build_model(cfg, tables, variant="layer", seed=7), split)
    np.testing.assert_array_equal(a["ctr"], b["ctr"])
