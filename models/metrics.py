"""Offline metrics of record, each on the task's own sample space.

Binary tasks: AUC, GAUC (impression-weighted mean AUC over groups that have both
classes, grouped by ``dataset.group_key``), logloss, calibration. Regression tasks:
MSE, RMSE, MAE, calibration. Calibration is ``mean prediction / mean label``
(1.0 is perfect). ``mtl_gain`` is PLE's Eq. 11 relative to the ``single`` baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from models.config import ProjectConfig

HIGHER_IS_BETTER = {"auc": True, "gauc": True, "logloss": False, "mse": False, "rmse": False, "mae": False}


def primary_metric(task_type: str) -> str:
    """The metric of record of a task type: AUC for binary tasks, MSE for regression."""
    return "auc" if task_type == "binary" else "mse"


def gauc(labels: np.ndarray, preds: np.ndarray, groups: np.ndarray) -> float:
    """Group AUC: AUCs of groups with both classes, weighted by group size."""
    df = pd.DataFrame({"y": labels, "p": preds, "g": groups})
    total, weight = 0.0, 0
    for _, g in df.groupby("g", sort=False):
        y = g["y"].to_numpy()
        if 0 < y.sum() < len(y):
            total += roc_auc_score(y, g["p"].to_numpy()) * len(y)
            weight += len(y)
    return total / weight if weight else float("nan")


def task_metrics(task_type: str, labels, preds, groups=None) -> dict[str, float]:
    labels = np.asarray(labels, dtype=np.float64)
    preds = np.asarray(preds, dtype=np.float64)
    out: dict[str, float] = {"count": float(len(labels))}
    if len(labels) == 0:
        return out
    mean_label = labels.mean()
    out["calibration"] = float(preds.mean() / mean_label) if mean_label > 0 else float("nan")
    if task_type == "binary":
        both = 0 < labels.sum() < len(labels)
        out["auc"] = float(roc_auc_score(labels, preds)) if both else float("nan")
        out["logloss"] = float(log_loss(labels, np.clip(preds, 1e-7, 1 - 1e-7), labels=[0, 1]))
        if groups is not None:
            out["gauc"] = float(gauc(labels, preds, groups))
    else:
        err = preds - labels
        out["mse"] = float(np.mean(err**2))
        out["rmse"] = float(np.sqrt(out["mse"]))
        out["mae"] = float(np.mean(np.abs(err)))
    return out


def evaluate(config: ProjectConfig, preds: dict, labels: dict, spaces: dict, groups=None) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` over each task's sample space."""
    result = {}
    for t in config.tasks:
        m = spaces[t.name] > 0
        g = None if groups is None else np.asarray(groups)[m]
        result[t.name] = task_metrics(t.type, labels[t.name][m], preds[t.name][m], g)
    return result


def mtl_gain(metric: str, value: float, single_value: float) -> float:
    """PLE Eq. 11: relative improvement over the single-task model (positive = better)."""
    if single_value == 0 or not np.isfinite(single_value):
        return float("nan")
    if HIGHER_IS_BETTER.get(metric, True):
        return (value - single_value) / abs(single_value)
    return (single_value - value) / abs(single_value)
