import math

import pytest

from pipeline.statistics import compare_pair, format_interval, improvement_sign, mean_interval, paired_differences


def test_t_interval_of_a_known_case():
    # mean 2, sample sd 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv.mean == pytest.approx(2.0)
    assert iv.lo == pytest.approx(2.0 - 2.484138, abs=1e-6) and iv.hi == pytest.approx(2.0 + 2.484138, abs=1e-6)
    assert not iv.significant  # [-0.48, 4.48] contains 0
    assert mean_interval([1.0, 1.1, 0.9]).significant
    one = mean_interval([0.5])
    assert one.n == 1 and math.isnan(one.lo) and not one.significant


def _records(variant, task, metric, values, seeds=(1, 2, 3)):
    return [{"variant": variant, "seed": s, "task": task, "metric": metric, "value": v} for s, v in zip(seeds, values)]


def test_paired_differences_are_per_seed_relative_for_mse_and_absolute_for_auc():
    recs = _records("single", "cvr", "mse", [0.10, 0.20, 0.10]) + _records("connection", "cvr", "mse", [0.09, 0.19, 0.095])
    assert paired_differences(recs, "connection", "single", "cvr", "mse") == pytest.approx([-10.0, -5.0, -5.0])
    recs += _records("single", "ctr", "auc", [0.70, 0.71, 0.72]) + _records("connection", "ctr", "auc", [0.71, 0.72, 0.73])
    iv = compare_pair(recs, "connection", "single", "ctr", "auc")
    assert iv.mean == pytest.approx(0.01) and iv.significant and improvement_sign(iv, "auc") == 1
    mse = compare_pair(recs, "connection", "single", "cvr", "mse")
    assert improvement_sign(mse, "mse") == (1 if mse.significant else 0)
    assert format_interval(iv, "auc").startswith("+0.0100 [") and format_interval(iv, "auc").endswith("*")
    # a seed only one side ran is not paired
    recs += _records("connection", "ctr", "auc", [0.9], seeds=(4,))
    assert len(paired_differences(recs, "connection", "single", "ctr", "auc")) == 3
