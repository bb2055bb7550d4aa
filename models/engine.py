"""The training engine: one gradient step per schedule, for every variant and every phase.

Every model of ``models.variants`` trains here: the baselines, the sparse-sharing warm-up,
each mask-search round, joint masked training, the warm-started daily increment and the
comparison harness. Two schedules:

- ``mixed``: one optimizer; each step takes a mixed batch and minimizes
  ``L = sum_k w_k L_k`` over the given tasks (``L_k`` over task ``k``'s sample space).
- ``alternate``: one optimizer *per task*; each task reads its own sample-space stream
  (CVR: the clicked rows, so it sees all of them each epoch) and the tasks' batches are
  interleaved evenly over the epoch (Algorithm 1 of the papers). A task's optimizer only
  ever sees that task's gradients, so with masked kernels its Adam state is zero outside
  the task's mask and a task step never moves another task's weights.

The same task weights apply to every variant: ``task.weight`` times PLE's dynamic factor
``tuning.dynamic_loss_gamma[task] ** epoch``; per-row gradient-conflict weights come with the
data (``weight__t``). Input is streamed (:class:`models.data.SplitStream`); the engine runs
under any ``tf.distribute`` strategy (the model must be built in ``strategy.scope()``): each
input pipeline takes its share of every global batch and the losses are global-batch means
(``models.losses.space_mean``).

Hooks: validation after each epoch, early stopping with restore-best (``patience``), and
:class:`Callback` s (TensorBoard, progress bars, log lines).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from models.config import TrainingConfig, TuningConfig
from models.data import ROW_ID, SplitStream
from models.losses import pointwise_loss
from models.metrics import task_metrics

SCHEDULES = ("mixed", "alternate")


@dataclasses.dataclass
class EpochLog:
    """What one epoch did. ``loss``: mean training loss per task; ``valid``: ``{task: metrics}``."""

    epoch: int
    steps: int
    seconds: float
    loss: dict[str, float]
    valid: dict | None = None
    valid_loss: float | None = None


@dataclasses.dataclass
class FitResult:
    epochs: list[EpochLog]
    steps: int  # optimizer steps taken
    seconds: float
    best_epoch: int | None = None  # 0-based; None without validation
    stopped_early: bool = False


@dataclasses.dataclass
class Predictions:
    """Per task ``[N]`` arrays in stream order (``in_space_only``: only the task's sample-space rows)."""

    preds: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    spaces: dict[str, np.ndarray] | None = None
    row_ids: np.ndarray | None = None


class Callback:
    """Engine hooks; override what you need."""

    def on_fit_begin(self, engine: "Engine", label: str, epochs: int) -> None: ...

    def on_epoch_begin(self, epoch: int, steps: int) -> None: ...

    def on_step_end(self, task: str | None, loss: float) -> None: ...

    def on_epoch_end(self, log: EpochLog) -> None: ...

    def on_fit_end(self, result: FitResult) -> None: ...


class LogCallback(Callback):
    """One line per epoch through ``log`` (e.g. ``absl.logging.info`` or ``tqdm.write``)."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.label = log, ""

    def on_fit_begin(self, engine, label, epochs):
        self.label, self.epochs = label, epochs

    def on_epoch_end(self, log):
        line = f"{self.label} epoch {log.epoch + 1}/{self.epochs}: " + ", ".join(
            f"{t} loss {v:.5f}" for t, v in log.loss.items()
        ) + f" ({log.steps} steps, {log.seconds:.1f}s)"
        if log.valid_loss is not None:
            line += f"; valid loss {log.valid_loss:.5f}"
        self.log(line)


class ProgressCallback(Callback):
    """A tqdm bar per epoch (steps), closed at the epoch's end."""

    def __init__(self, disable: bool | None = None):
        self.disable, self.bar, self.label = disable, None, ""

    def on_fit_begin(self, engine, label, epochs):
        self.label, self.epochs = label, epochs

    def on_epoch_begin(self, epoch, steps):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=steps, desc=f"{self.label} {epoch + 1}/{self.epochs}", unit="step", leave=False,
                        disable=self.disable)

    def on_step_end(self, task, loss):
        self.bar.update(1)

    def on_epoch_end(self, log):
        self.bar.close()


