"""MaskedTrainer component: Step 3 of sparse sharing, or any baseline variant.

Inputs: Transform's examples and graph; ``masks`` (a ``TaskMasks`` artifact, required for
``connection``/``neuron``: joint masked training starts from its θ with its masks); an
optional ``base_model`` (a blessed model of the same config to warm-start from).
Outputs: ``model`` with the serving SavedModel in ``<uri>/Format-Serving`` (the place
Evaluator and Pusher read) plus weights and vocabularies in ``<uri>/warm_start`` (for the
next day's warm start, ``models.warm_start``), and ``model_run`` with TensorBoard logs (train loss, validation metrics).
"""


import json
import os
import shutil
import time
from typing import List

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx

from components.data import embedding_tables_from_transform, load_split
from components.mask_search import load_masks_artifact, load_theta_vocabularies
from components.types import TaskMasks
from models.config import SPARSE_VARIANTS, ProjectConfig
from models.mask_analytics import analyze
from models.metrics import primary_metric, task_metrics
from models.training import predict, train_model
from models.variants import build_model
from models.warm_start import WarmStartError, load_warm_start, save_warm_start
from serving.export import export_serving_model

SERVING_DIR = "Format-Serving"
WARM_START_DIR = "warm_start"  # weights + vocabularies, for the next day's warm start (models.warm_start)


class _TensorBoardLog(tf.keras.callbacks.Callback):
    """Epoch losses to TensorBoard for Keras-trained baselines."""

    def __init__(self, writer):
        super().__init__()
        self.writer = writer

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default():
            for k, v in (logs or {}).items():
                tf.summary.scalar(k, float(v), step=epoch)


def train_and_export(config: ProjectConfig, examples_uri: str | list[str], transform_uri: str, model_dir: str, run_dir: str,
                     masks_uri: str | None = None, base_model_uri: str | None = None, epochs: int | None = None) -> dict:
    """The component body as a plain function (tests call it directly). Returns a summary dict.

    ``base_model_uri``: a Model artifact of an earlier run to warm-start from (its ``warm_start/``).
    ``epochs``: override the joint-training (sparse) or training epochs (daily increments).
    """
    variant = config.model.variant
    tft_output = tft.TFTransformOutput(transform_uri)
    train = load_split(examples_uri, "train", config, tft_output)
    valid = load_split(examples_uri, "valid", config, tft_output, for_training=False)
    tables = embedding_tables_from_transform(config, tft_output)
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "train"))
    t0 = time.perf_counter()
    extra_files = {}
    summary: dict = {"variant": variant, "train_rows": len(train)}
    if variant in SPARSE_VARIANTS:
        if masks_uri is None:
            raise ValueError(f"variant {variant!r} needs the TaskMasks artifact of a MaskSearch run")
        from models.sparse_sharing import SparseSharingTrainer

        masks, theta = load_masks_artifact(masks_uri)
        if masks.structure != variant:
            raise ValueError(f"masks at {masks_uri} are {masks.structure!r} masks, the config trains {variant!r}")
        epoch_losses = []
        trainer = SparseSharingTrainer(config, tables, variant, log=lambda m: (logging.info("MaskedTrainer %s", m), epoch_losses.append(m)))
        trainer._ensure_built(train)
        masks.check_compatible(trainer.model, source=f"masks at {masks_uri}")
        if base_model_uri:
            # warm start: the blessed model's weights (embeddings moved by token) are the start of joint training
            report = load_warm_start(trainer.model, tables, os.path.join(base_model_uri, WARM_START_DIR))
            summary["warm_start"] = {"from": base_model_uri, "embeddings": report}
        else:
            # θ of the mask search; its vocabularies may be older than today's (masks reused for days)
            try:
                load_warm_start(trainer.model, tables, arrays=theta, vocabularies=load_theta_vocabularies(masks_uri),
                                source=f"θ at {masks_uri}")
            except WarmStartError as err:
                raise ValueError(f"θ at {masks_uri} does not fit the network built from this config: {err}") from None
        trainer.theta = [np.array(w) for w in trainer.model.get_weights()]
        if epochs is not None:
            trainer.sc = trainer.sc.model_copy(update={"joint_epochs": epochs})
        logging.info("MaskedTrainer: joint training from %s", summary.get("warm_start", {}).get("from", "the mask search's θ"))
        model = trainer.joint(train, masks)
        analytics = analyze(masks)
        extra_files["mask_analytics.json"] = json.dumps(analytics, indent=1)
        masks.save(os.path.join(model_dir, "masks.npz"))
        summary["density"] = {t: masks.density(t) for t in config.task_names}
        with writer.as_default():
            for i, line in enumerate(epoch_losses):
                tf.summary.text("joint_log", line, step=i)
    else:
        model = build_model(config, tables, seed=config.training.seed)
        model({k: v[:2] for k, v in train.inputs.items()})
        if base_model_uri:
            report = load_warm_start(model, tables, os.path.join(base_model_uri, WARM_START_DIR))
            summary["warm_start"] = {"from": base_model_uri, "embeddings": report}
        if epochs is not None:
            config = config.model_copy(update={"training": config.training.model_copy(update={"epochs": epochs})})
        train_model(model, train, config, callbacks=[_TensorBoardLog(writer)], verbose=2)
    summary["train_seconds"] = time.perf_counter() - t0

    preds = predict(model, valid)
    metrics = {}
    with writer.as_default():
        for t in config.tasks:
            rows = valid.spaces[t.name] > 0
            m = task_metrics(t.type, valid.labels[t.name][rows], preds[t.name][rows])
            metrics[t.name] = {k: float(v) for k, v in m.items()}
            for k, v in m.items():
                if np.isfinite(v):
                    tf.summary.scalar(f"valid/{t.name}/{k}", float(v), step=0)
    writer.flush()
    summary["valid_metrics"] = metrics
    logging.info("MaskedTrainer: validation %s", metrics)

    save_warm_start(model, tables, os.path.join(model_dir, WARM_START_DIR))
    serving = os.path.join(model_dir, SERVING_DIR)
    if os.path.exists(serving):
        shutil.rmtree(serving)
    exported = model
    if config.pipeline.compact and variant in SPARSE_VARIANTS:
        from serving.compact import compact

        exported = compact(model)
        summary["compacted"] = {t: [list(map(int, a.shape)) for a, _ in exported.towers[t]] for t in exported.task_names}
        logging.info("MaskedTrainer: exporting the compacted %s network %s", variant, summary["compacted"])
    extra_files["training_summary.json"] = json.dumps(summary, indent=1, default=float)
    export_serving_model(exported, tft_output, config, serving, extra_files)
    return summary


