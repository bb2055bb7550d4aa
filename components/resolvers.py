"""Resolver strategies of the daily pipeline (local orchestration; see ``pipeline/pipeline.py``)."""

from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver


CACHE_END_SPAN = "ncs_cache_end_span"  # on a TransformCache: the newest span its Transform analyzed


def span_of(artifact: types.Artifact) -> int:
    # ExampleGen stores the span as an int custom property (older versions: as a string)
    text = artifact.get_string_custom_property("span")
    return int(text) if text else artifact.get_int_custom_property("span")


class ValidatedSpanWindow(resolver.ResolverStrategy):
    """The Examples of the last ``num_spans`` spans up to ``end_span`` that passed validation.

    Like TFX's ``SpanRangeStrategy`` with a rolling range, but an Examples artifact only
    counts when a ``ValidatedSpan`` marker names it (``examples_id``): a day rejected by
    ExampleValidator stays out of every later window. Per span the newest validated artifact
    wins (a re-ingested day). Inputs: ``examples`` (ExampleGen's channel) and ``validated``
    (ValidationGate's). Outputs: ``examples``, newest span first, and their ``validated`` markers; ``None`` (not resolved)
    when ``end_span`` itself has no validated examples.
    """

    def __init__(self, end_span: int, num_spans: int):
        if num_spans < 1:
            raise ValueError(f"num_spans must be >= 1, got {num_spans}")
        self.end_span, self.num_spans = int(end_span), int(num_spans)

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict[str, List[types.Artifact]]]:
        markers = input_dict.get("validated", [])
        validated_ids = {v.get_int_custom_property("examples_id") for v in markers}
        start = self.end_span - self.num_spans + 1
        newest: Dict[int, types.Artifact] = {}
        for a in input_dict.get("examples", []):
            span = span_of(a)
            if a.id in validated_ids and start <= span <= self.end_span and (span not in newest or a.id > newest[span].id):
                newest[span] = a
        if self.end_span not in newest:
            return None
        chosen = [newest[s] for s in sorted(newest, reverse=True)]
        ids = {a.id for a in chosen}
        # a resolver outputs every input key: the markers of the chosen spans ride along
        return {"examples": chosen, "validated": [v for v in markers if v.get_int_custom_property("examples_id") in ids]}


class EarlierAnalyzerCache(resolver.ResolverStrategy):
    """The newest analyzer cache of a Transform whose window ended before ``end_span``.

    Input and output key ``cache`` (TransformCache artifacts; TFX hands a resolver LIVE artifacts
    only, so a killed Transform's cache never arrives). Yesterday's cache, not today's: a re-run of
    today (after a kill, or a retry) then gets the same cache input as the first attempt, so TFX's
    own execution cache still finds today's finished Transform. Caches without the
    ``ncs_cache_end_span`` stamp (``components.transform_cache``) are ignored. No cache resolves
    to an empty list (Transform then analyzes every span of the window).
    """

    def __init__(self, end_span: int):
        self.end_span = int(end_span)

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict[str, List[types.Artifact]]]:
        earlier = [c for c in input_dict.get("cache", [])
                   if c.has_custom_property(CACHE_END_SPAN) and c.get_int_custom_property(CACHE_END_SPAN) < self.end_span]
        return {"cache": [max(earlier, key=lambda c: c.id)] if earlier else []}
