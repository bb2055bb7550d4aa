"""Multi-worker data-parallel training of the masked network (``connection`` / ``neuron``).

``tf.distribute.MultiWorkerMirroredStrategy`` (MWMS) is configured from the
``TF_CONFIG`` environment variable, exactly as Kubeflow's TFJob or Vertex AI
custom jobs set it::

    TF_CONFIG='{"cluster": {"worker": ["host0:port", "host1:port"]},
                "task": {"type": "worker", "index": 0}}'

Every worker holds a full replica of :class:`~models.variants.MaskedNetwork`; each
step all-reduces the gradients, so the weights stay identical on every worker.

Data layout: every worker reads the same rows, shuffles them with the same seed
(``training.seed + epoch``) and keeps every ``W``-th row (``W`` input pipelines),
batched by the per-replica batch ``B / W``. One step's global batch is therefore
rows ``[s*B, (s+1)*B)`` of the shuffled epoch: the same rows a single process with
batch ``B`` sees (the last partial batch is dropped so every worker runs the same
number of steps).

Loss: the joint loss of ``SparseSharingTrainer._joint_train_step``,
``L = sum_k w_k L_k`` with ``L_k`` the mean per-row loss over task ``k``'s sample
space (row weights ``split.spaces[k]``). A replica's share is
``sum_rows(loss * space) / global sum(space)`` (the denominator is all-reduced), so
the gradients summed over replicas are the gradient of the *global*-batch loss, not
a mean of per-replica means (which would mis-weight CVR, whose clicked rows are
spread unevenly over replicas).

Masks are fixed during training. ``MaskedDense`` multiplies ``kernel * mask[t]`` in
the forward pass, so a kernel entry masked out for every task gets a zero gradient,
zero Adam moments and no update: it keeps its initial value.

Run one worker per process (see docs/distributed.md)::

    TF_CONFIG=... python -m models.distributed --config CFG --data DIR --rows N --epochs E --out OUT.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.config import SPARSE_VARIANTS, ProjectConfig  # noqa: E402
from models.data import check_sample_spaces  # noqa: E402
from models.losses import pointwise_loss, weighted_total  # noqa: E402
from models.masks import TaskMasks, prune  # noqa: E402
from models.metrics import evaluate  # noqa: E402
from models.training import Split  # noqa: E402
from models.variants import MaskedNetwork, build_model  # noqa: E402


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- strategy
def parse_tf_config(raw: str | None = None) -> dict:
    """The parsed ``TF_CONFIG`` (``{}`` when unset or empty); ``ValueError`` naming TF_CONFIG if malformed."""
    raw = os.environ.get("TF_CONFIG", "") if raw is None else raw
    if not raw.strip():
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {raw[:200]!r}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {type(cfg).__name__}")
    cluster = cfg.get("cluster", {})
    if not isinstance(cluster, dict) or not all(isinstance(v, list) for v in cluster.values()):
        raise ValueError('TF_CONFIG "cluster" must map job names to lists of "host:port"')
    return cfg


def cluster_workers(tf_config: dict) -> int:
    """Number of training workers in ``TF_CONFIG`` (``chief`` + ``worker`` entries)."""
    cluster = tf_config.get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _check_task(tf_config: dict) -> None:
    task = tf_config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError('TF_CONFIG names a multi-worker cluster but no "task": {"type": ..., "index": ...}')
    jobs = tf_config["cluster"].get(task["type"])
    if jobs is None or not isinstance(task["index"], int) or not 0 <= task["index"] < len(jobs):
        raise ValueError(
            f"TF_CONFIG task {task} does not name an entry of cluster {sorted(tf_config['cluster'])}"
        )


def strategy_from_env(log: Callable[[str], None] | None = _stderr) -> tf.distribute.Strategy:
    """MWMS when ``TF_CONFIG`` names a cluster of > 1 worker, else the default strategy.

    Must run before TensorFlow executes any op in this process (MWMS configures
    collective ops at start-up); it blocks until every worker of the cluster is up.
    """
    tf_config = parse_tf_config()
    n = cluster_workers(tf_config)
    if n > 1:
        _check_task(tf_config)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = tf_config["task"]
        if log:
            log(f"strategy: MultiWorkerMirroredStrategy, {n} workers, this is {task['type']} {task['index']}, "
                f"{strategy.num_replicas_in_sync} replicas in sync")
        return strategy
    strategy = tf.distribute.get_strategy()
    if log:
        log(f"strategy: default ({type(strategy).__name__}), single process"
            + (" (TF_CONFIG names one worker)" if n == 1 else " (no TF_CONFIG)"))
    return strategy


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's task id in the cluster (0 for the default strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id) if resolver is not None and resolver.task_id is not None else 0


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Workers (``chief`` + ``worker`` tasks) of the strategy's cluster (1 for the default strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return max(1, len(jobs.get("chief", [])) + len(jobs.get("worker", [])))


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """``MultiWorkerMirroredStrategy`` (whose class is ``CollectiveAllReduceStrategy``) or the class name."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


