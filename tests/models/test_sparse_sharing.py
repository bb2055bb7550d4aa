import numpy as np
import pytest

from models.config import parse_config
from models.data import LABEL, SPACE, WEIGHT, EmptySampleSpaceError
from models.engine import Callback, FitResult
from models.masks import TaskMasks
from models.sparse_sharing import SparseSharingTrainer
from models.variants import build_model
from tests.conftest import rewrite_stream, tiny_config_dict


def _cfg(tasks=None, batch_size=512, **sparse):
    d = tiny_config_dict()
    d["sparse"] = {"rounds": 2, "final_density": 0.25, **sparse}
    d["training"]["batch_size"] = batch_size
    if tasks:
        d["tasks"] += tasks
    return parse_config(d)


def _random_masks(model, seed=0, structure="connection"):
    rng = np.random.default_rng(seed)
    m = TaskMasks.all_ones(model, structure)
    for t in m.tasks:
        m.masks[t] = [(rng.random(x.shape) < 0.5).astype(np.float32) for x in m.masks[t]]
    return m


def _kernels(model):
    return [layer.kernel.numpy().copy() for layer in model.masked_layers]


class _OptimizerStateAtFitBegin(Callback):
    """Records, at the start of every fit, whether every optimizer of the engine is in its initial state."""

    def __init__(self):
        self.fits = []

    def on_fit_begin(self, engine, label, epochs):
        fresh = all(np.all(v.numpy() == 0) for opt in engine.optimizers.values() for v in opt.variables)
        self.fits.append((label, fresh, len(engine.optimizers)))


def test_rewind_point_fresh_optimizers_and_density_schedule(prepared):
    cfg = _cfg(rounds=3, final_density=0.2)
    state = _OptimizerStateAtFitBegin()
    trainer = SparseSharingTrainer(cfg, prepared.tables, "connection", seed=3, callbacks=[state])
    trainer.keep_rewind_snapshots = True
    trainer.warmup(prepared.train)
    theta = [w.numpy().copy() for w in trainer.model.trainable_weights]
    masks, rounds, chosen = trainer.search(prepared.train, prepared.valid)
    trainer.joint(prepared.train, masks)
    assert len(trainer.rewinds) == 2 * (cfg.sparse.rounds + 1) + 1
    for snap in trainer.rewinds:
        for a, b in zip(snap, theta):
            np.testing.assert_array_equal(a, b)
    # every search round and the joint run began with reset optimizers, after some had trained
    after_warmup = state.fits[1:]
    assert [label for label, _, _ in after_warmup][-1] == "joint" and len(after_warmup) == 2 * (cfg.sparse.rounds + 1) + 1
    assert all(fresh for _, fresh, n in after_warmup if n), after_warmup
    assert any(n for _, _, n in after_warmup)  # optimizers existed (and had state) when they were reset
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(theta, trainer.model.trainable_weights))
    # densities follow q = 1 - 0.2 ** (1/3) per round
    q = 1 - 0.2 ** (1 / 3)
    for r in rounds:
        assert abs(r.density - (1 - q) ** r.round) < 0.01, r
        assert r.steps > 0 and r.epochs == 1
    assert [r.round for r in rounds if r.task == "ctr"] == [0, 1, 2, 3]
    assert abs(rounds[-1].density - 0.2) < 0.01
    assert set(chosen) == {"ctr", "cvr"}


def test_best_round_is_max_auc_and_min_mse(prepared, monkeypatch):
    trainer = SparseSharingTrainer(_cfg(rounds=3), prepared.tables, "connection", seed=0)
    trainer.theta = [np.array(w) for w in trainer.model.get_weights()]
    monkeypatch.setattr(trainer.engine, "fit", lambda *a, **k: FitResult([], 0, 0.0))  # selection only
    # scripted validation scores per round: AUC peaks at round 2, MSE bottoms at round 1
    scores = {"ctr": iter([0.60, 0.62, 0.70, 0.65]), "cvr": iter([0.10, 0.05, 0.08, 0.20])}
    monkeypatch.setattr(trainer.engine, "evaluate", lambda data, tasks: {
        tasks[0]: {"auc" if tasks[0] == "ctr" else "mse": next(scores[tasks[0]])}})
    _, rounds, chosen = trainer.search(prepared.train, prepared.valid)
    assert chosen == {"ctr": 2, "cvr": 1}


