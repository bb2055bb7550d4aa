"""TensorFlow Transform ``preprocessing_fn``: the one preprocessing graph of training and serving.

Given the project config (passed as ``custom_config["config_json"]``), it turns raw log
columns into the model inputs ``models.features.input_signature`` describes, with the same
id layout ``models.features`` documents::

    0                      padding (empty slot of a multi-valued feature)
    1 .. V                 vocabulary, most frequent first   (full-pass tft.vocabulary)
    V+1 .. V+oov_buckets   out-of-vocabulary values, hashed
    1 .. hash_buckets      hashed values                     (hash_buckets features)

and adds, per task ``t``: ``label__t`` (a column, or ``clip(num / den, 0, 1)``),
``space__t`` (1 on the task's sample space, e.g. clicked rows for CVR; TFMA weights the
task's metrics by it) and ``weight__t`` (the space times any gradient-conflict weight,
used by training). ``duration_bucket`` and ``slice__<column>`` (raw strings of
``pipeline.slices``) are emitted for TFMA slicing.
Label outputs depend on label columns, so the serving graph (which gets no labels)
prunes them away.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from models.config import (
    ColumnLabel,
    MultiCategoricalFeature,
    NumericFeature,
    ProjectConfig,
)
from models.data import LABEL, SPACE, WEIGHT
from models.features import table_of

SLICE = "slice__"
DURATION_BUCKET = "duration_bucket"

# Transform traces preprocessing_fn in a tf.compat.v1 graph (TFT's force_tf_compat_v1) in the pipeline and in
# `ncs compare` alike: the same outputs as TF2 mode, in a TF1 SavedModel, and a third less Transform time (38.0 ->
# 24.7 s on one 800-row day) because TF2 mode traces the function and its SavedModel several times. Nothing here
# needs TF2 mode: the function is ours (configured, not user code) and the model reads the graph through
# TFTransformOutput.
FORCE_TF_COMPAT_V1 = True

_OPS = {"==": tf.equal, "!=": tf.not_equal, ">": tf.greater, ">=": tf.greater_equal, "<": tf.less, "<=": tf.less_equal}


def vocabulary_name(table: str) -> str:
    """File name of a table's vocabulary in the transform graph."""
    return f"vocab_{table}"


def _dense(x, default):
    """A [B] dense tensor from a dense ``[B]``/``[B, 1]`` tensor or a SparseTensor (missing -> default)."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(tf.sparse.reset_shape(x, [x.dense_shape[0], 1]), default_value=default)
    if x.shape.rank == 2:
        x = tf.squeeze(x, axis=1)
    return x


def _strings(x):
    x = _dense(x, "" if x.dtype == tf.string else 0)
    return x if x.dtype == tf.string else tf.strings.as_string(x)


def _floats(x):
    x = _dense(x, 0.0 if x.dtype.is_floating else (0 if x.dtype.is_integer else ""))
    if x.dtype == tf.string:
        x = tf.strings.to_number(x, tf.float32)
    return tf.cast(x, tf.float32)


def _tokens(x, feature):
    """RaggedTensor [B, None] of a multi-valued feature's non-empty tokens (first max_length)."""
    tokens = tf.strings.split(_strings(x), sep=feature.separator)
    tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
    return tokens[:, : feature.max_length]


def transform_config_json(config: ProjectConfig) -> str:
    """The config as Transform sees it: model/training/sparse/daily sections reset to defaults.

    Transform's cache key includes ``custom_config``; changing the model variant, MLP sizes
    or training schedule must not re-run the (expensive) full-pass analysis.
    """
    from models.config import DailyConfig, ModelConfig, SparseSharingConfig, TrainingConfig

    reset = {"model": ModelConfig(), "training": TrainingConfig(), "sparse": SparseSharingConfig(), "daily": DailyConfig()}
    return config.model_copy(update=reset).model_dump_json()


