import numpy as np
import pytest
import tensorflow as tf

from models.config import VARIANTS, ConfigError, parse_config
from models.data import LABEL, SPACE, WEIGHT
from models.engine import Engine
from models.variants import CUSTOM_OBJECTS, MaskedNetwork, build_model, esmm_parents
from tests.conftest import rewrite_stream, tiny_config_dict


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains_through_the_engine_and_predicts_in_unit_interval(variant, prepared):
    cfg, tables, train, valid = prepared
    model = build_model(cfg, tables, variant=variant, seed=1)
    before = [w.numpy().copy() for w in model.trainable_weights]
    engine = Engine(model, cfg.training, cfg.tuning)
    schedule = "alternate" if variant in ("esmm", "single") else "mixed"  # both schedules serve every variant
    fit = engine.fit(train, epochs=1, schedule=schedule)
    assert fit.steps > 0 and all(np.isfinite(v) for v in fit.epochs[0].loss.values())
    p = engine.predict(valid, in_space_only=False)
    assert set(p.preds) == {"ctr", "cvr"}
    for t, v in p.preds.items():
        assert v.shape == (len(valid),)
        assert np.all((v >= 0) & (v <= 1)), t
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


def _with_finish_task(cols):
    cols[LABEL + "finish"] = (cols[LABEL + "cvr"] > 0.9).astype(np.float32)
    cols[SPACE + "finish"] = cols[SPACE + "cvr"].copy()
    cols[WEIGHT + "finish"] = cols[SPACE + "cvr"].copy()
    return cols


def test_three_tasks_every_variant(prepared, tmp_path):
    d = tiny_config_dict()
    d["tasks"].append(
        {"name": "finish", "type": "binary", "label": {"column": "click"}, "where": "click == 1", "loss": "focal", "weight": 0.2}
    )
    cfg3 = parse_config(d)
    train3 = rewrite_stream(prepared.train, tmp_path, cfg3, _with_finish_task)
    for variant in ("ple", "masked"):
        model = build_model(cfg3, prepared.tables, variant=variant, seed=0)
        engine = Engine(model, cfg3.training, cfg3.tuning)
        engine.fit(train3, epochs=1)
        assert set(engine.evaluate(train3)) == {"ctr", "cvr", "finish"}


def test_ple_has_at_least_two_levels(prepared):
    cfg, tables, *_ = prepared
    model = build_model(cfg, tables, variant="ple")
    assert len(model.levels) >= 2
    with pytest.raises(ConfigError, match="model.ple_levels"):
        parse_config(tiny_config_dict(ple_levels=1))


def test_esmm_requires_chained_sample_space():
    d = tiny_config_dict()
    assert esmm_parents(parse_config(d).tasks) == {"cvr": "ctr"}
    d["tasks"][1]["where"] = "duration > 10"
    with pytest.raises(ValueError, match="esmm: task 'cvr'"):
        esmm_parents(parse_config(d).tasks)


def test_masked_network_all_ones_masks_share_everything(prepared):
    cfg, tables, *_ = prepared
    model = build_model(cfg, tables, variant="masked", seed=0)
    x = prepared.batch(8)
    preds = model(x)
    for layer in model.masked_layers:
        assert layer.mask.shape[0] == 2 and np.all(layer.mask.numpy() == 1.0)
    # same trunk for both tasks: hidden activations are identical with all-ones masks
    h = model.interaction(model.embedding(x))
    np.testing.assert_array_equal(model.mlp(h, task=0).numpy(), model.mlp(h, task=1).numpy())
    assert preds["ctr"].shape == preds["cvr"].shape


@pytest.mark.parametrize("variant", ["masked", "ple", "esmm"])
def test_model_round_trips_via_keras_serialization_and_weights(prepared, tmp_path, variant):
    cfg, tables, *_ = prepared
    model = build_model(cfg, tables, variant=variant, seed=0)
    x = prepared.batch(64)
    if variant == "masked":
        model.masked_layers[0].set_mask(1, np.zeros(model.masked_layers[0].mask.shape[1:], np.float32))
    ref = model(x)
    model.save_weights(tmp_path / "ckpt")
    # registered serializables: the config holds typed sections, not the project file
    config = tf.keras.utils.serialize_keras_object(model)
    assert config["registered_name"].startswith("ncs>") and "pipeline" not in str(config["config"])
    clone = tf.keras.utils.deserialize_keras_object(config)
    clone(x)
    clone.load_weights(tmp_path / "ckpt")
    out = clone(x)
    for t in ref:
        np.testing.assert_allclose(out[t].numpy(), ref[t].numpy(), rtol=1e-6)
    assert "MaskedNetwork" in CUSTOM_OBJECTS and isinstance(build_model(cfg, tables, "masked"), MaskedNetwork)


def test_seed_makes_initialization_reproducible(prepared):
    cfg, tables, *_ = prepared
    x = prepared.batch(64)
    a = build_model(cfg, tables, variant="layer", seed=7)(x)
    b = build_model(cfg, tables, variant="layer", seed=7)(x)
    np.testing.assert_array_equal(a["ctr"].numpy(), b["ctr"].numpy())


def test_dense_mlp_is_a_bottom_mlp_for_numeric_features(prepared):
    from models.config import parse_config
    from tests.conftest import tiny_config_dict

    default = build_model(prepared.config, prepared.tables, variant="layer", seed=0)
    names = {w.name.split("/")[-2] for w in default.weights if "numeric" in w.name}
    assert names == {"numeric_bottom"}  # the historical single projection
    d = tiny_config_dict()
    d["model"]["dense_mlp"] = [8, 6]
    cfg = parse_config(d)
    model = build_model(cfg, prepared.tables, variant="layer", seed=0)
    model(prepared.batch(16))
    shapes = {w.name.split("/")[-2]: tuple(w.shape) for w in model.weights if "numeric" in w.name and "kernel" in w.name}
    assert shapes["numeric_mlp_0"][1] == 8 and shapes["numeric_mlp_1"] == (8, 6)
    assert shapes["numeric_bottom"] == (6, cfg.model.embedding_dim)
    layer = model.embedding if hasattr(model, "embedding") else None
    if layer is not None:
        assert layer.get_config()["dense_mlp"] == [8, 6]
