"""The training engine and its streamed input."""

import numpy as np
import pytest
import tensorflow as tf

from models.config import parse_config
from models.data import LABEL, SPACE, MissingColumnError, SplitStream
from models.engine import Callback, Engine, interleave_schedule, reset_optimizer
from models.variants import build_model
from tests.conftest import tiny_config_dict


def _config(**tuning):
    d = tiny_config_dict()
    d["tuning"] = tuning
    d["training"]["epochs"] = 2
    return parse_config(d)


def test_dynamic_loss_gamma_changes_a_ple_models_training(prepared):
    """PLE's dynamic weights apply to every variant through the engine, not only to connection/neuron."""
    finals = {}
    for gamma in (None, 4.0):
        cfg = _config(**({"dynamic_loss_gamma": {"cvr": gamma}} if gamma else {}))
        model = build_model(cfg, prepared.tables, variant="ple", seed=0)
        engine = Engine(model, cfg.training, cfg.tuning)
        engine.fit(prepared.train, epochs=2)
        # the second epoch trained with w_cvr * gamma ** 1
        assert float(model.task_weights["cvr"].numpy()) == pytest.approx(0.3 * (gamma or 1.0))
        finals[gamma] = [w.numpy().copy() for w in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(finals[None], finals[4.0]))


class _Epochs(Callback):
    def __init__(self):
        self.logs = []

    def on_epoch_end(self, log):
        self.logs.append(log)


def test_early_stopping_restores_the_best_epoch(prepared):
    d = tiny_config_dict()
    d["training"]["learning_rate"] = 0.05  # big steps: validation loss moves (and worsens) quickly
    cfg = parse_config(d)
    model = build_model(cfg, prepared.tables, variant="layer", seed=0)
    engine = Engine(model, cfg.training, cfg.tuning)
    seen = _Epochs()
    fit = engine.fit(prepared.train, epochs=8, valid=prepared.valid, patience=1, callbacks=[seen])
    losses = [log.valid_loss for log in fit.epochs]
    assert fit.best_epoch == int(np.argmin(losses))
    assert len(fit.epochs) == len(seen.logs) and all(log.valid is not None for log in seen.logs)
    if fit.stopped_early:
        assert len(fit.epochs) == fit.best_epoch + 2  # patience 1: one epoch without improvement
    # the restored weights score the best epoch's validation loss
    _, now = engine.validate(prepared.valid)
    assert now == pytest.approx(min(losses), rel=1e-5)
    with pytest.raises(ValueError, match="validation split"):
        engine.fit(prepared.train, epochs=1, patience=1)


def test_task_streams_and_shards(prepared):
    train = prepared.train
    counts = train.counts()
    assert counts["rows"] == len(train) == 1500 and 0 < counts["cvr"] < counts["ctr"] == 1500
    # the CVR stream holds exactly the clicked rows, in full batches but the last
    sizes, rows = [], 0
    for x, y, w in train.batches(100, task="cvr"):
        assert np.all(w["cvr"].numpy() > 0)
        sizes.append(len(y["cvr"]))
        rows += len(y["cvr"])
    assert rows == counts["cvr"] and all(s == 100 for s in sizes[:-1]) and train.steps(100, "cvr") == len(sizes)
    # two input pipelines split every global batch: rows index::2, nothing lost or repeated
    full = next(iter(train.batches(64, shuffle_seed=3)))[1]["ctr"].numpy()
    halves = [next(iter(train.batches(64, shuffle_seed=3, shard=(i, 2))))[1]["ctr"].numpy() for i in range(2)]
    np.testing.assert_array_equal(halves[0], full[0::2])
    np.testing.assert_array_equal(halves[1], full[1::2])
    # the same seed gives the same order; another seed another one
    again = next(iter(train.batches(64, shuffle_seed=3)))[0]["video_id"].numpy()
    other = next(iter(train.batches(64, shuffle_seed=4)))[0]["video_id"].numpy()
    assert np.array_equal(again, next(iter(train.batches(64, shuffle_seed=3)))[0]["video_id"].numpy())
    assert not np.array_equal(again, other)


def test_streams_run_without_the_tf_data_autotuner(prepared):
    # the engine drops an epoch's iterator after its last step; with the autotuner on, deleting
    # it waited for the autotuning thread (seconds per epoch)
    for ds in (prepared.train.batches(64), prepared.train.batches(64, shuffle_seed=1, task="cvr")):
        assert ds.options().autotune.enabled is False


def test_missing_column_names_the_column_and_the_artifact(prepared):
    spec = {k: v for k, v in prepared.train.spec.items() if k != LABEL + "cvr"}
    with pytest.raises(MissingColumnError, match=r"Transform artifact .*lack column\(s\) \['label__cvr'\]"):
        SplitStream.from_feature_spec(prepared.train.files, spec, [f.name for f in prepared.config.features],
                                      prepared.config.task_names, "train", "Transform artifact /x/transform")
    assert SPACE + "cvr" in prepared.train.spec


def test_reset_optimizer_equals_fresh():
    v = tf.Variable([1.0, 2.0])
    opt = tf.keras.optimizers.Adam(0.1)
    opt.apply_gradients([(tf.constant([0.5, -0.5]), v)])
    assert any(np.any(x.numpy() != 0) for x in opt.variables)
    reset_optimizer(opt)
    assert all(np.all(x.numpy() == 0) for x in opt.variables)


def test_interleave_schedule_spreads_tasks():
    order = interleave_schedule({"ctr": 6, "cvr": 2})
    assert order.count("ctr") == 6 and order.count("cvr") == 2
    # batch i of a task with n batches sits at (i + 0.5) / n of the epoch
    assert order == ["ctr", "ctr", "cvr", "ctr", "ctr", "ctr", "cvr", "ctr"]


def test_unknown_schedule_is_refused(prepared):
    model = build_model(prepared.config, prepared.tables, variant="layer", seed=0)
    with pytest.raises(ValueError, match="unknown schedule 'joint'"):
        Engine(model, prepared.config.training).fit(prepared.train, epochs=1, schedule="joint")
