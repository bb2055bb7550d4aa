"""Comparison harness: train variants on one split over several seeds, write a report.

Used by ``ncs compare``. It reads any CSV/Parquet/TFRecord log set described by a
config (not only the synthetic logs), splits it by day folders or by a
deterministic hash, trains every variant with the same features, data and budget,
and writes ``results.json`` (one record per variant/seed/task/metric on the test
split) and ``report.md`` (a Table-2-style summary with mean ± std and MTL gain).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data.logs import read_logs
from models.config import ProjectConfig
from models.data import check_sample_spaces
from models.features import FeatureEncoder, embedding_tables, fit_stats
from models.metrics import HIGHER_IS_BETTER, evaluate, mtl_gain
from models.training import predict, prepare_split, train_model
from models.variants import build_model

BASELINE_VARIANTS = ["single", "layer", "shared_bottom", "mmoe", "cgc", "ple", "esmm"]


class SplitError(ValueError):
    pass


def split_frame(frame: pd.DataFrame, config: ProjectConfig) -> dict[str, pd.DataFrame]:
    """``{"train", "valid", "test"}`` frames, by day folders or by a hash of a key column."""
    sc = config.dataset.split
    days = sorted(d for d in frame["day"].unique() if d)
    if sc.by == "day" and days:
        need = sc.valid_days + sc.test_days + 1
        if len(days) < need:
            raise SplitError(
                f"split.by=day needs at least {need} day folders (train + {sc.valid_days} valid + "
                f"{sc.test_days} test), found {len(days)}: {days}; use more days or split.by=hash"
            )
        test_days = days[-sc.test_days :]
        valid_days = days[-(sc.test_days + sc.valid_days) : -sc.test_days]
        part = np.where(frame["day"].isin(test_days), "test", np.where(frame["day"].isin(valid_days), "valid", "train"))
    else:
        key = sc.hash_key or config.dataset.group_key or config.required_columns[0]
        # md5 of the key: stable across processes and machines (Python's hash() is salted)
        u = np.array(
            [int(hashlib.md5(str(v).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for v in frame[key].to_numpy()]
        )
        part = np.where(u < sc.test_fraction, "test", np.where(u < sc.test_fraction + sc.valid_fraction, "valid", "train"))
    return {name: frame[part == name].reset_index(drop=True) for name in ("train", "valid", "test")}


def primary_metric(task_type: str) -> str:
    return "auc" if task_type == "binary" else "mse"


def run_compare(
    config: ProjectConfig,
    data_path: str | Path,
    variants: list[str],
    seeds: int,
    out_dir: str | Path,
    keras_verbose: int = 0,
    echo=print,
    progress: bool = True,
) -> list[dict]:
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth_cols = tuple(config.dataset.truth.values())
    frame, report = read_logs(data_path, config, extra_columns=truth_cols)
    echo(f"data: {report.summary()}")
    splits = split_frame(frame, config)
    for name, f in splits.items():
        if len(f) == 0:
            raise SplitError(f"the {name} split is empty")
    stats = fit_stats(splits["train"], config)
    encoder = FeatureEncoder(config.model_dump_json(), stats.to_json())
    prepared = {name: prepare_split(f, config, encoder) for name, f in splits.items()}
    for name, s in prepared.items():
        check_sample_spaces(s.spaces, name)
    echo(
        "split: "
        + ", ".join(
            f"{n} {len(s)} rows ("
            + ", ".join(f"{t} {int(s.spaces[t].sum())}" for t in config.task_names)
            + ")"
            for n, s in prepared.items()
        )
    )
    tables = embedding_tables(config, stats)
    test = prepared["test"]

    records: list[dict] = []
    seed_list = [config.training.seed + i for i in range(seeds)]
    runs = [(v, s) for v in variants for s in seed_list]
    bar = tqdm(runs, desc="compare", unit="run", disable=not progress)
    for variant, seed in bar:
        bar.set_postfix_str(f"{variant} seed={seed}")
        cfg = config.with_overrides(training={"seed": seed})
        model = build_model(cfg, tables, variant=variant, seed=seed)
        t0 = time.perf_counter()
        train_model(model, prepared["train"], cfg, valid=prepared["valid"], verbose=keras_verbose)
        train_s = time.perf_counter() - t0
        preds = predict(model, test)
        metrics = evaluate(config, preds, test.labels, test.spaces, test.groups)
        for task, m in metrics.items():
            for metric, value in m.items():
                records.append({"variant": variant, "seed": seed, "task": task, "metric": metric, "value": value})
        records.append({"variant": variant, "seed": seed, "task": "all", "metric": "train_seconds", "value": train_s})
        records.append(
            {"variant": variant, "seed": seed, "task": "all", "metric": "params", "value": float(model.count_params())}
        )
        summary = "  ".join(
            f"{t.name} {primary_metric(t.type)}={metrics[t.name][primary_metric(t.type)]:.5f}" for t in config.tasks
        )
        (tqdm.write if progress else echo)(f"{variant:>13} seed={seed}  {summary}  ({train_s:.0f}s)")

    if config.dataset.truth:
        # the generator's true probabilities: an upper bound no model can beat in expectation
        oracle_preds = {t: splits["test"][c].to_numpy(dtype=np.float64) for t, c in config.dataset.truth.items()}
        if set(oracle_preds) == set(config.task_names):
            metrics = evaluate(config, oracle_preds, test.labels, test.spaces, test.groups)
            for task, m in metrics.items():
                for metric, value in m.items():
                    records.append({"variant": "oracle", "seed": 0, "task": task, "metric": metric, "value": value})

    (out_dir / "results.json").write_text(json.dumps(records, indent=1))
    md = render_report(config, records, variants, data_path, report.summary(), prepared)
    (out_dir / "report.md").write_text(md)
    return records


def summarize(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(records)
    return df.groupby(["variant", "task", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()


def render_report(config, records, variants, data_path, cleaning, prepared) -> str:
    s = summarize(records)

    def cell(v, t, m, fmt="{:.4f}"):
        row = s[(s.variant == v) & (s.task == t) & (s.metric == m)]
        if row.empty or not np.isfinite(row["mean"].iloc[0]):
            return "–"
        mean, std, n = row["mean"].iloc[0], row["std"].iloc[0], int(row["count"].iloc[0])
        return (fmt.format(mean) + (" ± " + fmt.format(std) if n > 1 and np.isfinite(std) else ""))

    def mean_of(v, t, m):
        row = s[(s.variant == v) & (s.task == t) & (s.metric == m)]
        return float(row["mean"].iloc[0]) if not row.empty else float("nan")

    lines = [
        f"# Comparison on `{config.dataset.name}`",
        "",
        f"Data: `{data_path}` — {cleaning}.",
        "Splits: "
        + ", ".join(
            f"{n} {len(p)} rows (" + ", ".join(f"{t}: {int(p.spaces[t].sum())}" for t in config.task_names) + ")"
            for n, p in prepared.items()
        )
        + ".",
        f"Model: MLP {config.model.mlp}, embedding dim {config.model.embedding_dim}, interaction "
        f"`{config.model.interaction}`; training: {config.training.epochs} epochs, batch {config.training.batch_size}, "
        f"Adam lr {config.training.learning_rate}.",
        "Metrics on the test split, each task on its own sample space, mean ± std over seeds. "
        "MTL gain is PLE Eq. 11 vs `single` on the task's primary metric (AUC ↑ for binary, MSE ↓ for regression); "
        "**seesaw** marks a variant that improves one task while hurting another.",
        "",
    ]
    header = ["variant"]
    for t in config.tasks:
        if t.type == "binary":
            header += [f"{t.name} AUC", f"{t.name} GAUC", f"{t.name} logloss", f"{t.name} calib."]
        else:
            header += [f"{t.name} MSE", f"{t.name} calib."]
        header.append(f"{t.name} MTL gain")
    header += ["seesaw", "train s", "params"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    has_single = "single" in variants
    order = list(variants) + (["oracle"] if "oracle" in set(s.variant) else [])
    for v in order:
        row = [f"`{v}`"]
        gains = []
        for t in config.tasks:
            if t.type == "binary":
                row += [cell(v, t.name, "auc"), cell(v, t.name, "gauc"), cell(v, t.name, "logloss"), cell(v, t.name, "calibration", "{:.3f}")]
            else:
                row += [cell(v, t.name, "mse", "{:.5f}"), cell(v, t.name, "calibration", "{:.3f}")]
            pm = primary_metric(t.type)
            if has_single and v != "single":
                g = mtl_gain(pm, mean_of(v, t.name, pm), mean_of("single", t.name, pm))
                gains.append(g)
                row.append(f"{g * 100:+.2f}%" if np.isfinite(g) else "–")
            else:
                row.append("–")
        finite = [g for g in gains if np.isfinite(g)]
        seesaw = bool(finite) and v != "oracle" and any(g > 0 for g in finite) and any(g < 0 for g in finite)
        row.append("**seesaw**" if seesaw else "")
        row.append(cell(v, "all", "train_seconds", "{:.0f}"))
        row.append(cell(v, "all", "params", "{:,.0f}"))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if "oracle" in order:
        lines.append(
            "`oracle` scores the generator's true probabilities (`dataset.truth`), the best any model can do in expectation."
        )
    lines.append("")
    return "\n".join(lines)


def compare_main_table(records: list[dict], config: ProjectConfig) -> str:
    """A compact terminal table: primary metric per task and variant."""
    s = summarize(records)
    tasks = config.tasks
    head = f"{'variant':>14} " + " ".join(f"{t.name + ' ' + primary_metric(t.type).upper():>22}" for t in tasks)
    out = [head]
    for v in dict.fromkeys(r["variant"] for r in records):
        cells = []
        for t in tasks:
            m = primary_metric(t.type)
            row = s[(s.variant == v) & (s.task == t.name) & (s.metric == m)]
            if row.empty:
                cells.append(f"{'–':>22}")
            else:
                mean, std = row["mean"].iloc[0], row["std"].iloc[0]
                std_s = f" ± {std:.5f}" if np.isfinite(std) else ""
                cells.append(f"{mean:.5f}{std_s}".rjust(22))
        out.append(f"{v:>14} " + " ".join(cells))
    return "\n".join(out)


__all__ = ["run_compare", "split_frame", "render_report", "BASELINE_VARIANTS", "HIGHER_IS_BETTER"]