def _check_no_leak_callback(trainer, masks):
    """An engine callback asserting, after every task step, that weights outside that task's mask did not move."""

    class NoLeak(Callback):
        def __init__(self):
            self.before = _kernels(trainer.model)
            self.moved = {t: False for t in masks.tasks}
            self.steps = {t: 0 for t in masks.tasks}

        def on_step_end(self, task, loss):
            after = _kernels(trainer.model)
            for b, a, m in zip(self.before, after, masks.masks[task]):
                np.testing.assert_array_equal(a[m == 0], b[m == 0])
                self.moved[task] |= not np.array_equal(a[m == 1], b[m == 1])
            self.steps[task] += 1
            self.before = after

    return NoLeak()


def test_no_leak_on_a_full_alternate_joint(prepared):
    trainer = SparseSharingTrainer(_cfg(joint_epochs=2, batch_size=128), prepared.tables, "connection", seed=0)
    trainer.warmup(prepared.train)
    masks = _random_masks(trainer.model)
    check = _check_no_leak_callback(trainer, masks)
    trainer.callbacks.append(check)
    trainer.joint(prepared.train, masks)
    # both tasks stepped many times, interleaved, with Adam state accumulated on each
    assert all(n > 2 for n in check.steps.values()) and all(check.moved.values()), check.steps


def _with_like_task(cols):
    # a third task: "like" = click, sample space = rows with an even hour id
    cols[LABEL + "like"] = cols[LABEL + "ctr"].copy()
    cols[SPACE + "like"] = (cols["hour"] % 2 == 0).astype(np.float32)
    cols[WEIGHT + "like"] = cols[SPACE + "like"].copy()
    return cols


def test_no_leak_three_tasks(prepared, tmp_path):
    like = {"name": "like", "type": "binary", "label": {"column": "click"}, "where": "hour >= 12", "weight": 0.1}
    cfg3 = _cfg(tasks=[like], rounds=1, final_density=0.5, batch_size=256)
    train3 = rewrite_stream(prepared.train, tmp_path / "train", cfg3, _with_like_task)
    trainer = SparseSharingTrainer(cfg3, prepared.tables, "connection", seed=0)
    trainer.warmup(train3)
    masks = _random_masks(trainer.model, seed=1)
    check = _check_no_leak_callback(trainer, masks)
    trainer.callbacks.append(check)
    trainer.joint(train3, masks)
    assert all(check.moved.values()) and set(check.steps) == {"ctr", "cvr", "like"}
    assert set(trainer.engine.evaluate(train3)) == {"ctr", "cvr", "like"}


def test_mixed_schedule_moves_nothing_outside_the_union_of_masks(prepared):
    trainer = SparseSharingTrainer(_cfg(schedule="mixed"), prepared.tables, "connection", seed=0)
    trainer.warmup(prepared.train)
    masks = _random_masks(trainer.model, seed=2)
    union = [np.maximum(a, b) for a, b in zip(masks.masks["ctr"], masks.masks["cvr"])]
    trainer.rewind(masks)
    before = _kernels(trainer.model)
    trainer.joint(prepared.train, masks)
    for b, a, u in zip(before, _kernels(trainer.model), union):
        np.testing.assert_array_equal(a[u == 0], b[u == 0])
        assert not np.array_equal(a[u == 1], b[u == 1])


def test_old_joint_schedule_name_means_mixed():
    assert _cfg(schedule="joint").sparse.schedule == "mixed"


def test_neuron_search_masks_are_unit_structured(prepared):
    result = SparseSharingTrainer(_cfg(allow_dense=False), prepared.tables, "neuron", seed=0).run(prepared.train, prepared.valid)
    assert all(r > 0 for r in result.chosen.values())  # the dense round is forbidden
    for t in result.masks.tasks:
        for m in result.masks.masks[t]:
            alive = m.any(axis=0)
            assert np.all(m[:, alive] == 1) and np.all(m[:, ~alive] == 0)
        assert result.masks.density(t) < 1.0
    assert result.search_cost_ratio > 0
    assert result.steps["warmup"] > 0 and result.steps["search"] > result.steps["warmup"] and result.steps["joint"] > 0


