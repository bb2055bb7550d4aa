"""Keras metrics the TFMA Evaluator computes (``pipeline.pipeline.eval_config`` names them; TFMA runs them through
``pipeline.tfma_metrics.BatchedKerasMetric``).

Why Keras metrics and not TFMA's own ``AUC``/``Calibration``/``MeanLabel``/...: TFMA feeds every example of every
slice to each of its own metrics' combiners one at a time, in Python, while a Keras metric updates on a batch of
rows in TensorFlow. And TFMA 0.47's own ``MeanSquaredError`` merges its first accumulator twice, so its value
depends on how Beam groups the rows. The ``Batched*`` metrics here compute what TFMA's metrics of the same name
compute (same definitions, same metric names in the results; tests/pipeline/test_tfma_metrics.py checks them
against the definitions through TFMA's own computations), and ``CalibrationHistogram`` the buckets of TFMA's
``CalibrationPlot`` (checked against TFMA's plot there).

They are updated eagerly. Keras then hands the metric's ``update_state`` and ``result`` to AutoGraph, which converts them
(and the loss function behind it) the first time in every process: several seconds per Evaluator run for functions
that have no tensor-dependent control flow. Every metric here updates without that conversion; the values are the
same.

All metrics take ``y_true`` and ``y_pred`` ``[B]`` or ``[B, 1]`` and an optional ``sample_weight`` of the same
shape (the task's sample-space weight), and are scalars, except ``CalibrationHistogram`` (a calibration plot's
data, a table per bucket).
"""

from __future__ import annotations

import tensorflow as tf

# TFMA's own AUC reads its ROC curve off 10,000 evenly spaced thresholds (binary_confusion_matrices); so does ours
TFMA_AUC_THRESHOLDS = 10_000


class LogLoss(tf.keras.metrics.BinaryCrossentropy):
    """Mean binary cross-entropy of ``y_true`` in {0, 1} and ``y_pred`` probabilities, weighted by
    ``sample_weight``: Keras' ``BinaryCrossentropy``, updated without AutoGraph."""

    def __init__(self, name: str = "logloss", **kwargs):
        super().__init__(name=name, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)


class BatchedAUC(tf.keras.metrics.AUC):
    """Area under the ROC curve (TFMA's ``AUC``: 10,000 evenly spaced thresholds, trapezoids between them), weighted
    by ``sample_weight``: Keras' ``AUC``, updated without AutoGraph. Evenly spaced thresholds let Keras bucket the
    predictions instead of comparing each with every threshold."""

    def __init__(self, name: str = "auc", num_thresholds: int = TFMA_AUC_THRESHOLDS, **kwargs):
        super().__init__(name=name, num_thresholds=num_thresholds, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)


class BatchedMeanSquaredError(tf.keras.metrics.MeanSquaredError):
    """Weighted mean of ``(y_true - y_pred)**2`` (TFMA's ``MeanSquaredError``): Keras' metric, without AutoGraph."""

    def __init__(self, name: str = "mse", **kwargs):
        super().__init__(name=name, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)


