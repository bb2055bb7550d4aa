"""Per-task losses with sample spaces (PLE Eq. 9) and the weighted sum (Eq. 2).

A task's loss is averaged over *its own* sample space only: for CVR the clicked
rows. Rows outside the space get weight 0 and do not enter the denominator, so a
CVR loss is never diluted by (or sensitive to the labels of) non-clicked rows.
"""

from __future__ import annotations

import tensorflow as tf

from models.config import TaskConfig

_EPS = 1e-7


def pointwise_loss(task: TaskConfig, y_true, y_pred):
    """Per-row loss ``[B]`` for predictions in (0, 1)."""
    y_true = tf.cast(y_true, tf.float32)
    p = tf.clip_by_value(tf.cast(y_pred, tf.float32), _EPS, 1.0 - _EPS)
    if task.loss == "mse":
        return tf.square(y_true - p)
    bce_pos = -y_true * tf.math.log(p)
    bce_neg = -(1.0 - y_true) * tf.math.log(1.0 - p)
    if task.loss == "bce":
        return bce_pos + bce_neg
    # focal loss (Lin et al.), alpha weights positives, as in the reference code
    a, g = task.focal_alpha, task.focal_gamma
    return a * tf.pow(1.0 - p, g) * bce_pos + (1.0 - a) * tf.pow(p, g) * bce_neg


def space_mean(values, space, sample_weight=None):
    """Mean of ``values`` over rows with ``space == 1`` (optionally weighted); 0 if none.

    Under a ``tf.distribute`` strategy with several replicas (inside ``strategy.run``) the
    denominator is all-reduced: each replica returns its share of the *global*-batch mean, so
    the sum over replicas is the loss one process gets on the whole batch. (A mean of
    per-replica means would mis-weight CVR, whose clicked rows spread unevenly over replicas.)
    """
    w = tf.cast(space, tf.float32)
    if sample_weight is not None:
        w = w * tf.cast(sample_weight, tf.float32)
    denominator = tf.reduce_sum(w)
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        denominator = ctx.all_reduce(tf.distribute.ReduceOp.SUM, denominator)
    return tf.math.divide_no_nan(tf.reduce_sum(values * w), denominator)


def task_loss(task: TaskConfig, y_true, y_pred, space, sample_weight=None):
    """Scalar loss of one task over its sample space."""
    return space_mean(pointwise_loss(task, y_true, y_pred), space, sample_weight)


def weighted_total(task_losses: dict, tasks: list[TaskConfig], loss_weights: dict | None = None):
    """``L = sum_k w_k L_k`` with ``w_k`` from the config or ``loss_weights`` (numbers or variables)."""
    total = 0.0
    for t in tasks:
        w = t.weight if loss_weights is None else loss_weights.get(t.name, t.weight)
        total = total + tf.cast(w, tf.float32) * task_losses[t.name]
    return total
