"""Compaction keeps the outputs (1e-5) while really removing units / storing base weights once."""

import numpy as np
import pytest
import tensorflow as tf

from models.variants import build_model
from serving.compact import compact


def _trained_like(prepared, structure, seed=0):
    cfg, tables, *_ = prepared
    model = build_model(cfg, tables, variant=structure, seed=seed)
    x = prepared.batch(512)
    rng = np.random.default_rng(seed)
    for layer in model.masked_layers:
        # non-zero biases, so dead units output constants that must be folded, not dropped
        layer.bias.assign(rng.uniform(0.05, 0.5, layer.bias.shape).astype(np.float32))
        fan_in, units = layer.kernel.shape
        for t in range(len(model.task_names)):
            if structure == "neuron":
                m = np.ones((fan_in, units), np.float32)
                m[:, rng.random(units) < 0.5] = 0.0  # whole units off
            else:
                m = (rng.random((fan_in, units)) < 0.3).astype(np.float32)
                m[:, rng.random(units) < 0.25] = 0.0  # and some units without any input
            layer.set_mask(t, m)
    return model, x


@pytest.mark.parametrize("structure", ["neuron", "connection"])
def test_compact_equals_masked_network(prepared, structure):
    model, x = _trained_like(prepared, structure)
    full = model(x)
    small = compact(model)
    got = small(x)
    for t in model.task_names:
        np.testing.assert_allclose(got[t].numpy(), full[t].numpy(), atol=1e-5)
    dense_weights = sum(int(np.prod(layer.kernel.shape)) + int(layer.bias.shape[0]) for layer in model.masked_layers)
    if structure == "neuron":
        # each task's tower keeps only its live units: fewer weights than one dense MLP per task
        assert small.stored_weights() < 2 * dense_weights * 0.6
        assert all(w.shape[1] < layer.kernel.shape[1] for (w, _), layer in zip(small.towers["ctr"], model.masked_layers))
    else:
        # base weights once (not one dense copy per task)
        assert all(a is b for a, b in zip(small.shared["ctr"], small.shared["cvr"]))
        assert small.stored_weights() < 2 * dense_weights


def test_compact_exports_as_savedmodel(prepared, tmp_path):
    model, x = _trained_like(prepared, "neuron", seed=1)
    small = compact(model)
    spec = {k: tf.TensorSpec([None] + list(v.shape[1:]), tf.as_dtype(v.dtype), name=k) for k, v in x.items()}
    small.serve = tf.function(lambda inputs: small(inputs), input_signature=[spec])
    tf.saved_model.save(small, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    out = loaded.serve(x)
    for t in model.task_names:
        np.testing.assert_allclose(out[t].numpy(), model(x)[t].numpy(), atol=1e-5)
