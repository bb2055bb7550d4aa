"""SavedModel export: the TF Serving contract of a trained multi-task model.

Signatures (all return float32 ``[B]`` tensors):

- ``serving_default``: ``examples`` — a ``[B]`` batch of serialized raw ``tf.Example`` s
  (what TF Serving's ``classify``/``predict`` with b64 examples sends) →
  ``{<task>: probability, ..., rank_score}``.
- ``serving_raw``: one named ``[B]`` tensor per raw column the model reads (REST
  ``instances``/``inputs``) → the same outputs.
- ``transform_features``: serialized examples (with label columns) → every Transform output
  (model inputs, ``label__t``, ``space__t``, ``weight__t``, ``duration_bucket``); TFMA runs it
  to find labels and weights.

``rank_score = p_ctr^a * p_cvr^b * length^c`` with ``a, b, c`` and the tasks from the
config's ``ranking`` section (defaults 1). The project config, the masks analytics (for
sparse variants) and the raw feature spec are stored under ``assets.extra/ncs/`` (TF
Serving ignores that folder). ``raw_features.json`` holds, per raw column a request carries,
its dtype, shape and the domain the schema gives it (numeric min/max, string values with the
schema's tolerance for values outside them); ``ncs serve`` answers 400 for a value outside.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import tensorflow as tf

from models.config import ProjectConfig
from models.features import raw_columns
from serving.validation import ASSETS_EXTRA, raw_features_json  # noqa: F401 - ASSETS_EXTRA is imported from here


def serving_columns(config: ProjectConfig) -> list[str]:
    """Raw columns a request must carry: feature sources plus the ranking length column."""
    cols = raw_columns(config)
    length = _length_column(config)
    if length and length not in cols:
        cols.append(length)
    return cols


def _length_column(config: ProjectConfig):
    if config.ranking is not None:
        return config.ranking.length_column
    return config.dataset.duration_column


class ServingModule(tf.Module):
    """Tracks the Keras model and the Transform layer so both are saved together."""

    def __init__(self, model, tft_output, config: ProjectConfig):
        super().__init__()
        self.model = model
        self.tft_layer = tft_output.transform_features_layer()
        self.config_json = config.model_dump_json()
        raw_spec = tft_output.raw_feature_spec()
        cols = serving_columns(config)
        missing = [c for c in cols if c not in raw_spec]
        if missing:
            raise KeyError(f"schema has no raw column(s) {missing} the model needs")
        self._full_spec = raw_spec
        self._serving_spec = {c: raw_spec[c] for c in cols}
        self._features = [f.name for f in config.features]
        self._tasks = config.task_names
        rk = config.ranking
        self._rank = (
            (rk.ctr_task, rk.cvr_task, rk.a, rk.b, rk.c) if rk is not None else (self._tasks[0], self._tasks[-1], 1.0, 1.0, 1.0)
        )
        self._length = _length_column(config)

    def _predict(self, raw):
        transformed = self.tft_layer(raw)
        preds = self.model({k: transformed[k] for k in self._features}, training=False)
        out = {t: tf.reshape(tf.cast(preds[t], tf.float32), [-1]) for t in self._tasks}
        ctr, cvr, a, b, c = self._rank
        score = tf.pow(out[ctr], a) * tf.pow(out[cvr], b)
        if self._length is not None:
            length = tf.reshape(tf.cast(raw[self._length], tf.float32), [-1])
            score = score * tf.pow(tf.maximum(length, 0.0), c)
        out["rank_score"] = score
        return out

    def signatures(self) -> dict:
        serving_spec, full_spec = self._serving_spec, self._full_spec

        # autograph=False: nothing here branches on tensors, and AutoGraph converting every Keras layer's __call__
        # (and the Transform layer's) was most of the export's time (28 of 33 s on a small model)
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")], autograph=False)
        def serve_examples(examples):
            return self._predict(tf.io.parse_example(examples, serving_spec))

        @tf.function(autograph=False)
        def serve_raw(**raw):
            shaped = {}
            for k, spec in serving_spec.items():
                x = raw[k]
                shaped[k] = tf.reshape(x, [-1] + list(spec.shape)) if getattr(spec, "shape", None) else x
            return self._predict(shaped)

        raw_inputs = {k: tf.TensorSpec([None], spec.dtype, name=k) for k, spec in serving_spec.items()}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")], autograph=False)
        def transform_features(examples):
            out = self.tft_layer(tf.io.parse_example(examples, full_spec))
            return {k: v for k, v in out.items() if isinstance(v, tf.Tensor)}

        return {
            "serving_default": serve_examples.get_concrete_function(),
            "serving_raw": serve_raw.get_concrete_function(**raw_inputs),
            "transform_features": transform_features.get_concrete_function(),
        }


def _raw_schema(tft_output):
    """The schema the raw data was validated against (domains; ``None`` when unavailable)."""
    try:
        return tft_output.raw_metadata.schema
    except Exception:  # noqa: BLE001 - an output without metadata: store dtypes and shapes only
        return None


def _without_keras_layer_traces():
    """Skip the per-layer call traces Keras adds to a SavedModel (``save_traces=False`` of ``Model.save``).

    Every consumer of the export (TF Serving, TFMA, the smoke check, ``ncs serve``) calls the three
    signatures; nothing reloads it as a Keras model (warm starts read ``warm_start/``). Tracing each
    layer's call was about a third of the export's time.
    """
    try:
        from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope
    except ImportError:  # another Keras: save as it does by default
        return contextlib.nullcontext()
    return keras_option_scope(save_traces=False)


def export_serving_model(model, tft_output, config: ProjectConfig, export_dir: str | Path, extra_files: dict | None = None) -> Path:
    """Write the SavedModel to ``export_dir`` with the three signatures and ``assets.extra/ncs/``."""
    export_dir = Path(export_dir)
    module = ServingModule(model, tft_output, config)
    with _without_keras_layer_traces():
        tf.saved_model.save(module, str(export_dir), signatures=module.signatures())
    extra = export_dir / ASSETS_EXTRA
    extra.mkdir(parents=True, exist_ok=True)
    (extra / "config.json").write_text(config.model_dump_json(indent=1))
    raw = raw_features_json(module._serving_spec, _raw_schema(tft_output))
    (extra / "raw_features.json").write_text(json.dumps(raw, indent=1))
    for name, content in (extra_files or {}).items():
        path = extra / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return export_dir
