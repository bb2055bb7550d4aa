"""The Evaluator's metrics as TFMA metrics: a ``models.keras_metrics`` Keras metric, fed a batch at a time.

TFMA hands every example of every slice to every metric combiner one at a time, in Python. Its own
metrics and its wrapper for Keras metrics each read the example's label, prediction and weight
through ``metric_util.to_label_prediction_example_weight``, a general routine (multi-class,
sub-keys, top-k, aggregation, class weights, ...) that costs ~0.1 ms per call: with two tasks, two
models and three slices it was the largest part of the Evaluator's time (52 of 151 s on 20,073
eval rows, one process, cProfile of ``benchmarks/evaluator.py --baseline``). Our outputs are one
probability or value per example and task, labels and weights come from the model's
``transform_features`` signature, so this combiner reads the three arrays by model and output name
and appends them to a buffer; every 1,000 rows the Keras metric updates on the buffer in
TensorFlow, as TFMA's Keras wrapper does.

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

from models import keras_metrics

# rows per Keras update (TFMA's Keras wrapper uses the same)
BATCH_ROWS = 1000


class BatchedKerasMetric(tfma.metrics.Metric):
    """TFMA metric ``name`` computed by the Keras metric ``models.keras_metrics.<metric>`` over
    ``[rows]`` labels, predictions and (sample-space) example weights of one output.

    Config (as ``tfma.MetricConfig(class_name="BatchedKerasMetric", module=__name__,
    config='{"metric": "BatchedAUC", "name": "auc"}')``): thresholds and results use ``name``.
    """

    def __init__(self, metric: str, name: str):
        if not isinstance(getattr(keras_metrics, metric, None), type):
            raise ValueError(f"BatchedKerasMetric: models.keras_metrics has no metric class {metric!r}")
        super().__init__(metric_util.merge_per_key_computations(_computations), metric=metric, name=name)


def _computations(
    metric: str,
    name: str,
    eval_config: Optional[tfma.EvalConfig] = None,
    model_name: str = "",
    output_name: str = "",
    sub_key: Optional[metric_types.SubKey] = None,
    aggregation_type: Optional[metric_types.AggregationType] = None,
    class_weights: Optional[dict] = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    if sub_key is not None or aggregation_type is not None or class_weights:
        raise ValueError(f"BatchedKerasMetric {name!r}: one value per example and output only "
                         "(no sub keys, aggregation or class weights)")
    key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                 example_weighted=example_weighted)
    return [metric_types.MetricComputation(keys=[key], preprocessors=None,
                                           combiner=_BatchedKerasCombiner(key, metric))]


@dataclasses.dataclass
class _Accumulator:
    labels: list = dataclasses.field(default_factory=list)
    predictions: list = dataclasses.field(default_factory=list)
    weights: list = dataclasses.field(default_factory=list)
    state: Optional[list] = None  # the Keras metric's weights after the flushed rows (None: no row yet)


def _of(values: Any, model_name: str, output_name: str) -> np.ndarray:
    """``values`` (an array, or a dict by model and/or output name) for one model and output, flat."""
    if isinstance(values, dict) and model_name in values:
        values = values[model_name]
    if isinstance(values, dict):
        values = values[output_name]
    return np.asarray(values, dtype=np.float32).reshape(-1)


class _BatchedKerasCombiner(beam.CombineFn):
    def __init__(self, key: metric_types.MetricKey, metric: str):
        self._key = key
        self._metric_name = metric
        self._metric = None  # built per process (Keras objects are not pickled with the combiner)

    def _keras(self):
        if self._metric is None:
            self._metric = getattr(keras_metrics, self._metric_name)(name=self._key.name)
        return self._metric

    def setup(self):
        self._keras()

    def __getstate__(self):
        return {**self.__dict__, "_metric": None}

    def create_accumulator(self) -> _Accumulator:
        return _Accumulator()

    def add_input(self, acc: _Accumulator, element: metric_types.StandardMetricInputs) -> _Accumulator:
        model, output = self._key.model_name, self._key.output_name
        acc.labels.append(_of(element.label, model, output))
        acc.predictions.append(_of(element.prediction, model, output))
        if self._key.example_weighted and element.example_weight is not None:
            acc.weights.append(_of(element.example_weight, model, output))
        else:
            acc.weights.append(np.ones_like(acc.labels[-1]))
        if len(acc.labels) >= BATCH_ROWS:
            self._flush(acc)
        return acc

    def _flush(self, acc: _Accumulator) -> None:
        if not acc.labels:
            return
        m = self._keras()
        m.reset_state()
        # [rows, 1], as TFMA's Keras wrapper passes them (Keras losses reduce over the last axis)
        m.update_state(np.concatenate(acc.labels)[:, None], np.concatenate(acc.predictions)[:, None],
                       sample_weight=np.concatenate(acc.weights)[:, None])
        weights = m.get_weights()
        acc.state = weights if acc.state is None else [a + b for a, b in zip(acc.state, weights)]
        acc.labels, acc.predictions, acc.weights = [], [], []

    def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
        merged = _Accumulator()
        for acc in accumulators:
            self._flush(acc)
            if acc.state is not None:
                merged.state = acc.state if merged.state is None else [a + b for a, b in zip(merged.state, acc.state)]
        return merged

    def compact(self, acc: _Accumulator) -> _Accumulator:
        self._flush(acc)
        return acc

    def extract_output(self, acc: _Accumulator) -> metric_types.MetricsDict:
        self._flush(acc)
        if acc.state is None:
            return {self._key: float("nan")}
        m = self._keras()
        m.set_weights(acc.state)
        return {self._key: float(m.result().numpy())}


metric_types.register_metric(BatchedKerasMetric)
