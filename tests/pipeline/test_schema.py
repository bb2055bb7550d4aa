"""The curated schema flags what the pipeline must not train on (checked with TFDV directly)."""

import pandas as pd
import pytest

from data.synthetic import generate_days
from models.config import parse_config
from pipeline.schema import curate_schema
from tests.conftest import tiny_config_dict


@pytest.fixture(scope="module")
def schema_and_frame():
    import tensorflow_data_validation as tfdv

    cfg = parse_config(tiny_config_dict())
    frame = pd.concat([f for _, f in generate_days(1, 3000, seed=5, with_truth=True)], ignore_index=True)
    schema = tfdv.infer_schema(tfdv.generate_statistics_from_dataframe(frame), infer_feature_shape=True)
    return curate_schema(schema, cfg), frame


def _anomalies(schema, frame):
    import tensorflow_data_validation as tfdv

    return dict(tfdv.validate_statistics(tfdv.generate_statistics_from_dataframe(frame), schema).anomaly_info)


def test_good_day_passes_and_truth_columns_are_not_required(schema_and_frame):
    schema, frame = schema_and_frame
    assert _anomalies(schema, frame) == {}
    assert _anomalies(schema, frame.drop(columns=["true_ctr", "true_cvr"])) == {}


def test_bad_days_are_flagged(schema_and_frame):
    schema, frame = schema_and_frame
    shifted = frame.copy()
    shifted.loc[: len(frame) // 10, "page"] = "brand_new_page"  # 10% unseen values: a new distribution
    assert "page" in _anomalies(schema, shifted)
    few = frame.copy()
    few.loc[:5, "page"] = "brand_new_page"  # a handful of new values (< 1%): OOV buckets, no anomaly
    assert "page" not in _anomalies(schema, few)
    assert "duration" in _anomalies(schema, frame.drop(columns=["duration"]))
    bad = frame.copy()
    bad.loc[:3, "click"] = 2
    assert "click" in _anomalies(schema, bad)
    zero = frame.copy()
    zero.loc[:3, "duration"] = 0
    assert "duration" in _anomalies(schema, zero)
    neg = frame.copy()
    neg.loc[:3, "watch_seconds"] = -5.0
    assert "watch_seconds" in _anomalies(schema, neg)