@tfx.dsl.components.component
def MaskedTrainer(
    transformed_examples: tfx.dsl.components.InputArtifact[List[tfx.types.standard_artifacts.Examples]],
    transform_graph: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.TransformGraph],
    model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    model_run: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelRun],
    config_json: tfx.dsl.components.Parameter[str],
    masks: tfx.dsl.components.InputArtifact[TaskMasks] = None,
    base_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model] = None,
    epochs: tfx.dsl.components.Parameter[int] = 0,
    masks_decision: tfx.dsl.components.Parameter[str] = "",
):
    """``epochs`` > 0 overrides the configured epochs (daily increments); ``masks_decision`` (why the
    masks were searched or reused, from ``ncs daily``) is stored on the model artifact."""
    config = ProjectConfig.model_validate_json(config_json)
    summary = train_and_export(
        config,
        [e.uri for e in transformed_examples],
        transform_graph.uri,
        model.uri,
        model_run.uri,
        masks.uri if masks is not None else None,
        base_model.uri if base_model is not None else None,
        epochs or None,
    )
    if base_model is not None:
        model.set_string_custom_property("warm_started_from", base_model.uri)
    if masks is not None:
        model.set_string_custom_property("masks_uri", masks.uri)
    if masks_decision:
        model.set_string_custom_property("masks_decision", masks_decision)
    model.set_string_custom_property("variant", config.model.variant)
    model.set_float_custom_property("train_seconds", summary["train_seconds"])
    for t in config.tasks:
        k = primary_metric(t.type)
        v = summary["valid_metrics"][t.name].get(k)
        if v is not None and np.isfinite(v):
            model.set_float_custom_property(f"valid_{t.name}_{k}", v)