# ---------------------------------------------------------------------------- masks
def fixed_masks(model: MaskedNetwork, structure: str, density: float = 0.5, seed: int = 0) -> TaskMasks:
    """Deterministic per-task masks: the project's ``prune`` on seeded random scores.

    Each task gets its own random ``[in, out]`` scores per masked layer (``rng(seed)``,
    same on every worker); ``prune(structure, scores, ones, 1 - density)`` keeps the
    ``density`` fraction with the largest scores (connections or whole units), so
    the tasks' masks overlap partially and some weights are masked for every task.
    """
    base = TaskMasks.all_ones(model, structure)
    rng = np.random.default_rng(seed)
    out = {}
    for t in base.tasks:
        scores = [rng.random(m.shape).astype(np.float32) for m in base.masks[t]]
        out[t] = prune(structure, scores, base.masks[t], 1.0 - density)
    return TaskMasks(structure, base.layer_names, out)


def apply_masks(masks: TaskMasks, model: MaskedNetwork) -> None:
    """Same effect as ``masks.apply(model)``, but valid for mirrored variables.

    ``MaskedDense.set_mask`` assigns one slice ``mask[t]``; a slice of a distributed
    (mirrored) variable is a plain tensor without ``assign``. Here each layer's whole
    ``[tasks, in, out]`` mask variable is assigned at once, in the model's task order.
    """
    masks.check_compatible(model)
    for i, layer in enumerate(model.masked_layers):
        layer.mask.assign(np.stack([masks.masks[t][i] for t in model.task_names]).astype(np.float32))


def masked_for_all(masks: TaskMasks) -> list[np.ndarray]:
    """Per masked layer, a bool ``[in, out]``: True where every task's mask is 0."""
    per_task = list(masks.masks.values())
    return [np.all([ms[i] == 0 for ms in per_task], axis=0) for i in range(len(masks.layer_names))]


# ---------------------------------------------------------------------------- training
def global_task_losses(model: MaskedNetwork, labels: dict, preds: dict, spaces: dict) -> dict:
    """``{task: scalar}``: this replica's share of each task's global-batch loss.

    ``sum_rows(pointwise_loss * space) / sum_global_batch(space)``; summed over
    replicas this is ``models.losses.task_loss`` on the whole global batch. Must run
    in a replica context (inside ``strategy.run``).
    """
    ctx = tf.distribute.get_replica_context()
    local = tf.stack([tf.reduce_sum(tf.cast(spaces[t.name], tf.float32)) for t in model.tasks])
    total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)
    return {
        t.name: tf.math.divide_no_nan(
            tf.reduce_sum(pointwise_loss(t, labels[t.name], preds[t.name]) * tf.cast(spaces[t.name], tf.float32)),
            total[i],
        )
        for i, t in enumerate(model.tasks)
    }


def _dataset_fn(split: Split, global_batch: int, seed: int):
    """``input_context -> tf.data`` of per-replica ``(inputs, labels, spaces)`` batches (see module doc)."""

    def fn(ctx: tf.distribute.InputContext):
        ds = tf.data.Dataset.from_tensor_slices((split.inputs, split.labels, split.spaces))
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=False)
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.batch(ctx.get_per_replica_batch_size(global_batch), drop_remainder=True).prefetch(2)

    return fn


@dataclasses.dataclass
class DistributedResult:
    model: MaskedNetwork
    epoch_losses: list[float]  # mean global-batch loss of each epoch
    initial_kernels: list[np.ndarray]  # masked layers' kernels after masks were applied, before training
    steps_per_epoch: int
    seconds: float


