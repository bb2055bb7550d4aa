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
import tensorflow_transform as tft

from components.data import embedding_tables_from_transform, stream_split
from data.logs import read_logs
from models.config import CONTROL_VARIANTS, SPARSE_VARIANTS, VARIANTS, ProjectConfig
from models.engine import Engine, LogCallback, ProgressCallback
from models.mask_analytics import analyze, write_analytics
from models.metrics import HIGHER_IS_BETTER, evaluate, mtl_gain, primary_metric
from models.ranking import simulate_pairings
from models.sparse_sharing import SparseSharingTrainer
from models.variants import build_model
from pipeline.local_transform import cache_key, run_local_transform
from pipeline.statistics import compare_pair, format_interval, improvement_sign, relative

BASELINE_VARIANTS = ["single", "layer", "shared_bottom", "mmoe", "cgc", "ple", "esmm"]
# (CTR model, CVR model) pairings of the papers' Table 3, plus the structured variant
RANKING_PAIRINGS = [
    ("single", "single"),
    ("single", "layer"),
    ("single", "connection"),
    ("connection", "connection"),
    ("neuron", "neuron"),
    ("ple", "ple"),
]


class SplitError(ValueError):
    pass


def split_frame(frame: pd.DataFrame, config: ProjectConfig) -> dict[str, pd.DataFrame]:
    """``{"train", "valid", "test"}`` frames, by day folders or by a deterministic hash.

    ``split.by: day`` on day folders: the last ``test_days`` are test, the ``valid_days``
    before them validation. Otherwise (``by: hash``, or data without day folders such as a
    single file) a hash decides: of ``split.hash_key`` when set (md5 of its value), else of
    the row's position in the data read (a row-level split). Data without day folders under
    ``by: day`` is announced with a warning naming the hash used; an empty split raises
    :class:`SplitError` naming how the rows were split.
    """
    import warnings

    sc = config.dataset.split
    days = sorted(d for d in frame["day"].unique() if d) if "day" in frame.columns else []
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
        how = f"day folders (test {test_days}, valid {valid_days})"
        hint = ""
    else:
        if sc.hash_key:
            key = sc.hash_key
            if key not in frame.columns:
                raise SplitError(f"dataset.split.hash_key: column {key!r} is not in the data read (columns: {list(frame.columns)})")
            values = frame[key].to_numpy()
            # md5 of the key: stable across processes and machines (Python's hash() is salted)
            u = np.array([int(hashlib.md5(str(v).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for v in values])
            how = f"a hash of dataset.split.hash_key {key!r} ({len(pd.unique(values))} distinct values)"
            hint = "; hash a column with many distinct values, or drop split.hash_key for a row-level split"
        else:
            # splitmix64 of the row's position: deterministic, uniform, independent of the values
            with np.errstate(over="ignore"):
                z = np.arange(len(frame), dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
                z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
                z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
                z = z ^ (z >> np.uint64(31))
            u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
            how = "a row-level hash (each row's position; no dataset.split.hash_key)"
            hint = "; more rows are needed"
        if sc.by == "day":
            warnings.warn(
                f"dataset.split.by is 'day' but the data has no YYYYMMDD day folders: splitting by {how}, "
                f"valid {sc.valid_fraction:g}, test {sc.test_fraction:g} (set dataset.split to choose)",
                stacklevel=2,
            )
        part = np.where(u < sc.test_fraction, "test", np.where(u < sc.test_fraction + sc.valid_fraction, "valid", "train"))
    out = {name: frame[part == name].reset_index(drop=True) for name in ("train", "valid", "test")}
    empty = [name for name, f in out.items() if len(f) == 0]
    if empty:
        raise SplitError(
            f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty after splitting "
            f"{len(frame)} rows by {how}{hint}"
        )
    return out


# `--variants table2`: the rows of the papers' Table 2 (S-Weight = connection, S-Neuron = neuron, the
# tuning switches on connection), the gated-expert baselines, and the two controls of the search
TABLE2_VARIANTS = [
    "single", "layer", "connection", "neuron", "connection+balance", "connection+gc", "connection+mv",
    "connection+big", "connection+tuning", "shared_bottom", "mmoe", "cgc", "ple", "esmm",
    "connection_theta", "connection_random",
]
PRESETS = {"all": list(VARIANTS), "table2": TABLE2_VARIANTS}


class VariantError(ValueError):
    """An unknown or unusable ``--variants`` entry (the message names it)."""


def resolve_variants(config: ProjectConfig, names: list[str]) -> list[tuple[str, str, ProjectConfig]]:
    """``[(spec, base variant, config)]`` in training order, presets expanded.

    A spec is ``base[+switch...]`` (:meth:`ProjectConfig.for_variant`). The controls
    (``connection_theta``, ``connection_random``) reuse θ and the chosen densities of the
    ``connection`` spec with the same switches, so that spec must be compared too; the controls
    train after it.
    """
    specs: list[str] = []
    for n in names:
        for spec in PRESETS.get(n, [n]):
            if spec not in specs:
                specs.append(spec)
    out = []
    for spec in specs:
        try:
            base, cfg = config.for_variant(spec)
        except ValueError as err:
            raise VariantError(str(err)) from None
        out.append((spec, base, cfg))
    for spec, base, _ in out:
        if base in CONTROL_VARIANTS and reference_spec(spec) not in specs:
            raise VariantError(f"variant {spec!r} is a control of the mask search: it needs {reference_spec(spec)!r} "
                               "in --variants (its θ and chosen densities)")
    # controls after everything else (their reference has then run for every seed)
    return [v for v in out if v[1] not in CONTROL_VARIANTS] + [v for v in out if v[1] in CONTROL_VARIANTS]


def reference_spec(spec: str) -> str:
    """The ``connection`` spec a control variant spec takes its masks' densities and θ from."""
    base, *switches = spec.split("+")
    return "+".join(["connection", *switches])


def run_compare(
    config: ProjectConfig,
    data_path: str | Path,
    variants: list[str],
    seeds: int,
    out_dir: str | Path,
    verbose: int = 0,
    echo=print,
    progress: bool = True,
) -> list[dict]:
    """Split the logs, transform them with the pipeline's ``preprocessing_fn``, train every variant.

    ``variants``: specs (``connection+gc``) or presets (``all``, ``table2``). Every variant
    trains through ``models.engine`` on the same streamed, transformed splits (cached under
    ``out_dir/transformed``; a switch that changes the transform, ``gc``, gets its own) with
    the config's budget: ``training.epochs``, or the protocol (``training.patience``: every
    variant, search round and joint training until validation stops improving). Warm-up and
    search wall time and optimizer steps are recorded. ``verbose``: 1 prints every epoch, 2
    adds a progress bar per epoch.
    """
    from tqdm.auto import tqdm

    runs_spec = resolve_variants(config, variants)
    specs = [spec for spec, _, _ in runs_spec]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth_cols = tuple(dict.fromkeys(config.dataset.truth.values()))
    read_cfg = max((c for _, _, c in runs_spec), key=lambda c: len(c.required_columns))
    frame, report = read_logs(data_path, read_cfg, extra_columns=truth_cols)
    echo(f"data: {report.summary()}")
    missing_truth = [c for c in truth_cols if c not in frame.columns]
    if missing_truth:
        echo(f"warning: dataset.truth column(s) {missing_truth} are not in the logs: the oracle row and the "
             "true-value ranking outcome are skipped")
    truth = {t: c for t, c in config.dataset.truth.items() if c not in missing_truth}
    splits = split_frame(frame, config)
    del frame
    aux_cols = list(dict.fromkeys(
        [c for c in (config.dataset.group_key,) if c]
        + ([config.ranking.request_key, config.ranking.length_column, config.ranking.outcome_column] if config.ranking else [])
        + list(truth.values())
    ))
    test_aux = splits["test"][aux_cols].copy()  # what metrics and the ranking simulation need besides predictions
    # one Transform per distinct Transform view of the variants' configs (only `gc` changes it)
    data_by_key: dict[str, dict] = {}
    spec_key: dict[str, str] = {}
    for spec, _, cfg in runs_spec:
        key = cache_key(cfg, splits)
        spec_key[spec] = key
        if key not in data_by_key:
            transformed = run_local_transform(cfg, splits, out_dir / "transformed", log=echo)
            data_by_key[key] = {"dir": transformed, "cfg": cfg}
    del splits
    for d in data_by_key.values():
        cfg = d["cfg"]
        tft_output = tft.TFTransformOutput(str(d["dir"] / "transform"))
        d["streams"] = {
            name: stream_split(str(d["dir"]), name, cfg, tft_output, str(d["dir"] / "transform"), row_ids=True)
            for name in ("train", "valid", "test")
        }
        for st in d["streams"].values():
            st.check_sample_spaces()
        d["tables"] = embedding_tables_from_transform(cfg, tft_output)
    first = data_by_key[spec_key[specs[0]]]["streams"]
    counts = {name: st.counts() for name, st in first.items()}
    echo("split: " + ", ".join(
        f"{n} {c['rows']} rows (" + ", ".join(f"{t} {c[t]}" for t in config.task_names) + ")" for n, c in counts.items()
    ))
    echo(f"budget: {_budget(config)}")
    gk = config.dataset.group_key
    groups = test_aux[gk].astype(str).to_numpy() if gk else None

    records: list[dict] = []
    seed_list = [config.training.seed + i for i in range(seeds)]
    runs = [(spec, base, cfg, s) for spec, base, cfg in runs_spec for s in seed_list]
    bar = tqdm(runs, desc="compare", unit="run", disable=not progress)
    all_preds: dict[tuple[str, int], dict] = {}
    sparse_info: dict[str, list[dict]] = {}
    references: dict[tuple[str, int], dict] = {}  # (connection spec, seed) -> θ, masks, warm-up cost
    callbacks = ([LogCallback(tqdm.write)] if verbose >= 1 else []) + ([ProgressCallback()] if verbose >= 2 else [])
    labels = spaces = None
    for spec, base, vcfg, seed in bar:
        bar.set_postfix_str(f"{spec} seed={seed}")
        d = data_by_key[spec_key[spec]]
        train, valid, test, tables = d["streams"]["train"], d["streams"]["valid"], d["streams"]["test"], d["tables"]
        cfg = vcfg.with_overrides(training={"seed": seed})
        t0 = time.perf_counter()
        extra: dict[str, float] = {}
        log = tqdm.write if verbose else None
        if base in SPARSE_VARIANTS or base in CONTROL_VARIANTS:
            structure = "connection" if base in CONTROL_VARIANTS else base
            trainer = SparseSharingTrainer(cfg, tables, structure, seed, log=log, callbacks=callbacks[1:] if verbose else [])
            if base in CONTROL_VARIANTS:
                ref = references[(reference_spec(spec), seed)]
                result = trainer.run_control(train, valid, base.split("_", 1)[1], ref["masks"], theta=ref["theta"])
                # θ is the reference's warm-up: its cost is this variant's too
                result.seconds["warmup"] = ref["warmup_seconds"]
                result.steps["warmup"] = ref["warmup_steps"]
                warm_epochs = ref["warmup_epochs"]
            else:
                result = trainer.run(train, valid)
                warm_epochs = len(trainer.warmup_fit.epochs)
                if structure == "connection":
                    references[(spec, seed)] = {"theta": trainer.theta, "masks": result.masks,
                                                "warmup_seconds": result.seconds["warmup"],
                                                "warmup_steps": result.steps["warmup"], "warmup_epochs": warm_epochs}
            model, engine = result.model, trainer.engine
            analytics = analyze(result.masks, result.rounds or None, result.chosen or None)
            mask_dir = out_dir / "masks"
            prefix = f"{_file_name(spec)}_seed{seed}_"
            if seed == seed_list[0]:
                write_analytics(analytics, mask_dir, prefix)
            else:
                mask_dir.mkdir(parents=True, exist_ok=True)
                (mask_dir / f"{prefix}mask_analytics.json").write_text(json.dumps(analytics, indent=1))
            result.masks.save(mask_dir / f"{prefix}masks.npz")
            sparse_info.setdefault(spec, []).append(analytics)
            epochs = warm_epochs + sum(r.epochs for r in result.rounds) + len(result.joint_fit.epochs)
            steps = sum(result.steps.values())
            extra = {
                "warmup_seconds": result.seconds["warmup"],
                "search_seconds": result.seconds["search"],
                "joint_seconds": result.seconds["joint"],
                "search_cost_ratio": result.search_cost_ratio,
                "warmup_steps": result.steps["warmup"],
                "search_steps": result.steps["search"],
                "joint_steps": result.steps["joint"],
            }
            train_s = time.perf_counter() - t0 + (result.seconds["warmup"] if base in CONTROL_VARIANTS else 0.0)
        else:
            model = build_model(cfg, tables, variant=base, seed=seed)
            engine = Engine(model, cfg.training, cfg.tuning)
            fit = engine.fit(train, epochs=cfg.training.budget_epochs, schedule=cfg.training.schedule, valid=valid,
                             patience=cfg.training.patience, callbacks=callbacks, label=spec)
            epochs, steps = len(fit.epochs), fit.steps
            train_s = time.perf_counter() - t0
        p = engine.predict(test, in_space_only=False)
        order = np.argsort(p.row_ids, kind="stable")  # back to the test frame's row order
        preds = {t: v[order] for t, v in p.preds.items()}
        labels = {t: v[order] for t, v in p.labels.items()}
        spaces = {t: v[order] for t, v in p.spaces.items()}
        all_preds[(spec, seed)] = preds
        metrics = evaluate(config, preds, labels, spaces, groups)
        for task, m in metrics.items():
            for metric, value in m.items():
                records.append({"variant": spec, "seed": seed, "task": task, "metric": metric, "value": value})
        # validation metrics of the final model: what search options and defaults are chosen on (never test)
        for task, m in engine.evaluate(valid).items():
            for metric in ("auc", "mse", "logloss"):
                if metric in m and np.isfinite(m[metric]):
                    records.append({"variant": spec, "seed": seed, "task": task, "metric": f"valid_{metric}",
                                    "value": float(m[metric])})
        extra.update({"train_seconds": train_s, "params": float(model.count_params()), "epochs": epochs, "steps": steps})
        for metric, value in extra.items():
            records.append({"variant": spec, "seed": seed, "task": "all", "metric": metric, "value": float(value)})
        summary = "  ".join(
            f"{t.name} {primary_metric(t.type)}={metrics[t.name][primary_metric(t.type)]:.5f}" for t in config.tasks
        )
        (tqdm.write if progress else echo)(f"{spec:>18} seed={seed}  {summary}  ({train_s:.0f}s, {epochs} epochs, "
                                           f"{steps} steps)")

    if truth and set(truth) == set(config.task_names) and labels is not None:
        # the generator's true probabilities: an upper bound no model can beat in expectation
        # (labels and spaces are those of the test split, the same for every run)
        oracle_preds = {t: test_aux[c].to_numpy(dtype=np.float64) for t, c in truth.items()}
        metrics = evaluate(config, oracle_preds, labels, spaces, groups)
        for task, m in metrics.items():
            for metric, value in m.items():
                records.append({"variant": "oracle", "seed": 0, "task": task, "metric": metric, "value": value})

    ranking_note = ""
    if config.ranking is not None:
        records += _ranking_records(config, test_aux, truth, all_preds, seed_list)
        rk = config.ranking
        ranking_note = (
            "true expected view seconds (`true_ctr * true_cvr * length`)"
            if rk.ctr_task in truth and rk.cvr_task in truth
            else f"logged `{rk.outcome_column}` of the impressed items"
        )

    (out_dir / "results.json").write_text(json.dumps(records, indent=1))
    meta = {"data": str(data_path), "cleaning": report.summary(), "counts": counts, "variants": specs,
            "ranking_note": ranking_note}
    (out_dir / "run.json").write_text(json.dumps(meta, indent=1))
    md = render_report(config, records, specs, data_path, report.summary(), counts, sparse_info, ranking_note)
    (out_dir / "report.md").write_text(md)
    return records


class MergeError(ValueError):
    """Comparison folders that cannot be merged (the message names the folder and why)."""


def merge_runs(config: ProjectConfig, run_dirs: list[str | Path], out_dir: str | Path) -> list[dict]:
    """One report from several ``ncs compare`` output folders of the same split (``ncs report``).

    A long comparison (the papers' Table 2) can run as several processes or machines, each with
    some variants; their records are pooled (the first folder wins where two hold the same
    variant and seed), their seed-42 mask plots copied, and ``report.md`` rendered as if one
    run had trained them all. Folders whose splits differ (row or sample-space counts) or that
    lack ``results.json`` / ``run.json`` raise :class:`MergeError` naming the folder. The report's
    rows follow the Table-2 order.
    """
    import shutil

    out_dir = Path(out_dir)
    metas, records, seen, variants = [], [], set(), []
    sparse_info: dict[str, list[dict]] = {}
    for d in map(Path, run_dirs):
        missing = [f for f in ("results.json", "run.json") if not (d / f).exists()]
        if missing:
            raise MergeError(f"{d}: not an ncs compare output folder (no {' or '.join(missing)})")
        meta = json.loads((d / "run.json").read_text())
        if metas and meta["counts"] != metas[0]["counts"]:
            raise MergeError(f"{d}: its splits differ from {run_dirs[0]} ({meta['counts']} vs {metas[0]['counts']}); "
                             "only runs on the same data and split can be merged")
        metas.append(meta)
        for r in json.loads((d / "results.json").read_text()):
            key = (r["variant"], r["seed"], r["task"], r["metric"])
            if key not in seen:
                seen.add(key)
                records.append(r)
        for v in meta["variants"]:
            if v in variants:
                continue
            variants.append(v)
            files = sorted((d / "masks").glob(f"{_file_name(v)}_seed*_mask_analytics.json"))
            if files:
                sparse_info[v] = [json.loads(f.read_text()) for f in files]
            if (d / "masks").is_dir():
                (out_dir / "masks").mkdir(parents=True, exist_ok=True)
                for f in (d / "masks").glob(f"{_file_name(v)}_seed*"):
                    if f.suffix in (".png", ".json") and f.resolve() != (out_dir / "masks" / f.name).resolve():
                        shutil.copy2(f, out_dir / "masks" / f.name)
    # rows in Table-2 order (variants outside it after, as they came)
    variants.sort(key=lambda v: TABLE2_VARIANTS.index(v) if v in TABLE2_VARIANTS else len(TABLE2_VARIANTS))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(records, indent=1))
    m = metas[0]
    (out_dir / "run.json").write_text(json.dumps({**m, "variants": variants, "merged_from": [str(d) for d in run_dirs]},
                                                 indent=1))
    md = render_report(config, records, variants, m["data"], m["cleaning"], m["counts"], sparse_info, m["ranking_note"])
    (out_dir / "report.md").write_text(md)
    return records


def _file_name(spec: str) -> str:
    return spec.replace("+", "-")


def _ranking_records(config: ProjectConfig, test_frame: pd.DataFrame, truth: dict, all_preds: dict,
                     seeds: list[int]) -> list[dict]:
    rk = config.ranking
    length = test_frame[rk.length_column].to_numpy(dtype=np.float64)
    if rk.ctr_task in truth and rk.cvr_task in truth:
        outcome = test_frame[truth[rk.ctr_task]].to_numpy() * test_frame[truth[rk.cvr_task]].to_numpy() * length
    else:
        outcome = test_frame[rk.outcome_column].to_numpy(dtype=np.float64)
    requests = test_frame[rk.request_key].to_numpy()
    records = []
    for seed in seeds:
        pairings = {}
        for ctr_v, cvr_v in RANKING_PAIRINGS:
            if (ctr_v, seed) in all_preds and (cvr_v, seed) in all_preds:
                pairings[f"{ctr_v}/{cvr_v}"] = (all_preds[(ctr_v, seed)][rk.ctr_task], all_preds[(cvr_v, seed)][rk.cvr_task])
        if rk.ctr_task in truth and rk.cvr_task in truth:
            pairings["oracle/oracle"] = (test_frame[truth[rk.ctr_task]].to_numpy(), test_frame[truth[rk.cvr_task]].to_numpy())
        if not pairings:
            continue
        sims = simulate_pairings(pairings, requests, length, outcome, rk.top_k, rk.a, rk.b, rk.c)
        for label, value in sims.items():
            records.append({"variant": label, "seed": seed, "task": "ranking", "metric": f"view_seconds_at_{rk.top_k}", "value": value})
    return records


def summarize(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(records)
    return df.groupby(["variant", "task", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()


def best_baseline(records: list[dict], variants: list[str], task: str, metric: str) -> str | None:
    """The baseline (not a sparse-sharing variant, not a control) with the best mean ``metric`` on ``task``."""
    s = summarize(records)
    base = [v for v in variants if v.split("+")[0] in BASELINE_VARIANTS]
    rows = s[(s.variant.isin(base)) & (s.task == task) & (s.metric == metric)]
    if rows.empty:
        return None
    i = rows["mean"].idxmax() if HIGHER_IS_BETTER[metric] else rows["mean"].idxmin()
    return str(rows.loc[i, "variant"])


def seesaw(records: list[dict], variant: str, config: ProjectConfig, reference: str = "single") -> bool:
    """One task significantly better and another significantly worse than ``reference`` (95%)."""
    signs = []
    for t in config.tasks:
        m = primary_metric(t.type)
        signs.append(improvement_sign(compare_pair(records, variant, reference, t.name, m), m))
    return 1 in signs and -1 in signs


def render_report(config, records, variants, data_path, cleaning, counts, sparse_info=None, ranking_note="") -> str:
    s = summarize(records)

    def cell(v, t, m, fmt="{:.4f}"):
        row = s[(s.variant == v) & (s.task == t) & (s.metric == m)]
        if row.empty or not np.isfinite(row["mean"].iloc[0]):
            return "–"
        mean, std, n = row["mean"].iloc[0], row["std"].iloc[0], int(row["count"].iloc[0])
        return (fmt.format(mean) + (" ± " + fmt.format(std) if n > 1 and np.isfinite(std) else ""))

    n_seeds = int(max((r["seed"] for r in records if r["variant"] != "oracle"), default=0)
                  - min((r["seed"] for r in records if r["variant"] != "oracle"), default=0) + 1)
    lines = [
        f"# Comparison on `{config.dataset.name}`",
        "",
        f"Data: `{data_path}` — {cleaning}.",
        "Splits: "
        + ", ".join(
            f"{n} {c['rows']} rows (" + ", ".join(f"{t}: {c[t]}" for t in config.task_names) + ")"
            for n, c in counts.items()
        )
        + ".",
        f"Model: MLP {config.model.mlp}, embedding dim {config.model.embedding_dim}, interaction "
        f"`{config.model.interaction}`"
        + (f", numeric bottom MLP {config.model.dense_mlp}" if config.model.dense_mlp else "")
        + f"; budget: {_budget(config)}; batch {config.training.batch_size}, "
        f"Adam lr {config.training.learning_rate}, schedule `{config.training.schedule}`. Every variant trains through the "
        "same engine on the same splits, transformed by the pipeline's `preprocessing_fn`; `epochs`, `steps` and `wall s` "
        f"count every optimizer step and second, warm-up and mask search included. {n_seeds} seed(s).",
        "",
        "Metrics on the test split, each task on its own sample space, mean ± std over seeds. "
        "Δ vs `single`: paired over seeds (same seed, same split), mean and 95% Student-t interval; relative (%) for "
        "MSE/logloss, absolute for AUC; `*` = the interval excludes 0. **seesaw**: one task significantly better and "
        "another significantly worse than `single`.",
        "",
    ]
    has_single = "single" in variants
    # the headline table, shaped like the papers' Table 2
    header = ["variant"]
    for t in config.tasks:
        pm = primary_metric(t.type)
        header += [f"{t.name} {pm.upper()}", f"Δ{'%' if relative(pm) else ''} vs single [95% CI]"]
    header += ["seesaw", "epochs", "steps", "wall s"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    order = list(variants) + (["oracle"] if "oracle" in set(s.variant) else [])
    for v in order:
        row = [f"`{v}`"]
        for t in config.tasks:
            pm = primary_metric(t.type)
            row.append(cell(v, t.name, pm, "{:.5f}" if pm == "mse" else "{:.4f}"))
            if has_single and v not in ("single", "oracle"):
                row.append(format_interval(compare_pair(records, v, "single", t.name, pm), pm))
            else:
                row.append("–")
        row.append("**seesaw**" if has_single and v not in ("single", "oracle") and seesaw(records, v, config) else "")
        row.append(cell(v, "all", "epochs", "{:.0f}"))
        row.append(cell(v, "all", "steps", "{:,.0f}"))
        row.append(cell(v, "all", "train_seconds", "{:.0f}"))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if "oracle" in order:
        lines.append(
            "`oracle` scores the generator's true probabilities (`dataset.truth`), the best any model can do in expectation."
        )
        lines.append("")
    lines += _versus_best_section(config, records, variants)
    lines += _controls_section(config, records, variants)
    # every metric
    lines += ["## All metrics", ""]
    header = ["variant"]
    for t in config.tasks:
        if t.type == "binary":
            header += [f"{t.name} AUC", f"{t.name} GAUC", f"{t.name} logloss", f"{t.name} calib."]
        else:
            header += [f"{t.name} MSE", f"{t.name} calib."]
        header.append(f"{t.name} MTL gain")
    header += ["params"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))

    def mean_of(v, t, m):
        row = s[(s.variant == v) & (s.task == t) & (s.metric == m)]
        return float(row["mean"].iloc[0]) if not row.empty else float("nan")

    for v in order:
        row = [f"`{v}`"]
        for t in config.tasks:
            if t.type == "binary":
                row += [cell(v, t.name, "auc"), cell(v, t.name, "gauc"), cell(v, t.name, "logloss"), cell(v, t.name, "calibration", "{:.3f}")]
            else:
                row += [cell(v, t.name, "mse", "{:.5f}"), cell(v, t.name, "calibration", "{:.3f}")]
            pm = primary_metric(t.type)
            if has_single and v != "single":
                g = mtl_gain(pm, mean_of(v, t.name, pm), mean_of("single", t.name, pm))
                row.append(f"{g * 100:+.2f}%" if np.isfinite(g) else "–")
            else:
                row.append("–")
        row.append(cell(v, "all", "params", "{:,.0f}"))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("MTL gain: PLE Eq. 11 vs `single` on the task's primary metric (AUC ↑, MSE ↓), from the means.")
    lines.append("")
    lines += _sparse_section(config, s, sparse_info or {})
    lines += _ranking_section(config, s, ranking_note)
    return "\n".join(lines)


def _versus_best_section(config, records, variants) -> list[str]:
    methods = [v for v in variants if v.split("+")[0] not in BASELINE_VARIANTS]
    if not methods:
        return []
    lines = ["## Against the best baseline", "",
             "Per task, the baseline with the best mean (single, hard sharing, shared-bottom, MMoE, CGC, PLE, ESMM, "
             "whichever were compared); paired Δ over seeds with its 95% interval (`*` = excludes 0).", ""]
    head = ["variant"]
    best = {}
    for t in config.tasks:
        pm = primary_metric(t.type)
        best[t.name] = best_baseline(records, variants, t.name, pm)
        head.append(f"{t.name} Δ vs `{best[t.name]}`")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for v in methods:
        row = [f"`{v}`"]
        for t in config.tasks:
            pm = primary_metric(t.type)
            row.append(format_interval(compare_pair(records, v, best[t.name], t.name, pm), pm) if best[t.name] else "–")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def _controls_section(config, records, variants) -> list[str]:
    controls = [v for v in variants if v.split("+")[0] in CONTROL_VARIANTS]
    if not controls:
        return []
    lines = ["## Does the mask search beat its controls?", "",
             "`connection_theta`: masks of the per-layer densities the search chose, keeping the largest |θ| (no "
             "per-task rounds); `connection_random`: the same densities at random. Both train jointly from the same θ "
             "with the same budget. Δ = search − control, paired over seeds, 95% interval.", ""]
    head = ["search vs control"] + [f"{t.name} Δ" for t in config.tasks] + ["verdict"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for c in controls:
        ref = reference_spec(c)
        row = [f"`{ref}` vs `{c}`"]
        signs = []
        for t in config.tasks:
            pm = primary_metric(t.type)
            iv = compare_pair(records, ref, c, t.name, pm)
            signs.append(improvement_sign(iv, pm))
            row.append(format_interval(iv, pm))
        if -1 in signs and 1 not in signs:
            verdict = "the control is significantly better"
        elif 1 in signs and -1 not in signs:
            verdict = "the search is significantly better"
        elif 1 in signs:
            verdict = "mixed (one task each way)"
        else:
            verdict = "no significant difference"
        row.append(verdict)
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def _budget(config: ProjectConfig) -> str:
    tc, sc = config.training, config.sparse
    warm = f"{sc.warmup_steps} warm-up steps" if sc.warmup_steps else f"{sc.warmup_epochs} warm-up epoch(s)"
    if tc.patience is None:
        return f"fixed: {tc.epochs} epochs (search rounds {sc.round_epochs} epoch(s), {warm})"
    return (f"protocol: every variant, every search round and joint training until the validation loss stops "
            f"improving (patience {tc.patience}, at most {tc.max_epochs} epochs, best epoch restored); {warm}")


def _sparse_section(config, s, sparse_info) -> list[str]:
    if not sparse_info:
        return []
    sc = config.sparse
    tasks = config.task_names
    lines = [
        "## Sparse sharing: masks",
        "",
        f"Search: {sc.rounds} prunings of q = {sc.prune_rate:.1%} of the alive weights "
        f"(final density {sc.final_density}"
        + (f", then on while the sparsest round is the best, down to {sc.min_density or sc.min_layer_density}" if sc.extend else "")
        + f"), scope `{sc.scope}`, "
        + (f"{sc.round_epochs} epoch(s)" if config.training.patience is None else "early stopping")
        + " per round on the task's own rows; "
        f"best validation round per task{'' if sc.allow_dense else ' (dense round forbidden)'}; joint schedule `{sc.schedule}`. "
        "Fractions are of all MLP connections, mean over seeds; FLOPs are non-zero multiply-adds of the masked MLP per example "
        "relative to the dense MLP (unstructured zeros are not faster on a dense kernel).",
        "",
    ]
    head = ["variant"] + [f"{t} density" for t in tasks] + ["shared"] + [f"{t} only" for t in tasks] + ["unused"]
    head += [f"{t} FLOPs" for t in tasks] + [f"{t} chosen rounds" for t in tasks] + ["search cost ×joint"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for v, infos in sparse_info.items():
        row = [f"`{v}`"]
        row += [f"{np.mean([a['density'][t] for a in infos]):.3f}" for t in tasks]
        row += [f"{np.mean([a['overall']['shared'] for a in infos]):.3f}"]
        row += [f"{np.mean([a['overall'][f'{t}_only'] for a in infos]):.3f}" for t in tasks]
        row += [f"{np.mean([a['overall']['unused'] for a in infos]):.3f}"]
        row += [f"{np.mean([a['flops_fraction'][t] for a in infos]):.1%}" for t in tasks]
        row += [",".join(str(a.get("chosen_round", {}).get(t, "–")) for a in infos) for t in tasks]
        cost = s[(s.variant == v) & (s.task == "all") & (s.metric == "search_cost_ratio")]
        row.append(f"{cost['mean'].iloc[0]:.1f}×" if not cost.empty else "–")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if any("overlap" in a for infos in sparse_info.values() for a in infos):
        pair = next(a["overlap"]["tasks"] for infos in sparse_info.values() for a in infos if "overlap" in a)
        lines += [
            f"Overlap of the `{pair[0]}` and `{pair[1]}` masks (fractions of all MLP connections, mean over seeds): "
            "`shared` as found, `nested` the most two masks of these per-layer densities can share (the sparser inside "
            "the denser), `independent` what masks drawn at random at these densities would share; `containment` = the "
            "part of the sparser mask inside the other (1 = nested).",
            "",
            "| variant | shared | nested | independent | containment |",
            "|---|---|---|---|---|",
        ]
        for v, infos in sparse_info.items():
            ov = [a["overlap"] for a in infos if "overlap" in a]
            if ov:
                lines.append(f"| `{v}` | " + " | ".join(f"{np.mean([o[k] for o in ov]):.3f}"
                                                       for k in ("shared", "nested", "independent", "containment")) + " |")
        lines.append("")
    lines.append("Per-layer density (first seed):")
    lines.append("")
    for v, infos in sparse_info.items():
        a = infos[0]
        for layer in a["layers"]:
            dens = ", ".join(f"{t} {layer['density'][t]:.3f}" for t in tasks)
            lines.append(f"- `{v}` {layer['layer']} {layer['shape'][0]}×{layer['shape'][1]}: {dens}; shared {layer['shared']:.3f}, unused {layer['unused']:.3f}")
    lines.append("")
    for v, infos in sparse_info.items():
        lines.append(f"![{v} mask sharing](masks/{_file_name(v)}_seed{config.training.seed}_mask_sharing.png)")
        if infos[0].get("search"):
            lines.append(f"![{v} pruning curve](masks/{_file_name(v)}_seed{config.training.seed}_pruning_curve.png)")
    lines.append("")
    return lines


def _ranking_section(config, s, note) -> list[str]:
    rows = s[s.task == "ranking"]
    if rows.empty:
        return []
    rk = config.ranking
    lines = [
        "## Offline ranking simulation",
        "",
        f"Within each test request, rank the impressed items by pCTR^{rk.a:g} · pCVR^{rk.b:g} · {rk.length_column}^{rk.c:g} "
        f"(CTR model / CVR model), keep the top {rk.top_k}, and sum the {note}; mean per request, mean ± std over seeds.",
        "",
        f"| CTR model / CVR model | view seconds @ {rk.top_k} | vs single/single |",
        "|---|---|---|",
    ]
    base = rows[rows.variant == "single/single"]["mean"]
    base = float(base.iloc[0]) if not base.empty else float("nan")
    order = {f"{a}/{b}": i for i, (a, b) in enumerate(RANKING_PAIRINGS)}
    rows = rows.assign(_o=[order.get(v, len(order) + (v == "random order")) for v in rows.variant]).sort_values("_o")
    for _, r in rows.iterrows():
        rel = f"{(r['mean'] / base - 1) * 100:+.2f}%" if np.isfinite(base) else "–"
        std = f" ± {r['std']:.2f}" if np.isfinite(r["std"]) else ""
        lines.append(f"| {r['variant']} | {r['mean']:.2f}{std} | {rel} |")
    lines.append("")
    return lines


def compare_main_table(records: list[dict], config: ProjectConfig) -> str:
    """A compact terminal table: primary metric per task and variant."""
    s = summarize(records)
    tasks = config.tasks
    head = f"{'variant':>14} " + " ".join(f"{t.name + ' ' + primary_metric(t.type).upper():>22}" for t in tasks)
    out = [head]
    for v in dict.fromkeys(r["variant"] for r in records if r["task"] != "ranking"):
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
