"""Task labels, sample spaces and tf.data pipelines from a cleaned log frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from models.config import ColumnLabel, ProjectConfig, TaskConfig

_OPS = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "<": np.less,
    "<=": np.less_equal,
}


def task_label(frame: pd.DataFrame, task: TaskConfig) -> np.ndarray:
    """The task's label as float32: a column, or ``clip(num / den, 0, 1)``."""
    if isinstance(task.label, ColumnLabel):
        y = frame[task.label.column].to_numpy(dtype=np.float64)
        if task.type == "regression":
            y = np.clip(y, 0.0, 1.0)
        return y.astype(np.float32)
    num, den = task.label.ratio
    n = frame[num].to_numpy(dtype=np.float64)
    d = frame[den].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(d > 0, n / np.where(d > 0, d, 1.0), 0.0)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def task_space(frame: pd.DataFrame, task: TaskConfig) -> np.ndarray:
    """1.0 for rows in the task's sample space (``where``), else 0.0."""
    clause = task.where_clause
    if clause is None:
        return np.ones(len(frame), dtype=np.float32)
    col, op, val = clause
    return _OPS[op](frame[col].to_numpy(dtype=np.float64), val).astype(np.float32)


def conflict_weights(frame: pd.DataFrame, config: ProjectConfig) -> np.ndarray:
    """Per-row weight of the gradient-conflict tuning (1 where it does not apply).

    A clicked row whose watch time is below its duration bucket's threshold (a click
    followed by a very short watch: click-bait) gets ``weight``.
    """
    gc = config.tuning.gradient_conflict
    w = np.ones(len(frame), dtype=np.float32)
    if not gc.enabled:
        return w
    dur = frame[gc.duration_column].to_numpy(dtype=np.float64)
    watch = frame[gc.watch_column].to_numpy(dtype=np.float64)
    limits = np.array([t[0] for t in gc.thresholds])
    mins = np.array([t[1] for t in gc.thresholds])
    bucket = np.minimum(np.searchsorted(limits, dur, side="left"), len(limits) - 1)
    # only rows of the task's own sample space (clicked rows for CVR): a non-clicked
    # impression has watch 0 by construction and is not a conflict
    in_space = task_space(frame, config.task(gc.task)) > 0
    short = (watch < mins[bucket]) & in_space
    w[short] = gc.weight
    return w


def task_arrays(frame: pd.DataFrame, config: ProjectConfig):
    """``(labels, spaces)``: ``{task: [N] float32}`` each.

    ``spaces`` is the sample-space indicator times any per-sample weight (the
    gradient-conflict tuning), so losses are weighted means over the space.
    """
    labels = {t.name: task_label(frame, t) for t in config.tasks}
    spaces = {t.name: task_space(frame, t) for t in config.tasks}
    gc = config.tuning.gradient_conflict
    if gc.enabled:
        spaces[gc.task] = spaces[gc.task] * conflict_weights(frame, config)
    return labels, spaces


class EmptySampleSpaceError(ValueError):
    pass


def check_sample_spaces(spaces: dict, split: str) -> None:
    for task, s in spaces.items():
        if not np.any(s > 0):
            raise EmptySampleSpaceError(f"task {task!r} has no rows in its sample space in the {split} split")


def make_dataset(inputs: dict, labels: dict, spaces: dict, batch_size: int, shuffle: bool = False, seed: int = 0):
    """``tf.data`` of ``(inputs, labels, spaces)`` batches from in-memory arrays."""
    ds = tf.data.Dataset.from_tensor_slices((inputs, labels, spaces))
    n = len(next(iter(labels.values())))
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def subset(arrays: dict, idx) -> dict:
    return {k: v[idx] for k, v in arrays.items()}
