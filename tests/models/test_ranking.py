import numpy as np

from models.ranking import rank_score, simulate_pairings, view_seconds_at_k


def test_view_seconds_at_k():
    req = np.array(["a", "a", "a", "b", "b"])
    outcome = np.array([10.0, 30.0, 20.0, 5.0, 1.0])
    perfect = view_seconds_at_k(req, outcome, outcome, k=2)
    assert perfect == ((30 + 20) + (5 + 1)) / 2
    worst = view_seconds_at_k(req, -outcome, outcome, k=1)
    assert worst == (10 + 1) / 2


def test_rank_score_and_pairings():
    s = rank_score([0.5], [0.5], [100.0], a=1, b=1, c=1)
    assert np.isclose(s[0], 25.0)
    rng = np.random.default_rng(0)
    n = 400
    req = np.repeat(np.arange(50), 8)
    ctr, cvr, length = rng.random(n), rng.random(n), rng.uniform(10, 300, n)
    truth = ctr * cvr * length
    out = simulate_pairings({"oracle": (ctr, cvr), "noisy": (ctr * rng.random(n), cvr)}, req, length, truth, k=3)
    assert out["oracle"] >= out["noisy"] >= out["random order"] * 0.9
