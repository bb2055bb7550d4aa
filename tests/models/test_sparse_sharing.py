import numpy as np
import pytest
import tensorflow as tf

from models.config import parse_config
from models.data import EmptySampleSpaceError
from models.masks import TaskMasks
from models.sparse_sharing import SparseSharingTrainer, interleave_schedule, reset_optimizer
from models.training import Split, predict
from models.variants import build_model
from tests.conftest import tiny_config_dict


def _cfg(**sparse):
    d = tiny_config_dict()
    d["sparse"] = {"rounds": 2, "final_density": 0.25, **sparse}
    d["training"]["batch_size"] = 512
    return parse_config(d)


def _random_masks(trainer, seed=0, structure="connection"):
    rng = np.random.default_rng(seed)
    m = TaskMasks.all_ones(trainer.model, structure)
    for t in m.tasks:
        m.masks[t] = [(rng.random(x.shape) < 0.5).astype(np.float32) for x in m.masks[t]]
    return m


def _kernels(model):
    return [layer.kernel.numpy().copy() for layer in model.masked_layers]


def test_rewind_point_starts_every_round_and_joint(prepared):
    cfg0, tables, split = prepared
    cfg = _cfg()
    trainer = SparseSharingTrainer(cfg, tables, "connection", seed=3)
    trainer.keep_rewind_snapshots = True
    trainer.warmup(split)
    theta = [w.numpy().copy() for w in trainer.model.trainable_weights]
    masks, rounds, chosen = trainer.search(split, split)
    trainer.joint(split, masks)
    assert len(trainer.rewinds) == 2 * (cfg.sparse.rounds + 1) + 1
    for snap in trainer.rewinds:
        for a, b in zip(snap, theta):
            np.testing.assert_array_equal(a, b)
    # the optimizers were reset at each rewind and did train afterwards
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(theta, trainer.model.trainable_weights))


def test_per_round_density_follows_schedule(prepared):
    _, tables, split = prepared
    cfg = _cfg(rounds=3, final_density=0.2)
    trainer = SparseSharingTrainer(cfg, tables, "connection", seed=0)
    trainer.warmup(split)
    _, rounds, chosen = trainer.search(split, split)
    q = 1 - 0.2 ** (1 / 3)
    for r in rounds:
        assert abs(r.density - (1 - q) ** r.round) < 0.01, r
    assert [r.round for r in rounds if r.task == "ctr"] == [0, 1, 2, 3]
    assert abs(rounds[-1].density - 0.2) < 0.01
    assert set(chosen) == {"ctr", "cvr"}


def test_forbid_dense_round(prepared):
    _, tables, split = prepared
    trainer = SparseSharingTrainer(_cfg(allow_dense=False), tables, "connection", seed=0)
    trainer.warmup(split)
    _, _, chosen = trainer.search(split, split)
    assert all(r > 0 for r in chosen.values())


def test_reset_optimizer_equals_fresh():
    v = tf.Variable([1.0, 2.0])
    opt = tf.keras.optimizers.Adam(0.1)
    opt.apply_gradients([(tf.constant([0.5, -0.5]), v)])
    reset_optimizer(opt)
    assert all(np.all(x.numpy() == 0) for x in opt.variables)


def _step_and_check(trainer, split, step_task, masks, batch=256):
    """One optimizer step of ``step_task``; every weight outside its mask must be bit-identical."""
    rows = np.flatnonzero(split.spaces[step_task] > 0)[:batch]
    x = {k: tf.constant(v[rows]) for k, v in split.inputs.items()}
    before = _kernels(trainer.model)
    trainer._task_step(step_task)(x, tf.constant(split.labels[step_task][rows]), tf.constant(split.spaces[step_task][rows]))
    after = _kernels(trainer.model)
    moved = False
    for b, a, m in zip(before, after, masks.masks[step_task]):
        np.testing.assert_array_equal(a[m == 0], b[m == 0])
        moved |= not np.array_equal(a[m == 1], b[m == 1])
    assert moved


def test_no_leak_alternate_schedule(prepared):
    _, tables, split = prepared
    trainer = SparseSharingTrainer(_cfg(), tables, "connection", seed=0)
    trainer.warmup(split)
    masks = _random_masks(trainer)
    trainer.rewind(masks)
    # interleave so each task's Adam state is non-zero when the other task steps
    for t in ["cvr", "ctr", "cvr", "ctr", "ctr", "cvr"]:
        _step_and_check(trainer, split, t, masks)


def test_no_leak_three_tasks(prepared):
    _, tables, split = prepared
    d = tiny_config_dict()
    d["tasks"].append({"name": "like", "type": "binary", "label": {"column": "click"}, "where": "hour >= 12", "weight": 0.1})
    d["sparse"] = {"rounds": 1, "final_density": 0.5}
    cfg3 = parse_config(d)
    hour = np.array([int(h) for h in np.asarray(split.inputs["hour"])])  # encoded ids, any subset works
    spaces = dict(split.spaces, like=(hour % 2 == 0).astype(np.float32))
    split3 = Split(split.inputs, dict(split.labels, like=split.labels["ctr"]), spaces, split.groups)
    trainer = SparseSharingTrainer(cfg3, tables, "connection", seed=0)
    trainer.warmup(split3)
    masks = _random_masks(trainer, seed=1)
    trainer.rewind(masks)
    for t in ["like", "cvr", "ctr", "like", "cvr", "ctr"]:
        _step_and_check(trainer, split3, t, masks)
    # the full engine runs for N = 3 tasks
    result = SparseSharingTrainer(cfg3, tables, "neuron", seed=0).run(split3, split3)
    assert set(result.masks.tasks) == {"ctr", "cvr", "like"}
    assert set(predict(result.model, split3)) == {"ctr", "cvr", "like"}


