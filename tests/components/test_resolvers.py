"""The daily span window: last K validated spans, newest artifact per span, rejected spans left out."""

from tfx.types import standard_artifacts

from components.resolvers import CACHE_END_SPAN, EarlierAnalyzerCache, ValidatedSpanWindow
from components.types import ValidatedSpan


def _examples(aid: int, span: int):
    a = standard_artifacts.Examples()
    a.id = aid
    a.set_int_custom_property("span", span)
    return a


def _marker(aid: int, examples_id: int):
    m = ValidatedSpan()
    m.id = aid
    m.set_int_custom_property("examples_id", examples_id)
    return m


def test_window_keeps_validated_spans_in_range_newest_first():
    ex = [_examples(1, 10), _examples(2, 11), _examples(3, 12), _examples(4, 13), _examples(5, 13)]
    # span 12 was rejected (no marker); span 13 was ingested twice, both validated
    marks = [_marker(100, 1), _marker(101, 2), _marker(103, 4), _marker(104, 5)]
    out = ValidatedSpanWindow(end_span=13, num_spans=3).resolve_artifacts(None, {"examples": ex, "validated": marks})
    assert [a.id for a in out["examples"]] == [5, 2]  # span 13 (newest artifact), span 11; 12 rejected, 10 too old
    assert sorted(m.get_int_custom_property("examples_id") for m in out["validated"]) == [2, 5]


def test_window_is_unresolved_when_the_day_itself_is_not_validated():
    ex = [_examples(1, 10), _examples(2, 11)]
    out = ValidatedSpanWindow(end_span=11, num_spans=2).resolve_artifacts(None, {"examples": ex, "validated": [_marker(9, 1)]})
    assert out is None


def test_window_span_may_be_a_string_property_of_old_tfx():
    a = standard_artifacts.Examples()
    a.id = 7
    a.set_string_custom_property("span", "20")
    out = ValidatedSpanWindow(end_span=20, num_spans=1).resolve_artifacts(None, {"examples": [a], "validated": [_marker(8, 7)]})
    assert [x.id for x in out["examples"]] == [7]


def _cache(aid: int, end_span=None):
    c = standard_artifacts.TransformCache()
    c.id = aid
    if end_span is not None:
        c.set_int_custom_property(CACHE_END_SPAN, end_span)
    return c


def test_analyzer_cache_of_the_newest_earlier_day_only():
    caches = [_cache(1, 10), _cache(2, 11), _cache(3, 11), _cache(4, 12), _cache(5)]  # 5: unstamped
    # day 12 (e.g. re-run after a kill): not its own cache 4, the newest of day 11
    assert [c.id for c in EarlierAnalyzerCache(end_span=12).resolve_artifacts(None, {"cache": caches})["cache"]] == [3]
    assert [c.id for c in EarlierAnalyzerCache(end_span=13).resolve_artifacts(None, {"cache": caches})["cache"]] == [4]
    assert EarlierAnalyzerCache(end_span=10).resolve_artifacts(None, {"cache": caches}) == {"cache": []}
    assert EarlierAnalyzerCache(end_span=10).resolve_artifacts(None, {}) == {"cache": []}
