"""The analyzer cache is trusted only under the config, schema and preprocessing_fn that wrote it."""

import json

import pytest
from tfx.components.transform import executor as stock
from tfx.types import standard_artifacts

from components import transform_cache
from components.resolvers import CACHE_END_SPAN
from components.transform_cache import CACHE_KEY, Executor, cache_key, trusted_caches


def _props(config="{}", fn="components.transform.preprocessing_fn"):
    return {"preprocessing_fn": fn, "custom_config": json.dumps({"config_json": config}), "force_tf_compat_v1": 0}


def _cache(uri, key=None):
    a = standard_artifacts.TransformCache()
    a.uri = str(uri)
    if key is not None:
        a.set_string_custom_property(CACHE_KEY, key)
    return a


def test_key_depends_on_config_schema_and_function():
    base = cache_key(_props('{"a": 1}'), b"feature { name: 'x' }")
    assert base == cache_key(_props('{"a": 1}'), b"feature { name: 'x' }")
    assert base != cache_key(_props('{"a": 2}'), b"feature { name: 'x' }")  # another config
    assert base != cache_key(_props('{"a": 1}'), b"feature { name: 'y' }")  # another schema
    assert base != cache_key(_props('{"a": 1}', fn="other.fn"), b"feature { name: 'x' }")
    # a cache written by Transform in the other TF mode (TF2 vs tf.compat.v1 graphs)
    assert base != cache_key({**_props('{"a": 1}'), "force_tf_compat_v1": 1 - _props("{}")["force_tf_compat_v1"]},
                             b"feature { name: 'x' }")


def test_only_caches_stamped_with_this_key_are_trusted(tmp_path, caplog):
    good, other, killed = _cache(tmp_path / "1", "k"), _cache(tmp_path / "2", "k2"), _cache(tmp_path / "3")
    with caplog.at_level("WARNING"):
        assert trusted_caches([good, other, killed], "k") == [good]
    text = caplog.text
    assert str(tmp_path / "2") in text and "'k2'" in text and str(tmp_path / "3") in text and "<none>" in text


@pytest.mark.parametrize("stamp_matches", [True, False])
def test_executor_drops_a_foreign_cache_before_tft_and_stamps_its_output(tmp_path, monkeypatch, stamp_matches):
    schema = standard_artifacts.Schema()
    schema.uri = str(tmp_path / "schema")
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "schema.pbtxt").write_text("feature { name: 'x' type: INT }")
    props = _props('{"cfg": 1}')
    key = cache_key(props, (tmp_path / "schema" / "schema.pbtxt").read_bytes())
    previous = _cache(tmp_path / "old", key if stamp_matches else "written-under-another-config")
    out = _cache(tmp_path / "new")
    seen = {}

    def fake_do(self, input_dict, output_dict, exec_properties):  # the stock executor: record, write the cache
        seen.update(input_dict)
        (tmp_path / "new").mkdir()

    monkeypatch.setattr(stock.Executor, "Do", fake_do)
    examples = []
    for span in (20260101, 20260102):
        e = standard_artifacts.Examples()
        e.set_int_custom_property("span", span)
        examples.append(e)
    Executor().Do({"examples": examples, "schema": [schema], "analyzer_cache": [previous]},
                  {"updated_analyzer_cache": [out]}, props)
    if stamp_matches:
        assert seen["analyzer_cache"] == [previous]
    else:
        assert "analyzer_cache" not in seen  # TFT analyzes every span
    assert out.get_string_custom_property(CACHE_KEY) == key
    assert out.get_int_custom_property(CACHE_END_SPAN) == 20260102  # a later day's resolver picks it by this


def test_an_unfinished_cache_is_not_stamped(tmp_path, monkeypatch):
    out = _cache(tmp_path / "never-written")

    def failing_do(self, input_dict, output_dict, exec_properties):
        raise RuntimeError("killed")

    monkeypatch.setattr(stock.Executor, "Do", failing_do)
    with pytest.raises(RuntimeError):
        Executor().Do({"schema": []}, {"updated_analyzer_cache": [out]}, _props())
    assert not out.has_custom_property(CACHE_KEY)


def test_daily_pipeline_wires_the_cache_and_a_run_does_not(tmp_path):
    from models.config import parse_config
    from pipeline.pipeline import DailyRun, create_pipeline
    from tests.conftest import tiny_config_dict

    cfg = parse_config(tiny_config_dict(variant="connection"))
    for daily in (None, DailyRun(day="20260102", masks_decision="test"), DailyRun(day=None, masks_decision="kfp")):
        p = create_pipeline(cfg, str(tmp_path / "data"), str(tmp_path / "root"), str(tmp_path / "serving"),
                            str(tmp_path / "m.sqlite"), daily=daily)
        transform = next(c for c in p.components if c.id == "Transform")
        assert transform.executor_spec.executor_class is transform_cache.Executor
        resolvers = [c for c in p.components if c.id == "earlier_analyzer_cache_resolver"]
        local_daily = daily is not None and daily.day is not None
        assert len(resolvers) == int(local_daily)
        assert ("analyzer_cache" in transform.inputs) == local_daily
        assert ("updated_analyzer_cache" in transform.outputs) == local_daily
