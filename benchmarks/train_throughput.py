"""Training-step throughput (examples/s) of `single`, `layer`, `shared_bottom` and the masked network.

Run by hand (``make bench`` or ``python benchmarks/train_throughput.py``); it is not a test.
Every model runs the engine's one training step (``models.engine.Engine``, mixed schedule)
on the same cached random batches of model inputs at batch 4096 with the default config's
architecture ([512, 256, 128] MLP), so this measures model compute, not input. The
masked/unmasked ratio compares the *same* masked network with ``use_masks=True``
(kernel * mask in the forward pass) and ``use_masks=False`` (raw kernel), measured in
alternating rounds in one process so machine noise hits both alike. Target: ratio >= 0.9.
(Streamed vs in-memory input: ``benchmarks/streaming.py``.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.config import NumericFeature, load_config  # noqa: E402
from models.engine import Engine  # noqa: E402
from models.features import embedding_tables, input_signature, table_of  # noqa: E402
from models.variants import build_model  # noqa: E402


def _batches(cfg, tables, batch: int, steps: int):
    """``steps`` random batches of model inputs, labels and weights, cached."""
    rng = np.random.default_rng(0)
    n = batch * steps
    x = {}
    for f in cfg.features:
        shape = [n] + list(input_signature(cfg)[f.name].shape[1:])
        if isinstance(f, NumericFeature):
            x[f.name] = rng.normal(size=shape).astype(np.float32)
        else:
            x[f.name] = rng.integers(0, tables[table_of(f)].size, size=shape).astype(np.int64)
    y = {t.name: (rng.random(n) < 0.2).astype(np.float32) for t in cfg.tasks}
    w = {t.name: np.ones(n, np.float32) for t in cfg.tasks}
    return tf.data.Dataset.from_tensor_slices((x, y, w)).batch(batch).cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/video.yaml")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating timing rounds per model")
    args = ap.parse_args()

    cfg = load_config(args.config)
    vocab = {f.name: [f"t{i}" for i in range(f.vocab_size)] for f in cfg.features if getattr(f, "vocab_size", None)}
    tables = embedding_tables(cfg, vocab)
    ds = _batches(cfg, tables, args.batch_size, args.steps)
    models = {
        "single": build_model(cfg, tables, variant="single", seed=0),
        "layer": build_model(cfg, tables, variant="layer", seed=0),
        "masked (use_masks=True)": build_model(cfg, tables, variant="masked", seed=0),
        "masked (use_masks=False)": build_model(cfg, tables, variant="masked", seed=0, use_masks=False),
        "shared_bottom": build_model(cfg, tables, variant="shared_bottom", seed=0),
    }
    steps = {}
    for name, m in models.items():
        engine = Engine(m, cfg.training, cfg.tuning)
        steps[name] = engine._step(tuple(m.task_names), "mixed", ds.element_spec)
        for batch in ds.take(2):  # trace + warm up
            steps[name](*batch)
    times = {k: [] for k in models}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for batch in ds:
                step(*batch)
            times[name].append(time.perf_counter() - t0)
    print(f"\nbatch {args.batch_size}, {args.steps} steps x {args.rounds} rounds")
    print(f"{'model':<28}{'examples/s (median)':>22}{'params':>12}")
    for name, ts in times.items():
        eps = args.batch_size * args.steps / statistics.median(ts)
        print(f"{name:<28}{eps:>22,.0f}{models[name].count_params():>12,}")
    ratios = [a / b for a, b in zip(times["masked (use_masks=False)"], times["masked (use_masks=True)"])]
    print(f"\nmasked/unmasked throughput ratio (same network, per round): median {np.median(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
