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
   another task's weights) or ``mixed`` (both masked losses on each mixed batch).

Every phase trains through the one engine (``models.engine``) on streamed input.

Masking is functional (``kernel * mask`` in the forward pass), so weights outside a
task's mask are bit-identical after that task's steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from models.config import SPARSE_VARIANTS, ProjectConfig
from models.data import SplitStream
from models.engine import Callback, Engine, FitResult, LogCallback
from models.masks import TaskMasks, magnitude_masks, prune, random_masks
from models.metrics import HIGHER_IS_BETTER, primary_metric
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
    steps: int = 0
    epochs: int = 0


@dataclasses.dataclass
class SparseResult:
    model: MaskedNetwork
    masks: TaskMasks
    rounds: list[SearchRound]
    chosen: dict[str, int]
    seconds: dict[str, float]
    steps: dict[str, int] = dataclasses.field(default_factory=dict)  # optimizer steps per phase
    joint_fit: FitResult | None = None

    @property
    def search_cost_ratio(self) -> float:
        """(warm-up + mask search) wall time as a multiple of the joint training run."""
        return (self.seconds["warmup"] + self.seconds["search"]) / max(self.seconds["joint"], 1e-9)


def task_metric(task_type: str) -> tuple[str, bool]:
    """(metric name, higher is better) used to pick a task's search round."""
    name = primary_metric(task_type)
    return name, HIGHER_IS_BETTER[name]


def _is_best(candidates, higher: bool) -> bool:
    """Whether the latest ``(round, value, masks)`` candidate is the best so far."""
    values = [c[1] if np.isfinite(c[1]) else (-np.inf if higher else np.inf) for c in candidates]
    return values[-1] == (max(values) if higher else min(values))