def _set_epoch_weights(model: MaskedNetwork, config: ProjectConfig, epoch: int) -> None:
    """``w_k * gamma_k ** epoch`` (PLE dynamic weights), as the sparse-sharing trainer does."""
    gammas = config.tuning.dynamic_loss_gamma
    for t in model.tasks:
        model.task_weights[t.name].assign(t.weight * gammas.get(t.name, 1.0) ** epoch)


def train_masked_distributed(
    config: ProjectConfig,
    tables: dict,
    split: Split,
    masks: TaskMasks | Callable[[MaskedNetwork], TaskMasks],
    epochs: int,
    strategy: tf.distribute.Strategy | None = None,
    structure: str = "connection",
    seed: int | None = None,
    log: Callable[[str], None] | None = None,
) -> DistributedResult:
    """Joint training of the masked network under ``strategy`` with fixed masks.

    Args:
      config: project config; ``training.batch_size`` is the *global* batch ``B``
        (must divide by the number of replicas), ``training.learning_rate`` Adam's rate.
      tables: embedding tables (``models.features.embedding_tables``).
      split: training rows, ``N`` of each array; identical on every worker.
      masks: a :class:`TaskMasks`, or a function ``model -> TaskMasks`` (called once
        the model is built, e.g. :func:`fixed_masks`).
      epochs: passes over ``split``; each runs ``N // B`` steps.
      strategy: defaults to ``tf.distribute.get_strategy()``.
      seed: weight init and shuffling (default ``training.seed``).
    Returns a :class:`DistributedResult`.
    """
    if structure not in SPARSE_VARIANTS:
        raise ValueError(f"structure must be one of {SPARSE_VARIANTS}, got {structure!r}")
    strategy = strategy or tf.distribute.get_strategy()
    log = log or (lambda msg: None)
    seed = config.training.seed if seed is None else seed
    check_sample_spaces(split.spaces, "train")
    global_batch = config.training.batch_size
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(f"training.batch_size {global_batch} is not divisible by {replicas} replicas")
    steps = len(split) // global_batch
    if steps < 1:
        raise ValueError(f"{len(split)} rows are fewer than one global batch of {global_batch}")

    with strategy.scope():
        model = build_model(config, tables, variant=structure, seed=seed)
        model({k: v[:2] for k, v in split.inputs.items()})  # create the (mirrored) variables
        fixed = masks(model) if callable(masks) else masks
        apply_masks(fixed, model)
        optimizer = tf.keras.optimizers.Adam(config.training.learning_rate)
        optimizer.build(model.trainable_variables)
    initial = [layer.kernel.numpy().copy() for layer in model.masked_layers]

    def replica_step(x, y, w):
        with tf.GradientTape() as tape:
            preds = model(x, training=True)
            total = weighted_total(global_task_losses(model, y, preds, w), model.tasks, model.task_weights)
        variables = model.trainable_variables
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return total

    @tf.function
    def train_step(iterator):
        per_replica = strategy.run(replica_step, args=next(iterator))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    t0 = time.perf_counter()
    epoch_losses = []
    for e in range(epochs):
        _set_epoch_weights(model, config, e)
        dist = strategy.distribute_datasets_from_function(_dataset_fn(split, global_batch, seed + e))
        it = iter(dist)
        losses = [float(train_step(it)) for _ in range(steps)]
        epoch_losses.append(float(np.mean(losses)))
        log(f"epoch {e + 1}/{epochs}: {steps} steps of {global_batch} rows, loss {epoch_losses[-1]:.5f}")
    return DistributedResult(model, epoch_losses, initial, steps, time.perf_counter() - t0)


# ---------------------------------------------------------------------------- checks
def predict_local(model: MaskedNetwork, inputs: dict, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """``{task: [N]}`` predictions with this worker's copy of the weights (no collectives)."""
    fn = tf.function(lambda x: model(x, training=False))
    n = len(next(iter(inputs.values())))
    parts: dict[str, list[np.ndarray]] = {}
    for lo in range(0, n, batch_size):
        for k, v in fn({k: tf.constant(a[lo : lo + batch_size]) for k, a in inputs.items()}).items():
            parts.setdefault(k, []).append(v.numpy().reshape(-1))
    return {k: np.concatenate(v) for k, v in parts.items()}


def weights_checksum(model) -> tuple[str, str]:
    """(sum of |w| over every weight, 6 decimals; sha256 of the float32 bytes of every weight)."""
    weights = [np.asarray(w, dtype=np.float32) for w in model.get_weights()]
    total = float(sum(np.abs(w).astype(np.float64).sum() for w in weights))
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in weights)).hexdigest()
    return f"{total:.6f}", digest