def test_all_ones_masks_reproduce_full_sharing(prepared):
    sb_cfg = parse_config(tiny_config_dict(tower=[]))
    sb = build_model(sb_cfg, prepared.tables, variant="shared_bottom", seed=5)
    masked = build_model(sb_cfg, prepared.tables, variant="connection", seed=6)
    x = prepared.batch(64)
    masked.embedding.set_weights(sb.embedding.get_weights())
    for md, d in zip(masked.mlp.denses, sb.bottom.denses):
        md.kernel.assign(d.kernel)
        md.bias.assign(d.bias)
    for t in ("ctr", "cvr"):
        masked.heads[t].set_weights(sb.heads[t].get_weights())
    a, b = sb(x), masked(x)
    for t in ("ctr", "cvr"):
        np.testing.assert_allclose(a[t].numpy(), b[t].numpy(), rtol=1e-6, atol=1e-7)


def test_empty_sample_space_fails_before_training(prepared, tmp_path):
    cfg = _cfg()

    def no_clicks(cols):
        cols[SPACE + "cvr"] = np.zeros_like(cols[SPACE + "cvr"])
        cols[WEIGHT + "cvr"] = np.zeros_like(cols[WEIGHT + "cvr"])
        return cols

    empty = rewrite_stream(prepared.valid, tmp_path, cfg, no_clicks, name="valid")
    trainer = SparseSharingTrainer(cfg, prepared.tables, "connection", seed=0)
    with pytest.raises(EmptySampleSpaceError, match="'cvr'.*valid split"):
        trainer.run(prepared.train, empty)
    assert trainer.theta is None and trainer.engine.steps_taken == 0  # nothing was trained


def test_tuning_switches(prepared):
    d = tiny_config_dict()
    d["tuning"] = {"multi_view_dim": 2, "width_multiplier": 2.0, "dynamic_loss_gamma": {"cvr": 1.5}}
    cfg = parse_config(d)
    trainer = SparseSharingTrainer(cfg, prepared.tables, "connection", seed=0)
    assert trainer.model.mlp.units == [32, 16]  # width multiplier 2 on [16, 8]
    assert set(trainer.model.views) == {"ctr", "cvr"}  # multi-view embeddings
    trainer.warmup(prepared.train)
    views = [w.numpy().copy() for w in trainer.model.views["cvr"].weights]
    trainer.joint(prepared.train, _random_masks(trainer.model))
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(views, trainer.model.views["cvr"].weights))
    trainer.engine.set_epoch_weights(2)
    assert abs(float(trainer.model.task_weights["cvr"].numpy()) - 0.3 * 1.5**2) < 1e-6
    assert abs(float(trainer.model.task_weights["ctr"].numpy()) - 0.7) < 1e-6


def test_search_rounds_stop_early_under_the_protocol(prepared):
    d = tiny_config_dict()
    d["sparse"] = {"rounds": 1, "final_density": 0.5}
    d["training"].update({"patience": 1, "max_epochs": 2})
    cfg = parse_config(d)
    trainer = SparseSharingTrainer(cfg, prepared.tables, "connection", seed=0)
    trainer.warmup(prepared.train)
    fits = []
    original = trainer.engine.fit

    def spy(*args, **kwargs):
        fits.append(kwargs)
        return original(*args, **kwargs)

    trainer.engine.fit = spy
    _, rounds, _ = trainer.search(prepared.train, prepared.valid)
    # every round trains with validation and patience, capped at max_epochs
    assert len(fits) == 4 and all(f["valid"] is prepared.valid and f["patience"] == 1 and f["epochs"] == 2 for f in fits)
    assert all(1 <= r.epochs <= 2 for r in rounds)


def test_a_validated_round_is_scored_without_another_validation_pass(prepared):
    d = tiny_config_dict()
    d["sparse"] = {"rounds": 1, "final_density": 0.5}
    d["training"].update({"patience": 1, "max_epochs": 3})
    trainer = SparseSharingTrainer(parse_config(d), prepared.tables, "connection", seed=0)
    trainer.warmup(prepared.train)
    passes, original = [], trainer.engine.predict
    trainer.engine.predict = lambda *a, **k: passes.append(1) or original(*a, **k)
    _, rounds, _ = trainer.search(prepared.train, prepared.valid)
    # one validation pass per trained epoch, none more: the round's value is its best epoch's
    assert len(passes) == sum(r.epochs for r in rounds)
    # ... and equals a fresh evaluation of the weights the round ended with (the best epoch's)
    assert rounds[-1].value == trainer.engine.evaluate(prepared.valid, ["cvr"])["cvr"][rounds[-1].metric]


