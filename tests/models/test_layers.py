import numpy as np
import tensorflow as tf

from models.layers import CGCLevel, FeatureEmbedding, Interaction, MaskedDense, MaskedMLP


def test_masked_dense_all_ones_equals_dense():
    x = tf.random.normal([7, 5], seed=1)
    dense = tf.keras.layers.Dense(3, activation="relu")
    dense(x)
    masked = MaskedDense(3, num_masks=2, activation="relu")
    masked(x)
    masked.kernel.assign(dense.kernel)
    masked.bias.assign(tf.random.normal([3], seed=2))
    dense.bias.assign(masked.bias)
    for t in range(2):
        np.testing.assert_array_equal(masked(x, task=t).numpy(), dense(x).numpy())


def test_zero_in_mask_removes_exactly_that_connection():
    x = tf.random.normal([4, 5], seed=3)
    layer = MaskedDense(3, num_masks=2)  # linear, so differences are exact products
    full = layer(x, task=0).numpy()
    mask = np.ones((5, 3), np.float32)
    mask[2, 1] = 0.0
    layer.set_mask(1, mask)
    cut = layer(x, task=1).numpy()
    expected = full.copy()
    expected[:, 1] -= x.numpy()[:, 2] * layer.kernel.numpy()[2, 1]
    np.testing.assert_allclose(cut, expected, rtol=1e-5, atol=1e-6)
    # the other columns and the other task's output are untouched, and so is the kernel
    np.testing.assert_array_equal(cut[:, [0, 2]], full[:, [0, 2]])
    np.testing.assert_array_equal(layer(x, task=0).numpy(), full)
    assert layer.kernel.numpy()[2, 1] != 0.0


def test_mask_gets_no_gradient_and_masked_weight_gets_zero_gradient():
    x = tf.random.normal([4, 5], seed=4)
    layer = MaskedDense(3, num_masks=1)
    layer(x)
    mask = np.ones((5, 3), np.float32)
    mask[0, 0] = 0.0
    layer.set_mask(0, mask)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, task=0) ** 2)
    g_kernel = tape.gradient(loss, layer.kernel)
    assert g_kernel.numpy()[0, 0] == 0.0
    assert all(w is not layer.mask for w in layer.trainable_weights)


def test_set_mask_rejects_wrong_shape():
    layer = MaskedDense(3, num_masks=1)
    layer(tf.zeros([1, 5]))
    try:
        layer.set_mask(0, np.ones((3, 5)))
    except ValueError as e:
        assert "mask shape" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_masks_round_trip_through_weights_and_the_keras_format(tmp_path):
    inp = tf.keras.Input([5])
    mlp = MaskedMLP([4, 2], num_masks=2, name="snet")
    out = mlp(inp, task=1)
    model = tf.keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for d in mlp.denses:
        shape = tuple(d.mask.shape[1:])
        d.set_mask(1, (rng.random(shape) > 0.5).astype(np.float32))
    x = rng.normal(size=(3, 5)).astype(np.float32)
    ref = model(x).numpy()

    model.save_weights(tmp_path / "w")
    inp2 = tf.keras.Input([5])
    mlp2 = MaskedMLP([4, 2], num_masks=2, name="snet")
    model2 = tf.keras.Model(inp2, mlp2(inp2, task=1))
    model2.load_weights(tmp_path / "w")
    for a, b in zip(mlp.denses, mlp2.denses):
        np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
    np.testing.assert_allclose(model2(x).numpy(), ref, rtol=1e-6)

    # the Keras format (config + weights; the serving export is a tf.saved_model of signatures, tested end to end):
    # a layer rebuilt from its get_config gets the masks back with the weights
    model.save(tmp_path / "model.keras")
    loaded = tf.keras.models.load_model(tmp_path / "model.keras",
                                        custom_objects={"MaskedMLP": MaskedMLP, "MaskedDense": MaskedDense})
    for a, b in zip(mlp.denses, loaded.get_layer("snet").denses):
        np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
    np.testing.assert_allclose(loaded(x).numpy(), ref, rtol=1e-6)


def test_layers_have_config():
    for layer in [MaskedDense(3, 2, "relu"), MaskedMLP([4], 2), Interaction("dot"), CGCLevel(2, 1, 1, [4])]:
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_embedding_pools_multi_values_ignoring_padding():
    emb = FeatureEmbedding({"t": (6, 2)}, [("tags", "t", "multi"), ("cat", "t", "categorical")], [], 2)
    ids = tf.constant([[1, 2, 0, 0], [3, 0, 0, 0]], tf.int64)
    out = emb({"tags": ids, "cat": tf.constant([4, 5], tf.int64)})
    assert out.shape == (2, 2, 2)
    table = emb.embeddings["t"].embeddings.numpy()
    np.testing.assert_allclose(out[0, 0], (table[1] + table[2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[1, 0], table[3], rtol=1e-6)
    np.testing.assert_allclose(out[0, 1], table[4], rtol=1e-6)


def test_interaction_shapes():
    fields = tf.random.normal([3, 5, 4])
    assert Interaction("dot")(fields).shape == (3, 5 * 4 + 10)
    assert Interaction("none")(fields).shape == (3, 20)
