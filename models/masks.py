"""Task masks: storage, validation and magnitude pruning (connection and neuron).

A :class:`TaskMasks` holds one binary ``[in, out]`` mask per masked layer per task.
``connection`` masks are unstructured; ``neuron`` masks are unit-structured (a
pruned hidden unit has its whole kernel column zeroed).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np


class MaskShapeError(ValueError):
    """A mask set does not fit the network it is applied to."""


@dataclasses.dataclass
class TaskMasks:
    structure: str  # "connection" | "neuron"
    layer_names: list[str]
    masks: dict[str, list[np.ndarray]]  # task -> per-layer float32 0/1 arrays [in, out]

    @property
    def tasks(self) -> list[str]:
        return list(self.masks)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [tuple(m.shape) for m in next(iter(self.masks.values()))]

    def density(self, task: str) -> float:
        ms = self.masks[task]
        return float(sum(m.sum() for m in ms) / sum(m.size for m in ms))

    def layer_density(self, task: str) -> list[float]:
        return [float(m.mean()) for m in self.masks[task]]

    # ---- persistence
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz): masks as uint8 plus a JSON header."""
        path = Path(path)
        arrays = {f"{t}__{i}": m.astype(np.uint8) for t, ms in self.masks.items() for i, m in enumerate(ms)}
        meta = {"structure": self.structure, "layer_names": self.layer_names, "tasks": self.tasks}
        np.savez_compressed(path, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return path if path.suffix == ".npz" else path.with_suffix(path.suffix + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> "TaskMasks":
        path = Path(path)
        try:
            with np.load(path) as z:
                meta = json.loads(bytes(z["__meta__"]).decode())
                masks = {
                    t: [z[f"{t}__{i}"].astype(np.float32) for i in range(len(meta["layer_names"]))]
                    for t in meta["tasks"]
                }
        except (OSError, KeyError, ValueError) as err:
            raise MaskShapeError(f"{path}: not a valid mask file ({err})") from None
        return cls(meta["structure"], meta["layer_names"], masks)

    # ---- applying to a model
    def check_compatible(self, model, source: str = "masks") -> None:
        """Raise :class:`MaskShapeError` naming the task/layer whose shape does not fit ``model``."""
        layers = model.masked_layers
        missing = [t for t in model.task_names if t not in self.masks]
        if missing:
            raise MaskShapeError(f"{source}: no mask for task(s) {missing}; masks have {self.tasks}")
        for t in model.task_names:
            if len(self.masks[t]) != len(layers):
                raise MaskShapeError(
                    f"{source}: task {t!r} has {len(self.masks[t])} layer masks, the network has {len(layers)} masked layers"
                )
            for i, (m, layer) in enumerate(zip(self.masks[t], layers)):
                want = tuple(layer.mask.shape[1:])
                if tuple(m.shape) != want:
                    raise MaskShapeError(
                        f"{source}: task {t!r} layer {i} ({layer.name}) mask shape {tuple(m.shape)} != kernel shape {want}"
                    )

    def apply(self, model) -> None:
        """Write the masks into ``model``'s mask variables (in its task order).

        Each layer's whole ``[tasks, in, out]`` variable is assigned at once, which also works
        for distributed (mirrored) variables, whose slices cannot be assigned.
        """
        self.check_compatible(model)
        for i, layer in enumerate(model.masked_layers):
            layer.mask.assign(np.stack([self.masks[t][i] for t in model.task_names]).astype(np.float32))

    @classmethod
    def all_ones(cls, model, structure: str = "connection") -> "TaskMasks":
        shapes = [tuple(layer.mask.shape[1:]) for layer in model.masked_layers]
        return cls(
            structure,
            [layer.name for layer in model.masked_layers],
            {t: [np.ones(s, np.float32) for s in shapes] for t in model.task_names},
        )


def _floor(size: int, min_density: float) -> int:
    return max(1, int(math.ceil(min_density * size)))


def prune_connections(kernels, masks, rate: float, scope: str = "per_layer", min_density: float = 0.01):
    """Drop the ``rate`` fraction of the smallest ``|w|`` among weights still alive.

    ``per_layer``: each layer loses ``round(rate * alive)`` weights. ``global``: one
    cut over all layers' alive weights (dominated by the widest layer), then any
    layer left below ``min_density`` gets its largest pruned weights back (guard).
    Returns new masks (float32 0/1).
    """
    new = [m.copy() for m in masks]
    if scope == "per_layer":
        for k, m in zip(kernels, new):
            alive = np.flatnonzero(m.reshape(-1) > 0)
            n_drop = int(round(rate * alive.size))
            n_drop = min(n_drop, alive.size - _floor(m.size, min_density))
            if n_drop <= 0:
                continue
            mags = np.abs(k.reshape(-1)[alive])
            drop = alive[np.argsort(mags, kind="stable")[:n_drop]]
            m.reshape(-1)[drop] = 0.0
        return new
    if scope != "global":
        raise ValueError(f"unknown pruning scope {scope!r}")
    alive_idx = [np.flatnonzero(m.reshape(-1) > 0) for m in new]
    mags = np.concatenate([np.abs(k.reshape(-1)[a]) for k, a in zip(kernels, alive_idx)])
    owner = np.concatenate([np.full(a.size, i) for i, a in enumerate(alive_idx)])
    pos = np.concatenate(alive_idx)
    n_drop = int(round(rate * mags.size))
    order = np.argsort(mags, kind="stable")[:n_drop]
    for i, m in enumerate(new):
        sel = order[owner[order] == i]
        m.reshape(-1)[pos[sel]] = 0.0
        floor = _floor(m.size, min_density)
        if m.sum() < floor:  # guard: restore this layer's largest weights among those just cut
            cut = pos[sel]
            restore = cut[np.argsort(-np.abs(kernels[i].reshape(-1)[cut]), kind="stable")[: floor - int(m.sum())]]
            m.reshape(-1)[restore] = 1.0
    return new


def prune_neurons(kernels, masks, rate: float, scope: str = "per_layer", min_density: float = 0.01):
    """Drop the ``rate`` fraction of alive hidden units with the smallest incoming-weight L2 norm.

    A unit is a kernel column; pruning it zeroes the whole column of the mask (its
    output becomes the constant ``activation(bias)``). Guard: every layer keeps at
    least ``max(1, ceil(min_density * units))`` units.
    """
    new = [m.copy() for m in masks]
    alive = [np.flatnonzero(m.any(axis=0)) for m in new]
    scores = [np.linalg.norm(k[:, a] * m[:, a], axis=0) for k, m, a in zip(kernels, new, alive)]
    if scope == "per_layer":
        for m, a, s in zip(new, alive, scores):
            n_drop = min(int(round(rate * a.size)), a.size - _floor(m.shape[1], min_density))
            if n_drop > 0:
                m[:, a[np.argsort(s, kind="stable")[:n_drop]]] = 0.0
        return new
    if scope != "global":
        raise ValueError(f"unknown pruning scope {scope!r}")
    all_s = np.concatenate(scores)
    owner = np.concatenate([np.full(a.size, i) for i, a in enumerate(alive)])
    unit = np.concatenate(alive)
    order = np.argsort(all_s, kind="stable")[: int(round(rate * all_s.size))]
    for i, m in enumerate(new):
        sel = order[owner[order] == i]
        keep_floor = _floor(m.shape[1], min_density)
        max_drop = max(0, alive[i].size - keep_floor)
        m[:, unit[sel][:max_drop]] = 0.0  # sel is ascending by score: drop the weakest first
    return new


def _counts(shape, density: float) -> tuple[int, int]:
    size = int(np.prod(shape))
    return size, min(size, max(1, int(round(density * size))))


def magnitude_masks(kernels, densities) -> list[np.ndarray]:
    """Per layer, keep the ``round(density * size)`` largest ``|w|`` (ties: lower index first)."""
    out = []
    for k, d in zip(kernels, densities):
        size, keep = _counts(k.shape, d)
        m = np.zeros(size, np.float32)
        m[np.argsort(-np.abs(k.reshape(-1)), kind="stable")[:keep]] = 1.0
        out.append(m.reshape(k.shape))
    return out


def random_masks(shapes, densities, rng: np.random.Generator) -> list[np.ndarray]:
    """Per layer, ``round(density * size)`` connections kept uniformly at random."""
    out = []
    for shape, d in zip(shapes, densities):
        size, keep = _counts(shape, d)
        m = np.zeros(size, np.float32)
        m[rng.choice(size, size=keep, replace=False)] = 1.0
        out.append(m.reshape(shape))
    return out


def prune(structure: str, kernels, masks, rate, scope="per_layer", min_density=0.01):
    if structure == "connection":
        return prune_connections(kernels, masks, rate, scope, min_density)
    if structure == "neuron":
        return prune_neurons(kernels, masks, rate, scope, min_density)
    raise ValueError(f"unknown mask structure {structure!r}")