# No Python control flow depends on tensors here: skipping AutoGraph's conversion of every
# TFT/TF function this calls halves the tracing time of Transform (TF2 mode).
@tf.autograph.experimental.do_not_convert
def preprocessing_fn(inputs, custom_config):
    config = ProjectConfig.model_validate_json(custom_config["config_json"])
    out = {}

    # -- vocabularies: one per embedding table (shared_embedding features add their tokens)
    tokens_of = {}
    for f in config.features:
        if isinstance(f, NumericFeature):
            continue
        tokens_of[f.name] = _tokens(inputs[f.source], f) if isinstance(f, MultiCategoricalFeature) else _strings(inputs[f.source])
    vocab_files = {}
    for f in config.features:
        if isinstance(f, NumericFeature) or f.shared_embedding is not None or f.vocab_size is None:
            continue
        readers = [g for g in config.features if not isinstance(g, NumericFeature) and table_of(g) == f.name]
        flat = [tokens_of[g.name].flat_values if isinstance(g, MultiCategoricalFeature) else tokens_of[g.name] for g in readers]
        tokens = tf.concat(flat, axis=0) if len(flat) > 1 else flat[0]
        # Weights of one make TFT count each batch's tokens in the graph (unique values and their counts) and sum
        # the counts in Beam; without weights every token is a Beam element of its own. Same counts, same order
        # (count, then token); float64 sums are exact up to 2**53 occurrences.
        vocab_files[f.name] = tft.vocabulary(
            tokens, top_k=f.vocab_size, vocab_filename=vocabulary_name(f.name),
            weights=tf.ones_like(tokens, dtype=tf.float64),
        )

    def ids(table_feature, tokens):
        if table_feature.vocab_size is not None:
            return tft.apply_vocabulary(
                tokens, vocab_files[table_feature.name], num_oov_buckets=table_feature.oov_buckets, default_value=-1
            ) + 1
        return tf.strings.to_hash_bucket_fast(tokens, table_feature.hash_buckets) + 1

    for f in config.features:
        if isinstance(f, NumericFeature):
            x = _floats(inputs[f.source])
            if f.log:
                x = tf.math.log1p(tf.maximum(x, 0.0))
            out[f.name] = tft.scale_to_z_score(x)
            continue
        table = config.feature(table_of(f))
        if isinstance(f, MultiCategoricalFeature):
            t = tokens_of[f.name]
            ragged_ids = tf.RaggedTensor.from_row_splits(ids(table, t.flat_values), t.row_splits)
            out[f.name] = ragged_ids.to_tensor(default_value=0, shape=[None, f.max_length])
        else:
            out[f.name] = ids(table, tokens_of[f.name])

    # -- labels, sample spaces and training weights per task
    for task in config.tasks:
        if isinstance(task.label, ColumnLabel):
            y = _floats(inputs[task.label.column])
            if task.type == "regression":
                y = tf.clip_by_value(y, 0.0, 1.0)
        else:
            num, den = task.label.ratio
            n, d = _floats(inputs[num]), _floats(inputs[den])
            y = tf.where(d > 0, tf.clip_by_value(tf.math.divide_no_nan(n, d), 0.0, 1.0), tf.zeros_like(n))
        out[LABEL + task.name] = y
        clause = task.where_clause
        if clause is None:
            space = tf.ones_like(y)
        else:
            col, op, val = clause
            space = tf.cast(_OPS[op](_floats(inputs[col]), val), tf.float32)
        out[SPACE + task.name] = space
        weight = space
        gc = config.tuning.gradient_conflict
        if gc.enabled and gc.task == task.name:
            dur, watch = _floats(inputs[gc.duration_column]), _floats(inputs[gc.watch_column])
            limits = tf.constant([t[0] for t in gc.thresholds], tf.float32)
            mins = tf.constant([t[1] for t in gc.thresholds], tf.float32)
            bucket = tf.minimum(tf.searchsorted(limits, dur, side="left"), len(gc.thresholds) - 1)
            short = tf.logical_and(watch < tf.gather(mins, bucket), space > 0)
            weight = tf.where(short, space * gc.weight, space)
        out[WEIGHT + task.name] = weight

    length_col = config.dataset.duration_column or (config.ranking.length_column if config.ranking else None)
    if length_col is not None:
        length = _floats(inputs[length_col])
        edges = config.pipeline.duration_buckets
        names = [f"<{edges[0]:g}s"] + [f"{a:g}-{b:g}s" for a, b in zip(edges, edges[1:])] + [f">={edges[-1]:g}s"]
        idx = tf.searchsorted(tf.constant(edges, tf.float32), length, side="right")
        out[DURATION_BUCKET] = tf.gather(tf.constant(names), idx)
    # raw values of the slice columns (the model inputs of the same name are vocabulary ids)
    for col in config.pipeline.slices:
        if col != DURATION_BUCKET and col in inputs:
            out[SLICE + col] = _strings(inputs[col])
    return out
