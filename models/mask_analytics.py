"""Mask analytics: who uses which connection, FLOPs per task, the pruning curve.

``analyze`` returns a JSON-ready dict. Per layer and overall it reports each task's
density and the partition of connections into *shared by all tasks*, *<task> only*,
*partially shared* (>= 2 but not all tasks, only with 3+ tasks) and *unused* — the
colours of the NCS4CVR paper's Fig. 2; the fractions sum to 1. FLOPs count
multiply-adds of non-zero kernel weights per example (x2), next to the dense count:
unstructured zeros do not make a dense kernel faster, see docs/models.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models.masks import TaskMasks


def _partition(stack: np.ndarray, tasks: list[str]) -> dict[str, float]:
    """``stack``: ``[T, in, out]`` 0/1 -> fractions of each sharing class."""
    used = stack.sum(axis=0)
    n = stack[0].size
    T = len(tasks)
    out = {"shared": float((used == T).sum() / n)}
    for i, t in enumerate(tasks):
        only = (stack[i] > 0) & (used == 1)
        out[f"{t}_only"] = float(only.sum() / n)
    if T > 2:
        out["partial"] = float(((used >= 2) & (used < T)).sum() / n)
    out["unused"] = float((used == 0).sum() / n)
    return out


def analyze(masks: TaskMasks, rounds=None, chosen=None) -> dict:
    tasks = masks.tasks
    layers = []
    totals = {k: 0.0 for k in ["shared", *(f"{t}_only" for t in tasks), *(["partial"] if len(tasks) > 2 else []), "unused"]}
    total_size = 0
    for li, name in enumerate(masks.layer_names):
        stack = np.stack([masks.masks[t][li] for t in tasks])
        part = _partition(stack, tasks)
        size = stack[0].size
        layers.append(
            {
                "layer": name,
                "shape": list(stack.shape[1:]),
                "density": {t: float(stack[i].mean()) for i, t in enumerate(tasks)},
                "units_alive": {t: int(stack[i].any(axis=0).sum()) for i, t in enumerate(tasks)},
                **part,
            }
        )
        for k in totals:
            totals[k] += part[k] * size
        total_size += size
    overall = {k: v / total_size for k, v in totals.items()}
    dense_flops = 2 * total_size
    flops = {t: 2 * int(sum(m.sum() for m in masks.masks[t])) for t in tasks}
    out = {
        "structure": masks.structure,
        "tasks": tasks,
        "layers": layers,
        "overall": overall,
        "density": {t: masks.density(t) for t in tasks},
        "flops_per_example": {"dense_mlp": dense_flops, **{t: flops[t] for t in tasks}},
        "flops_fraction": {t: flops[t] / dense_flops for t in tasks},
    }
    if len(tasks) >= 2:
        out["overlap"] = overlap(masks, tasks[0], tasks[1])
    if rounds is not None:
        out["search"] = [r if isinstance(r, dict) else r.__dict__ for r in rounds]
    if chosen is not None:
        out["chosen_round"] = dict(chosen)
    return out


def overlap(masks: TaskMasks, a: str, b: str) -> dict:
    """How much two tasks' masks share, against what their densities alone would give.

    Fractions of all MLP connections: ``shared`` (in both masks), ``nested`` (the most two
    masks of these per-layer densities can share: the sparser inside the denser) and
    ``independent`` (expected when each mask were drawn at random at its densities).
    ``containment``: the part of the sparser mask that lies inside the other (1 = nested).
    """
    shared = nested = independent = sparser = 0.0
    total = 0
    for ma, mb in zip(masks.masks[a], masks.masks[b]):
        n = ma.size
        da, db = float(ma.mean()), float(mb.mean())
        shared += float(((ma > 0) & (mb > 0)).sum())
        nested += min(da, db) * n
        independent += da * db * n
        sparser += min(float(ma.sum()), float(mb.sum()))
        total += n
    return {
        "tasks": [a, b],
        "shared": shared / total,
        "nested": nested / total,
        "independent": independent / total,
        "containment": shared / sparser if sparser else float("nan"),
    }


def write_analytics(analytics: dict, out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Write ``<prefix>mask_analytics.json``, ``<prefix>mask_sharing.png`` and ``<prefix>pruning_curve.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 (used as matplotlib.ticker)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{prefix}mask_analytics.json"]
    paths[0].write_text(json.dumps(analytics, indent=1))

    tasks = analytics["tasks"]
    classes = ["shared", *(f"{t}_only" for t in tasks), *(["partial"] if len(tasks) > 2 else []), "unused"]
    colors = {"shared": "#4c72b0", "unused": "#dddddd", "partial": "#8172b2"}
    palette = ["#dd8452", "#55a868", "#c44e52", "#937860", "#da8bc3"]
    for i, t in enumerate(tasks):
        colors[f"{t}_only"] = palette[i % len(palette)]
    labels = [f"{l['layer']}\n{l['shape'][0]}x{l['shape'][1]}" for l in analytics["layers"]] + ["overall"]
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 4))
    bottom = np.zeros(len(labels))
    for c in classes:
        vals = np.array([l[c] for l in analytics["layers"]] + [analytics["overall"][c]])
        ax.bar(labels, vals, bottom=bottom, color=colors[c], label=c.replace("_", " "))
        bottom += vals
    ax.set_ylabel("fraction of connections")
    ax.set_ylim(0, 1)
    ax.set_title(f"{analytics['structure']} masks: shared / task-only / unused per layer")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    p = out_dir / f"{prefix}mask_sharing.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    if analytics.get("search"):
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4))
        axes = np.atleast_1d(axes)
        for ax, t in zip(axes, tasks):
            rs = [r for r in analytics["search"] if r["task"] == t]
            d = [r["density"] for r in rs]
            v = [r["value"] for r in rs]
            ax.plot(d, v, "o-")
            best = analytics.get("chosen_round", {}).get(t)
            if best is not None:
                b = next(r for r in rs if r["round"] == best)
                ax.plot([b["density"]], [b["value"]], "r*", markersize=14, label=f"chosen (round {best})")
                ax.legend()
            ax.set_xscale("log")
            # label the rounds' own densities (log-axis minor labels overlap otherwise)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xticks(d)
            ax.set_xticklabels([f"{x:.2f}" for x in d])
            ax.invert_xaxis()
            ax.set_xlabel("mask density (log scale)")
            ax.set_ylabel(f"validation {rs[0]['metric'].upper()}" if rs else "")
            ax.set_title(f"{t}: pruning curve")
        fig.tight_layout()
        p = out_dir / f"{prefix}pruning_curve.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