def test_warmup_steps_set_the_rewind_point(prepared):
    trainer = SparseSharingTrainer(_cfg(warmup_steps=3), prepared.tables, "connection", seed=0)
    trainer.warmup(prepared.train)
    assert trainer.warmup_fit.steps == 3 and trainer.engine.steps_taken == 3


def test_extension_prunes_on_only_while_the_sparsest_round_is_best(prepared, monkeypatch):
    from models import sparse_sharing

    # validation MSE falls with every pruning down to round 3, then rises: the search must
    # extend past the 2 planned rounds, try round 4, and stop there (round 3 is chosen)
    cfg = _cfg(rounds=2, final_density=0.5, extend=True, min_density=0.05)
    trainer = SparseSharingTrainer(cfg, prepared.tables, "connection", seed=0)
    trainer.warmup(prepared.train)
    calls = {"ctr": 0, "cvr": 0}
    scripted = {"ctr": [0.60, 0.61, 0.62, 0.63, 0.62, 0.7], "cvr": [0.20, 0.19, 0.18, 0.17, 0.175, 0.1]}

    def fake_evaluate(data, tasks):
        t = tasks[0]
        v = scripted[t][calls[t]]
        calls[t] += 1
        return {t: {"auc": v, "mse": v}}

    monkeypatch.setattr(trainer.engine, "evaluate", fake_evaluate)
    monkeypatch.setattr(trainer, "_train_round", lambda *a, **k: FitResult([], 0, 0.0))
    _, rounds, chosen = trainer.search(prepared.train, prepared.valid)
    for t in ("ctr", "cvr"):
        assert [r.round for r in rounds if r.task == t] == [0, 1, 2, 3, 4]
    assert chosen == {"ctr": 3, "cvr": 3}
    # the bound: with min_density just below round 2's density the search stops at the planned rounds
    assert sparse_sharing._is_best([(0, 1.0, None), (1, 2.0, None)], higher=True)
    assert not sparse_sharing._is_best([(0, 1.0, None), (1, 2.0, None)], higher=False)


def test_controls_have_the_searched_densities(prepared):
    trainer = SparseSharingTrainer(_cfg(), prepared.tables, "connection", seed=0)
    trainer.warmup(prepared.train)
    reference = _random_masks(trainer.model, seed=5)
    for t in reference.tasks:  # per-layer densities that differ by task and layer
        reference.masks[t] = [(np.random.default_rng(i).random(m.shape) < d).astype(np.float32)
                              for i, (m, d) in enumerate(zip(reference.masks[t], (0.3, 0.6) if t == "ctr" else (0.7, 0.2)))]
    kernels = [layer.kernel.numpy() for layer in trainer.model.masked_layers]  # θ (after warm-up)
    theta = trainer.control_masks("theta", reference)
    random = trainer.control_masks("random", reference)
    for t in reference.tasks:
        for ref, th, rn, k in zip(reference.masks[t], theta.masks[t], random.masks[t], kernels):
            assert th.sum() == rn.sum() == pytest.approx(ref.sum(), abs=1)
            # |θ| masks keep exactly the largest magnitudes
            assert np.abs(k[th > 0]).min() >= np.abs(k[th == 0]).max()
    # random masks differ from |θ| masks and between tasks of equal density they are not copies
    assert any(not np.array_equal(a, b) for a, b in zip(theta.masks["ctr"], random.masks["ctr"]))
    # the control trains jointly from θ with those masks
    result = trainer.run_control(prepared.train, prepared.valid, "theta", reference, theta=trainer.theta)
    assert result.steps["search"] == 0 and result.steps["joint"] > 0
    for t in reference.tasks:
        assert result.masks.layer_density(t) == pytest.approx(reference.layer_density(t), abs=1e-3)
    with pytest.raises(ValueError, match="unknown control"):
        trainer.control_masks("magic", reference)
