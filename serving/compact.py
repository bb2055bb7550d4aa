"""Compaction of a trained sparse-sharing network (``connection`` / ``neuron``) for serving.

:func:`compact` turns a :class:`models.variants.MaskedNetwork` into a :class:`CompactNetwork`
with the same inputs and outputs (``{task: [B]}``, equal within float rounding):

- every task's masked kernels ``K_l ⊙ M_t,l`` are analysed layer by layer. A hidden unit
  whose incoming connections are all masked for that task is *dead*: it outputs the constant
  ``act(b_j + folded_j)``; that constant times its outgoing weights is **folded into the next
  layer's bias** (design.md §3) and the unit is removed. Inputs no kept unit reads are dropped.
- ``structure="neuron"`` (unit masks): each task gets its own small dense tower
  ``[kept_in, kept_out]`` per layer — real FLOPs and latency savings.
- ``structure="connection"`` (unstructured masks): the base weights are stored **once**, sliced
  to the rows/columns used by at least one task, with one ``uint8`` mask per task (not a dense
  copy per task); the forward pass is ``x @ (K ⊙ M_t)`` on the smaller kernel. Unstructured
  zeros inside the kept block still cost a dense multiply on CPU.

Embeddings, the interaction and the per-task heads are reused as they are (never masked).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

def _plan_task(kernels, biases, masks, head_w, head_b, act_np):
    """Per-task compaction plan: input rows kept, and per layer (keep_cols, W, b); head (W, b)."""
    n_in = kernels[0].shape[0]
    keep_rows = np.flatnonzero((kernels[0] * masks[0] != 0).any(axis=1) | (masks[0] != 0).any(axis=1))
    if len(keep_rows) == 0:
        keep_rows = np.arange(min(1, n_in))
    first_rows = keep_rows
    layers = []
    const_prev = None  # (dead unit indices, their constant outputs) of the previous layer
    for K, b, M in zip(kernels, biases, masks):
        Km = (K * M).astype(np.float64)
        fold = np.zeros(K.shape[1])
        if const_prev is not None:
            dead_idx, dead_val = const_prev
            fold = dead_val @ Km[dead_idx] if len(dead_idx) else fold
        alive = (Km[keep_rows] != 0).any(axis=0) if len(keep_rows) else np.zeros(K.shape[1], bool)
        alive |= (M[keep_rows] != 0).any(axis=0) if len(keep_rows) else False
        keep_cols = np.flatnonzero(alive)
        dead_cols = np.flatnonzero(~alive)
        W = Km[np.ix_(keep_rows, keep_cols)]
        bias = (b.astype(np.float64) + fold)[keep_cols]
        dead_val = act_np(b.astype(np.float64)[dead_cols] + fold[dead_cols])
        layers.append((keep_rows, keep_cols, W.astype(np.float32), bias.astype(np.float32), M[np.ix_(keep_rows, keep_cols)]))
        const_prev = (dead_cols, dead_val)
        keep_rows = keep_cols
    dead_idx, dead_val = const_prev
    hw = head_w.astype(np.float64)
    hb = head_b.astype(np.float64) + (dead_val @ hw[dead_idx] if len(dead_idx) else 0.0)
    return first_rows, layers, (hw[keep_rows].astype(np.float32), hb.astype(np.float32))


class CompactNetwork(tf.Module):
    """Serving-only network: ``__call__(inputs, training=False) -> {task: [B] probability}``."""

    def __init__(self, embedding, interaction, task_names, structure, gather, towers, heads, shared=None, activation="relu",
                 views=None):
        super().__init__()
        self.embedding, self.interaction = embedding, interaction
        self.task_names = list(task_names)
        self.structure = structure
        self.towers = towers  # neuron: {task: [(W, b), ...]} ; connection: {task: [(mask, b), ...]}
        self.heads = heads  # {task: (W, b)}
        self.shared = shared  # connection: [K_l sliced once]
        self.gather = gather  # {task: input columns its first layer reads}
        self.activation = tf.keras.activations.get(activation)
        self.views = views or {}

    def __call__(self, inputs, training=False):
        x = self.interaction(self.embedding(inputs))
        out = {}
        for t in self.task_names:
            h = x
            if t in self.views:
                v = self.views[t](inputs)
                h = tf.concat([h, tf.reshape(v, [-1, v.shape[1] * v.shape[2]])], axis=1)
            h = tf.gather(h, self.gather[t], axis=1)
            for i, (a, b) in enumerate(self.towers[t]):
                # connection: the uint8 mask is stored, the float mask exists only during the call
                kernel = a if self.structure == "neuron" else self.shared[t][i] * tf.cast(a, self.shared[t][i].dtype)
                h = self.activation(tf.matmul(h, kernel) + b)
            w, hb = self.heads[t]
            out[t] = tf.squeeze(tf.sigmoid(tf.matmul(h, w) + hb), -1)
        return out

    def stored_weights(self) -> int:
        """Number of stored float weights of the MLP part (kernels, biases; masks count as bytes/4)."""
        n = 0
        for t in self.task_names:
            for a, b in self.towers[t]:
                n += (int(np.prod(a.shape)) if self.structure == "neuron" else int(np.prod(a.shape)) // 4) + int(b.shape[0])
        if self.shared:
            seen = set()
            for t in self.task_names:
                for k in self.shared[t]:
                    if id(k) not in seen:
                        seen.add(id(k))
                        n += int(np.prod(k.shape))
        return n


def compact(model) -> CompactNetwork:
    """Compact a trained :class:`~models.variants.MaskedNetwork` (masks already applied)."""
    structure = model.model_config.variant if model.model_config.variant in ("connection", "neuron") else "connection"
    act_name = model.model_config.activation
    activation = tf.keras.activations.get(act_name)

    def act_np(v):  # the constant output of dead units, with the network's own activation
        return activation(tf.constant(v, tf.float64)).numpy()

    layers = model.masked_layers
    kernels = [layer.kernel.numpy() for layer in layers]
    biases = [layer.bias.numpy() for layer in layers]
    plans = {}
    for ti, t in enumerate(model.task_names):
        masks = [layer.mask[ti].numpy() for layer in layers]
        head = model.heads[t]
        plans[t] = _plan_task(kernels, biases, masks, head.kernel.numpy(), head.bias.numpy(), act_np)

    towers, heads, gather, shared = {}, {}, {}, None
    if structure == "neuron":
        for t, (rows, tower, (hw, hb)) in plans.items():
            towers[t] = [(tf.Variable(W, trainable=False), tf.Variable(b, trainable=False)) for _, _, W, b, _ in tower]
            heads[t] = (tf.Variable(hw, trainable=False), tf.Variable(hb, trainable=False))
            gather[t] = tf.constant(rows, tf.int32)
    else:
        # one shared kernel block per layer: the union of every task's kept rows/columns
        shared = {}
        union_rows = [np.unique(np.concatenate([plans[t][1][li][0] for t in plans])) for li in range(len(layers))]
        union_cols = [np.unique(np.concatenate([plans[t][1][li][1] for t in plans])) for li in range(len(layers))]
        blocks = [tf.Variable(kernels[li][np.ix_(union_rows[li], union_cols[li])], trainable=False) for li in range(len(layers))]
        for ti, t in enumerate(model.task_names):
            rows0, tower, (hw, hb) = plans[t]
            masks_t, biases_t = [], []
            for li, (r, c, W, b, _) in enumerate(tower):
                full_mask = layers[li].mask[ti].numpy()
                m = np.zeros((len(union_rows[li]), len(union_cols[li])), np.uint8)
                # keep this task's connections inside the union block (rows/cols it does not use stay 0)
                ri = np.searchsorted(union_rows[li], r)
                ci = np.searchsorted(union_cols[li], c)
                m[np.ix_(ri, ci)] = full_mask[np.ix_(r, c)].astype(np.uint8)
                bias_u = np.zeros(len(union_cols[li]), np.float32)
                bias_u[ci] = b
                masks_t.append(tf.constant(m))
                biases_t.append(bias_u)
            # columns of the union a task does not keep are dead for it: their output must be 0 in the
            # next layer's input, which the zero mask rows of the next layer guarantee; the head reads
            # only the task's kept columns of the last layer
            last_c = tower[-1][1]
            hw_u = np.zeros((len(union_cols[-1]), hw.shape[1]), np.float32)
            hw_u[np.searchsorted(union_cols[-1], last_c)] = hw
            towers[t] = [(m, tf.Variable(b, trainable=False)) for m, b in zip(masks_t, biases_t)]
            heads[t] = (tf.Variable(hw_u, trainable=False), tf.Variable(hb, trainable=False))
            gather[t] = tf.constant(union_rows[0], tf.int32)
            shared[t] = blocks
    return CompactNetwork(model.embedding, model.interaction, model.task_names, structure, gather, towers, heads, shared,
                          act_name, dict(model.views))


# ----------------------------------------------------------------------------- from a trained model dir


def rebuild_masked_network(model_dir: str, transform_graph: str):
    """The trained MaskedNetwork of a MaskedTrainer output (``warm_start/`` weights + stored config)."""
    import json
    from pathlib import Path

    import tensorflow_transform as tft

    from components.data import embedding_tables_from_transform
    from models.config import SPARSE_VARIANTS, ProjectConfig
    from models.variants import build_model
    from models.warm_start import load_warm_start
    from serving.export import ASSETS_EXTRA

    root = Path(model_dir)
    cfg_file = root / "Format-Serving" / ASSETS_EXTRA / "config.json"
    weights = root / "warm_start" / "weights.npz"
    if not cfg_file.exists() or not weights.exists():
        raise FileNotFoundError(f"{root}: not a MaskedTrainer output (needs Format-Serving/{ASSETS_EXTRA}/config.json and warm_start/)")
    config = ProjectConfig.model_validate(json.loads(cfg_file.read_text()))
    if config.model.variant not in SPARSE_VARIANTS:
        raise ValueError(f"{root}: variant {config.model.variant!r} has no masks to compact (needs {SPARSE_VARIANTS})")
    tft_output = tft.TFTransformOutput(transform_graph)
    tables = embedding_tables_from_transform(config, tft_output)
    model = build_model(config, tables, seed=0)
    load_warm_start(model, tables, str(root / "warm_start"))
    return model, config, tft_output


def dir_bytes(path) -> int:
    import os

    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def compact_saved_model(model_dir: str, transform_graph: str, out_dir: str) -> dict:
    """Rebuild, compact and export with the same signatures; returns a summary."""
    import json
    from pathlib import Path

    from serving.export import ASSETS_EXTRA, export_serving_model

    model, config, tft_output = rebuild_masked_network(model_dir, transform_graph)
    net = compact(model)
    extra = {}
    src_extra = Path(model_dir) / "Format-Serving" / ASSETS_EXTRA
    for name in ("mask_analytics.json", "training_summary.json"):
        if (src_extra / name).exists():
            extra[name] = (src_extra / name).read_text()
    summary = {"structure": net.structure,
               "mlp_weights_dense_per_task": int(sum(int(np.prod(l.kernel.shape)) + int(l.bias.shape[0]) for l in model.masked_layers)),
               "mlp_weights_stored_compact": net.stored_weights(),
               "towers": {t: [list(map(int, a.shape)) for a, _ in net.towers[t]] for t in net.task_names}}
    extra["compaction.json"] = json.dumps(summary, indent=1)
    export_serving_model(net, tft_output, config, out_dir, extra)
    return summary


def compare_saved_models(full_dir: str, compact_dir: str, examples: list[bytes], repeats: int = 30) -> dict:
    """Max output difference and CPU latency (median ms) of ``serving_default`` at batch 1 and 256."""
    import time

    full = tf.saved_model.load(full_dir).signatures["serving_default"]
    small = tf.saved_model.load(compact_dir).signatures["serving_default"]
    batch = tf.constant(examples[:256])
    a, b = full(examples=batch), small(examples=batch)
    diff = max(float(np.max(np.abs(a[k].numpy() - b[k].numpy()) / np.maximum(1.0, np.abs(a[k].numpy())))) for k in a)
    out = {"max_rel_diff": diff, "bytes_full": dir_bytes(full_dir), "bytes_compact": dir_bytes(compact_dir)}
    for n in (1, 256):
        x = tf.constant(examples[:n])
        times = {"full": [], "compact": []}
        for fn in (full, small):
            fn(examples=x)  # warm up
        for _ in range(repeats):  # alternate so machine noise hits both alike
            for name, fn in (("full", full), ("compact", small)):
                t0 = time.perf_counter()
                fn(examples=x)
                times[name].append((time.perf_counter() - t0) * 1e3)
        out[f"latency_ms_b{n}"] = {k: float(np.median(v)) for k, v in times.items()}
    return out
