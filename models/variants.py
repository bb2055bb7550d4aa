"""Multi-task ranking models: every baseline of design.md §4 and the masked network.

All variants take the encoded feature dict (see ``models.features.input_signature``)
and return ``{task: [B] probability}``. They share :class:`MultiTaskModel`, whose
``train_step`` computes each task's loss over its own sample space and the
weighted sum ``L = sum_k w_k L_k`` (Eq. 2). Training data is
``(inputs, {task: label}, {task: in-space 0/1})``.
"""

from __future__ import annotations

import json

import tensorflow as tf

from models.config import MultiCategoricalFeature, NumericFeature, ProjectConfig
from models.features import table_of
from models.layers import MLP, CGCLevel, FeatureEmbedding, Interaction, MaskedMLP
from models.losses import task_loss, weighted_total


def _fields(config: ProjectConfig):
    fields, numeric = [], []
    for f in config.features:
        if isinstance(f, NumericFeature):
            numeric.append(f.name)
        else:
            fields.append((f.name, table_of(f), "multi" if isinstance(f, MultiCategoricalFeature) else "categorical"))
    return fields, numeric


class MultiTaskModel(tf.keras.Model):
    """Base class. Subclasses implement ``call(inputs) -> {task: [B]}``."""

    variant = "base"

    def __init__(self, config_json: str, tables: dict, **kwargs):
        super().__init__(**kwargs)
        self._config_json = config_json
        self.project = ProjectConfig.model_validate_json(config_json)
        self.table_spec = {k: tuple(v) for k, v in tables.items()}
        self.tasks = list(self.project.tasks)
        self.task_names = [t.name for t in self.tasks]
        # loss weights live in variables so a callback can change them between epochs
        # (PLE's dynamic weights) without retracing the compiled train step
        self.task_weights = {
            t.name: tf.Variable(float(t.weight), trainable=False, dtype=tf.float32, name=f"{t.name}_loss_weight")
            for t in self.tasks
        }

    # ---- building blocks
    def _front(self, name: str):
        fields, numeric = _fields(self.project)
        emb = FeatureEmbedding(self.table_spec, fields, numeric, self.project.model.embedding_dim, name=f"{name}_embedding")
        return emb, Interaction(self.project.model.interaction, name=f"{name}_interaction")

    @staticmethod
    def _head(task: str):
        return tf.keras.layers.Dense(1, activation="sigmoid", name=f"{task}_head")

    # ---- losses
    def task_losses(self, labels: dict, preds: dict, spaces: dict) -> dict:
        return {t.name: task_loss(t, labels[t.name], preds[t.name], spaces[t.name]) for t in self.tasks}

    def train_step(self, data):
        x, y, w = data
        with tf.GradientTape() as tape:
            preds = self(x, training=True)
            losses = self.task_losses(y, preds, w)
            total = weighted_total(losses, self.tasks, self.task_weights)
        grads = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, self.trainable_variables) if g is not None]
        )
        return {"loss": total, **{f"{k}_loss": v for k, v in losses.items()}}

    def test_step(self, data):
        x, y, w = data
        preds = self(x, training=False)
        losses = self.task_losses(y, preds, w)
        return {"loss": weighted_total(losses, self.tasks, self.task_weights), **{f"{k}_loss": v for k, v in losses.items()}}

    def predict_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self(x, training=False)

    def get_config(self):
        return {"config_json": self._config_json, "tables": self.table_spec}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class SingleTaskModels(MultiTaskModel):
    """``single``: one independent DLRM per task (own embeddings, interaction, MLP)."""

    variant = "single"

    def __init__(self, config_json, tables, **kwargs):
        super().__init__(config_json, tables, **kwargs)
        m = self.project.model
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

    def __init__(self, config_json, tables, **kwargs):
        super().__init__(config_json, tables, **kwargs)
        m = self.project.model
        self.embedding, self.interaction = self._front("shared")
        self.towers = {t: MLP(m.mlp, m.activation, name=f"{t}_tower") for t in self.task_names}
        self.heads = {t: self._head(t) for t in self.task_names}

    def call(self, inputs, training=False):
        x = self.interaction(self.embedding(inputs))
        return {t: tf.squeeze(self.heads[t](self.towers[t](x)), -1) for t in self.task_names}


class SharedBottom(MultiTaskModel):
    """``shared_bottom``: shared embeddings + shared MLP, small per-task towers."""

    variant = "shared_bottom"

    def __init__(self, config_json, tables, **kwargs):
        super().__init__(config_json, tables, **kwargs)
        m = self.project.model
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

    def __init__(self, config_json, tables, variant="mmoe", **kwargs):
        super().__init__(config_json, tables, **kwargs)
        self.variant = variant
        m = self.project.model
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

    def __init__(self, config_json, tables, **kwargs):
        super().__init__(config_json, tables, **kwargs)
        m = self.project.model
        self.parents = esmm_parents(self.project)
        self.embedding, self.interaction = self._front("shared")
        self.towers = {t: MLP(m.mlp, m.activation, name=f"{t}_tower") for t in self.task_names}
        self.heads = {t: self._head(t) for t in self.task_names}

    def call(self, inputs, training=False):
        x = self.interaction(self.embedding(inputs))
        return {t: tf.squeeze(self.heads[t](self.towers[t](x)), -1) for t in self.task_names}

    def task_losses(self, labels, preds, spaces):
        out = {}
        for t in self.tasks:
            parent = self.parents.get(t.name)
            if parent is None:
                out[t.name] = task_loss(t, labels[t.name], preds[t.name], spaces[t.name])
            else:
                joint_pred = preds[parent] * preds[t.name]
                joint_label = tf.cast(labels[parent], tf.float32) * tf.cast(labels[t.name], tf.float32)
                out[t.name] = task_loss(t, joint_label, joint_pred, spaces[parent])
        return out


def esmm_parents(config: ProjectConfig) -> dict[str, str]:
    """``{conditional task: parent task}`` for ESMM; raises if a space cannot be chained."""
    label_of = {t.label.column: t.name for t in config.tasks if t.type == "binary" and hasattr(t.label, "column")}
    parents = {}
    for t in config.tasks:
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

    def __init__(self, config_json, tables, use_masks: bool = True, **kwargs):
        super().__init__(config_json, tables, **kwargs)
        m, tuning = self.project.model, self.project.tuning
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
            fields, numeric = _fields(self.project)
            dv = tuning.multi_view_dim
            view_tables = {k: (rows, dv) for k, (rows, _) in self.table_spec.items()}
            self.views = {
                t: FeatureEmbedding(view_tables, fields, numeric, dv, name=f"{t}_view") for t in self.task_names
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


def build_model(config: ProjectConfig, tables: dict, variant: str | None = None, seed: int | None = None, **kwargs):
    """Build and initialize a variant.

    Args:
      config: the project config (``config.model.variant`` unless ``variant`` given).
      tables: ``{table: EmbeddingTable}`` or ``{table: (rows, dim)}``.
      seed: seeds Python, NumPy and TensorFlow before the weights are created.
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
        esmm_parents(config)  # fail early with a clear message
    model = cls(config.model_dump_json(), spec, name=variant, **kwargs)
    return model


def config_json_of(model: MultiTaskModel) -> dict:
    return json.loads(model._config_json)