def test_no_leak_joint_schedule(prepared):
    _, tables, split = prepared
    trainer = SparseSharingTrainer(_cfg(schedule="joint"), tables, "connection", seed=0)
    trainer.warmup(split)
    masks = _random_masks(trainer, seed=2)
    trainer.rewind(masks)
    union = [np.maximum(a, b) for a, b in zip(masks.masks["ctr"], masks.masks["cvr"])]
    before = _kernels(trainer.model)
    trainer._run_joint_epochs(split, 1, "joint")
    for b, a, u in zip(before, _kernels(trainer.model), union):
        np.testing.assert_array_equal(a[u == 0], b[u == 0])
        assert not np.array_equal(a[u == 1], b[u == 1])


def test_neuron_search_masks_are_unit_structured(prepared):
    _, tables, split = prepared
    result = SparseSharingTrainer(_cfg(allow_dense=False), tables, "neuron", seed=0).run(split, split)
    for t in result.masks.tasks:
        for m in result.masks.masks[t]:
            alive = m.any(axis=0)
            assert np.all(m[:, alive] == 1) and np.all(m[:, ~alive] == 0)
        assert result.masks.density(t) < 1.0
    assert result.search_cost_ratio > 0


def test_all_ones_masks_reproduce_full_sharing(prepared):
    cfg, tables, split = prepared
    sb_cfg = parse_config(tiny_config_dict(tower=[]))
    sb = build_model(sb_cfg, tables, variant="shared_bottom", seed=5)
    masked = build_model(sb_cfg, tables, variant="connection", seed=6)
    x = {k: v[:64] for k, v in split.inputs.items()}
    sb(x), masked(x)
    masked.embedding.set_weights(sb.embedding.get_weights())
    for md, d in zip(masked.mlp.denses, sb.bottom.denses):
        md.kernel.assign(d.kernel)
        md.bias.assign(d.bias)
    for t in ("ctr", "cvr"):
        masked.heads[t].set_weights(sb.heads[t].get_weights())
    a, b = sb(x), masked(x)
    for t in ("ctr", "cvr"):
        np.testing.assert_allclose(a[t].numpy(), b[t].numpy(), rtol=1e-6, atol=1e-7)


def test_empty_sample_space_fails_before_training(prepared):
    _, tables, split = prepared
    empty = Split(split.inputs, split.labels, dict(split.spaces, cvr=np.zeros_like(split.spaces["cvr"])), split.groups)
    trainer = SparseSharingTrainer(_cfg(), tables, "connection", seed=0)
    with pytest.raises(EmptySampleSpaceError, match="'cvr'.*validation"):
        trainer.run(split, empty)
    assert trainer.theta is None  # nothing was trained


def test_interleave_schedule_spreads_tasks():
    order = interleave_schedule({"ctr": 6, "cvr": 2})
    assert order.count("ctr") == 6 and order.count("cvr") == 2
    # batch i of a task with n batches sits at (i + 0.5) / n of the epoch
    assert order == ["ctr", "ctr", "cvr", "ctr", "ctr", "ctr", "cvr", "ctr"]


def test_tuning_switches(prepared, small_frame):
    from models.data import conflict_weights, task_arrays

    _, tables, split = prepared
    d = tiny_config_dict()
    d["tuning"] = {
        "gradient_conflict": {"enabled": True, "thresholds": [[60, 3], [1e9, 10]], "weight": 3.0},
        "multi_view_dim": 2,
        "width_multiplier": 2.0,
        "dynamic_loss_gamma": {"cvr": 1.5},
    }
    d["sparse"] = {"rounds": 1, "final_density": 0.5}
    cfg = parse_config(d)
    w = conflict_weights(small_frame, cfg)
    clicked_short = (small_frame.click == 1) & (
        small_frame.watch_seconds < np.where(small_frame.duration <= 60, 3, 10)
    )
    assert np.array_equal(w == 3.0, clicked_short.to_numpy()) and clicked_short.any()
    _, spaces = task_arrays(small_frame, cfg)
    assert spaces["cvr"].max() == 3.0 and np.all(spaces["cvr"][small_frame.click.to_numpy() == 0] == 0)
    trainer = SparseSharingTrainer(cfg, tables, "connection", seed=0)
    assert trainer.model.mlp.units == [32, 16]  # width multiplier 2 on [16, 8]
    result = trainer.run(split, split)
    assert set(result.model.views) == {"ctr", "cvr"}  # multi-view embeddings exist and trained
    trainer._set_epoch_weights(2)
    assert abs(float(trainer.model.task_weights["cvr"].numpy()) - 0.3 * 1.5**2) < 1e-6
    assert abs(float(trainer.model.task_weights["ctr"].numpy()) - 0.7) < 1e-6
