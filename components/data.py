"""From TFX artifacts (transformed examples, transform graph) to the ``models`` library's inputs."""

from __future__ import annotations

import glob
import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from components.transform import LABEL, SPACE, WEIGHT, vocabulary_name
from models.config import NumericFeature, ProjectConfig
from models.features import FeatureStats, embedding_tables
from models.training import Split


def split_files(examples_uri: str | list[str], split: str) -> list[str]:
    """Files of ``split`` of one Examples artifact folder, or of several (a daily window of spans)."""
    uris = [examples_uri] if isinstance(examples_uri, str) else list(examples_uri)
    files = [f for uri in uris for f in sorted(glob.glob(os.path.join(uri, f"Split-{split}", "*")))]
    if not files:
        raise FileNotFoundError(f"no example files for split {split!r} under {', '.join(uris)}")
    return files


def embedding_tables_from_transform(config: ProjectConfig, tft_output: tft.TFTransformOutput) -> dict:
    """Embedding tables from the vocabularies Transform computed (the layout FeatureEncoder uses).

    Only the vocabularies differ from the in-memory path, so the tables are built by the same
    ``models.features.embedding_tables``.
    """
    vocabularies = {
        f.name: [w.decode("utf-8", "replace") for w in tft_output.vocabulary_by_name(vocabulary_name(f.name))]
        for f in config.features
        if not isinstance(f, NumericFeature) and f.shared_embedding is None and f.vocab_size is not None
    }
    return embedding_tables(config, FeatureStats(vocabularies, {}, {}))


def load_split(examples_uri: str | list[str], split: str, config: ProjectConfig, tft_output: tft.TFTransformOutput,
               batch_size: int = 16384, for_training: bool = True) -> Split:
    """Read a split of Transform's output into memory as a :class:`Split`.

    ``spaces`` carry the training weights (``weight__t``: sample space x gradient-conflict
    weight) when ``for_training``, else the plain sample-space indicator (``space__t``).
    """
    spec = tft_output.transformed_feature_spec()
    features = [f.name for f in config.features]
    keep = features + [LABEL + t for t in config.task_names] + [SPACE + t for t in config.task_names] + [
        WEIGHT + t for t in config.task_names
    ]
    missing = [k for k in keep if k not in spec]
    if missing:
        raise KeyError(f"transformed examples lack {missing}; was Transform run with this config?")
    spec = {k: spec[k] for k in keep}
    ds = tf.data.TFRecordDataset(split_files(examples_uri, split), compression_type="GZIP")
    ds = ds.batch(batch_size).map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keep}
    for batch in ds:
        for k in keep:
            parts[k].append(batch[k].numpy())
    arrays = {k: (np.concatenate(v) if v else np.zeros((0,), np.float32)) for k, v in parts.items()}
    inputs = {}
    for f in config.features:
        x = arrays[f.name]
        inputs[f.name] = x.astype(np.float32) if isinstance(f, NumericFeature) else x.astype(np.int64)
    space_key = WEIGHT if for_training else SPACE
    labels = {t: arrays[LABEL + t].astype(np.float32).reshape(-1) for t in config.task_names}
    spaces = {t: arrays[space_key + t].astype(np.float32).reshape(-1) for t in config.task_names}
    return Split(inputs, labels, spaces)