class TensorBoardCallback(Callback):
    """Per-epoch training losses and validation metrics as TensorBoard scalars (``<label>/...``)."""

    def __init__(self, log_dir: str):
        self.writer = tf.summary.create_file_writer(log_dir)
        self.label = ""

    def on_fit_begin(self, engine, label, epochs):
        self.label = label

    def on_epoch_end(self, log):
        with self.writer.as_default():
            for t, v in log.loss.items():
                tf.summary.scalar(f"{self.label}/loss/{t}", v, step=log.epoch)
            if log.valid_loss is not None:
                tf.summary.scalar(f"{self.label}/valid_loss", log.valid_loss, step=log.epoch)
            for t, metrics in (log.valid or {}).items():
                for k, v in metrics.items():
                    if np.isfinite(v):
                        tf.summary.scalar(f"{self.label}/valid/{t}/{k}", v, step=log.epoch)
        self.writer.flush()


def interleave_schedule(batches_per_task: dict[str, int]) -> list[str]:
    """Task order of one alternate epoch: every task's batches spread evenly over the epoch."""
    keyed = [((i + 0.5) / n, ti, t) for ti, (t, n) in enumerate(batches_per_task.items()) for i in range(n)]
    return [t for _, _, t in sorted(keyed)]


def reset_optimizer(optimizer) -> None:
    """Zero every optimizer variable (step count, Adam moments): the state of a fresh optimizer."""
    for v in optimizer.variables:
        v.assign(tf.zeros_like(v))


