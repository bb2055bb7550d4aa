"""Offline ranking simulation (the papers' online A/B test, Table 3, as an offline proxy).

Within each request the impressed items are re-ranked by
``rank_score = pCTR^a * pCVR^b * length^c``; the top ``k`` are "shown" and the
simulation reports the expected view seconds per request of those ``k``: from the
generator's true probabilities (``true_ctr * true_cvr * length``) on synthetic data,
or from the logged outcome column (e.g. ``watch_seconds``) on real logs, where only
the impressed set can be re-ranked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def rank_score(pctr, pcvr, length, a: float = 1.0, b: float = 1.0, c: float = 1.0):
    pctr = np.clip(np.asarray(pctr, dtype=np.float64), 1e-9, 1.0)
    pcvr = np.clip(np.asarray(pcvr, dtype=np.float64), 1e-9, 1.0)
    return pctr**a * pcvr**b * np.maximum(np.asarray(length, dtype=np.float64), 1e-9) ** c


def view_seconds_at_k(requests, scores, outcome, k: int) -> float:
    """Mean over requests of the summed ``outcome`` of the ``k`` best-scored items."""
    df = pd.DataFrame({"r": np.asarray(requests), "s": np.asarray(scores, dtype=np.float64), "o": np.asarray(outcome, dtype=np.float64)})
    df = df.sort_values(["r", "s"], ascending=[True, False], kind="stable")
    top = df[df.groupby("r", sort=False).cumcount() < k]
    return float(top.groupby("r", sort=False)["o"].sum().mean())


def simulate_pairings(pairings: dict, requests, length, outcome, k: int = 3, a=1.0, b=1.0, c=1.0) -> dict:
    """``pairings``: ``{label: (pctr, pcvr)}`` -> ``{label: view seconds per request}``.

    Also returns ``random`` (arbitrary order within the request) and ``logged order``
    baselines for scale.
    """
    out = {label: view_seconds_at_k(requests, rank_score(p, q, length, a, b, c), outcome, k) for label, (p, q) in pairings.items()}
    rng = np.random.default_rng(0)
    out["random order"] = view_seconds_at_k(requests, rng.random(len(outcome)), outcome, k)
    return out
