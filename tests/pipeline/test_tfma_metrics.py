"""The Evaluator's metrics through TFMA's own computations, as the Evaluator runs them: every (row) fed to the
combiners, the accumulators merged in an arbitrary grouping, the result read per MetricKey."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.conftest import tiny_config_dict


def _tfma_results(config, labels, predictions, weights, groups: int) -> dict:
    """{(output, metric name, example_weighted): value} for ``pipeline.eval_config`` of ``config`` (no baseline),
    the rows fed to ``groups`` accumulators per computation and merged the way Beam may (several at once)."""
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.metrics import metric_specs, metric_types

    from pipeline.pipeline import eval_config

    ec = tfma.utils.update_eval_config_with_defaults(eval_config(config), has_baseline=False, rubber_stamp=True)
    inputs = [
        metric_types.StandardMetricInputs(
            labels={t: np.array([labels[t][i]]) for t in labels},
            predictions={t: np.array([predictions[t][i]]) for t in labels},
            example_weights={t: np.array([weights[t][i]]) for t in labels},
        )
        for i in range(len(labels["ctr"]))
    ]
    results, derived = {}, []
    for c in metric_specs.to_computations(ec.metrics_specs, eval_config=ec):
        if not isinstance(c, metric_types.MetricComputation):
            derived.append(c)
            continue
        combiner = c.combiner
        combiner.setup()
        accumulators = [combiner.create_accumulator() for _ in range(groups)]
        for i, x in enumerate(inputs):
            accumulators[i % groups] = combiner.add_input(accumulators[i % groups], x)
        merged = combiner.merge_accumulators(accumulators)
        results.update(combiner.extract_output(combiner.compact(merged)))
    for d in derived:  # a TFMA metric of its own (none at the moment) may derive its value from combiner outputs
        results.update(d.result(results))
    return {(k.output_name, k.name, k.example_weighted): v for k, v in results.items()
            if isinstance(k, metric_types.MetricKey) and not isinstance(k, metric_types.PlotKey)
            and not k.name.startswith("_")}


@pytest.mark.parametrize("groups", [1, 3])
def test_eval_config_metrics_are_their_definitions_however_tfma_merges(groups):
    from models.config import parse_config

    d = tiny_config_dict()
    d["pipeline"]["calibration_plot"] = False
    config = parse_config(d)
    rng = np.random.default_rng(0)
    n = 900
    clicked = (rng.uniform(size=n) < 0.3).astype("float32")
    labels = {"ctr": clicked, "cvr": rng.uniform(size=n).astype("float32")}
    predictions = {"ctr": np.clip(0.3 * clicked + rng.uniform(0, 0.7, size=n), 0, 1).astype("float32"),
                   "cvr": rng.uniform(size=n).astype("float32")}
    weights = {"ctr": np.ones(n, "float32"), "cvr": clicked}  # CVR's sample space: clicked rows
    got = _tfma_results(config, labels, predictions, weights, groups)

    y, p, w = labels["ctr"], predictions["ctr"], weights["ctr"]
    # TFMA's AUC reads the curve off 10,000 thresholds; ours too (to well within 1e-4 of the exact area)
    assert got[("ctr", "auc", True)] == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-4)
    assert got[("ctr", "logloss", True)] == pytest.approx(-np.mean(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7)), rel=1e-4)
    for task in ("ctr", "cvr"):
        y, p, w = labels[task], predictions[task], weights[task]
        assert got[(task, "mean_label", True)] == pytest.approx(np.sum(w * y) / np.sum(w), rel=1e-6)
        assert got[(task, "mean_prediction", True)] == pytest.approx(np.sum(w * p) / np.sum(w), rel=1e-6)
        assert got[(task, "calibration", True)] == pytest.approx(np.sum(w * p) / np.sum(w * y), rel=1e-6)
        assert got[(task, "example_count", True)] == pytest.approx(np.sum(w))
    # the gate of a regression task: TFMA 0.47's own MeanSquaredError merges its first accumulator twice (biased as
    # soon as Beam merges more than one); this one is exact however the rows are grouped
    y, p, w = labels["cvr"], predictions["cvr"], weights["cvr"]
    assert got[("cvr", "mse", True)] == pytest.approx(np.sum(w * (y - p) ** 2) / np.sum(w), rel=1e-5)
    assert got[("cvr", "example_count", False)] == n


def test_a_baseline_is_scored_on_its_own_predictions():
    """With a baseline TFMA's inputs hold predictions per model name: each model's gated metric reads its own."""
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.metrics import metric_specs, metric_types

    from models.config import parse_config
    from pipeline.pipeline import eval_config

    d = tiny_config_dict()
    d["pipeline"]["calibration_plot"] = False
    ec = tfma.utils.update_eval_config_with_defaults(eval_config(parse_config(d)), has_baseline=True, rubber_stamp=True)
    rng = np.random.default_rng(1)
    n = 300
    y = (rng.uniform(size=n) < 0.4).astype("float32")
    good = np.clip(0.5 * y + rng.uniform(0, 0.5, size=n), 0, 1).astype("float32")
    noise = rng.uniform(size=n).astype("float32")
    inputs = [
        metric_types.StandardMetricInputs(
            labels={"ctr": np.array([y[i]]), "cvr": np.array([y[i]])},
            predictions={tfma.CANDIDATE_KEY: {"ctr": np.array([good[i]]), "cvr": np.array([good[i]])},
                         tfma.BASELINE_KEY: {"ctr": np.array([noise[i]]), "cvr": np.array([noise[i]])}},
            example_weights={"ctr": np.array([1.0]), "cvr": np.array([1.0])},
        )
        for i in range(n)
    ]
    got = {}
    for c in metric_specs.to_computations(ec.metrics_specs, eval_config=ec):
        if isinstance(c, metric_types.MetricComputation) and all(k.name in ("auc", "mse") for k in c.keys):
            acc = c.combiner.create_accumulator()
            for x in inputs:
                acc = c.combiner.add_input(acc, x)
            got.update({(k.model_name, k.output_name, k.name): v for k, v in c.combiner.extract_output(acc).items()})
    assert got[(tfma.CANDIDATE_KEY, "ctr", "auc")] == pytest.approx(roc_auc_score(y, good), abs=1e-4)
    assert got[(tfma.BASELINE_KEY, "ctr", "auc")] == pytest.approx(roc_auc_score(y, noise), abs=1e-4)
    assert got[(tfma.BASELINE_KEY, "cvr", "mse")] == pytest.approx(np.mean((y - noise) ** 2), rel=1e-5)


def test_an_unknown_batched_metric_is_named_in_the_error():
    from pipeline.tfma_metrics import BatchedKerasMetric

    with pytest.raises(ValueError, match="models.keras_metrics has no metric class 'BatchedF1'"):
        BatchedKerasMetric(metric="BatchedF1", name="f1")


@pytest.mark.parametrize("groups", [1, 3])
def test_batched_calibration_plot_is_tfma_calibration_plot(groups):
    """Same buckets, same sums as TFMA's own CalibrationPlot, predictions on bucket edges and at 0 and 1 included,
    however the rows are grouped into accumulators."""
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.metrics import metric_specs, metric_types

    from pipeline.tfma_metrics import BatchedCalibrationPlot

    rng = np.random.default_rng(2)
    n = 2500  # more than one flush of BATCH_ROWS
    edges = np.array([0.0, 0.05, 0.1, 0.35, 0.5, 0.95, 1.0], "float32")
    p = np.concatenate([rng.uniform(size=n - 2 * len(edges)).astype("float32"), edges, np.nextafter(edges, 2)])
    y = (rng.uniform(size=n) < p).astype("float32")
    w = (rng.uniform(size=n) < 0.7).astype("float32")
    ec = tfma.EvalConfig(model_specs=[tfma.ModelSpec(example_weight_key="w")], metrics_specs=[tfma.MetricsSpec(
        metrics=[tfma.MetricConfig(class_name="CalibrationPlot", config='{"num_buckets": 20, "name": "tfma"}'),
                 tfma.MetricConfig(class_name=BatchedCalibrationPlot.__name__, module=BatchedCalibrationPlot.__module__,
                                   config='{"num_buckets": 20}')])])
    ec = tfma.utils.update_eval_config_with_defaults(ec, has_baseline=False, rubber_stamp=True)
    inputs = [metric_types.StandardMetricInputs(labels=np.array([y[i]]), predictions=np.array([p[i]]),
                                                example_weights=np.array([w[i]])) for i in range(n)]
    results, derived = {}, []
    for c in metric_specs.to_computations(ec.metrics_specs, eval_config=ec):
        if not isinstance(c, metric_types.MetricComputation):
            derived.append(c)
            continue
        c.combiner.setup()
        accumulators = [c.combiner.create_accumulator() for _ in range(groups)]
        for i, x in enumerate(inputs):
            accumulators[i % groups] = c.combiner.add_input(accumulators[i % groups], x)
        results.update(c.combiner.extract_output(c.combiner.compact(c.combiner.merge_accumulators(accumulators))))
    for d in derived:
        results.update(d.result(results))
    plots = {k.name: v for k, v in results.items() if isinstance(k, metric_types.PlotKey) and k.example_weighted}
    ours, theirs = plots["calibration_plot"], plots["tfma"]
    assert len(ours.buckets) == len(theirs.buckets) == 22  # [-inf, 0), 20 between 0 and 1, [1, inf)
    for a, b in zip(ours.buckets, theirs.buckets):
        assert (a.lower_threshold_inclusive, a.upper_threshold_exclusive) == (
            b.lower_threshold_inclusive, b.upper_threshold_exclusive)
        assert a.num_weighted_examples.value == pytest.approx(b.num_weighted_examples.value, abs=1e-9)
        assert a.total_weighted_label.value == pytest.approx(b.total_weighted_label.value, abs=1e-9)
        assert a.total_weighted_refined_prediction.value == pytest.approx(
            b.total_weighted_refined_prediction.value, rel=1e-9, abs=1e-9)
    assert sum(b.num_weighted_examples.value for b in ours.buckets) == pytest.approx(w.sum())


def test_a_calibration_plot_without_buckets_is_refused():
    from pipeline.tfma_metrics import BatchedCalibrationPlot

    with pytest.raises(ValueError, match="needs num_buckets >= 1 and right > left"):
        BatchedCalibrationPlot(num_buckets=0)


def test_a_slice_without_rows_has_nan_metrics_and_an_empty_plot():
    from tensorflow_model_analysis.metrics import metric_types

    from pipeline.tfma_metrics import BatchedCalibrationPlot, BatchedKerasMetric

    for metric in (BatchedKerasMetric(metric="BatchedMeanLabel", name="mean_label"), BatchedCalibrationPlot()):
        (computation,) = metric.computations(example_weighted=True)
        combiner = computation.combiner
        combiner.setup()
        (value,) = combiner.extract_output(combiner.create_accumulator()).values()
        if isinstance(computation.keys[0], metric_types.PlotKey):
            assert len(value.buckets) == 22 and all(b.num_weighted_examples.value == 0 for b in value.buckets)
        else:
            assert np.isnan(value)
