"""Transform's analyzer cache across daily spans, trusted only under the config and schema that wrote it.

Why: a daily run analyzes a sliding window of ``daily.window_days`` spans, so without a cache
every day is analyzed ``window_days`` times. TFT can reuse the analyzers' accumulators of a
span it has seen (``Transform(analyzer_cache=...)``): then only the new day is read by the
analysis. TFT keys a cache entry by the span's examples URI and by a fingerprint of each
analyzer's graph; this executor adds a key of its own on top, so that a cache written under
another project config, schema, ``preprocessing_fn`` or TFT version is never read:

- the ``updated_analyzer_cache`` artifact of a finished run gets the custom property
  ``ncs_cache_key`` = sha256 of (TFT version, ``preprocessing_fn``, ``custom_config``, schema);
- an input ``analyzer_cache`` is used only when its key equals this run's key; otherwise it
  is dropped with a warning naming both keys, and the run analyzes every span;
- a run killed mid-way never publishes its cache (MLMD keeps the artifact PENDING, and the
  resolver only hands over LIVE artifacts) and never stamped it: a later run cannot trust it;
- the cache is also stamped with the newest span analyzed (``ncs_cache_end_span``): a day reads
  the cache of an *earlier* day (``components.resolvers.EarlierAnalyzerCache``), so re-running a
  day finds its finished Transform in TFX's execution cache.

Wiring: :func:`use_cache_executor` on a ``tfx.components.Transform`` (the component type and
its node id ``Transform`` stay the stock ones, so MLMD queries and the console keep working).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.transform import executor as transform_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs as specs
from tfx.utils import io_utils

from components.block_tfxio import block_reading
from components.block_write import block_writing
from components.resolvers import CACHE_END_SPAN, span_of

CACHE_KEY = "ncs_cache_key"


def _schema_bytes(schema_artifacts: List[types.Artifact]) -> bytes:
    if not schema_artifacts:
        return b""
    return io_utils.read_bytes_file(io_utils.get_only_uri_in_dir(schema_artifacts[0].uri))


def cache_key(exec_properties: Dict[str, Any], schema: bytes) -> str:
    """The key a cache is written and trusted under (hex sha256)."""
    import tensorflow_transform as tft

    h = hashlib.sha256()
    for part in (tft.__version__, exec_properties.get(specs.PREPROCESSING_FN_KEY) or "",
                 exec_properties.get(specs.MODULE_FILE_KEY) or "", exec_properties.get(specs.CUSTOM_CONFIG_KEY) or "",
                 str(exec_properties.get(specs.FORCE_TF_COMPAT_V1_KEY, 0))):
        h.update(str(part).encode() + b"\0")
    h.update(schema)
    return h.hexdigest()


def trusted_caches(caches: List[types.Artifact], key: str) -> List[types.Artifact]:
    """The input caches written under ``key`` (unstamped ones, e.g. of a killed run, never)."""
    trusted = []
    for c in caches:
        found = c.get_string_custom_property(CACHE_KEY) if c.has_custom_property(CACHE_KEY) else ""
        if found == key:
            trusted.append(c)
        else:
            logging.warning("Transform: analyzer cache %s not used: it was written under key %r, this run's key is %r "
                            "(another config, schema or TFT version); every span of the window is analyzed",
                            c.uri, found or "<none>", key)
    return trusted


class Executor(transform_executor.Executor):
    """TFX's Transform executor, with the cache checks described in the module doc, reading its examples a batch
    of records per Beam element (``components.block_tfxio``) and writing them a batch at a time
    (``components.block_write``)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        key = cache_key(exec_properties, _schema_bytes(input_dict.get(specs.SCHEMA_KEY, [])))
        inputs = dict(input_dict)
        caches = trusted_caches(list(inputs.pop(specs.ANALYZER_CACHE_KEY, None) or []), key)
        if caches:
            inputs[specs.ANALYZER_CACHE_KEY] = caches
            logging.info("Transform: reusing the analyzer cache at %s", caches[0].uri)
        with block_reading(), block_writing():
            super().Do(inputs, output_dict, exec_properties)
        spans = [span_of(a) for a in input_dict.get(specs.EXAMPLES_KEY, []) if a.has_custom_property("span")]
        for artifact in output_dict.get(specs.UPDATED_ANALYZER_CACHE_KEY, []) or []:
            # stamped only after the analysis finished and wrote the cache
            if os.path.isdir(artifact.uri):
                artifact.set_string_custom_property(CACHE_KEY, key)
                if spans:  # the resolver of a later day picks the cache by it (components.resolvers)
                    artifact.set_int_custom_property(CACHE_END_SPAN, max(spans))


def use_cache_executor(transform) -> Any:
    """Make a ``tfx.components.Transform`` run :class:`Executor` (returns it)."""
    transform.executor_spec = executor_spec.BeamExecutorSpec(Executor)
    return transform
