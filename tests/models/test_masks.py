import numpy as np
import pytest

from models.config import parse_config
from models.mask_analytics import analyze, write_analytics
from models.masks import MaskShapeError, TaskMasks, prune_connections, prune_neurons
from models.variants import build_model
from tests.conftest import tiny_config_dict


def _kernels(rng, shapes):
    return [rng.normal(size=s).astype(np.float32) for s in shapes]


def test_per_layer_pruning_drops_smallest_alive():
    rng = np.random.default_rng(0)
    k = _kernels(rng, [(10, 10), (10, 4)])
    m = [np.ones_like(x) for x in k]
    m1 = prune_connections(k, m, 0.3)
    assert [int(x.sum()) for x in m1] == [70, 28]
    # the dropped weights are the smallest magnitudes
    assert np.abs(k[0][m1[0] == 0]).max() <= np.abs(k[0][m1[0] == 1]).min()
    # second round prunes among the alive ones only: 30% of 70 = 21 more
    m2 = prune_connections(k, m1, 0.3)
    assert int(m2[0].sum()) == 49 and np.all(m2[0] <= m1[0])


def test_global_scope_guard_keeps_small_layer_alive():
    rng = np.random.default_rng(1)
    k = _kernels(rng, [(100, 50), (50, 2)])
    k[1] *= 1e-4  # a layer whose weights are all tiny would be emptied by a global cut
    m = [np.ones_like(x) for x in k]
    out = prune_connections(k, m, 0.9, scope="global", min_density=0.05)
    assert out[1].sum() >= np.ceil(0.05 * 100)
    assert out[1].sum() < 100
    total = sum(x.sum() for x in out)
    assert abs(total - 0.1 * sum(x.size for x in k)) <= 0.06 * 100 + 1


def test_neuron_masks_are_unit_structured():
    rng = np.random.default_rng(2)
    k = _kernels(rng, [(6, 10), (10, 5)])
    m = prune_neurons(k, [np.ones_like(x) for x in k], 0.5)
    for x in m:
        cols = x.any(axis=0)
        assert np.all(x[:, cols] == 1) and np.all(x[:, ~cols] == 0)
    # 10 units -> 5 dropped; 5 units -> round(2.5) = 2 dropped
    assert [int(x.any(axis=0).sum()) for x in m] == [5, 3]
    # units are scored by the L2 norm of incoming weights
    norms = np.linalg.norm(k[0], axis=0)
    assert norms[~m[0].any(axis=0)].max() <= norms[m[0].any(axis=0)].min()


def test_mask_file_round_trip_and_shape_mismatch(tmp_path, prepared):
    cfg, tables, *_ = prepared
    model = build_model(cfg, tables, variant="connection", seed=0)
    masks = TaskMasks.all_ones(model)
    masks.masks["cvr"][0][0, 0] = 0.0
    path = masks.save(tmp_path / "m.npz")
    again = TaskMasks.load(path)
    assert np.array_equal(again.masks["cvr"][0], masks.masks["cvr"][0]) and again.structure == "connection"
    again.apply(model)
    assert model.masked_layers[0].mask.numpy()[1, 0, 0] == 0.0

    wider = build_model(parse_config(tiny_config_dict(mlp=[32, 8])), tables, variant="connection", seed=0)
    with pytest.raises(MaskShapeError, match=r"task 'ctr' layer 0 .*mask shape \(\d+, 16\) != kernel shape \(\d+, 32\)"):
        again.apply(wider)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(MaskShapeError, match="junk.npz"):
        TaskMasks.load(tmp_path / "junk.npz")


@pytest.mark.parametrize("tasks", [["ctr", "cvr"], ["ctr", "cvr", "like"]])
def test_analytics_fractions_sum_to_one(tmp_path, tasks):
    rng = np.random.default_rng(3)
    shapes = [(20, 8), (8, 4)]
    masks = TaskMasks("connection", ["l0", "l1"], {t: [(rng.random(s) < 0.5).astype(np.float32) for s in shapes] for t in tasks})
    a = analyze(masks, rounds=[{"task": t, "round": 0, "density": 1.0, "metric": "auc", "value": 0.6} for t in tasks], chosen={t: 0 for t in tasks})
    for part in a["layers"] + [a["overall"]]:
        keys = ["shared", "unused", *(f"{t}_only" for t in tasks)] + (["partial"] if len(tasks) > 2 else [])
        assert abs(sum(part[k] for k in keys) - 1.0) < 1e-9
    assert a["flops_per_example"]["dense_mlp"] == 2 * (20 * 8 + 8 * 4)
    assert 0 < a["flops_fraction"]["ctr"] < 1
    files = write_analytics(a, tmp_path)
    assert [f.name for f in files] == ["mask_analytics.json", "mask_sharing.png", "pruning_curve.png"]
    assert all(f.stat().st_size > 1000 for f in files[1:])


def test_sparse_config_bad_values_name_key():
    from models.config import ConfigError

    for key, value in [("final_density", 0.0), ("final_density", 1.5), ("rounds", 0)]:
        d = tiny_config_dict()
        d["sparse"] = {key: value}
        with pytest.raises(ConfigError, match=f"sparse.{key}"):
            parse_config(d)


def test_sparse_protocol_and_density_bound_bad_values_name_key():
    from models.config import ConfigError

    for section, key, value in [("training", "patience", 0), ("training", "max_epochs", 0),
                                ("sparse", "min_density", 0.0), ("sparse", "min_density", 1.0),
                                ("sparse", "warmup_steps", 0), ("sparse", "min_density", 0.5)]:
        d = tiny_config_dict()
        d[section][key] = value
        with pytest.raises(ConfigError, match=f"{section}.{key}"):
            parse_config(d)


def test_magnitude_and_random_masks_keep_the_requested_counts():
    from models.masks import magnitude_masks, random_masks

    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=(20, 10)), rng.normal(size=(10, 5))]
    mags = magnitude_masks(kernels, [0.25, 0.6])
    assert [int(m.sum()) for m in mags] == [50, 30]
    assert np.abs(kernels[0][mags[0] > 0]).min() >= np.abs(kernels[0][mags[0] == 0]).max()
    rand = random_masks([k.shape for k in kernels], [0.25, 0.6], np.random.default_rng(1))
    assert [int(m.sum()) for m in rand] == [50, 30]
    assert not np.array_equal(rand[0], mags[0])


def test_overlap_against_nested_and_independent():
    from models.mask_analytics import overlap

    a = [np.zeros((10, 10), np.float32)]
    b = [np.zeros((10, 10), np.float32)]
    a[0].reshape(-1)[:20] = 1  # density 0.2, inside b
    b[0].reshape(-1)[:50] = 1  # density 0.5
    ov = overlap(TaskMasks("connection", ["l0"], {"ctr": a, "cvr": b}), "ctr", "cvr")
    assert ov["shared"] == pytest.approx(0.2) and ov["nested"] == pytest.approx(0.2)
    assert ov["independent"] == pytest.approx(0.1) and ov["containment"] == pytest.approx(1.0)