class SparseSharingTrainer:
    """Runs warm-up, mask search and joint training through :class:`models.engine.Engine`.

    Args:
      config: project config (``config.sparse``, ``config.training`` and ``config.tuning``).
      tables: embedding tables (``models.features.embedding_tables``).
      structure: ``connection`` (unstructured masks) or ``neuron`` (unit masks).
      seed: one seed initializes every weight; all masks are relative to the same θ.
      log: callable for progress lines (``None`` = silent).
      strategy: a ``tf.distribute`` strategy (default: the current one).
      callbacks: extra engine callbacks (TensorBoard, progress bars) for every phase.
    """

    def __init__(self, config: ProjectConfig, tables, structure: str = "connection", seed: int | None = None,
                 log: Callable[[str], None] | None = None, strategy: tf.distribute.Strategy | None = None,
                 callbacks: Sequence[Callback] = ()):
        if structure not in SPARSE_VARIANTS:
            raise ValueError(f"structure must be one of {SPARSE_VARIANTS}, got {structure!r}")
        self.config = config
        self.sc = config.sparse
        self.structure = structure
        self.seed = config.training.seed if seed is None else seed
        self.log = log or (lambda msg: None)
        self.strategy = strategy or tf.distribute.get_strategy()
        with self.strategy.scope():
            self.model: MaskedNetwork = build_model(config, tables, variant=structure, seed=self.seed)
        training = config.training.model_copy(update={"seed": self.seed})
        self.engine = Engine(self.model, training, config.tuning, self.strategy)
        self.callbacks = [LogCallback(self.log), *callbacks]
        self.theta: list[np.ndarray] | None = None
        self.rewinds: list[list[np.ndarray]] = []  # weights right after each rewind (for tests/audits)
        self.keep_rewind_snapshots = False

    # ------------------------------------------------------------------ phases
    def rewind(self, masks: TaskMasks | None = None) -> None:
        """Restore θ, reset every optimizer, and apply ``masks`` (all-ones if None)."""
        self.model.set_weights(self.theta)
        self.engine.reset_optimizers()
        (masks or TaskMasks.all_ones(self.model, self.structure)).apply(self.model)
        if self.keep_rewind_snapshots:
            self.rewinds.append([w.numpy().copy() for w in self.model.trainable_weights])

    def warmup(self, train: SplitStream) -> list[np.ndarray]:
        """Step 1: train sNET densely on mixed data; store and return θ.

        θ is the weights after ``sparse.warmup_epochs`` epochs, or after ``sparse.warmup_steps``
        optimizer steps when set (the lottery ticket's "late rewinding" point).
        """
        TaskMasks.all_ones(self.model, self.structure).apply(self.model)
        k = self.sc.warmup_steps
        if k is None:
            epochs, what = self.sc.warmup_epochs, f"{self.sc.warmup_epochs} epoch(s)"
        else:
            epochs, what = max(1, math.ceil(k / max(train.steps(self.config.training.batch_size), 1))), f"{k} step(s)"
        self.log(f"warm-up: {what} on {len(train)} mixed rows")
        self.warmup_fit = self.engine.fit(train, epochs=epochs, schedule="mixed", callbacks=self.callbacks,
                                          label="warm-up", max_steps=k)
        self.theta = [np.array(w) for w in self.model.get_weights()]
        return self.theta

    def _train_round(self, train: SplitStream, valid: SplitStream, task: str, label: str) -> FitResult:
        """One search round on ``task``'s own rows: ``sparse.round_epochs``, or until the task's
        validation loss stops improving (``training.patience``, best epoch restored)."""
        tc = self.config.training
        if tc.patience is None:
            return self.engine.fit(train, epochs=self.sc.round_epochs, schedule="alternate", tasks=[task],
                                   callbacks=self.callbacks, label=label)
        return self.engine.fit(train, epochs=tc.max_epochs, schedule="alternate", tasks=[task], valid=valid,
                               patience=tc.patience, callbacks=self.callbacks, label=label)

    def search(self, train: SplitStream, valid: SplitStream) -> tuple[TaskMasks, list[SearchRound], dict[str, int]]:
        """Step 2: per-task iterative magnitude pruning with rewind to θ."""
        if self.theta is None:
            raise RuntimeError("run warmup() before search()")
        valid.check_sample_spaces()
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
            bound = sc.min_density if sc.min_density is not None else sc.min_layer_density
            r = 0
            while True:
                t0 = time.perf_counter()
                masks = TaskMasks(self.structure, base.layer_names, {**base.masks, task: current})
                self.rewind(masks)
                fit = self._train_round(train, valid, task, f"search {task} round {r}")
                if fit.best_epoch is not None:
                    # the round validated every epoch and kept its best one: its score is already known
                    value = fit.epochs[fit.best_epoch].valid[task][metric]
                else:
                    value = self.engine.evaluate(valid, [task])[task][metric]
                dens = [float(m.mean()) for m in current]
                total = float(sum(m.sum() for m in current) / sum(m.size for m in current))
                rounds.append(SearchRound(task, r, total, dens, metric, float(value), time.perf_counter() - t0,
                                          fit.steps, len(fit.epochs)))
                candidates.append((r, value, [m.copy() for m in current]))
                self.log(f"search {task} round {r}: density {total:.3f} -> valid {metric} {value:.5f}"
                         + (f" ({len(fit.epochs)} epochs)" if fit.best_epoch is not None else ""))
                if r < sc.rounds:
                    pass  # the planned rounds
                elif not (sc.extend and _is_best(candidates, higher) and total * (1 - q) >= bound - 1e-9):
                    break  # extension: continue only while the sparsest round is the best so far
                kernels = [layer.kernel.numpy() for layer in layers]
                current = prune(self.structure, kernels, current, q, sc.scope, sc.min_layer_density)
                r += 1
            eligible = [c for c in candidates if sc.allow_dense or c[0] > 0]
            best = (max if higher else min)(eligible, key=lambda c: (c[1] if np.isfinite(c[1]) else (-np.inf if higher else np.inf)))
            chosen[task] = best[0]
            chosen_masks[task] = best[2]
            self.log(f"search {task}: chose round {best[0]} ({metric} {best[1]:.5f})")
        return TaskMasks(self.structure, base.layer_names, chosen_masks), rounds, chosen

    def joint(self, train: SplitStream, masks: TaskMasks, valid: SplitStream | None = None,
              epochs: int | None = None, patience: int | None = None) -> MaskedNetwork:
        """Step 3: rewind to θ and train every task through its own mask (``sparse.schedule``).

        ``epochs`` overrides ``sparse.joint_epochs`` / ``training.epochs``; with ``valid`` the
        engine scores every epoch (and stops early with ``patience``, default ``training.patience``).
        """
        if self.theta is None:
            raise RuntimeError("run warmup() before joint()")
        masks.check_compatible(self.model)
        self.rewind(masks)
        epochs = epochs or self.sc.joint_epochs or self.config.training.budget_epochs
        patience = patience if patience is not None else (self.config.training.patience if valid is not None else None)
        self.log(f"joint training ({self.sc.schedule}): {epochs} epoch(s)")
        self.joint_fit = self.engine.fit(train, epochs=epochs, schedule=self.sc.schedule, valid=valid,
                                         patience=patience, callbacks=self.callbacks, label="joint")
        return self.model

    def control_masks(self, kind: str, reference: TaskMasks, seed: int | None = None) -> TaskMasks:
        """Masks with ``reference``'s per-task, per-layer densities, picked without a search.

        ``theta``: the largest ``|θ|`` of each layer (is the search more than pruning θ by
        magnitude?); ``random``: uniformly at random (is the mask's choice worth anything?).
        """
        if self.theta is None:
            raise RuntimeError("run warmup() (or set theta) before control_masks()")
        reference.check_compatible(self.model, "reference masks")
        self.model.set_weights(self.theta)
        kernels = [layer.kernel.numpy() for layer in self.model.masked_layers]
        rng = np.random.default_rng(self.seed if seed is None else seed)
        out = {}
        for t in self.model.task_names:
            dens = reference.layer_density(t)
            if kind == "theta":
                out[t] = magnitude_masks(kernels, dens)
            elif kind == "random":
                out[t] = random_masks([k.shape for k in kernels], dens, rng)
            else:
                raise ValueError(f"unknown control {kind!r}; choose theta or random")
        return TaskMasks(self.structure, reference.layer_names, out)

    def run_control(self, train: SplitStream, valid: SplitStream, kind: str, reference: TaskMasks,
                    theta: list[np.ndarray] | None = None) -> SparseResult:
        """An ablation of the search: warm-up (or the given θ), ``control_masks``, joint training."""
        t0 = time.perf_counter()
        if theta is None:
            self.warmup(train)
            warm_steps = self.warmup_fit.steps
        else:
            self.theta, warm_steps = [np.array(w) for w in theta], 0
        t1 = time.perf_counter()
        masks = self.control_masks(kind, reference)
        self.log(f"control {kind}: " + ", ".join(f"{t} density {masks.density(t):.3f}" for t in masks.tasks))
        s1 = self.engine.steps_taken
        self.joint(train, masks, valid)
        t2 = time.perf_counter()
        return SparseResult(self.model, masks, [], {}, {"warmup": t1 - t0, "search": 0.0, "joint": t2 - t1},
                            {"warmup": warm_steps, "search": 0, "joint": self.engine.steps_taken - s1}, self.joint_fit)

    def run(self, train: SplitStream, valid: SplitStream) -> SparseResult:
        train.check_sample_spaces()
        valid.check_sample_spaces()
        t0 = time.perf_counter()
        self.warmup(train)
        t1 = time.perf_counter()
        s0 = self.engine.steps_taken
        masks, rounds, chosen = self.search(train, valid)
        t2 = time.perf_counter()
        s1 = self.engine.steps_taken
        self.joint(train, masks, valid)
        t3 = time.perf_counter()
        steps = {"warmup": self.warmup_fit.steps, "search": s1 - s0, "joint": self.engine.steps_taken - s1}
        return SparseResult(self.model, masks, rounds, chosen, {"warmup": t1 - t0, "search": t2 - t1, "joint": t3 - t2},
                            steps, self.joint_fit)
