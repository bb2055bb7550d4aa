"""Keras building blocks: embeddings, DLRM interaction, MLPs, masked dense, experts.

Every layer is a small ``tf.keras.layers.Layer`` with ``get_config``; shapes are in
the docstrings (``B`` = batch, ``F`` = embedded fields, ``D`` = embedding dim).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

_serializable = tf.keras.utils.register_keras_serializable(package="ncs")


def _not_autographed(call):
    """A layer's ``call``, never converted by AutoGraph, its signature kept for Keras (``training``, ``mask``).

    No layer here branches or loops on a tensor's value, so AutoGraph has nothing to convert; but a
    functional model (``tf.keras.Input`` ...) built from them would convert each ``call`` and, through it,
    Keras's own ``Layer.__call__`` machinery: 25 s to build a two-layer ``MaskedMLP`` functionally.
    """
    return tf.__internal__.decorator.make_decorator(call, tf.autograph.experimental.do_not_convert(call))


@_serializable
class FeatureEmbedding(tf.keras.layers.Layer):
    """Encoded inputs -> stacked field embeddings ``[B, F, D]``.

    Args:
      tables: ``{table: (rows, dim)}``; all dims must equal ``dim``.
      fields: ``[(feature, table, kind)]`` with kind ``categorical`` or ``multi``.
      numeric: names of numeric inputs ``[B]`` each; together they form one extra field
        through DLRM's dense-feature arm: the ReLU layers ``dense_mlp`` (``[]``: none), then a
        ReLU projection to ``dim``.
      dense_mlp: hidden widths of that bottom MLP.
    Multi-valued fields are mean-pooled over their non-padding ids (id 0 = padding).
    """

    def __init__(self, tables: dict, fields: list, numeric: list, dim: int, dense_mlp=(), **kwargs):
        super().__init__(**kwargs)
        self.dense_mlp = [int(u) for u in dense_mlp]
        self.table_spec = {k: tuple(v) for k, v in tables.items()}
        self.fields = [tuple(f) for f in fields]
        self.numeric = list(numeric)
        self.dim = dim
        self.embeddings = {
            name: tf.keras.layers.Embedding(
                rows,
                d,
                embeddings_initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05),
                name=f"emb_{name}",
            )
            for name, (rows, d) in self.table_spec.items()
        }
        self.numeric_hidden = [
            tf.keras.layers.Dense(u, activation="relu", name=f"numeric_mlp_{i}") for i, u in enumerate(self.dense_mlp)
        ] if self.numeric else []
        self.numeric_proj = (
            tf.keras.layers.Dense(dim, activation="relu", name="numeric_bottom") if self.numeric else None
        )

    @property
    def num_fields(self) -> int:
        return len(self.fields) + (1 if self.numeric else 0)

    @_not_autographed
    def call(self, inputs):
        out = []
        for name, table, kind in self.fields:
            ids = inputs[name]
            emb = self.embeddings[table](ids)
            if kind == "multi":
                valid = tf.cast(ids > 0, emb.dtype)[..., None]
                emb = tf.reduce_sum(emb * valid, axis=1) / tf.maximum(tf.reduce_sum(valid, axis=1), 1.0)
            out.append(emb)
        if self.numeric:
            dense = tf.stack([tf.cast(inputs[n], tf.float32) for n in self.numeric], axis=1)
            for layer in self.numeric_hidden:
                dense = layer(dense)
            out.append(self.numeric_proj(dense))
        return tf.stack(out, axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "tables": self.table_spec,
            "fields": self.fields,
            "numeric": self.numeric,
            "dim": self.dim,
            "dense_mlp": self.dense_mlp,
        }


@_serializable
class Interaction(tf.keras.layers.Layer):
    """``[B, F, D]`` -> ``[B, F*D + F*(F-1)/2]`` (``dot``) or ``[B, F*D]`` (``none``).

    ``dot`` is DLRM's pairwise dot-product interaction from TensorFlow
    Recommenders, concatenated with the flattened embeddings.
    """

    def __init__(self, kind: str = "dot", **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        self.dot = tfrs.layers.feature_interaction.DotInteraction(self_interaction=False) if kind == "dot" else None

    @_not_autographed
    def call(self, fields):
        flat = tf.reshape(fields, [-1, fields.shape[1] * fields.shape[2]])
        if self.dot is None:
            return flat
        pairs = self.dot(tf.unstack(fields, axis=1))
        return tf.concat([flat, pairs], axis=1)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


@_serializable
class MLP(tf.keras.layers.Layer):
    """``[B, in]`` -> ``[B, units[-1]]``: a stack of dense layers with one activation."""

    def __init__(self, units, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.units = list(units)
        self.activation = activation
        self.denses = [
            tf.keras.layers.Dense(u, activation=activation, name=f"dense_{i}") for i, u in enumerate(self.units)
        ]

    @_not_autographed
    def call(self, x):
        for d in self.denses:
            x = d(x)
        return x

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation}


@_serializable
class MaskedDense(tf.keras.layers.Layer):
    """A dense layer whose kernel is multiplied by a per-task binary mask.

    ``call(x, task=t)``: ``[B, in]`` -> ``activation(x @ (kernel * mask[t]) + bias)``.
    The mask is applied functionally in the forward pass and never written into the
    kernel, so tasks with different masks keep each other's weights. Masks are a
    non-trainable ``[num_masks, in, out]`` variable, saved with the model. Biases
    are not masked. ``use_masks=False`` runs the same graph with the raw kernel
    (the benchmark's unmasked baseline).
    """

    def __init__(self, units: int, num_masks: int = 1, activation=None, use_masks: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.num_masks = num_masks
        self.activation = tf.keras.activations.get(activation)
        self.use_masks = use_masks

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(fan_in, self.units), initializer="glorot_uniform", trainable=True
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros", trainable=True)
        self.mask = self.add_weight(
            name="mask", shape=(self.num_masks, fan_in, self.units), initializer="ones", trainable=False
        )
        super().build(input_shape)

    def masked_kernel(self, task: int = 0):
        return self.kernel * self.mask[task] if self.use_masks else self.kernel

    @_not_autographed
    def call(self, x, task: int = 0):
        return self.activation(tf.matmul(x, self.masked_kernel(task)) + self.bias)

    def set_mask(self, task: int, mask) -> None:
        mask = tf.convert_to_tensor(mask, dtype=self.mask.dtype)
        if mask.shape != self.mask.shape[1:]:
            raise ValueError(f"{self.name}: mask shape {tuple(mask.shape)} != kernel shape {tuple(self.mask.shape[1:])}")
        self.mask[task].assign(mask)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "num_masks": self.num_masks,
            "activation": tf.keras.activations.serialize(self.activation),
            "use_masks": self.use_masks,
        }


@_serializable
class MaskedMLP(tf.keras.layers.Layer):
    """``[B, in]`` -> ``[B, units[-1]]`` through :class:`MaskedDense` layers, masks of ``task``."""

    def __init__(self, units, num_masks: int, activation: str = "relu", use_masks: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units = list(units)
        self.num_masks = num_masks
        self.activation = activation
        self.use_masks = use_masks
        self.denses = [
            MaskedDense(u, num_masks, activation, use_masks, name=f"masked_dense_{i}") for i, u in enumerate(self.units)
        ]

    @_not_autographed
    def call(self, x, task: int = 0):
        for d in self.denses:
            x = d(x, task=task)
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "num_masks": self.num_masks,
            "activation": self.activation,
            "use_masks": self.use_masks,
        }


@_serializable
class ExpertGate(tf.keras.layers.Layer):
    """Softmax gate over experts: ``x [B, in]``, ``experts [B, E, H]`` -> ``[B, H]``."""

    def __init__(self, num_experts: int, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = num_experts
        self.logits = tf.keras.layers.Dense(num_experts, name="gate_logits")

    @_not_autographed
    def call(self, x, experts):
        w = tf.nn.softmax(self.logits(x), axis=-1)
        return tf.einsum("be,beh->bh", w, experts)

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts}


@_serializable
class CGCLevel(tf.keras.layers.Layer):
    """One Customized Gate Control level (PLE paper).

    Input: list of ``T`` task inputs followed by one shared input, each ``[B, in]``. Each task has ``specific`` experts, all share ``shared`` experts;
    task gate ``t`` mixes task-``t`` and shared experts. With ``with_shared_output``
    (every PLE level but the last) a shared gate mixes all experts for the next level.
    Output: list of ``T`` (+1) tensors ``[B, H]``. MMoE is the case ``specific = 0``.
    """

    def __init__(self, num_tasks, specific, shared, expert_units, activation="relu", with_shared_output=False, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        self.specific = specific
        self.shared = shared
        self.expert_units = list(expert_units)
        self.activation = activation
        self.with_shared_output = with_shared_output
        self.task_experts = [
            [MLP(expert_units, activation, name=f"task{t}_expert{e}") for e in range(specific)] for t in range(num_tasks)
        ]
        self.shared_experts = [MLP(expert_units, activation, name=f"shared_expert{e}") for e in range(shared)]
        self.task_gates = [ExpertGate(specific + shared, name=f"task{t}_gate") for t in range(num_tasks)]
        self.shared_gate = (
            ExpertGate(num_tasks * specific + shared, name="shared_gate") if with_shared_output else None
        )

    @_not_autographed
    def call(self, inputs):
        shared_in = inputs[self.num_tasks]
        shared_out = [e(shared_in) for e in self.shared_experts]
        outputs, all_specific = [], []
        for t in range(self.num_tasks):
            spec = [e(inputs[t]) for e in self.task_experts[t]]
            all_specific += spec
            outputs.append(self.task_gates[t](inputs[t], tf.stack(spec + shared_out, axis=1)))
        if self.shared_gate is not None:
            outputs.append(self.shared_gate(shared_in, tf.stack(all_specific + shared_out, axis=1)))
        return outputs

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "specific": self.specific,
            "shared": self.shared,
            "expert_units": self.expert_units,
            "activation": self.activation,
            "with_shared_output": self.with_shared_output,
        }
