"""Feature preprocessing: vocabularies, hashing, normalization (raw values -> ids).

``FeatureStats`` holds what is learned from the training split (vocabularies,
numeric mean/std); ``FeatureEncoder`` is a Keras layer that maps raw tensors to
model inputs with TensorFlow ops, so the same graph can later sit in a serving
signature. Id layout of every embedding table::

    0                      padding (empty slot of a multi-valued feature)
    1 .. V                 vocabulary, most frequent first        (vocab tables)
    V+1 .. V+oov_buckets   out-of-vocabulary values, hashed        (vocab tables)
    1 .. hash_buckets      hashed values                           (hash tables)

Out-of-vocabulary hashing uses ``tf.lookup.StaticVocabularyTable`` (Fingerprint64),
the same scheme TensorFlow Transform uses for ``num_oov_buckets``.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np
import pandas as pd
import tensorflow as tf

from models.config import CategoricalFeature, MultiCategoricalFeature, NumericFeature, ProjectConfig


@dataclasses.dataclass(frozen=True)
class EmbeddingTable:
    """An embedding table; several features may share one (``shared_embedding``)."""

    name: str
    size: int  # number of rows, including padding row 0
    dim: int
    vocabulary: tuple[str, ...] | None  # None for hashed tables
    oov_buckets: int
    hash_buckets: int | None


def table_of(feature) -> str:
    """The embedding table a categorical feature reads."""
    return feature.shared_embedding or feature.name


@dataclasses.dataclass
class FeatureStats:
    """Everything fitted on the training split. JSON-serializable."""

    vocabularies: dict[str, list[str]]
    numeric_mean: dict[str, float]
    numeric_std: dict[str, float]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "FeatureStats":
        return cls(**json.loads(text))


def _tokens(series: pd.Series, feature) -> list[str]:
    if isinstance(feature, MultiCategoricalFeature):
        out: list[str] = []
        for v in series.astype(str):
            out.extend(t for t in v.split(feature.separator)[: feature.max_length] if t)
        return out
    return list(series.astype(str))


def fit_stats(frame: pd.DataFrame, config: ProjectConfig) -> FeatureStats:
    """Fit vocabularies (top-``vocab_size`` by frequency) and numeric mean/std."""
    counters: dict[str, Counter] = {}
    for f in config.features:
        if isinstance(f, NumericFeature):
            continue
        counters.setdefault(table_of(f), Counter()).update(_tokens(frame[f.source], f))
    vocabularies: dict[str, list[str]] = {}
    for f in config.features:
        if isinstance(f, NumericFeature) or f.shared_embedding is not None:
            continue
        if f.vocab_size is not None:
            # ties broken by the value itself so the vocabulary is deterministic
            ranked = sorted(counters[f.name].items(), key=lambda kv: (-kv[1], kv[0]))
            vocabularies[f.name] = [k for k, _ in ranked[: f.vocab_size]]
    mean, std = {}, {}
    for f in config.features:
        if isinstance(f, NumericFeature):
            x = frame[f.source].to_numpy(dtype=np.float64)
            if f.log:
                x = np.log1p(np.maximum(x, 0.0))
            mean[f.name] = float(x.mean()) if len(x) else 0.0
            sd = float(x.std()) if len(x) else 1.0
            std[f.name] = sd if sd > 1e-12 else 1.0
    return FeatureStats(vocabularies, mean, std)


def embedding_tables(config: ProjectConfig, stats: FeatureStats) -> dict[str, EmbeddingTable]:
    tables = {}
    for f in config.features:
        if isinstance(f, NumericFeature) or f.shared_embedding is not None:
            continue
        dim = f.embedding_dim or config.model.embedding_dim
        if f.vocab_size is not None:
            vocab = tuple(stats.vocabularies[f.name])
            size = 1 + len(vocab) + f.oov_buckets
            tables[f.name] = EmbeddingTable(f.name, size, dim, vocab, f.oov_buckets, None)
        else:
            tables[f.name] = EmbeddingTable(f.name, 1 + f.hash_buckets, dim, None, 0, f.hash_buckets)
    return tables


class FeatureEncoder(tf.keras.layers.Layer):
    """Raw feature tensors -> model inputs.

    Input: dict ``{source column: [B] tensor}`` (strings for categorical and
    multi-valued features, numbers for numeric ones).
    Output: dict ``{feature name: tensor}``: int64 ``[B]`` for categorical,
    int64 ``[B, max_length]`` (0-padded) for multi-valued, float32 ``[B]``
    (normalized) for numeric features.
    """

    def __init__(self, config_json: str, stats_json: str, **kwargs):
        super().__init__(**kwargs)
        self._config_json = config_json
        self._stats_json = stats_json
        self.project = ProjectConfig.model_validate_json(config_json)
        self.stats = FeatureStats.from_json(stats_json)
        self.tables = embedding_tables(self.project, self.stats)
        self._lookups = {}
        for name, t in self.tables.items():
            if t.vocabulary is not None:
                init = tf.lookup.KeyValueTensorInitializer(
                    tf.constant(list(t.vocabulary) or [""], dtype=tf.string),
                    tf.range(max(len(t.vocabulary), 1), dtype=tf.int64),
                )
                self._lookups[name] = tf.lookup.StaticVocabularyTable(init, num_oov_buckets=t.oov_buckets)

    def _ids(self, table: EmbeddingTable, tokens):
        if table.vocabulary is not None:
            return self._lookups[table.name].lookup(tokens) + 1
        return tf.strings.to_hash_bucket_fast(tokens, table.hash_buckets) + 1

    def call(self, raw):
        out = {}
        for f in self.project.features:
            x = raw[f.source]
            if isinstance(f, NumericFeature):
                x = tf.cast(x, tf.float32)
                if f.log:
                    x = tf.math.log1p(tf.maximum(x, 0.0))
                out[f.name] = (x - self.stats.numeric_mean[f.name]) / self.stats.numeric_std[f.name]
                continue
            table = self.tables[table_of(f)]
            x = tf.strings.as_string(x) if x.dtype != tf.string else x
            if isinstance(f, MultiCategoricalFeature):
                tokens = tf.strings.split(x, sep=f.separator)
                tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
                ids = tf.ragged.map_flat_values(lambda t, table=table: self._ids(table, t), tokens)
                out[f.name] = ids.to_tensor(default_value=0, shape=[None, f.max_length])
            else:
                out[f.name] = self._ids(table, x)
        return out

    def get_config(self):
        return {**super().get_config(), "config_json": self._config_json, "stats_json": self._stats_json}


def raw_columns(config: ProjectConfig) -> list[str]:
    return list(dict.fromkeys(f.source for f in config.features))


def encode_frame(frame: pd.DataFrame, encoder: FeatureEncoder, chunk: int = 65536) -> dict[str, np.ndarray]:
    """Run ``encoder`` over a cleaned frame in chunks; returns numpy model inputs."""
    cols = raw_columns(encoder.project)
    numeric = {f.source for f in encoder.project.features if isinstance(f, NumericFeature)}
    parts: dict[str, list[np.ndarray]] = {}
    fn = tf.function(encoder.call)
    for lo in range(0, max(len(frame), 1), chunk):
        sub = frame.iloc[lo : lo + chunk]
        raw = {
            c: tf.constant(sub[c].to_numpy(dtype=np.float32 if c in numeric else object).astype(
                np.float32 if c in numeric else str))
            for c in cols
        }
        for k, v in fn(raw).items():
            parts.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def input_signature(config: ProjectConfig) -> dict[str, tf.TensorSpec]:
    """TensorSpecs of the model inputs (the encoder's outputs)."""
    spec = {}
    for f in config.features:
        if isinstance(f, NumericFeature):
            spec[f.name] = tf.TensorSpec([None], tf.float32, name=f.name)
        elif isinstance(f, MultiCategoricalFeature):
            spec[f.name] = tf.TensorSpec([None, f.max_length], tf.int64, name=f.name)
        else:
            spec[f.name] = tf.TensorSpec([None], tf.int64, name=f.name)
    return spec


__all__ = [
    "CategoricalFeature",
    "EmbeddingTable",
    "FeatureEncoder",
    "FeatureStats",
    "embedding_tables",
    "encode_frame",
    "fit_stats",
    "input_signature",
]
