"""Benchmark: memory and throughput of the streaming training engine.

Run by hand (``make bench-streaming``); not a test. Three parts:

1. ``prepare``: synthetic logs of ``--rows`` training impressions (two train days, one
   validation day, one test day of ``rows / 2`` each) through the pipeline's ``preprocessing_fn``
   (``pipeline.local_transform``, the layout of a Transform artifact), then a ``x{scale}`` copy
   whose train split lists the same files ``scale`` times (hard links: ``scale * rows`` rows).
2. ``memory``: the real MaskSearch body (``components.mask_search.search_masks``) and
   MaskedTrainer body (``components.masked_trainer.train_and_export``) on both, each in its own
   process; the peak resident memory of that process tree is sampled every 0.2 s.
3. ``throughput``: in one process, the engine trains the same rows from the streamed TFRecords
   and from arrays held in memory (``tf.data`` from tensors, the pre-streaming input path),
   in alternating rounds so machine noise hits both alike. Target: streamed >= 0.9x.

Prepares data under ``OUT/rows-<ROWS>/`` (one folder per size, re-used by a re-run); writes
``OUT/streaming-<ROWS>.json`` and prints Markdown tables.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _config(config_path: str, rounds: int):
    from models.config import load_config

    return load_config(config_path).with_overrides(sparse={"rounds": rounds}, training={"epochs": 1})


def measure(args: list[str], log_path: Path) -> dict:
    """Run ``args`` as a child process: wall seconds and peak RSS (MiB) of its process tree."""
    import psutil

    from benchmarks.daily_increment import tree_rss  # the process tree's RSS, Beam workers included

    peak = {"v": 0}
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), cwd=REPO)
        ps = psutil.Process(proc.pid)
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak["v"] = max(peak["v"], tree_rss(ps))
                time.sleep(0.2)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        rc = proc.wait()
        done.set()
        t.join()
    if rc != 0:
        raise click.ClickException(f"{' '.join(args)} exited {rc}; see {log_path}")
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak["v"] / 2**20}


# ------------------------------------------------------------------------------------------ prepare
def prepare(out: Path, rows: int, scale: int, config_path: str, rounds: int) -> dict[str, Path]:
    """``{"x1": folder, "x<scale>": folder}`` of transformed examples (re-used when present)."""
    from data.logs import read_logs
    from data.synthetic import write_logs
    from pipeline.compare import split_frame
    from pipeline.local_transform import run_local_transform

    config = _config(config_path, rounds)
    out = out / f"rows-{rows}"  # one prepared data set per size: a --rows change never re-uses another size's data
    done = out / "x1" / "ready.json"
    if not done.exists():
        logs = out / "logs"
        if not (logs / "complete").exists():
            write_logs(logs, 4, rows // 2, seed=0)
            (logs / "complete").write_text("")
        frame, _ = read_logs(logs, config)
        splits = split_frame(frame, config)
        del frame
        folder = run_local_transform(config, splits, out / "transformed", log=lambda m: print(m, flush=True))
        del splits
        (out / "x1").mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps({"folder": str(folder), "rows": rows}))
    folder = Path(json.loads(done.read_text())["folder"])
    scaled = out / f"x{scale}"
    if not (scaled / "Split-train").exists():
        for split in ("train", "valid"):
            d = scaled / f"Split-{split}"
            d.mkdir(parents=True, exist_ok=True)
            files = sorted((folder / f"Split-{split}").iterdir())
            copies = scale if split == "train" else 1
            for i in range(copies):
                for f in files:
                    os.link(f, d / f"{i:02d}-{f.name}")
    return {"x1": folder, f"x{scale}": scaled, "transform": folder / "transform"}


# ------------------------------------------------------------------------------------------ bodies
def body(what: str, examples: str, transform: str, out: str, config_path: str, rounds: int) -> None:
    """One measured body, in this (child) process."""
    config = _config(config_path, rounds)
    if what == "search":
        from components.mask_search import search_masks

        Path(out).mkdir(parents=True, exist_ok=True)
        search_masks(config, examples, transform, out)
    else:
        from components.masked_trainer import train_and_export

        train_and_export(config, examples, transform, out, out + "_run", masks_uri=out.replace("train", "search"))


# ------------------------------------------------------------------------------------------ throughput
def throughput(folder: Path, transform: Path, config_path: str, rows: int, rounds: int) -> dict:
    """Examples/s of the engine on streamed vs in-memory input (same rows, same model, alternating)."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.data import embedding_tables_from_transform, stream_split
    from models.data import SplitStream
    from models.engine import Engine
    from models.variants import build_model

    config = _config(config_path, 1)
    out = tft.TFTransformOutput(str(transform))
    full = stream_split(str(folder), "train", config, out)

    class InMemory(SplitStream):
        """The same columns held as arrays; batches from tensors with a full shuffle (the old input path)."""

        def load(self, n):
            cols = {k: [] for k in self.spec}
            for serialized in self._records().take(n).batch(16384):
                for k, v in tf.io.parse_example(serialized, self.spec).items():
                    cols[k].append(v.numpy())
            self.arrays = {k: np.concatenate(v) for k, v in cols.items()}
            return self

        def batches(self, batch_size, *, shuffle_seed=None, shuffle_buffer=0, task=None, weights="weight", shard=(0, 1)):
            keep = slice(None) if task is None else self.arrays["weight__" + task].reshape(-1) > 0
            x = {f: self.arrays[f][keep] for f in self.features}
            y = {t: self.arrays["label__" + t].reshape(-1)[keep] for t in self.tasks}
            w = {t: self.arrays["weight__" + t].reshape(-1)[keep] for t in self.tasks}
            ds = tf.data.Dataset.from_tensor_slices((x, y, w))
            if shuffle_seed is not None:
                ds = ds.shuffle(len(y[self.tasks[0]]), seed=shuffle_seed)
            return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    # a stream of the first `rows` rows: write them once so both inputs read the same rows
    subset_dir = folder.parent / f"subset-{rows}" / "Split-train"
    if not subset_dir.exists():
        subset_dir.mkdir(parents=True)
        with tf.io.TFRecordWriter(str(subset_dir / "rows.gz"), options="GZIP") as w:
            for r in full._records().take(rows):
                w.write(r.numpy())
    streamed = stream_split(str(subset_dir.parent), "train", config, out)
    memory = InMemory(streamed.files, streamed.spec, streamed.features, streamed.tasks).load(rows)
    tables = embedding_tables_from_transform(config, out)
    result = {}
    for variant, schedule in (("layer", "mixed"), ("connection", "alternate")):
        times = {"streamed": [], "in-memory": []}
        engines = {}
        for name, data in (("streamed", streamed), ("in-memory", memory)):
            model = build_model(config, tables, variant=variant, seed=0)
            engines[name] = (Engine(model, config.training, config.tuning), data)
            engines[name][0].fit(data, epochs=1, schedule=schedule)  # trace + warm up
        for _ in range(rounds):
            for name, (engine, data) in engines.items():
                t0 = time.perf_counter()
                engine.fit(data, epochs=1, schedule=schedule)
                times[name].append(time.perf_counter() - t0)
        eps = {k: rows / statistics.median(v) for k, v in times.items()}
        ratios = [b / a for a, b in zip(times["streamed"], times["in-memory"])]
        result[variant] = {"schedule": schedule, "examples_per_s": eps, "ratio_median": statistics.median(ratios),
                           "ratio_min": min(ratios), "ratio_max": max(ratios)}
        print(f"{variant} ({schedule}): streamed {eps['streamed']:,.0f} ex/s, in-memory {eps['in-memory']:,.0f} ex/s, "
              f"ratio median {statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]", flush=True)
    return result


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rows", default=1_000_000, show_default=True, help="Training impressions of the x1 data set.")
@click.option("--scale", default=4, show_default=True, help="The larger data set has SCALE times the training rows.")
@click.option("--config", "config_path", default=str(REPO / "configs" / "video.yaml"), show_default=True)
@click.option("--rounds", default=1, show_default=True,
              help="Mask-search rounds (sparse.rounds) in the measured MaskSearch; memory does not depend on it.")
