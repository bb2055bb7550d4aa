"""The MaskedTrainer body (its TFX adapter is ``components.definitions.MaskedTrainer``): Step 3 of sparse
sharing, or any baseline variant.

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

import numpy as np
import tensorflow_transform as tft
from absl import logging

from components.data import embedding_tables_from_transform, stream_split
from components.mask_search import load_masks_artifact, load_theta_vocabularies
from models.config import SPARSE_VARIANTS, ProjectConfig
from models.engine import Engine, LogCallback, TensorBoardCallback
from models.mask_analytics import analyze
from models.variants import build_model
from models.warm_start import WarmStartError, load_warm_start, save_warm_start

SERVING_DIR = "Format-Serving"
WARM_START_DIR = "warm_start"  # weights + vocabularies, for the next day's warm start (models.warm_start)


def train_and_export(config: ProjectConfig, examples_uri: str | list[str], transform_uri: str, model_dir: str, run_dir: str,
                     masks_uri: str | None = None, base_model_uri: str | None = None, epochs: int | None = None,
                     strategy=None, export: bool = True) -> dict:
    """The component body as a plain function (tests and worker processes call it). Returns a summary dict.

    Training streams Transform's output through ``models.engine`` under ``strategy`` (default:
    built from ``TF_CONFIG``, see ``models.distributed``). ``base_model_uri``: a Model artifact of
    an earlier run to warm-start from (its ``warm_start/``). ``epochs``: override the
    joint-training (sparse) or training epochs (daily increments). Every worker writes
    ``warm_start/``; only the chief exports the serving model and TensorBoard logs. ``export=False``
    skips the serving export (a comparison that only needs the trained weights).
    """
    from models.distributed import is_chief, strategy_from_env

    strategy = strategy or strategy_from_env(log=lambda m: logging.info("MaskedTrainer %s", m))
    chief = is_chief(strategy)
    os.makedirs(model_dir, exist_ok=True)
    variant = config.model.variant
    tft_output = tft.TFTransformOutput(transform_uri)
    train = stream_split(examples_uri, "train", config, tft_output, transform_uri)
    valid = stream_split(examples_uri, "valid", config, tft_output, transform_uri)
    train.check_sample_spaces()
    valid.check_sample_spaces()
    tables = embedding_tables_from_transform(config, tft_output)
    log = LogCallback(lambda m: logging.info("MaskedTrainer %s", m))
    callbacks = [log] + ([TensorBoardCallback(os.path.join(run_dir, "train"))] if chief else [])
    t0 = time.perf_counter()
    extra_files = {}
    summary: dict = {"variant": variant, "train_rows": len(train), "workers": int(strategy.num_replicas_in_sync)}
    if variant in SPARSE_VARIANTS:
        if masks_uri is None:
            raise ValueError(f"variant {variant!r} needs the TaskMasks artifact of a MaskSearch run")
        from models.sparse_sharing import SparseSharingTrainer

        masks, theta = load_masks_artifact(masks_uri)
        if masks.structure != variant:
            raise ValueError(f"masks at {masks_uri} are {masks.structure!r} masks, the config trains {variant!r}")
        trainer = SparseSharingTrainer(config, tables, variant, log=lambda m: logging.info("MaskedTrainer %s", m),
                                       strategy=strategy, callbacks=callbacks[1:])
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
        logging.info("MaskedTrainer: joint training from %s", summary.get("warm_start", {}).get("from", "the mask search's θ"))
        model = trainer.joint(train, masks, valid, epochs=epochs)
        fit, engine = trainer.joint_fit, trainer.engine
        extra_files["mask_analytics.json"] = json.dumps(analyze(masks), indent=1)
        if chief:
            masks.save(os.path.join(model_dir, "masks.npz"))
        summary["density"] = {t: masks.density(t) for t in config.task_names}
    else:
        with strategy.scope():
            model = build_model(config, tables, seed=config.training.seed)
        if base_model_uri:
            report = load_warm_start(model, tables, os.path.join(base_model_uri, WARM_START_DIR))
            summary["warm_start"] = {"from": base_model_uri, "embeddings": report}
        engine = Engine(model, config.training, config.tuning, strategy)
        logging.info("MaskedTrainer: training from %s", summary.get("warm_start", {}).get("from", "a fresh initialization"))
        fit = engine.fit(train, epochs=epochs or config.training.budget_epochs, schedule=config.training.schedule,
                         valid=valid, patience=config.training.patience, callbacks=callbacks, label="train")
    summary["train_seconds"] = time.perf_counter() - t0
    summary["epochs"] = len(fit.epochs)
    summary["steps"] = fit.steps
    summary["best_epoch"] = fit.best_epoch

    metrics = {t: {k: float(v) for k, v in m.items()} for t, m in engine.evaluate(valid).items()}
    summary["valid_metrics"] = metrics
    logging.info("MaskedTrainer: validation %s", metrics)

    if strategy.num_replicas_in_sync > 1:
        # export a plain (undistributed) copy: the same weights, no collective ops in the SavedModel
        plain = build_model(config, tables, seed=config.training.seed)
        plain.set_weights(model.get_weights())
        model = plain
    save_warm_start(model, tables, os.path.join(model_dir, WARM_START_DIR))
    if not chief or not export:
        return summary
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
    from serving.export import export_serving_model

    export_serving_model(exported, tft_output, config, serving, extra_files)
    return summary


def main(argv=None):
    """One training process of the MaskedTrainer body (e.g. one worker of a ``TF_CONFIG`` cluster)."""
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Project YAML.")
    @click.option("--examples", required=True, multiple=True, help="Transformed Examples folder(s) (Split-train, Split-valid).")
    @click.option("--transform", "transform_uri", required=True, help="Transform graph folder.")
    @click.option("--masks", "masks_uri", default=None, help="TaskMasks folder (connection / neuron).")
    @click.option("--model-dir", required=True, help="Output folder of this process.")
    @click.option("--run-dir", default=None, help="TensorBoard folder (default MODEL_DIR/run).")
    def cli(config_path, examples, transform_uri, masks_uri, model_dir, run_dir):
        """Train (and, on the chief, export) from Transform's output. The strategy comes from TF_CONFIG."""
        from models.config import ConfigError, load_config
        from models.distributed import strategy_from_env

        try:
            strategy = strategy_from_env()  # first: MWMS must exist before any other TF op
            config = load_config(config_path)
        except (ValueError, ConfigError) as err:
            raise click.ClickException(str(err)) from None
        os.makedirs(model_dir, exist_ok=True)
        summary = train_and_export(config, list(examples), transform_uri, model_dir, run_dir or os.path.join(model_dir, "run"),
                                   masks_uri, strategy=strategy)
        with open(os.path.join(model_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1, default=float)

    cli.main(args=argv, standalone_mode=True)


if __name__ == "__main__":
    main()
