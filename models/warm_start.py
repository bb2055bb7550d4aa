"""Warm starts across days whose vocabularies differ.

A daily model is trained from yesterday's blessed weights, but Transform recomputes the
vocabularies on the new window: a video that was row 17 of ``emb_video_id`` yesterday can be
row 3 today, new videos appear and old ones drop out, and the table can change size. Copying
the matrix as is would hand every video another video's embedding. So embeddings of
vocabulary tables are carried over *by token* (``tf.keras.utils.warmstart_embedding_matrix``):
known tokens keep their learned row, new tokens keep the fresh initialization. Hashed tables
(``hash_buckets``) and every other weight (MLP, masks, heads) have a fixed shape and are copied.

Row layout of a vocabulary table (``components.transform``): row 0 = missing/padding, rows
``1..V`` = the vocabulary, then ``oov_buckets`` hashed out-of-vocabulary rows. Padding and
OOV rows are matched by position (the OOV hash does not depend on the vocabulary).

Optimizer state is not carried over: Adam's slots would need the same row remapping and the
daily increment is short; every warm start begins with a fresh optimizer.

Files of a warm-start point (``save_warm_start``)::

    <dir>/weights.npz         one array per model weight, in ``model.weights`` order
    <dir>/weights.json        {"names": [...variable names...], "vocabularies": {table: [tokens] | null}}
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import tensorflow as tf

WEIGHTS_FILE, INDEX_FILE = "weights.npz", "weights.json"
_EMBEDDING = re.compile(r"(?:^|/)emb_([^/]+)/")


class WarmStartError(ValueError):
    """The warm-start point does not fit the model being trained."""


def table_vocabularies(tables: dict) -> dict[str, list[str] | None]:
    """``{table: vocabulary tokens}`` of the model's embedding tables (``None`` for hashed tables)."""
    return {name: (list(t.vocabulary) if t.vocabulary is not None else None) for name, t in tables.items()}


def save_warm_start(model: tf.keras.Model, tables: dict, directory: str) -> None:
    """Write ``model``'s weights and the vocabularies they were trained with to ``directory``."""
    os.makedirs(directory, exist_ok=True)
    np.savez(os.path.join(directory, WEIGHTS_FILE), *[w.numpy() for w in model.weights])
    index = {"names": [w.name for w in model.weights], "vocabularies": table_vocabularies(tables)}
    with open(os.path.join(directory, INDEX_FILE), "w") as f:
        json.dump(index, f)


def read_warm_start(directory: str) -> tuple[list[str], list[np.ndarray], dict]:
    """``(names, arrays, vocabularies)`` of a warm-start point; a clear error when files are missing."""
    paths = [os.path.join(directory, n) for n in (WEIGHTS_FILE, INDEX_FILE)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise WarmStartError(f"warm-start point {directory} lacks {', '.join(os.path.basename(p) for p in missing)}")
    with open(paths[1]) as f:
        index = json.load(f)
    with np.load(paths[0]) as z:
        arrays = [z[f"arr_{i}"] for i in range(len(z.files))]
    if len(arrays) != len(index["names"]):
        raise WarmStartError(f"warm-start point {directory}: {len(arrays)} arrays but {len(index['names'])} names")
    return index["names"], arrays, index.get("vocabularies", {})


def _padded(vocab: list[str], oov: int) -> list[str]:
    # sentinel tokens for the padding and OOV rows (cannot collide with data: they hold a NUL)
    return ["\0pad"] + list(vocab) + [f"\0oov{i}" for i in range(oov)]


def remap_embedding(base: np.ndarray, base_vocab: list[str], new_vocab: list[str], oov: int,
                    fresh: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows of ``base`` moved to the positions of the same tokens in ``new_vocab``.

    Args:
      base: ``[1 + len(base_vocab) + oov, dim]`` trained matrix.
      fresh: ``[1 + len(new_vocab) + oov, dim]`` initial values, kept for tokens ``base`` lacks.
    Returns: ``([1 + len(new_vocab) + oov, dim]`` matrix, number of rows carried over).
    """
    old, new = _padded(base_vocab, oov), _padded(new_vocab, oov)
    if base.shape[0] != len(old) or fresh.shape[0] != len(new) or base.shape[1] != fresh.shape[1]:
        raise WarmStartError(
            f"embedding shapes {base.shape} / {fresh.shape} do not match vocabularies of {len(base_vocab)} / "
            f"{len(new_vocab)} tokens + {oov} OOV rows"
        )
    out = tf.keras.utils.warmstart_embedding_matrix(
        tf.constant(old), tf.constant(new), base, new_embeddings_initializer=lambda shape, dtype=None: tf.constant(fresh)
    )
    return out.numpy(), len(set(old) & set(new))


def load_warm_start(model: tf.keras.Model, tables: dict, directory: str | None = None, *,
                    names: list[str] | None = None, arrays: list[np.ndarray] | None = None,
                    vocabularies: dict | None = None, source: str = "") -> dict:
    """Set ``model``'s weights from a warm-start point, remapping vocabulary embeddings by token.

    Pass ``directory`` (written by :func:`save_warm_start`), or ``arrays`` (+ optional ``names``,
    default: the model's own order) and ``vocabularies``. The model must be built. Returns a
    report ``{table: {"carried": rows, "rows": new rows}}`` for the remapped tables.
    """
    if directory is not None:
        names, arrays, vocabularies = read_warm_start(directory)
        source = source or directory
    variables = model.weights
    names = names or [v.name for v in variables]
    if len(names) != len(variables):
        raise WarmStartError(
            f"{source}: {len(names)} weights, the model built from this config has {len(variables)} "
            "(different variant or layer sizes?)"
        )
    vocabularies = vocabularies or {}
    report = {}
    values = []
    for var, name, arr in zip(variables, names, arrays):
        if name != var.name:
            raise WarmStartError(f"{source}: weight {name!r} where the model has {var.name!r} (different architecture)")
        m = _EMBEDDING.search(var.name)
        table = tables.get(m.group(1)) if m else None
        if table is not None and table.vocabulary is not None and vocabularies.get(table.name) is not None:
            arr, carried = remap_embedding(arr, vocabularies[table.name], list(table.vocabulary), table.oov_buckets, var.numpy())
            report[table.name] = {"carried": carried, "rows": int(arr.shape[0])}
        elif tuple(arr.shape) != tuple(var.shape):
            raise WarmStartError(f"{source}: weight {name} has shape {arr.shape}, the model needs {tuple(var.shape)}")
        values.append(arr)
    model.set_weights(values)
    return report
