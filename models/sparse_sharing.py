"""The three-step sparse-sharing trainer (design.md §2-3; NCS4CVR / LT4REC).

1. **Warm-up**: train sNET (a :class:`~models.variants.MaskedNetwork`, all-ones masks) on
   mixed data with ``L = sum_k w_k L_k`` -> weights θ, the rewind point.
2. **Mask search**, per task: start dense; for each of ``rounds + 1`` trainings rewind
   to θ, reset the optimizer, train on the task's own sample space with the current
   mask, score the task on validation (AUC ↑ / MSE ↓), then prune
   ``q = 1 - final_density ** (1 / rounds)`` of the weights still alive (per layer or
   global; connection or neuron masks). The best-scoring round's mask is kept.
3. **Joint training** from θ with every task's mask: ``alternate`` (task-specific
   batches interleaved, one optimizer per task, so Adam state of one task never moves
   another task's weights) or ``joint`` (both masked losses on each mixed batch).

Masking is functional (``kernel * mask`` in the forward pass), so weights outside a
task's mask are bit-identical after that task's steps.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import tensorflow as tf

from models.config import SPARSE_VARIANTS, ProjectConfig
from models.data import check_sample_spaces
from models.losses import task_loss
from models.masks import TaskMasks, prune
from models.metrics import HIGHER_IS_BETTER, primary_metric, task_metrics
from models.training import Split, predict
from models.variants import MaskedNetwork, build_model


@dataclasses.dataclass
class SearchRound:
    task: str
    round: int
    density: float
    layer_density: list[float]
    metric: str
    value: float
    seconds: float


@dataclasses.dataclass
class SparseResult:
    model: MaskedNetwork
    masks: TaskMasks
    rounds: list[SearchRound]
    chosen: dict[str, int]
    seconds: dict[str, float]

    @property
    def search_cost_ratio(self) -> float:
        """(warm-up + mask search) wall time as a multiple of the joint training run."""
        return (self.seconds["warmup"] + self.seconds["search"]) / max(self.seconds["joint"], 1e-9)


def reset_optimizer(optimizer) -> None:
    """Zero every optimizer variable (step count, Adam moments): same state as a fresh one."""
    for v in optimizer.variables:
        v.assign(tf.zeros_like(v))


def task_metric(task_type: str) -> tuple[str, bool]:
    """(metric name, higher is better) used to pick a task's search round."""
    name = primary_metric(task_type)
    return name, HIGHER_IS_BETTER[name]


def interleave_schedule(batches_per_task: dict[str, int]) -> list[str]:
    """Task order of one alternate epoch: every task's batches spread evenly over the epoch."""
    keyed = [((i + 0.5) / n, ti, t) for ti, (t, n) in enumerate(batches_per_task.items()) for i in range(n)]
    return [t for _, _, t in sorted(keyed)]


