"""Daily-run bookkeeping: ledger, per-day lock, catch-up order, mask-refresh decisions, TFDV drift."""

import multiprocessing

import pandas as pd
import pytest

from pipeline.daily import (
    DailyLedger,
    DayLockedError,
    DayRecord,
    RefreshPolicy,
    day_lock,
    days_to_run,
    decide_mask_refresh,
    feature_drift,
    vocabulary_growth,
)


def _days(root, names):
    for n in names:
        (root / n).mkdir(parents=True)
        (root / n / "part-00000.csv").write_text("a\n1\n")


def test_catch_up_in_date_order_and_rerun_is_noop(tmp_path):
    data = tmp_path / "logs"
    _days(data, ["20260101", "20260102", "20260103", "20260104"])
    (data / "20260105").mkdir()  # no data yet
    ledger = DailyLedger(tmp_path / "home", "p")
    assert days_to_run(ledger, data, "20260104") == ["20260101", "20260102", "20260103", "20260104"]
    ledger.record(DayRecord("20260101", "succeeded", pushed_version="1"))
    ledger.record(DayRecord("20260102", "rejected", error="anomalies"))
    # reloaded from disk: the missed days after the last success, oldest first
    ledger = DailyLedger(tmp_path / "home", "p")
    assert days_to_run(ledger, data, "20260103") == ["20260102", "20260103"]
    ledger.record(DayRecord("20260103", "succeeded"))
    assert days_to_run(ledger, data, "20260103") == []  # already done: no-op
    assert days_to_run(ledger, data, "20260105") == ["20260104"]
    with pytest.raises(ValueError, match="YYYYMMDD"):
        days_to_run(ledger, data, "2026-01-05")


def _hold(home, ready, release):
    with day_lock(home, "p", "20260101"):
        ready.set()
        release.wait(10)


def test_two_runs_of_the_same_day_never_overlap(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(tmp_path, ready, release))
    proc.start()
    assert ready.wait(10)
    with pytest.raises(DayLockedError, match=f"pid {proc.pid}"):
        with day_lock(tmp_path, "p", "20260101"):
            pass
    with day_lock(tmp_path, "p", "20260102"):  # another day is independent
        pass
    release.set()
    proc.join(10)
    with day_lock(tmp_path, "p", "20260101"):  # released when the holder exits
        pass


def test_refresh_policy_reasons():
    p = RefreshPolicy(every_days=7, max_vocab_growth=0.2, max_drift=0.1, metric_drop_days=3, max_metric_drop=0.01)
    assert decide_mask_refresh(p, today="20260105", masks_day=None)[0]
    assert "requested" in decide_mask_refresh(p, today="20260105", masks_day="20260104", asked=True)[1]
    ok, why = decide_mask_refresh(p, today="20260108", masks_day="20260101")
    assert ok and "7 days old" in why
    ok, why = decide_mask_refresh(p, today="20260103", masks_day="20260101", vocab_growth={"video_id": 0.35, "page": 0.0})
    assert ok and "video_id" in why
    ok, why = decide_mask_refresh(p, today="20260103", masks_day="20260101", drift={"page": 0.25})
    assert ok and "page" in why
    # MSE (lower is better) worse by > 1% on each of the last 3 days
    ok, why = decide_mask_refresh(p, today="20260105", masks_day="20260101", metric_history=[0.100, 0.1015, 0.102, 0.103])
    assert ok and "3 days" in why
    ok, why = decide_mask_refresh(p, today="20260105", masks_day="20260101", metric_history=[0.100, 0.1015, 0.099, 0.103])
    assert not ok and "kept" in why
    assert vocabulary_growth({"a": 100, "b": 10}, {"a": 130, "b": 10}) == {"a": 0.3, "b": 0.0}


def test_tfdv_drift_of_a_shifted_categorical():
    import tensorflow_data_validation as tfdv

    ref = pd.DataFrame({"page": ["home"] * 70 + ["search"] * 30, "x": [1.0] * 100})
    same = pd.DataFrame({"page": ["home"] * 69 + ["search"] * 31, "x": [1.0] * 100})
    moved = pd.DataFrame({"page": ["home"] * 30 + ["search"] * 70, "x": [1.0] * 100})
    s_ref = tfdv.generate_statistics_from_dataframe(ref)
    schema = tfdv.infer_schema(s_ref)
    d_same = feature_drift(tfdv.generate_statistics_from_dataframe(same), s_ref, schema, ["page"])
    d_moved = feature_drift(tfdv.generate_statistics_from_dataframe(moved), s_ref, schema, ["page"])
    assert d_same["page"] < 0.05 and d_moved["page"] == pytest.approx(0.4, abs=0.01)


def test_tfdv_drift_of_a_numeric_is_a_distance_in_0_1_even_when_tiny():
    """Jensen-Shannon divergence in [0, 1]: a barely moved numeric column gives a small value (TFDV prints such
    values as e.g. 8.977e-05, which must not be read as 8.977), a moved one a large value."""
    import numpy as np
    import tensorflow_data_validation as tfdv

    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"hour": rng.integers(0, 24, 20000).astype(float)})
    same = pd.DataFrame({"hour": rng.integers(0, 24, 20000).astype(float)})
    moved = pd.DataFrame({"hour": rng.integers(12, 24, 20000).astype(float)})
    s_ref = tfdv.generate_statistics_from_dataframe(ref)
    schema = tfdv.infer_schema(s_ref)
    d_same = feature_drift(tfdv.generate_statistics_from_dataframe(same), s_ref, schema, ["hour"])["hour"]
    d_moved = feature_drift(tfdv.generate_statistics_from_dataframe(moved), s_ref, schema, ["hour"])["hour"]
    assert 0 <= d_same < 0.01, d_same
    assert 0.1 < d_moved <= 1, d_moved
