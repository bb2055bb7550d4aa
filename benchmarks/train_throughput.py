"""Training throughput (examples/s) of `single`, `layer` and the masked network.

Run by hand (``make bench`` or ``python benchmarks/train_throughput.py``); it is not a
test. Every model trains on the same in-memory synthetic batches at batch 4096 with
the default config's architecture ([512, 256, 128] MLP). The masked/unmasked ratio
compares the *same* masked network with ``use_masks=True`` (kernel * mask in the
forward pass) and ``use_masks=False`` (raw kernel), measured in alternating rounds
in one process so machine noise hits both alike. Target: ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from data.synthetic import generate_days  # noqa: E402
from models.config import load_config  # noqa: E402
from models.data import make_dataset  # noqa: E402
from models.features import FeatureEncoder, embedding_tables, fit_stats  # noqa: E402
from models.training import prepare_split  # noqa: E402
from models.variants import build_model  # noqa: E402


def _frame(rows: int) -> pd.DataFrame:
    frame = pd.concat([f for _, f in generate_days(1, rows, seed=0)], ignore_index=True)
    for c in ("duration", "click", "watch_seconds"):
        frame[c] = frame[c].astype(float)
    frame["hour"] = frame["hour"].astype(str)
    return frame


def _time_epoch(model, ds, steps: int) -> float:
    t0 = time.perf_counter()
    model.fit(ds.take(steps), epochs=1, verbose=0)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/video.yaml")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating timing rounds per model")
    args = ap.parse_args()

    cfg = load_config(args.config)
    rows = args.batch_size * args.steps
    frame = _frame(rows)
    stats = fit_stats(frame, cfg)
    enc = FeatureEncoder(cfg.model_dump_json(), stats.to_json())
    split = prepare_split(frame, cfg, enc)
    tables = embedding_tables(cfg, stats)
    ds = make_dataset(split.inputs, split.labels, split.spaces, args.batch_size).cache().repeat()

    models = {
        "single": build_model(cfg, tables, variant="single", seed=0),
        "layer": build_model(cfg, tables, variant="layer", seed=0),
        "masked (use_masks=True)": build_model(cfg, tables, variant="masked", seed=0),
        "masked (use_masks=False)": build_model(cfg, tables, variant="masked", seed=0, use_masks=False),
        "shared_bottom": build_model(cfg, tables, variant="shared_bottom", seed=0),
    }
    for m in models.values():
        m.compile(optimizer=tf.keras.optimizers.Adam(1e-3), weighted_metrics=[])
        _time_epoch(m, ds, 3)  # trace + warm up
    times = {k: [] for k in models}
    for _ in range(args.rounds):
        for name, m in models.items():
            times[name].append(_time_epoch(m, ds, args.steps))
    print(f"\nbatch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, {tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()} threads")
    print(f"{'model':<28}{'examples/s (median)':>22}{'params':>12}")
    eps = {}
    for name, ts in times.items():
        eps[name] = args.batch_size * args.steps / statistics.median(ts)
        print(f"{name:<28}{eps[name]:>22,.0f}{models[name].count_params():>12,}")
    ratios = [
        a / b for a, b in zip(times["masked (use_masks=False)"], times["masked (use_masks=True)"])
    ]
    print(f"\nmasked/unmasked throughput ratio (same network, per round): median {np.median(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
