"""Keras metrics the TFMA Evaluator computes (``pipeline.pipeline.eval_config`` names them by module and class).

TFMA updates a Keras metric eagerly, a batch at a time. Keras then hands the metric's ``update_state`` to
AutoGraph, which converts it and the loss function behind it the first time in every process: several seconds
per Evaluator run for a function that has no tensor-dependent control flow. The metrics here are the Keras ones
with that conversion switched off; their values are the same.
"""

from __future__ import annotations

import tensorflow as tf


class LogLoss(tf.keras.metrics.BinaryCrossentropy):
    """Mean binary cross-entropy of ``y_true`` ``[B]``/``[B, 1]`` in {0, 1} and ``y_pred`` probabilities, weighted by
    ``sample_weight``: Keras' ``BinaryCrossentropy``, updated without AutoGraph."""

    def __init__(self, name: str = "logloss", **kwargs):
        super().__init__(name=name, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)
