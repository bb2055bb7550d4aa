"""The Evaluator's metrics as TFMA metrics: a ``models.keras_metrics`` Keras metric, fed a batch at a time.

TFMA hands every example of every slice to every metric combiner one at a time, in Python. Its own
metrics and its wrapper for Keras metrics each read the example's label, prediction and weight
through ``metric_util.to_label_prediction_example_weight``, a general routine (multi-class,
sub-keys, top-k, aggregation, class weights, ...) that costs ~0.1 ms per call: with two tasks, two
models and three slices it was the largest part of the Evaluator's time (52 of 151 s on 20,073
eval rows, one process, cProfile of ``benchmarks/evaluator.py --baseline``). Our outputs are one
probability or value per example and task, labels and weights come from the model's
``transform_features`` signature, so this combiner reads the three arrays by model and output name
and appends them to a buffer; every 1,000 rows its Keras metrics update on the buffer in
TensorFlow, as TFMA's Keras wrapper does. A task's metrics can share one combiner (``also``).

Every metric of ``models.keras_metrics`` keeps additive state (counts, sums, confusion counts at
fixed thresholds), so accumulators merge by adding the Keras metric's weights, in any grouping.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import metrics_for_slice_pb2

from models import keras_metrics

# rows per Keras update (TFMA's Keras wrapper uses the same)
BATCH_ROWS = 1000


class BatchedKerasMetric(tfma.metrics.Metric):
    """TFMA metric ``name`` computed by the Keras metric ``models.keras_metrics.<metric>`` over
    ``[rows]`` labels, predictions and (sample-space) example weights of one output; ``also``
    (``{name: metric class}``) adds more metrics computed by the same combiner, from the same
    pass over the examples.

    Config (as ``tfma.MetricConfig(class_name="BatchedKerasMetric", module=__name__,
    config='{"metric": "BatchedAUC", "name": "auc"}')``): thresholds refer to ``name``; every
    metric's result is under its own name.
    """

    def __init__(self, metric: str, name: str, also: Optional[dict] = None):
        also = dict(also or {})
        for n, m in {name: metric, **also}.items():
            if not isinstance(getattr(keras_metrics, m, None), type):
                raise ValueError(f"BatchedKerasMetric {n!r}: models.keras_metrics has no metric class {m!r}")
        super().__init__(metric_util.merge_per_key_computations(_computations), metric=metric, name=name, also=also)


def _computations(
    metric: str,
    name: str,
    also: Optional[dict] = None,
    plot: Optional[dict] = None,
    eval_config: Optional[tfma.EvalConfig] = None,
    model_name: str = "",
    output_name: str = "",
    sub_key: Optional[metric_types.SubKey] = None,
    aggregation_type: Optional[metric_types.AggregationType] = None,
    class_weights: Optional[dict] = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    """``metric`` (and ``also``) under MetricKeys, or with ``plot`` (the Keras metric's keyword arguments) one plot
    under a PlotKey; one combiner."""
    if sub_key is not None or aggregation_type is not None or class_weights:
        raise ValueError(f"{name!r}: one value per example and output only (no sub keys, aggregation or class weights)")
    if plot is not None:
        keys = [metric_types.PlotKey(name=name, model_name=model_name, output_name=output_name,
                                     example_weighted=example_weighted)]
        return [metric_types.MetricComputation(keys=keys, preprocessors=None,
                                               combiner=_BatchedKerasCombiner(keys, [metric], plot))]
    metrics = {name: metric, **(also or {})}
    keys = [metric_types.MetricKey(name=n, model_name=model_name, output_name=output_name,
                                   example_weighted=example_weighted) for n in metrics]
    return [metric_types.MetricComputation(keys=keys, preprocessors=None,
                                           combiner=_BatchedKerasCombiner(keys, list(metrics.values())))]


@dataclasses.dataclass
class _Accumulator:
    labels: list = dataclasses.field(default_factory=list)
    predictions: list = dataclasses.field(default_factory=list)
    weights: list = dataclasses.field(default_factory=list)
    state: Optional[list] = None  # per metric, its Keras weights after the flushed rows (None: no row yet)


def _of(values: Any, model_name: str, output_name: str) -> Any:
    """``values`` (an array, or a dict by model and/or output name) for one model and output."""
    if isinstance(values, dict) and model_name in values:
        values = values[model_name]
    if isinstance(values, dict):
        values = values[output_name]
    return values


def _flat(values: list) -> np.ndarray:
    """The buffered per-example values of one output as one float32 array ``[rows]`` (one C-level copy; a
    conversion per example was a tenth of the Evaluator's time)."""
    return np.asarray(values, dtype=np.float32).reshape(-1)


def _added(a: Optional[list], b: Optional[list]) -> Optional[list]:
    """Per metric, the sum of two states (lists of the metric's Keras weights); None is no row yet."""
    if a is None or b is None:
        return b if a is None else a
    return [[x + y for x, y in zip(wa, wb)] for wa, wb in zip(a, b)]


class _BatchedKerasCombiner(beam.CombineFn):
    """Feeds one output's rows to Keras metrics ``metrics`` (class names in ``models.keras_metrics``, built with
    ``kwargs``), one per key; a ``PlotKey``'s result is a plot (``_plot``), a ``MetricKey``'s a float."""

    def __init__(self, keys: list, metrics: list, kwargs: Optional[dict] = None):
        self._keys = keys
        self._metric_classes = metrics
        self._kwargs = dict(kwargs or {})
        self._metrics = None  # built per process (Keras objects are not pickled with the combiner)

    def _keras(self) -> list:
        if self._metrics is None:
            self._metrics = [getattr(keras_metrics, m)(name=k.name, **self._kwargs)
                             for k, m in zip(self._keys, self._metric_classes)]
        return self._metrics

    def setup(self):
        self._keras()

    def __getstate__(self):
        return {**self.__dict__, "_metrics": None}

    def create_accumulator(self) -> _Accumulator:
        return _Accumulator()

    def add_input(self, acc: _Accumulator, element: metric_types.StandardMetricInputs) -> _Accumulator:
        key = self._keys[0]
        model, output = key.model_name, key.output_name
        # the extracts' dicts read directly (TFMA's accessors walk general key paths: ~half of this call)
        acc.labels.append(_of(element.get(tfma.constants.LABELS_KEY), model, output))
        acc.predictions.append(_of(element.get(tfma.constants.PREDICTIONS_KEY), model, output))
        weights = element.get(tfma.constants.EXAMPLE_WEIGHTS_KEY) if key.example_weighted else None
        acc.weights.append(1.0 if weights is None else _of(weights, model, output))
        if len(acc.labels) >= BATCH_ROWS:
            self._flush(acc)
        return acc

    def _state(self, acc: _Accumulator) -> Optional[list]:
        """The metrics' state after every row of ``acc``, buffered ones included; ``acc`` is left as it is (Beam
        lets merge_accumulators and extract_output read, not change, what they are given)."""
        if not acc.labels:
            return acc.state
        # [rows, 1], as TFMA's Keras wrapper passes them (Keras losses reduce over the last axis)
        y, p = _flat(acc.labels)[:, None], _flat(acc.predictions)[:, None]
        w = np.broadcast_to(_flat(acc.weights)[:, None], y.shape)  # a 1.0 per row when the spec is unweighted
        state = []
        for m in self._keras():
            m.reset_state()
            m.update_state(y, p, sample_weight=w)
            state.append(m.get_weights())
        return _added(acc.state, state)

    def _flush(self, acc: _Accumulator) -> None:
        acc.state = self._state(acc)
        acc.labels, acc.predictions, acc.weights = [], [], []

    def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
        merged = _Accumulator()
        for acc in accumulators:
            merged.state = _added(merged.state, self._state(acc))
        return merged

    def compact(self, acc: _Accumulator) -> _Accumulator:
        self._flush(acc)
        return acc

    def extract_output(self, acc: _Accumulator) -> metric_types.MetricsDict:
        state = self._state(acc)
        out = {}
        for i, (k, m) in enumerate(zip(self._keys, self._keras())):
            if state is None:  # no row: a metric is undefined, a plot has empty buckets
                m.reset_state()
            else:
                m.set_weights(state[i])
            if isinstance(k, metric_types.PlotKey):
                out[k] = _plot(m)
            else:
                out[k] = float("nan") if state is None else float(m.result().numpy())
        return out


class BatchedCalibrationPlot(tfma.metrics.Metric):
    """TFMA's ``CalibrationPlot`` (same buckets, same plot proto, same plot name), computed by
    ``models.keras_metrics.CalibrationHistogram`` a batch of rows at a time: TFMA's own sorts each example into its
    histogram in Python (a fifth of the Evaluator's time on 20,073 eval rows, one process, cProfile of
    ``benchmarks/evaluator.py --baseline``).

    Config (as ``tfma.MetricConfig(class_name="BatchedCalibrationPlot", module=__name__, config='{"num_buckets":
    20}')``): ``num_buckets`` between ``left`` and ``right`` (default 0 and 1, the range of a probability).
    """

    def __init__(self, num_buckets: int = 20, left: float = 0.0, right: float = 1.0, name: str = "calibration_plot"):
        plot = dict(num_buckets=num_buckets, left=left, right=right)
        keras_metrics.CalibrationHistogram(**plot)  # bad settings fail here
        super().__init__(metric_util.merge_per_key_computations(_computations),
                         metric=keras_metrics.CalibrationHistogram.__name__, name=name, plot=plot)

    def get_config(self) -> dict:
        return {**self.kwargs["plot"], "name": self.kwargs["name"]}


def _plot(histogram: "keras_metrics.CalibrationHistogram") -> metrics_for_slice_pb2.CalibrationHistogramBuckets:
    """A ``CalibrationHistogram``'s buckets as the proto TFMA's ``CalibrationPlot`` writes (its viewer reads it)."""
    sums = histogram.result().numpy()
    edges = histogram.bucket_edges() + [float("inf")]
    plot = metrics_for_slice_pb2.CalibrationHistogramBuckets()
    for i, (labels, predictions, examples) in enumerate(sums):
        plot.buckets.add(lower_threshold_inclusive=edges[i], upper_threshold_exclusive=edges[i + 1],
                         total_weighted_label={"value": labels},
                         total_weighted_refined_prediction={"value": predictions},
                         num_weighted_examples={"value": examples})
    return plot


metric_types.register_metric(BatchedKerasMetric)
metric_types.register_metric(BatchedCalibrationPlot)
