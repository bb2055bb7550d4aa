import numpy as np
import tensorflow as tf

from models.keras_metrics import LogLoss


def test_logloss_is_keras_binary_crossentropy_and_round_trips_its_config():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(64, 1)).astype("float32")
    p = rng.uniform(0.01, 0.99, size=(64, 1)).astype("float32")
    w = rng.uniform(0, 1, size=(64,)).astype("float32")
    ours, keras = LogLoss(), tf.keras.metrics.BinaryCrossentropy()
    for m in (ours, keras):
        m.update_state(y[:40], p[:40], sample_weight=w[:40])
        m.update_state(y[40:], p[40:], sample_weight=w[40:])
    assert ours.name == "logloss"
    np.testing.assert_allclose(ours.result().numpy(), keras.result().numpy(), rtol=1e-6)
    expected = -np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))[:, 0]) / np.sum(w)
    np.testing.assert_allclose(ours.result().numpy(), expected, rtol=1e-4)
    # TFMA rebuilds the metric from its config in every worker
    again = tf.keras.metrics.deserialize({"class_name": "LogLoss", "config": ours.get_config()},
                                         custom_objects={"LogLoss": LogLoss})
    assert isinstance(again, LogLoss) and again.name == "logloss"
