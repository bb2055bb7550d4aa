import numpy as np
import tensorflow as tf

from models.config import parse_config
from models.losses import pointwise_loss, task_loss, weighted_total
from tests.conftest import tiny_config_dict

CFG = parse_config(tiny_config_dict())
CTR, CVR = CFG.task("ctr"), CFG.task("cvr")


def test_cvr_loss_ignores_non_clicked_rows():
    rng = np.random.default_rng(0)
    click = (rng.random(64) < 0.3).astype(np.float32)
    y = rng.random(64).astype(np.float32)
    p = rng.random(64).astype(np.float32)
    base = task_loss(CVR, y, p, click).numpy()
    y2, p2 = y.copy(), p.copy()
    y2[click == 0] = rng.random(int((click == 0).sum()))  # change labels off the sample space
    p2[click == 0] = 0.999
    assert task_loss(CVR, y2, p2, click).numpy() == base
    # averaged over clicked rows only (not over the batch)
    expected = np.mean((y[click == 1] - p[click == 1]) ** 2)
    np.testing.assert_allclose(base, expected, rtol=1e-5)


def test_empty_space_gives_zero_loss_not_nan():
    assert task_loss(CVR, np.ones(4), np.full(4, 0.5), np.zeros(4)).numpy() == 0.0


def test_bce_and_focal():
    y = tf.constant([1.0, 0.0])
    p = tf.constant([0.8, 0.3])
    bce = pointwise_loss(CTR, y, p).numpy()
    np.testing.assert_allclose(bce, [-np.log(0.8), -np.log(0.7)], rtol=1e-5)
    focal = CTR.model_copy(update={"loss": "focal", "focal_gamma": 0.0, "focal_alpha": 0.75})
    np.testing.assert_allclose(pointwise_loss(focal, y, p).numpy(), [0.75 * bce[0], 0.25 * bce[1]], rtol=1e-5)
    focal2 = CTR.model_copy(update={"loss": "focal"})  # gamma 2 down-weights easy examples
    assert np.all(pointwise_loss(focal2, y, p).numpy() < pointwise_loss(focal, y, p).numpy())


def test_weighted_total_uses_config_weights():
    total = weighted_total({"ctr": 1.0, "cvr": 2.0}, CFG.tasks)
    assert abs(float(total) - (0.7 * 1.0 + 0.3 * 2.0)) < 1e-6
    assert abs(float(weighted_total({"ctr": 1.0, "cvr": 2.0}, CFG.tasks, {"cvr": 1.0})) - 2.7) < 1e-6
