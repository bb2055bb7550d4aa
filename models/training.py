"""Training and prediction helpers shared by the harness, benchmarks and tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import tensorflow as tf

from models.config import ProjectConfig
from models.data import make_dataset, task_arrays
from models.features import FeatureEncoder, encode_frame


@dataclasses.dataclass
class Split:
    """One split in model-ready form (numpy arrays, all of length N)."""

    inputs: dict
    labels: dict
    spaces: dict
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.labels.values())))


def prepare_split(frame: pd.DataFrame, config: ProjectConfig, encoder: FeatureEncoder) -> Split:
    labels, spaces = task_arrays(frame, config)
    gk = config.dataset.group_key
    groups = frame[gk].astype(str).to_numpy() if gk else None
    return Split(encode_frame(frame, encoder), labels, spaces, groups)


def train_model(model, train: Split, config: ProjectConfig, valid: Split | None = None, verbose: int = 0,
                epochs: int | None = None, callbacks=None):
    """Compile with Adam and fit on ``train``; returns the Keras History."""
    tc = config.training
    # weighted_metrics=[]: the third tuple element carries sample spaces, consumed by train_step
    model.compile(optimizer=tf.keras.optimizers.Adam(tc.learning_rate), weighted_metrics=[])
    ds = make_dataset(train.inputs, train.labels, train.spaces, tc.batch_size, shuffle=True, seed=tc.seed)
    vds = None
    if valid is not None:
        vds = make_dataset(valid.inputs, valid.labels, valid.spaces, max(tc.batch_size, 4096))
    return model.fit(ds, validation_data=vds, epochs=epochs or tc.epochs, verbose=verbose, callbacks=callbacks)


def predict(model, split: Split, batch_size: int = 8192) -> dict[str, np.ndarray]:
    ds = tf.data.Dataset.from_tensor_slices(split.inputs).batch(batch_size)
    out = model.predict(ds, verbose=0)
    return {k: np.asarray(v).reshape(-1) for k, v in out.items()}
