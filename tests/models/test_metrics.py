import numpy as np

from models.metrics import gauc, mtl_gain, task_metrics


def test_binary_metrics():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = task_metrics("binary", y, p, groups=np.array(["a", "a", "a", "b"]))
    assert m["auc"] == 0.75
    # group b has one class only and is skipped; group a: AUC 0.5
    assert m["gauc"] == 0.5
    assert abs(m["calibration"] - p.mean() / 0.5) < 1e-12
    assert m["logloss"] > 0


def test_gauc_weights_by_group_size():
    y = np.array([0, 1, 0, 1, 1])
    p = np.array([0.2, 0.9, 0.9, 0.1, 0.5])
    g = np.array(["a", "a", "b", "b", "b"])
    # group a: AUC 1 (2 rows); group b: both positives below the negative, AUC 0 (3 rows)
    assert abs(gauc(y, p, g) - (1.0 * 2 + 0.0 * 3) / 5) < 1e-12


def test_regression_metrics():
    m = task_metrics("regression", [0.0, 1.0], [0.5, 0.5])
    assert m["mse"] == 0.25 and m["rmse"] == 0.5 and m["mae"] == 0.5 and m["calibration"] == 1.0


def test_mtl_gain_direction():
    assert mtl_gain("auc", 0.66, 0.60) > 0
    assert mtl_gain("mse", 0.09, 0.10) > 0
    assert mtl_gain("mse", 0.11, 0.10) < 0