class SparseSharingTrainer:
    """Runs warm-up, mask search and joint training on in-memory :class:`Split` s.

    Args:
      config: project config (``config.sparse`` and ``config.tuning`` drive the engine).
      tables: embedding tables (from ``models.features.embedding_tables``).
      structure: ``connection`` (unstructured masks) or ``neuron`` (unit masks).
      seed: one seed initializes every weight; all masks are relative to the same θ.
      log: callable for progress lines (``None`` = silent).
    """

    def __init__(self, config: ProjectConfig, tables, structure: str = "connection", seed: int | None = None,
                 log: Callable[[str], None] | None = None):
        if structure not in SPARSE_VARIANTS:
            raise ValueError(f"structure must be one of {SPARSE_VARIANTS}, got {structure!r}")
        self.config = config
        self.sc = config.sparse
        self.structure = structure
        self.seed = config.training.seed if seed is None else seed
        self.log = log or (lambda msg: None)
        self.model: MaskedNetwork = build_model(config, tables, variant=structure, seed=self.seed)
        self.theta: list[np.ndarray] | None = None
        self.rewinds: list[list[np.ndarray]] = []  # weights right after each rewind (for tests/audits)
        self.keep_rewind_snapshots = False
        self._task_opts: dict[str, tf.keras.optimizers.Optimizer] = {}
        self._task_steps: dict[str, Callable] = {}
        self._joint_opt = None
        self._joint_step = None

    # ------------------------------------------------------------------ data
    def _task_dataset(self, split: Split, task: str, shuffle_seed: int):
        """Rows of ``task``'s sample space only (CVR: the clicked stream)."""
        rows = np.flatnonzero(split.spaces[task] > 0)
        x = {k: v[rows] for k, v in split.inputs.items()}
        ds = tf.data.Dataset.from_tensor_slices((x, split.labels[task][rows], split.spaces[task][rows]))
        ds = ds.shuffle(len(rows), seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds.batch(self.config.training.batch_size).prefetch(tf.data.AUTOTUNE), int(np.ceil(len(rows) / self.config.training.batch_size))

    def _mixed_dataset(self, split: Split, shuffle_seed: int):
        ds = tf.data.Dataset.from_tensor_slices((split.inputs, split.labels, split.spaces))
        ds = ds.shuffle(len(split), seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds.batch(self.config.training.batch_size).prefetch(tf.data.AUTOTUNE)

    # ------------------------------------------------------------------ steps
    def _task_step(self, task: str):
        """A compiled step that trains ``task`` alone, with its own optimizer."""
        if task not in self._task_steps:
            model = self.model
            ti = model.task_names.index(task)
            tcfg = model.tasks[ti]
            opt = tf.keras.optimizers.Adam(self.config.training.learning_rate)
            weight = model.task_weights[task]

            @tf.function
            def step(x, y, w):
                with tf.GradientTape() as tape:
                    pred = model.call_task(x, ti)
                    loss = weight * task_loss(tcfg, y, pred, w)
                variables = model.trainable_variables
                grads = tape.gradient(loss, variables)
                opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
                return loss

            self._task_opts[task] = opt
            self._task_steps[task] = step
        return self._task_steps[task]

    def _joint_train_step(self):
        if self._joint_step is None:
            model = self.model
            opt = tf.keras.optimizers.Adam(self.config.training.learning_rate)

            @tf.function
            def step(x, y, w):
                with tf.GradientTape() as tape:
                    preds = model(x, training=True)
                    total = 0.0
                    for t in model.tasks:
                        total += model.task_weights[t.name] * task_loss(t, y[t.name], preds[t.name], w[t.name])
                variables = model.trainable_variables
                grads = tape.gradient(total, variables)
                opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
                return total

            self._joint_opt = opt
            self._joint_step = step
        return self._joint_step

    def _reset_optimizers(self):
        for opt in list(self._task_opts.values()) + ([self._joint_opt] if self._joint_opt else []):
            if opt.variables:
                reset_optimizer(opt)

    def _set_epoch_weights(self, epoch: int) -> None:
        """Task loss weights for ``epoch``: ``w_k * gamma_k ** epoch`` (PLE dynamic weights)."""
        gammas = self.config.tuning.dynamic_loss_gamma
        for t in self.model.tasks:
            self.model.task_weights[t.name].assign(t.weight * gammas.get(t.name, 1.0) ** epoch)

    # ------------------------------------------------------------------ phases
    def _ensure_built(self, split: Split):
        if not self.model.built or not self.model.weights:
            self.model({k: v[:2] for k, v in split.inputs.items()})

    def rewind(self, masks: TaskMasks | None = None) -> None:
        """Restore θ, reset every optimizer, and apply ``masks`` (all-ones if None)."""
        self.model.set_weights(self.theta)
        self._reset_optimizers()
        (masks or TaskMasks.all_ones(self.model, self.structure)).apply(self.model)
        if self.keep_rewind_snapshots:
            self.rewinds.append([w.numpy().copy() for w in self.model.trainable_weights])

    def _run_joint_epochs(self, train: Split, epochs: int, label: str):
        step = self._joint_train_step()
        for e in range(epochs):
            self._set_epoch_weights(e)
            losses = [float(step(x, y, w)) for x, y, w in self._mixed_dataset(train, self.seed + e)]
            self.log(f"  {label} epoch {e + 1}/{epochs}: loss {np.mean(losses):.5f}")

    def _run_alternate_epochs(self, train: Split, epochs: int, tasks: list[str], label: str):
        for e in range(epochs):
            self._set_epoch_weights(e)
            streams, counts = {}, {}
            for i, t in enumerate(tasks):
                ds, n = self._task_dataset(train, t, self.seed + 1000 * i + e)
                streams[t], counts[t] = iter(ds), n
            losses = {t: [] for t in tasks}
            for t in interleave_schedule(counts):
                x, y, w = next(streams[t])
                losses[t].append(float(self._task_step(t)(x, y, w)))
            self.log(f"  {label} epoch {e + 1}/{epochs}: " + ", ".join(f"{t} loss {np.mean(v):.5f}" for t, v in losses.items()))

    def warmup(self, train: Split) -> list[np.ndarray]:
        """Step 1: train sNET densely on mixed data; store and return θ."""
        check_sample_spaces(train.spaces, "train")
        self._ensure_built(train)
        TaskMasks.all_ones(self.model, self.structure).apply(self.model)
        self.log(f"warm-up: {self.sc.warmup_epochs} epoch(s) on {len(train)} mixed rows")
        self._run_joint_epochs(train, self.sc.warmup_epochs, "warm-up")
        self.theta = [np.array(w) for w in self.model.get_weights()]
        return self.theta

    def _score(self, split: Split, task: str) -> float:
        ti = self.model.task_names.index(task)
        metric, _ = task_metric(self.model.tasks[ti].type)
        rows = split.spaces[task] > 0
        preds = predict(self.model, split)[task]
        return task_metrics(self.model.tasks[ti].type, split.labels[task][rows], preds[rows])[metric]

    def search(self, train: Split, valid: Split) -> tuple[TaskMasks, list[SearchRound], dict[str, int]]:
        """Step 2: per-task iterative magnitude pruning with rewind to θ."""
        if self.theta is None:
            raise RuntimeError("run warmup() before search()")
        check_sample_spaces(valid.spaces, "validation")
        sc = self.sc
        q = sc.prune_rate
        base = TaskMasks.all_ones(self.model, self.structure)
        rounds: list[SearchRound] = []
        chosen_masks: dict[str, list[np.ndarray]] = {}
        chosen: dict[str, int] = {}
        layers = self.model.masked_layers
        for ti, task in enumerate(self.model.task_names):
            metric, higher = task_metric(self.model.tasks[ti].type)
            current = [m.copy() for m in base.masks[task]]
            candidates = []
            for r in range(sc.rounds + 1):
                t0 = time.perf_counter()
                masks = TaskMasks(self.structure, base.layer_names, {**base.masks, task: current})
                self.rewind(masks)
                self._run_alternate_epochs(train, sc.round_epochs, [task], f"search {task} round {r}")
                value = self._score(valid, task)
                dens = [float(m.mean()) for m in current]
                total = float(sum(m.sum() for m in current) / sum(m.size for m in current))
                rounds.append(SearchRound(task, r, total, dens, metric, float(value), time.perf_counter() - t0))
                candidates.append((r, value, [m.copy() for m in current]))
                self.log(f"search {task} round {r}: density {total:.3f} -> valid {metric} {value:.5f}")
                if r < sc.rounds:
                    kernels = [layer.kernel.numpy() for layer in layers]
                    current = prune(self.structure, kernels, current, q, sc.scope, sc.min_layer_density)
            eligible = [c for c in candidates if sc.allow_dense or c[0] > 0]
            best = (max if higher else min)(eligible, key=lambda c: (c[1] if np.isfinite(c[1]) else (-np.inf if higher else np.inf)))
            chosen[task] = best[0]
            chosen_masks[task] = best[2]
            self.log(f"search {task}: chose round {best[0]} ({metric} {best[1]:.5f})")
        return TaskMasks(self.structure, base.layer_names, chosen_masks), rounds, chosen

    def joint(self, train: Split, masks: TaskMasks) -> MaskedNetwork:
        """Step 3: rewind to θ and train every task through its own mask."""
        if self.theta is None:
            raise RuntimeError("run warmup() before joint()")
        masks.check_compatible(self.model)
        self.rewind(masks)
        epochs = self.sc.joint_epochs or self.config.training.epochs
        self.log(f"joint training ({self.sc.schedule}): {epochs} epoch(s)")
        if self.sc.schedule == "alternate":
            self._run_alternate_epochs(train, epochs, self.model.task_names, "joint")
        else:
            self._run_joint_epochs(train, epochs, "joint")
        return self.model

    def run(self, train: Split, valid: Split) -> SparseResult:
        check_sample_spaces(train.spaces, "train")
        check_sample_spaces(valid.spaces, "validation")
        t0 = time.perf_counter()
        self.warmup(train)
        t1 = time.perf_counter()
        masks, rounds, chosen = self.search(train, valid)
        t2 = time.perf_counter()
        self.joint(train, masks)
        t3 = time.perf_counter()
        return SparseResult(self.model, masks, rounds, chosen, {"warmup": t1 - t0, "search": t2 - t1, "joint": t3 - t2})