class _WeightedSums(tf.keras.metrics.Metric):
    """Running ``sum(w * y_true)``, ``sum(w * y_pred)`` and ``sum(w)`` (``w`` = 1 without ``sample_weight``; float64:
    a day's eval split is ~10^5 rows); subclasses say which of them, or which ratio, is the result."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_sum = self.add_weight(name="label_sum", initializer="zeros", dtype=tf.float64)
        self.prediction_sum = self.add_weight(name="prediction_sum", initializer="zeros", dtype=tf.float64)
        self.weight_sum = self.add_weight(name="weight_sum", initializer="zeros", dtype=tf.float64)

    @tf.autograph.experimental.do_not_convert
    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.reshape(tf.cast(y_true, tf.float64), [-1])
        y_pred = tf.reshape(tf.cast(y_pred, tf.float64), [-1])
        w = tf.ones_like(y_true) if sample_weight is None else tf.reshape(tf.cast(sample_weight, tf.float64), [-1])
        self.label_sum.assign_add(tf.reduce_sum(w * y_true))
        self.prediction_sum.assign_add(tf.reduce_sum(w * y_pred))
        self.weight_sum.assign_add(tf.reduce_sum(w))

    def reset_state(self):
        for v in (self.label_sum, self.prediction_sum, self.weight_sum):
            v.assign(tf.zeros_like(v))


class BatchedMeanLabel(_WeightedSums):
    """Weighted mean label ``sum(w * y_true) / sum(w)`` (TFMA's ``MeanLabel``)."""

    def __init__(self, name: str = "mean_label", **kwargs):
        super().__init__(name=name, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def result(self):
        return tf.math.divide_no_nan(self.label_sum, self.weight_sum)


class BatchedMeanPrediction(_WeightedSums):
    """Weighted mean prediction ``sum(w * y_pred) / sum(w)`` (TFMA's ``MeanPrediction``)."""

    def __init__(self, name: str = "mean_prediction", **kwargs):
        super().__init__(name=name, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def result(self):
        return tf.math.divide_no_nan(self.prediction_sum, self.weight_sum)


class BatchedCalibration(_WeightedSums):
    """Calibration ``sum(w * y_pred) / sum(w * y_true)`` (TFMA's ``Calibration``: 1 is calibrated, above 1 the
    model over-predicts)."""

    def __init__(self, name: str = "calibration", **kwargs):
        super().__init__(name=name, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def result(self):
        return tf.math.divide_no_nan(self.prediction_sum, self.label_sum)


class BatchedExampleCount(_WeightedSums):
    """Rows, or the sum of ``sample_weight`` when given ``sum(w)`` (TFMA's ``ExampleCount``: weighted by the sample
    space it counts the task's rows, e.g. CVR's clicked rows)."""

    def __init__(self, name: str = "example_count", **kwargs):
        super().__init__(name=name, **kwargs)

    @tf.autograph.experimental.do_not_convert
    def result(self):
        return tf.identity(self.weight_sum)


# TFMA's calibration histogram first sorts predictions into this many fine buckets, then a plot re-bins them
TFMA_CALIBRATION_FINE_BUCKETS = 10_000


class CalibrationHistogram(tf.keras.metrics.Metric):
    """Calibration plot data (TFMA's ``CalibrationPlot``): per prediction bucket, ``sum(w * y_true)``,
    ``sum(w * y_pred)`` and ``sum(w)``, float64.

    The buckets are TFMA's: ``[-inf, left)``, ``num_buckets`` equal intervals between ``left`` and ``right``, and
    ``[right, inf)`` (``bucket_edges()``); a prediction is placed as TFMA places it — first into one of 10,000 fine
    buckets, whose lower edge then picks the plot's bucket — so a prediction on an edge lands in the same bucket.
    ``result()`` is ``[num_buckets + 2, 3]``, not a scalar: the only non-scalar metric here.
    """

    def __init__(self, name: str = "calibration_plot", num_buckets: int = 20, left: float = 0.0, right: float = 1.0,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        if num_buckets < 1 or not right > left:
            raise ValueError(f"CalibrationHistogram {name!r}: needs num_buckets >= 1 and right > left, got "
                             f"{num_buckets}, [{left}, {right}]")
        self.num_buckets, self.left, self.right = int(num_buckets), float(left), float(right)
        self.sums = self.add_weight(name="sums", shape=(self.num_buckets + 2, 3), initializer="zeros",
                                    dtype=tf.float64)

    def bucket_edges(self) -> list[float]:
        """Lower edges of the buckets, ``-inf`` first (the last bucket has no upper edge)."""
        span = self.right - self.left  # TFMA's arithmetic, to the last bit (a prediction on an edge)
        return [float("-inf")] + [self.left + i * span / self.num_buckets for i in range(self.num_buckets + 1)]

    @tf.autograph.experimental.do_not_convert
    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.reshape(tf.cast(y_true, tf.float64), [-1])
        y_pred = tf.reshape(tf.cast(y_pred, tf.float64), [-1])
        w = tf.ones_like(y_true) if sample_weight is None else tf.reshape(tf.cast(sample_weight, tf.float64), [-1])
        n, span = TFMA_CALIBRATION_FINE_BUCKETS, self.right - self.left
        # the fine bucket and its lower edge, in TFMA's arithmetic (calibration_histogram._bucket_index, rebin)
        fine = tf.clip_by_value(tf.floor((y_pred - self.left) / span * n + 1.0), 0.0, n + 1.0)
        edge = (fine - 1.0) / n * span + self.left
        edge = tf.where(fine <= 0.0, -float("inf"), tf.where(fine >= n + 1.0, float("inf"), edge))
        bucket = tf.searchsorted(tf.constant(self.bucket_edges(), tf.float64), edge, side="right") - 1
        rows = tf.stack([w * y_true, w * y_pred, w], axis=1)
        self.sums.assign_add(tf.math.unsorted_segment_sum(rows, bucket, self.num_buckets + 2))

    def reset_state(self):
        self.sums.assign(tf.zeros_like(self.sums))

    @tf.autograph.experimental.do_not_convert
    def result(self):
        return tf.identity(self.sums)

    def get_config(self):
        return {**super().get_config(), "num_buckets": self.num_buckets, "left": self.left, "right": self.right}
