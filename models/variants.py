"""Multi-task ranking models: every baseline of design.md §4 and the masked network.

All variants take the encoded feature dict (see ``models.features.input_signature``)
and return ``{task: [B] probability}``. They share :class:`MultiTaskModel`, whose
``compute_losses`` gives each task's loss over its own sample space; the one training
loop is ``models.engine.Engine`` (``L = sum_k w_k L_k``, Eq. 2). Models take typed config
sections and are registered Keras serializables (``ncs>ClassName``).
"""

from __future__ import annotations

import tensorflow as tf

from models.config import (
    ModelConfig,
    MultiCategoricalFeature,
    NumericFeature,
    ProjectConfig,
    TaskConfig,
    TuningConfig,
)
from models.features import input_signature, table_of
from models.layers import MLP, CGCLevel, FeatureEmbedding, Interaction, MaskedMLP
from models.losses import task_loss

_serializable = tf.keras.utils.register_keras_serializable(package="ncs")


def feature_fields(config: ProjectConfig) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``([(feature, table, kind)], [numeric feature])``: what :class:`FeatureEmbedding` reads."""
    fields, numeric = [], []
    for f in config.features:
        if isinstance(f, NumericFeature):
            numeric.append(f.name)
        else:
            fields.append((f.name, table_of(f), "multi" if isinstance(f, MultiCategoricalFeature) else "categorical"))
    return fields, numeric


class MultiTaskModel(tf.keras.Model):
    """Base class. Subclasses implement ``call(inputs) -> {task: [B]}``.

    Args (typed config sections, not the project file):
      tables: ``{table: (rows, dim)}`` embedding tables.
      fields, numeric: the model inputs (:func:`feature_fields`).
      model: :class:`ModelConfig`; ``tasks``: the :class:`TaskConfig` s; ``tuning``: :class:`TuningConfig`
        (each also accepted as its ``model_dump()`` dict, which is what ``get_config`` stores).
    """

    variant = "base"

    def __init__(self, tables: dict, fields: list, numeric: list, model, tasks, tuning=None, **kwargs):
        super().__init__(**kwargs)
        self.model_config = ModelConfig.model_validate(model)
        self.tasks = [TaskConfig.model_validate(t) for t in tasks]
        self.tuning = TuningConfig.model_validate(tuning or {})
        self.table_spec = {k: tuple(v) for k, v in tables.items()}
        self.fields = [tuple(f) for f in fields]
        self.numeric = list(numeric)
        self.task_names = [t.name for t in self.tasks]
        # loss weights live in variables so the engine can change them between epochs
        # (PLE's dynamic weights) without retracing the compiled step
        self.task_weights = {
            t.name: tf.Variable(float(t.weight), trainable=False, dtype=tf.float32, name=f"{t.name}_loss_weight")
            for t in self.tasks
        }

    # ---- building blocks
    def _front(self, name: str):
        emb = FeatureEmbedding(self.table_spec, self.fields, self.numeric, self.model_config.embedding_dim,
                               dense_mlp=self.model_config.dense_mlp, name=f"{name}_embedding")
        return emb, Interaction(self.model_config.interaction, name=f"{name}_interaction")

    @staticmethod
    def _head(task: str):
        return tf.keras.layers.Dense(1, activation="sigmoid", name=f"{task}_head")

    # ---- losses (the engine's step calls compute_losses)
    def task_losses(self, labels: dict, preds: dict, spaces: dict, tasks=None) -> dict:
        """``{task: scalar}`` loss of each task over its own sample space (rows weighted by ``spaces``)."""
        return {t.name: task_loss(t, labels[t.name], preds[t.name], spaces[t.name])
                for t in self.tasks if tasks is None or t.name in tasks}

    def task_predictions(self, inputs, tasks, training=False) -> dict:
        """Predictions the losses of ``tasks`` need (default: every head)."""
        return self(inputs, training=training)

    def compute_losses(self, x, y, w, tasks, training=True) -> dict:
        """``{task: loss}`` for ``tasks`` on one batch: the engine's forward pass."""
        return self.task_losses(y, self.task_predictions(x, tasks, training=training), w, tasks)

    def stream_task(self, task: str) -> str:
        """Whose sample space the ``alternate`` schedule streams for ``task`` (its own by default)."""
        return task

    def predict_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self(x, training=False)

    def get_config(self):
        return {
            "tables": self.table_spec,
            "fields": self.fields,
            "numeric": self.numeric,
            "model": self.model_config.model_dump(),
            "tasks": [t.model_dump() for t in self.tasks],
            "tuning": self.tuning.model_dump(),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class SingleTaskModels(MultiTaskModel):
    """``single``: one independent DLRM per task (own embeddings, interaction, MLP)."""

    variant = "single"

    def __init__(self, tables, fields, numeric, model, tasks, tuning=None, **kwargs):
        super().__init__(tables, fields, numeric, model, tasks, tuning, **kwargs)
        m = self.model_config
        self.fronts = {t: self._front(t) for t in self.task_names}
        self.mlps = {t: MLP(m.mlp, m.activation, name=f"{t}_mlp") for t in self.task_names}
        self.heads = {t: self._head(t) for t in self.task_names}

    def call(self, inputs, training=False):
        out = {}
        for t in self.task_names:
            emb, inter = self.fronts[t]
            out[t] = tf.squeeze(self.heads[t](self.mlps[t](inter(emb(inputs)))), -1)
        return out


class LayerSharing(MultiTaskModel):
    """``layer``: shared embeddings + interaction, one full MLP tower per task (hard sharing)."""

    variant = "layer"

    def __init__(self, tables, fields, numeric, model, tasks, tuning=None, **kwargs):
        super().__init__(tables, fields, numeric, model, tasks, tuning, **kwargs)
        m = self.model_config
        self.embedding, self.interaction = self._front("shared")
        self.towers = {t: MLP(m.mlp, m.activation, name=f"{t}_tower") for t in self.task_names}
        self.heads = {t: self._head(t) for t in self.task_names}

    def call(self, inputs, training=False):
        x = self.interaction(self.embedding(inputs))
        return {t: tf.squeeze(self.heads[t](self.towers[t](x)), -1) for t in self.task_names}


class SharedBottom(MultiTaskModel):
    """``shared_bottom``: shared embeddings + shared MLP, small per-task towers."""

    variant = "shared_bottom"

    def __init__(self, tables, fields, numeric, model, tasks, tuning=None, **kwargs):
        super().__init__(tables, fields, numeric, model, tasks, tuning, **kwargs)
        m = self.model_config
        self.embedding, self.interaction = self._front("shared")
        self.bottom = MLP(m.mlp, m.activation, name="shared_bottom")
        self.towers = {t: MLP(m.tower, m.activation, name=f"{t}_tower") for t in self.task_names}
        self.heads = {t: self._head(t) for t in self.task_names}

    def call(self, inputs, training=False):
        h = self.bottom(self.interaction(self.embedding(inputs)))
        return {t: tf.squeeze(self.heads[t](self.towers[t](h)), -1) for t in self.task_names}


class GatedExperts(MultiTaskModel):
    """``mmoe`` / ``cgc`` / ``ple``: gated mixtures of experts over shared embeddings.

    ``mmoe``: ``num_experts`` shared experts, one softmax gate per task.
    ``cgc``: ``specific_experts`` per task + ``shared_experts``, one CGC level.
    ``ple``: ``ple_levels`` (>= 2) stacked CGC levels (progressive layered extraction).
    """

    def __init__(self, tables, fields, numeric, model, tasks, tuning=None, variant="mmoe", **kwargs):
        super().__init__(tables, fields, numeric, model, tasks, tuning, **kwargs)
        self.variant = variant
        m = self.model_config
        T = len(self.task_names)
        self.embedding, self.interaction = self._front("shared")
        if variant == "mmoe":
            levels = [CGCLevel(T, 0, m.num_experts, m.expert_mlp, m.activation, name="mmoe")]
        elif variant == "cgc":
            levels = [CGCLevel(T, m.specific_experts, m.shared_experts, m.expert_mlp, m.activation, name="cgc")]
        elif variant == "ple":
            levels = [
                CGCLevel(
                    T,
                    m.specific_experts,
                    m.shared_experts,
                    m.expert_mlp,
                    m.activation,
                    with_shared_output=(i < m.ple_levels - 1),
                    name=f"ple_level{i}",
                )
                for i in range(m.ple_levels)
            ]
        else:
            raise ValueError(f"unknown gated variant {variant!r}")
        self.levels = levels
        self.towers = {t: MLP(m.tower, m.activation, name=f"{t}_tower") for t in self.task_names}
        self.heads = {t: self._head(t) for t in self.task_names}

    def call(self, inputs, training=False):
        x = self.interaction(self.embedding(inputs))
        h = [x] * (len(self.task_names) + 1)
        for level in self.levels:
            h = level(h)
        return {t: tf.squeeze(self.heads[t](self.towers[t](h[i])), -1) for i, t in enumerate(self.task_names)}

    def get_config(self):
        return {**super().get_config(), "variant": self.variant}


class ESMM(MultiTaskModel):
    """``esmm``: entire-space multi-task model.

    Shared embeddings, one tower per task. A *conditional* task (sample space
    ``<parent label> == 1`` where the parent is a binary task) is trained through
    ``p_parent * p_task`` against ``y_parent * y_task`` over the parent's space
    (e.g. CTCVR on all impressions); its output is still the conditional ``p_task``.
    """

    variant = "esmm"

    def __init__(self, tables, fields, numeric, model, tasks, tuning=None, **kwargs):
        super().__init__(tables, fields, numeric, model, tasks, tuning, **kwargs)
        m = self.model_config
        self.parents = esmm_parents(self.tasks)
        self.embedding, self.interaction = self._front("shared")
        self.towers = {t: MLP(m.mlp, m.activation, name=f"{t}_tower") for t in self.task_names}
        self.heads = {t: self._head(t) for t in self.task_names}

    def call(self, inputs, training=False):
        x = self.interaction(self.embedding(inputs))
        return {t: tf.squeeze(self.heads[t](self.towers[t](x)), -1) for t in self.task_names}

    def stream_task(self, task: str) -> str:
        # a conditional task trains through p_parent * p_task over the parent's space
        return self.parents.get(task, task)

    def task_losses(self, labels, preds, spaces, tasks=None):
        out = {}
        for t in self.tasks:
            if tasks is not None and t.name not in tasks:
                continue
            parent = self.parents.get(t.name)
            if parent is None:
                out[t.name] = task_loss(t, labels[t.name], preds[t.name], spaces[t.name])
            else:
                joint_pred = preds[parent] * preds[t.name]
                joint_label = tf.cast(labels[parent], tf.float32) * tf.cast(labels[t.name], tf.float32)
                out[t.name] = task_loss(t, joint_label, joint_pred, spaces[parent])
        return out


def esmm_parents(tasks: list[TaskConfig]) -> dict[str, str]:
    """``{conditional task: parent task}`` for ESMM; raises if a space cannot be chained."""
    label_of = {t.label.column: t.name for t in tasks if t.type == "binary" and hasattr(t.label, "column")}
    parents = {}
    for t in tasks:
        clause = t.where_clause
        if clause is None:
            continue
        col, op, val = clause
        if op != "==" or val != 1.0 or col not in label_of:
            raise ValueError(
                f"esmm: task {t.name!r} has sample space {t.where!r}; ESMM needs '<binary task label> == 1'"
            )
        parents[t.name] = label_of[col]
    return parents


class MaskedNetwork(MultiTaskModel):
    """The sparse-sharing network sNET (``connection`` / ``neuron`` variants).

    Shared embeddings + interaction feed one over-parameterized MLP of
    :class:`MaskedDense` layers; task ``t`` runs the MLP with its own mask ``M_t``
    (``sNET ⊙ M_t``) and has its own dense head. With all-ones masks every
    connection is shared (full sharing). ``use_masks=False`` builds the same graph
    without the multiply (benchmark baseline).
    """

    variant = "masked"

    def __init__(self, tables, fields, numeric, model, tasks, tuning=None, use_masks: bool = True, **kwargs):
        super().__init__(tables, fields, numeric, model, tasks, tuning, **kwargs)
        m, tuning = self.model_config, self.tuning
        self.use_masks = use_masks
        self.embedding, self.interaction = self._front("shared")
        # "bigger net" tuning: widen the over-parameterized MLP before pruning it
        units = [max(1, int(round(u * tuning.width_multiplier))) for u in m.mlp]
        self.mlp = MaskedMLP(units, len(self.task_names), m.activation, use_masks, name="snet")
        self.heads = {t: self._head(t) for t in self.task_names}
        # "multi-view" tuning: a small task-exclusive embedding of every field, fed beside the
        # shared features into the first masked layer (the same input rows for every task,
        # each task filling them with its own view)
        self.views = {}
        if tuning.multi_view_dim > 0:
            dv = tuning.multi_view_dim
            view_tables = {k: (rows, dv) for k, (rows, _) in self.table_spec.items()}
            self.views = {
                t: FeatureEmbedding(view_tables, self.fields, self.numeric, dv, name=f"{t}_view") for t in self.task_names
            }

    def task_input(self, shared, inputs, task: str):
        if not self.views:
            return shared
        view = self.views[task](inputs)
        return tf.concat([shared, tf.reshape(view, [-1, view.shape[1] * view.shape[2]])], axis=1)

    def call(self, inputs, training=False):
        x = self.interaction(self.embedding(inputs))
        return {
            t: tf.squeeze(self.heads[t](self.mlp(self.task_input(x, inputs, t), task=i)), -1)
            for i, t in enumerate(self.task_names)
        }

    def call_task(self, inputs, task_index: int):
        """Only task ``task_index``'s prediction ``[B]`` (its masked subnetwork)."""
        t = self.task_names[task_index]
        x = self.interaction(self.embedding(inputs))
        return tf.squeeze(self.heads[t](self.mlp(self.task_input(x, inputs, t), task=task_index)), -1)

    def task_predictions(self, inputs, tasks, training=False):
        # only the heads asked for: a task step never runs (or differentiates) another task's mask
        x = self.interaction(self.embedding(inputs))
        return {
            t: tf.squeeze(self.heads[t](self.mlp(self.task_input(x, inputs, t), task=self.task_names.index(t))), -1)
            for t in tasks
        }

    @property
    def masked_layers(self):
        return self.mlp.denses

    def get_config(self):
        return {**super().get_config(), "use_masks": self.use_masks}


_REGISTRY = {
    "single": SingleTaskModels,
    "layer": LayerSharing,
    "shared_bottom": SharedBottom,
    "mmoe": GatedExperts,
    "cgc": GatedExperts,
    "ple": GatedExperts,
    "esmm": ESMM,
    "masked": MaskedNetwork,
    "connection": MaskedNetwork,
    "neuron": MaskedNetwork,
}

CUSTOM_OBJECTS = {cls.__name__: cls for cls in set(_REGISTRY.values())}
for _cls in CUSTOM_OBJECTS.values():
    _serializable(_cls)


def dummy_inputs(config: ProjectConfig, rows: int = 1) -> dict:
    """All-zero model inputs of ``rows`` rows (id 0 = padding): builds a model's variables without data."""
    return {k: tf.zeros([rows] + list(s.shape[1:]), s.dtype) for k, s in input_signature(config).items()}


def build_model(config: ProjectConfig, tables: dict, variant: str | None = None, seed: int | None = None, **kwargs):
    """Build and initialize a variant (call it inside ``strategy.scope()`` to distribute it).

    Args:
      config: the project config (``config.model.variant`` unless ``variant`` given); the
        model keeps only its typed sections (model, tasks, tuning) and the feature layout.
      tables: ``{table: EmbeddingTable}`` or ``{table: (rows, dim)}``.
      seed: seeds Python, NumPy and TensorFlow before the weights are created.
    Returns the model with its variables created.
    """
    variant = variant or config.model.variant
    if variant not in _REGISTRY:
        raise ValueError(f"unknown variant {variant!r}; choose from {sorted(_REGISTRY)}")
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    spec = {k: ((v.size, v.dim) if hasattr(v, "size") else tuple(v)) for k, v in tables.items()}
    cls = _REGISTRY[variant]
    if cls is GatedExperts:
        kwargs["variant"] = variant
    if variant == "esmm":
        esmm_parents(config.tasks)  # fail early with a clear message
    fields, numeric = feature_fields(config)
    model_section = config.model.model_copy(update={"variant": variant})
    model = cls(spec, fields, numeric, model_section.model_dump(), [t.model_dump() for t in config.tasks],
                config.tuning.model_dump(), name=variant, **kwargs)
    model(dummy_inputs(config))
    return model