def masked_weights_unchanged(result: DistributedResult, masks: TaskMasks) -> tuple[bool, int]:
    """(every kernel entry masked out for all tasks equals its initial value, how many such entries)."""
    dead = masked_for_all(masks)
    same = all(
        np.array_equal(layer.kernel.numpy()[d], k0[d])
        for layer, k0, d in zip(result.model.masked_layers, result.initial_kernels, dead)
    )
    return bool(same), int(sum(d.sum() for d in dead))


# ---------------------------------------------------------------------------- CLI
def load_rows(config: ProjectConfig, data: str | Path, rows: int):
    """``(Split, tables)`` of the first ``rows`` cleaned log rows (the in-memory path of ``ncs compare``)."""
    from data.logs import read_logs
    from models.features import FeatureEncoder, embedding_tables, fit_stats
    from models.training import prepare_split

    frame, _ = read_logs(data, config)
    frame = frame.iloc[:rows].reset_index(drop=True)
    stats = fit_stats(frame, config)
    encoder = FeatureEncoder(config.model_dump_json(), stats.to_json())
    return prepare_split(frame, config, encoder), embedding_tables(config, stats)


def run(config: ProjectConfig, data: str | Path, rows: int, epochs: int, structure: str = "connection",
        density: float = 0.5, strategy: tf.distribute.Strategy | None = None, log=_stderr) -> dict:
    """Load rows, train under ``strategy`` with :func:`fixed_masks`, evaluate; returns the report dict."""
    strategy = strategy or tf.distribute.get_strategy()
    split, tables = load_rows(config, data, rows)
    holder: dict[str, TaskMasks] = {}

    def make_masks(model):
        holder["masks"] = fixed_masks(model, structure, density, seed=config.training.seed)
        return holder["masks"]

    result = train_masked_distributed(config, tables, split, make_masks, epochs, strategy, structure, log=log)
    masks = holder["masks"]
    preds = predict_local(result.model, split.inputs)
    metrics = evaluate(config, preds, split.labels, split.spaces, split.groups)
    unchanged, n_dead = masked_weights_unchanged(result, masks)
    checksum, digest = weights_checksum(result.model)
    return {
        "worker_index": worker_index(strategy),
        "num_workers": num_workers(strategy),
        "num_replicas": int(strategy.num_replicas_in_sync),
        "strategy": strategy_name(strategy),
        "structure": structure,
        "rows": len(split),
        "global_batch_size": config.training.batch_size,
        "steps_per_epoch": result.steps_per_epoch,
        "epoch_losses": result.epoch_losses,
        "train_seconds": result.seconds,
        "metrics_on": "training rows",
        "metrics": metrics,
        "mask_density": {t: masks.density(t) for t in masks.tasks},
        "masked_for_all_tasks": n_dead,
        "masked_weights_unchanged": unchanged,
        "weights_checksum": checksum,
        "weights_sha256": digest,
    }


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None  # NaN/inf are not JSON
    return x


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Project YAML.")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True), help="Logs (file or day folders).")
@click.option("--rows", default=4000, show_default=True, type=click.IntRange(min=1), help="First N cleaned rows to train on.")
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--structure", type=click.Choice(list(SPARSE_VARIANTS)), default="connection", show_default=True)
@click.option("--density", default=0.5, show_default=True, type=click.FloatRange(0.01, 1.0),
              help="Fraction of each task's mask kept (seeded random pruning).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="JSON report of this worker.")
def main(config_path, data_path, rows, epochs, structure, density, out_path):
    """Train the masked network on one worker of a TF_CONFIG cluster (or alone) and write a JSON report."""
    from models.config import ConfigError, load_config

    try:
        strategy = strategy_from_env()  # first: MWMS must be created before any other TF op
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    try:
        config = load_config(config_path)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    report = run(config, data_path, rows, epochs, structure, density, strategy)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_safe(report), indent=1))
    _stderr(f"worker {report['worker_index']}/{report['num_workers']}: losses {report['epoch_losses']}, "
            f"checksum {report['weights_checksum']}, wrote {out}")


if __name__ == "__main__":
    main()