class Engine:
    """Trains one :class:`~models.variants.MultiTaskModel`.

    Args:
      model: built in ``strategy.scope()`` (``models.variants.build_model`` builds it).
      training: batch size (the *global* batch), learning rate, shuffle buffer, seed.
      tuning: ``dynamic_loss_gamma`` (PLE's per-epoch task weights).
      strategy: a ``tf.distribute`` strategy (default: the current one).
    """

    def __init__(self, model, training: TrainingConfig, tuning: TuningConfig | None = None,
                 strategy: tf.distribute.Strategy | None = None):
        self.model = model
        self.training = training
        self.tuning = tuning or TuningConfig()
        self.strategy = strategy or tf.distribute.get_strategy()
        self.task_names = list(model.task_names)
        self._optimizers: dict[str, tf.keras.optimizers.Optimizer] = {}
        self._steps: dict[tuple, Callable] = {}
        self._predict_fn = None
        self.steps_taken = 0

    # ------------------------------------------------------------------ optimizers
    def optimizer(self, key: str):
        """The Adam optimizer of ``key`` (``"mixed"`` or a task name), built on every trainable variable."""
        if key not in self._optimizers:
            with self.strategy.scope():
                # no XLA: compiling the update costs more than it saves on these small dense steps
                opt = tf.keras.optimizers.Adam(self.training.learning_rate, jit_compile=False)
                opt.build(self.model.trainable_variables)
            self._optimizers[key] = opt
        return self._optimizers[key]

    @property
    def optimizers(self) -> dict:
        return dict(self._optimizers)

    def reset_optimizers(self) -> None:
        """Every optimizer back to its initial state (after a rewind, a warm start)."""
        for opt in self._optimizers.values():
            reset_optimizer(opt)

    # ------------------------------------------------------------------ the step
    def _step(self, tasks: tuple[str, ...], key: str, signature):
        """The compiled step minimizing ``sum_{t in tasks} w_t L_t`` with optimizer ``key``.

        ``signature``: the batches' ``element_spec`` (batch dimension ``None``), so the last,
        shorter batch of an epoch does not trace the step a second time.
        """
        if (tasks, key) not in self._steps:
            model, optimizer, strategy = self.model, self.optimizer(key), self.strategy

            def replica_step(x, y, w):
                with tf.GradientTape() as tape:
                    losses = model.compute_losses(x, y, w, tasks, training=True)
                    total = tf.add_n([model.task_weights[t] * losses[t] for t in tasks])
                variables = model.trainable_variables
                grads = tape.gradient(total, variables)
                optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
                return losses

            # (a distributed iterator yields PerReplica values, which a TensorSpec signature cannot bind)
            distributed = strategy.num_replicas_in_sync > 1
            @tf.function(input_signature=None if distributed else list(signature), reduce_retracing=distributed,
                         autograph=False)
            def step(x, y, w):
                per_replica = strategy.run(replica_step, args=(x, y, w))
                return {t: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for t, v in per_replica.items()}

            self._steps[(tasks, key)] = step
        return self._steps[(tasks, key)]

    def set_epoch_weights(self, epoch: int) -> None:
        """Task loss weights for ``epoch``: ``w_k * gamma_k ** epoch`` (PLE's dynamic weights; gamma 1 = fixed)."""
        gammas = self.tuning.dynamic_loss_gamma
        for t in self.model.tasks:
            self.model.task_weights[t.name].assign(t.weight * gammas.get(t.name, 1.0) ** epoch)

    def _stream(self, data: SplitStream, seed: int, task: str | None):
        batch = self.training.batch_size

        def dataset_fn(ctx: tf.distribute.InputContext):
            return data.batches(batch, shuffle_seed=seed, shuffle_buffer=self.training.shuffle_buffer, task=task,
                                shard=(ctx.input_pipeline_id, ctx.num_input_pipelines))

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    # ------------------------------------------------------------------ fit
    def fit(self, train: SplitStream, *, epochs: int, schedule: str = "mixed", tasks: Sequence[str] | None = None,
            valid: SplitStream | None = None, patience: int | None = None, seed: int | None = None,
            callbacks: Sequence[Callback] = (), label: str = "train", max_steps: int | None = None) -> FitResult:
        """Train ``epochs`` epochs (at most, with ``patience``) on ``train``.

        Args:
          schedule: ``mixed`` or ``alternate`` (see the module doc).
          tasks: the tasks whose losses train (default all); a search round trains one task.
          valid: scored after each epoch (metrics + weighted validation loss of ``tasks``).
          patience: stop after this many epochs without a better validation loss and restore
            the best epoch's weights (needs ``valid``).
          seed: shuffling seed (default ``training.seed``); epoch ``e`` uses ``seed + e``.
          max_steps: stop after this many optimizer steps (mid-epoch; the sparse-sharing
            rewind point "θ after k warm-up steps").
        """
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")
        if patience is not None and valid is None:
            raise ValueError("early stopping (patience) needs a validation split")
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        tasks = tuple(tasks or self.task_names)
        seed = self.training.seed if seed is None else seed
        train.check_sample_spaces()
        if valid is not None:
            valid.check_sample_spaces()
        batch = self.training.batch_size
        signature = train.batches(batch).element_spec
        for cb in callbacks:
            cb.on_fit_begin(self, label, epochs)
        t_fit, steps0 = time.perf_counter(), self.steps_taken
        logs: list[EpochLog] = []
        best, best_epoch, best_weights, stopped = math.inf, None, None, False
        for e in range(epochs):
            t0 = time.perf_counter()
            self.set_epoch_weights(e)
            if schedule == "mixed":
                order = [None] * train.steps(batch)
                streams = {None: self._stream(train, seed + e, None)}
                steps = {None: self._step(tasks, "mixed", signature)}
            else:
                stream_task = {t: self.model.stream_task(t) for t in tasks}
                order = interleave_schedule({t: train.steps(batch, stream_task[t]) for t in tasks})
                streams = {t: self._stream(train, seed + 1000 * i + e, stream_task[t]) for i, t in enumerate(tasks)}
                steps = {t: self._step((t,), t, signature) for t in tasks}
            for cb in callbacks:
                cb.on_epoch_begin(e, len(order))
            sums = {t: 0.0 for t in tasks}
            counts = {t: 0 for t in tasks}
            if max_steps is not None:
                order = order[: max(0, max_steps - (self.steps_taken - steps0))]
            for key in order:
                losses = steps[key](*next(streams[key]))
                self.steps_taken += 1
                for t in (tasks if key is None else (key,)):
                    sums[t] += float(losses[t])
                    counts[t] += 1
                for cb in callbacks:
                    cb.on_step_end(key, float(losses[key]) if key is not None else float(sum(losses.values())))
            log = EpochLog(e, len(order), 0.0, {t: sums[t] / max(counts[t], 1) for t in tasks})
            if valid is not None:
                log.valid, log.valid_loss = self.validate(valid, tasks)
            log.seconds = time.perf_counter() - t0
            logs.append(log)
            for cb in callbacks:
                cb.on_epoch_end(log)
            if valid is not None and log.valid_loss < best:
                best, best_epoch = log.valid_loss, e
                if patience is not None:
                    best_weights = [np.array(w) for w in self.model.get_weights()]
            elif patience is not None and best_epoch is not None and e - best_epoch >= patience:
                stopped = True
                break
            if max_steps is not None and self.steps_taken - steps0 >= max_steps:
                break
        if best_weights is not None and best_epoch != len(logs) - 1:
            self.model.set_weights(best_weights)  # restore the best epoch
        result = FitResult(logs, self.steps_taken - steps0, time.perf_counter() - t_fit, best_epoch, stopped)
        for cb in callbacks:
            cb.on_fit_end(result)
        return result

    # ------------------------------------------------------------------ prediction and validation
    def predict(self, data: SplitStream, batch_size: int = 8192, in_space_only: bool = True) -> Predictions:
        """Predictions, labels (and spaces) per task, streamed in file order.

        ``in_space_only`` keeps only each task's sample-space rows (one prediction and one label
        per row and task: what validation needs); else every row plus the 0/1 spaces and, when
        the stream carries them, the row ids.
        """
        if self._predict_fn is None:
            model = self.model
            self._predict_fn = tf.function(lambda x: model(x, training=False), input_signature=[
                {k: v for k, v in data.batches(batch_size).element_spec[0].items() if k != ROW_ID}], autograph=False)
        preds = {t: [] for t in self.task_names}
        labels = {t: [] for t in self.task_names}
        spaces = {t: [] for t in self.task_names}
        rows = []
        for x, y, w in data.batches(batch_size, weights="space"):
            if ROW_ID in x:
                rows.append(x.pop(ROW_ID).numpy())
            out = self._predict_fn(x)
            for t in self.task_names:
                p, lab, s = out[t].numpy().reshape(-1), y[t].numpy(), w[t].numpy()
                if in_space_only:
                    keep = s > 0
                    p, lab = p[keep], lab[keep]
                else:
                    spaces[t].append(s)
                preds[t].append(p)
                labels[t].append(lab)

        def cat(parts):
            return np.concatenate(parts) if parts else np.zeros((0,), np.float32)

        return Predictions(
            {t: cat(v) for t, v in preds.items()},
            {t: cat(v) for t, v in labels.items()},
            None if in_space_only else {t: cat(v) for t, v in spaces.items()},
            cat(rows) if rows else None,
        )

    def evaluate(self, data: SplitStream, tasks: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """``{task: metrics}`` on ``data``, each task on its own sample space."""
        return self.validate(data, tasks)[0]

    def validate(self, data: SplitStream, tasks: Sequence[str] | None = None) -> tuple[dict, float]:
        """``({task: metrics}, sum_k w_k * validation loss_k)`` over ``tasks`` (default all)."""
        tasks = list(tasks or self.task_names)
        p = self.predict(data)
        by_name = {t.name: t for t in self.model.tasks}
        metrics, total = {}, 0.0
        for t in tasks:
            cfg = by_name[t]
            metrics[t] = task_metrics(cfg.type, p.labels[t], p.preds[t])
            loss = float(tf.reduce_mean(pointwise_loss(cfg, p.labels[t], p.preds[t]))) if len(p.preds[t]) else 0.0
            metrics[t]["loss"] = loss
            total += cfg.weight * loss
        return metrics, total
