"""The custom TFX components: thin adapters from artifacts and parameters to their bodies.

The bodies live in modules that do not import TFX (``components.mask_search``,
``components.masked_trainer``, ``components.smoke_check``), so a training worker
(``python -m components.masked_trainer``) or the fresh serving-check process starts without
TFX's import cost (several seconds of CPU per process).
"""

import json
import os
from typing import List

import numpy as np
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts  # not tfx.v1: see pipeline/pipeline.py

from components.mask_search import MASKS_FILE, search_masks
from components.masked_trainer import train_and_export
from components.smoke_check import REPORT, run_in_fresh_process
from components.types import TaskMasks
from models.config import ProjectConfig
from models.data import split_files
from models.masks import TaskMasks as Masks
from models.metrics import primary_metric


@component
def MaskSearch(
    transformed_examples: InputArtifact[List[standard_artifacts.Examples]],
    transform_graph: InputArtifact[standard_artifacts.TransformGraph],
    masks: OutputArtifact[TaskMasks],
    config_json: Parameter[str],
):
    config = ProjectConfig.model_validate_json(config_json)
    analytics = search_masks(config, [e.uri for e in transformed_examples], transform_graph.uri, masks.uri)
    found = Masks.load(os.path.join(masks.uri, MASKS_FILE))
    masks.set_string_custom_property("structure", config.model.variant)
    for t in config.task_names:
        masks.set_float_custom_property(f"density_{t}", found.density(t))
        masks.set_int_custom_property(f"chosen_round_{t}", int(analytics["chosen_round"][t]))
    masks.set_float_custom_property("shared_fraction", analytics["overall"]["shared"])
    masks.set_float_custom_property("unused_fraction", analytics["overall"]["unused"])
    masks.set_float_custom_property("warmup_seconds", analytics["seconds"]["warmup"])
    masks.set_float_custom_property("search_seconds", analytics["seconds"]["search"])
    masks.set_string_custom_property("layer_shapes", json.dumps([list(s) for s in found.shapes]))


@component
def MaskedTrainer(
    transformed_examples: InputArtifact[List[standard_artifacts.Examples]],
    transform_graph: InputArtifact[standard_artifacts.TransformGraph],
    model: OutputArtifact[standard_artifacts.Model],
    model_run: OutputArtifact[standard_artifacts.ModelRun],
    config_json: Parameter[str],
    masks: InputArtifact[TaskMasks] = None,
    base_model: InputArtifact[standard_artifacts.Model] = None,
    epochs: Parameter[int] = 0,
    masks_decision: Parameter[str] = "",
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


@component
def ServingSmokeCheck(
    model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    blessing: OutputArtifact[standard_artifacts.InfraBlessing],
    tasks_json: Parameter[str],
    rows: Parameter[int] = 64,
    split: Parameter[str] = "eval",
):
    from absl import logging

    model_dir = os.path.join(model.uri, "Format-Serving")
    result = run_in_fresh_process(model_dir, split_files(examples.uri, split), rows, json.loads(tasks_json))
    os.makedirs(blessing.uri, exist_ok=True)
    with open(os.path.join(blessing.uri, REPORT), "w") as f:
        json.dump(result, f, indent=1)
    ok = bool(result["ok"])
    open(os.path.join(blessing.uri, "INFRA_BLESSED" if ok else "INFRA_NOT_BLESSED"), "w").close()
    blessing.set_int_custom_property("blessed", int(ok))
    for line in result["checks"]:
        logging.info("ServingSmokeCheck ok: %s", line)
    for line in result["errors"]:
        logging.error("ServingSmokeCheck FAILED: %s", line)