@click.option("--throughput-rows", default=200_000, show_default=True, help="Rows per throughput epoch.")
@click.option("--throughput-rounds", default=3, show_default=True)
@click.option("--out", "out_dir", default=str(REPO / ".ncs" / "bench" / "streaming"), show_default=True)
@click.option("--skip-memory", is_flag=True, help="Only the throughput part.")
@click.option("--skip-throughput", is_flag=True, help="Only the memory part.")
@click.pass_context
def main(ctx, rows, scale, config_path, rounds, throughput_rows, throughput_rounds, out_dir, skip_memory, skip_throughput):
    """Peak memory of MaskSearch / MaskedTrainer on ROWS and SCALE x ROWS, and streamed vs in-memory throughput."""
    if ctx.invoked_subcommand:
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare(out, rows, scale, config_path, rounds)
    report: dict = {"rows": rows, "scale": scale, "config": config_path, "search_rounds": rounds, "memory": {}}
    if not skip_memory:
        for size in ("x1", f"x{scale}"):
            for what in ("search", "train"):
                target = out / "runs" / size / what
                if target.exists():
                    import shutil

                    shutil.rmtree(target)
                args = [sys.executable, str(Path(__file__).resolve()), "body", "--what", what, "--examples", str(data[size]),
                        "--transform", str(data["transform"]), "--out-uri", str(target), "--config", config_path,
                        "--rounds", str(rounds)]
                r = measure(args, out / f"{size}-{what}.log")
                report["memory"][f"{size} {what}"] = r
                print(f"{size} {what}: {r['seconds']:.0f}s, peak RSS {r['peak_rss_mib']:,.0f} MiB", flush=True)
        m = report["memory"]
        for what in ("search", "train"):
            ratio = m[f"x{scale} {what}"]["peak_rss_mib"] / m[f"x1 {what}"]["peak_rss_mib"]
            report["memory"][f"ratio {what}"] = ratio
            print(f"{what}: x{scale}/x1 peak RSS ratio {ratio:.2f} (target <= 1.25)")
    if not skip_throughput:
        report["throughput"] = throughput(data["x1"], data["transform"], config_path, throughput_rows, throughput_rounds)
    (out / f"streaming-{rows}.json").write_text(json.dumps(report, indent=1))
    print("\n| body | rows | wall s | peak RSS MiB |\n|---|---|---|---|")
    for key, r in report["memory"].items():
        if isinstance(r, dict):
            size, what = key.split()
            n = rows * (scale if size != "x1" else 1)
            print(f"| {'MaskSearch' if what == 'search' else 'MaskedTrainer'} | {n:,} | {r['seconds']:.0f} | {r['peak_rss_mib']:,.0f} |")
    print(f"\nwrote {out / f'streaming-{rows}.json'}")


@main.command("body", hidden=True)
@click.option("--what", type=click.Choice(["search", "train"]), required=True)
@click.option("--examples", required=True)
@click.option("--transform", required=True)
@click.option("--out-uri", required=True)
@click.option("--config", "config_path", required=True)
@click.option("--rounds", default=1)
def body_cmd(what, examples, transform, out_uri, config_path, rounds):
    body(what, examples, transform, out_uri, config_path, rounds)


if __name__ == "__main__":
    main()
