"""The MaskSearch body (its TFX adapter is ``components.definitions.MaskSearch``): Steps 1-2 of sparse sharing
(warm-up -> per-task mask search).

Consumes Transform's output (examples + graph), runs
``models.sparse_sharing.SparseSharingTrainer.warmup`` and ``.search`` (streamed input, the
strategy from ``TF_CONFIG``) and writes a
``TaskMasks`` artifact's files: ``masks.npz``, ``theta.npz`` (the rewind point every mask is
relative to, which the MaskedTrainer starts from), the analytics JSON and PNG plots. The
adapter sets the summary numbers as custom properties (``density_<task>``,
``chosen_round_<task>``, ``shared_fraction``, ``unused_fraction``, ``warmup_seconds``,
``search_seconds``).
"""


import json
import os
import time

import numpy as np
import tensorflow_transform as tft
from absl import logging

from components.data import embedding_tables_from_transform, stream_split
from models.config import SPARSE_VARIANTS, ProjectConfig
from models.mask_analytics import analyze, write_analytics
from models.masks import MaskShapeError
from models.masks import TaskMasks as Masks
from models.warm_start import table_vocabularies

MASKS_FILE, THETA_FILE, THETA_VOCAB_FILE = "masks.npz", "theta.npz", "theta_vocabularies.json"


def save_theta(path: str, weights: list[np.ndarray]) -> None:
    np.savez(path, **{f"w{i:04d}": w for i, w in enumerate(weights)})


def load_theta(path: str) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[k] for k in sorted(z.files)]


def load_theta_vocabularies(uri: str) -> dict:
    """The vocabularies θ's embeddings were trained with (``{}`` for artifacts written without them)."""
    path = os.path.join(uri, THETA_VOCAB_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_masks_artifact(uri: str) -> tuple[Masks, list[np.ndarray]]:
    masks_path, theta_path = os.path.join(uri, MASKS_FILE), os.path.join(uri, THETA_FILE)
    for p in (masks_path, theta_path):
        if not os.path.exists(p):
            raise MaskShapeError(f"TaskMasks artifact at {uri} has no {os.path.basename(p)}")
    return Masks.load(masks_path), load_theta(theta_path)


def search_masks(config: ProjectConfig, examples_uri: str | list[str], transform_uri: str, out_uri: str,
                 strategy=None) -> dict:
    """The component body as a plain function: warm-up + mask search on streamed splits.

    Writes ``masks.npz``, ``theta.npz``, ``theta_vocabularies.json`` and the analytics to
    ``out_uri``; returns the analytics dict (with ``seconds`` and optimizer ``steps``).
    """
    variant = config.model.variant
    if variant not in SPARSE_VARIANTS:
        raise ValueError(f"MaskSearch needs model.variant in {SPARSE_VARIANTS}, got {variant!r}")
    from models.distributed import strategy_from_env
    from models.sparse_sharing import SparseSharingTrainer

    strategy = strategy or strategy_from_env(log=lambda m: logging.info("MaskSearch %s", m))
    tft_output = tft.TFTransformOutput(transform_uri)
    train = stream_split(examples_uri, "train", config, tft_output, transform_uri)
    valid = stream_split(examples_uri, "valid", config, tft_output, transform_uri)
    train.check_sample_spaces()
    valid.check_sample_spaces()
    logging.info("MaskSearch: %d train rows, %d valid rows (streamed)", len(train), len(valid))
    tables = embedding_tables_from_transform(config, tft_output)
    trainer = SparseSharingTrainer(config, tables, variant, log=lambda m: logging.info("MaskSearch %s", m),
                                   strategy=strategy)
    t0 = time.perf_counter()
    theta = trainer.warmup(train)
    t1 = time.perf_counter()
    s0 = trainer.engine.steps_taken
    found, rounds, chosen = trainer.search(train, valid)
    t2 = time.perf_counter()

    found.save(os.path.join(out_uri, MASKS_FILE))
    save_theta(os.path.join(out_uri, THETA_FILE), theta)
    with open(os.path.join(out_uri, THETA_VOCAB_FILE), "w") as f:
        json.dump(table_vocabularies(tables), f)  # θ's embeddings are rows of these (daily reuse remaps them)
    analytics = analyze(found, rounds, chosen)
    analytics["seconds"] = {"warmup": t1 - t0, "search": t2 - t1}
    analytics["steps"] = {"warmup": trainer.warmup_fit.steps, "search": trainer.engine.steps_taken - s0}
    write_analytics(analytics, out_uri)
    return analytics
