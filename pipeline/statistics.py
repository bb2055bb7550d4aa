"""Paired comparisons of variants over seeds: the numbers behind every claim in ``report.md``.

Every variant of ``ncs compare`` trains once per seed on the same split, so variant ``v`` and a
reference ``r`` form pairs ``(v_s, r_s)``. A difference is summarized by its mean over seeds and
a Student-t interval (``n - 1`` degrees of freedom); it is *significant* when the interval
excludes 0. MSE-like metrics (lower is better) compare relatively, ``100 * (v_s / r_s - 1)`` %,
like the papers' "−3.38% vs single"; AUC-like metrics compare absolutely, ``v_s - r_s``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np

from models.metrics import HIGHER_IS_BETTER


@dataclasses.dataclass(frozen=True)
class Interval:
    """``mean`` of ``n`` paired differences and its two-sided ``level`` interval ``[lo, hi]``."""

    mean: float
    lo: float
    hi: float
    n: int
    level: float = 0.95

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (needs at least 2 pairs)."""
        return self.n >= 2 and math.isfinite(self.lo) and (self.lo > 0 or self.hi < 0)

    def sign(self) -> int:
        """+1 / -1 when significantly above / below 0, else 0."""
        return 0 if not self.significant else (1 if self.mean > 0 else -1)


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``values`` (NaNs dropped; ``[nan, nan]`` with < 2)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, level)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n, level)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n, level)


def relative(metric: str) -> bool:
    """Whether ``metric`` compares relatively (in %): the lower-is-better losses (MSE, logloss)."""
    return not HIGHER_IS_BETTER.get(metric, False)


def paired_differences(records: Iterable[dict], variant: str, reference: str, task: str, metric: str) -> list[float]:
    """Per-seed ``variant - reference`` on ``task``/``metric`` (relative % for MSE-like metrics)."""
    by = {}
    for r in records:
        if r["task"] == task and r["metric"] == metric and r["variant"] in (variant, reference):
            by[(r["variant"], r["seed"])] = r["value"]
    rel = relative(metric)
    out = []
    for (v, seed), value in sorted(by.items(), key=lambda kv: kv[0][1]):
        if v != variant or (reference, seed) not in by:
            continue
        ref = by[(reference, seed)]
        if rel:
            out.append(100.0 * (value / ref - 1.0) if ref else float("nan"))
        else:
            out.append(value - ref)
    return out


def compare_pair(records: Iterable[dict], variant: str, reference: str, task: str, metric: str,
                 level: float = 0.95) -> Interval:
    """The interval of ``variant - reference`` over the seeds both ran."""
    return mean_interval(paired_differences(list(records), variant, reference, task, metric), level)


def improvement_sign(interval: Interval, metric: str) -> int:
    """+1 significantly better, -1 significantly worse, 0 not significant (direction of ``metric``)."""
    s = interval.sign()
    return s if HIGHER_IS_BETTER.get(metric, False) else -s


def format_interval(interval: Interval, metric: str) -> str:
    """``-2.10% [-3.0, -1.2]`` (relative) or ``+0.0031 [+0.0010, +0.0052]`` (absolute); ``*`` when significant."""
    if not math.isfinite(interval.mean):
        return "–"
    if relative(metric):
        body = f"{interval.mean:+.2f}%"
        ci = f" [{interval.lo:+.2f}, {interval.hi:+.2f}]" if math.isfinite(interval.lo) else ""
    else:
        body = f"{interval.mean:+.4f}"
        ci = f" [{interval.lo:+.4f}, {interval.hi:+.4f}]" if math.isfinite(interval.lo) else ""
    return body + ci + (" *" if interval.significant else "")


__all__ = ["Interval", "mean_interval", "paired_differences", "compare_pair", "improvement_sign", "format_interval",
           "relative"]
