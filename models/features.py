"""Model inputs and embedding tables.

The TFT ``preprocessing_fn`` (``components.transform``) is the one preprocessing: it maps raw
log columns to the model inputs :func:`input_signature` describes. Id layout of every
embedding table::

    0                      padding (empty slot of a multi-valued feature)
    1 .. V                 vocabulary, most frequent first        (vocab tables)
    V+1 .. V+oov_buckets   out-of-vocabulary values, hashed        (vocab tables)
    1 .. hash_buckets      hashed values                           (hash tables)

:func:`embedding_tables` sizes the tables from Transform's vocabularies.
"""

from __future__ import annotations

import dataclasses

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


def embedding_tables(config: ProjectConfig, vocabularies: dict[str, list[str]]) -> dict[str, EmbeddingTable]:
    """``{table: EmbeddingTable}``; ``vocabularies`` has the tokens of every ``vocab_size`` table."""
    tables = {}
    for f in config.features:
        if isinstance(f, NumericFeature) or f.shared_embedding is not None:
            continue
        dim = f.embedding_dim or config.model.embedding_dim
        if f.vocab_size is not None:
            vocab = tuple(vocabularies[f.name])
            size = 1 + len(vocab) + f.oov_buckets
            tables[f.name] = EmbeddingTable(f.name, size, dim, vocab, f.oov_buckets, None)
        else:
            tables[f.name] = EmbeddingTable(f.name, 1 + f.hash_buckets, dim, None, 0, f.hash_buckets)
    return tables


def raw_columns(config: ProjectConfig) -> list[str]:
    return list(dict.fromkeys(f.source for f in config.features))


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


__all__ = ["CategoricalFeature", "EmbeddingTable", "embedding_tables", "input_signature", "raw_columns", "table_of"]
