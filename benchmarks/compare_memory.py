"""Benchmark: peak memory of ``ncs compare`` on a wide numeric data set (100k rows x 100 numeric columns).

Run by hand; not a test. Writes ``OUT/events.csv`` (``--rows`` rows: a user id, ``--numeric``
float columns, two binary tasks whose click probability depends on a few of the columns),
a config for it (hash split on the user id), then runs ``ncs compare`` on it as a child process
and samples the peak resident memory of its process tree every 0.2 s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rows", default=100_000, show_default=True)
@click.option("--numeric", default=100, show_default=True, help="Numeric columns.")
@click.option("--variants", default="single,layer", show_default=True)
@click.option("--out", "out_dir", default=str(REPO / ".ncs" / "bench" / "compare_memory"), show_default=True)
def main(rows, numeric, variants, out_dir):
    """Peak RSS of `ncs compare` on ROWS x NUMERIC numeric columns."""
    import numpy as np
    import pandas as pd
    import yaml

    from benchmarks.streaming import measure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "events.csv"
    cols = [f"x{i:03d}" for i in range(numeric)]
    if not csv.exists():
        rng = np.random.default_rng(0)
        x = rng.normal(size=(rows, numeric)).astype(np.float32)
        logit = x[:, :5].sum(axis=1) * 0.4 - 1.0
        frame = pd.DataFrame(x, columns=cols)
        frame.insert(0, "uid", [f"u{i % 5000}" for i in range(rows)])
        frame["buy"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
        frame["fav"] = (rng.random(rows) < 1 / (1 + np.exp(-(logit * 0.5)))).astype(int)
        frame.to_csv(csv, index=False)
    config = {
        "dataset": {"name": "wide", "columns": ["uid", *cols, "buy", "fav"], "split": {"by": "hash", "hash_key": "uid"}},
        "features": [{"name": "uid", "type": "categorical", "hash_buckets": 5000}]
        + [{"name": c, "type": "numeric"} for c in cols],
        "tasks": [
            {"name": "buy", "type": "binary", "label": {"column": "buy"}},
            {"name": "fav", "type": "binary", "label": {"column": "fav"}},
        ],
        "training": {"epochs": 2},
    }
    cfg = out / "wide.yaml"
    cfg.write_text(yaml.safe_dump(config))
    ncs = str(Path(sys.executable).parent / "ncs")
    args = [ncs, "compare", "--config", str(cfg), "--data", str(csv), "--variants", variants, "--seeds", "1",
            "--out", str(out / "cmp")]
    r = measure(args, out / "compare.log")
    r.update({"rows": rows, "numeric": numeric, "variants": variants, "csv_mib": csv.stat().st_size / 2**20})
    (out / "compare_memory.json").write_text(json.dumps(r, indent=1))
    print(f"ncs compare, {rows:,} rows x {numeric} numeric columns ({r['csv_mib']:.0f} MiB CSV), variants {variants}: "
          f"{r['seconds']:.0f} s, peak RSS {r['peak_rss_mib']:,.0f} MiB")


if __name__ == "__main__":
    main()
