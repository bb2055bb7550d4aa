"""End-to-end: `ncs generate` + `ncs compare` through the CLI, and a non-synthetic CSV."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from tests.conftest import tiny_config_dict


def _write_cfg(tmp_path, data):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.e2e
def test_generate_and_compare_end_to_end(tmp_path):
    """A baseline and connection through the CLI on one transformed split (the second run reuses it). The other
    sparse variant (neuron) and the other baselines train through the same code (tests/models)."""
    runner = CliRunner()
    data = tmp_path / "logs"
    r = runner.invoke(main, ["generate", "--out", str(data), "--days", "3", "--rows-per-day", "1500", "--with-truth"])
    assert r.exit_code == 0, r.output
    d = tiny_config_dict()
    # what compare does is independent of the feature kinds (each runs through tests/components/test_transform.py
    # and the pipeline tests); three features make every variant's trace and the transform cheaper
    d["features"] = [f for f in d["features"] if f["name"] in ("user_id", "video_id", "duration")]
    cfg = _write_cfg(tmp_path, d)
    out = tmp_path / "cmp"
    r = runner.invoke(main, ["compare", "--config", str(cfg), "--data", str(data), "--variants", "single,connection",
                             "--seeds", "1", "--out", str(out), "--set", "sparse.rounds=2", "--set", "sparse.final_density=0.3"])
    assert r.exit_code == 0, r.output
    assert "transform: wrote" in r.output
    df = pd.DataFrame(json.loads((out / "results.json").read_text()))
    cost = df[(df.variant == "connection") & (df.metric == "search_cost_ratio")].value
    assert len(cost) == 1 and cost.iloc[0] > 0
    # the mask search's optimizer steps are counted in the variant's budget
    steps = df[(df.task == "all") & (df.metric == "steps")].set_index("variant").value
    parts = df[(df.variant == "connection") & df.metric.isin(["warmup_steps", "search_steps", "joint_steps"])].value
    assert steps["connection"] == parts.sum() > steps["single"] > 0
    ranking = df[df.task == "ranking"]
    assert {"single/single", "single/connection", "connection/connection", "oracle/oracle"} <= set(ranking.variant)
    assert (ranking[ranking.variant == "oracle/oracle"].value.iloc[0] >= ranking[ranking.variant != "oracle/oracle"].value.max() - 1e-9)
    for v in ("connection",):
        for suffix in ("mask_analytics.json", "mask_sharing.png", "pruning_curve.png", "masks.npz"):
            assert (out / "masks" / f"{v}_seed42_{suffix}").exists()
        a = json.loads((out / "masks" / f"{v}_seed42_mask_analytics.json").read_text())
        assert [r["round"] for r in a["search"] if r["task"] == "cvr"] == [0, 1, 2]
    report = (out / "report.md").read_text()
    assert "## Sparse sharing: masks" in report and "## Offline ranking simulation" in report
    assert "single/connection" in report

    # baselines over two seeds, on the transformed split the first run cached
    r = runner.invoke(
        main, ["compare", "--config", str(cfg), "--data", str(data), "--variants", "single,layer", "--seeds", "2", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "transform: reusing" in r.output
    records = json.loads((out / "results.json").read_text())
    assert {tuple(sorted(x)) for x in records} == {("metric", "seed", "task", "value", "variant")}
    df = pd.DataFrame(records)
    models = df[df.task != "ranking"]
    assert set(models.variant) == {"single", "layer", "oracle"}
    assert {"single/single", "single/layer", "oracle/oracle", "random order"} <= set(df[df.task == "ranking"].variant)
    assert set(df[df.variant == "layer"].seed) == {42, 43}
    auc = df[(df.task == "ctr") & (df.metric == "auc") & (df.variant != "oracle")].value
    # one training day of 1,500 rows learns little, but a constant predictor (AUC exactly 0.5) fails here
    assert auc.between(0.3, 1.0).all() and ((auc - 0.5).abs() > 1e-3).all(), auc.tolist()
    mse = df[(df.task == "cvr") & (df.metric == "mse")].value
    assert np.isfinite(mse).all()
    # CVR metrics counted on clicked test rows only
    n_ctr = df[(df.task == "ctr") & (df.metric == "count")].value.iloc[0]
    n_cvr = df[(df.task == "cvr") & (df.metric == "count")].value.iloc[0]
    assert 0 < n_cvr < 0.5 * n_ctr
    report = (out / "report.md").read_text()
    assert "| `layer` |" in report and "MTL gain" in report and "±" in report and "steps" in report
    assert "ctr AUC" in r.output


def test_compare_any_csv_with_hash_split(tmp_path):
    """A data set unrelated to the generator: one CSV, two binary tasks, hash split."""
    rng = np.random.default_rng(0)
    n = 3000
    shop = rng.integers(0, 30, n)
    price = rng.lognormal(3, 1, n)
    buy = (rng.random(n) < 0.2 + 0.02 * (shop % 5)).astype(int)
    fav = (rng.random(n) < 0.3).astype(int)
    pd.DataFrame(
        {"uid": [f"u{i % 400}" for i in range(n)], "shop": [f"s{s}" for s in shop], "price": price, "buy": buy, "fav": fav}
    ).to_csv(tmp_path / "events.csv", index=False)
    cfg = {
        "dataset": {"name": "shop", "columns": ["uid", "shop", "price", "buy", "fav"], "group_key": "uid",
                    "split": {"by": "hash", "hash_key": "uid"},
                    "truth": {"buy": "true_buy"}},  # a diagnostic column these logs do not have
        "features": [
            {"name": "uid", "type": "categorical", "hash_buckets": 500},
            {"name": "shop", "type": "categorical", "vocab_size": 50},
            {"name": "price", "type": "numeric", "log": True},
        ],
        "tasks": [
            {"name": "buy", "type": "binary", "label": {"column": "buy"}},
            {"name": "fav", "type": "binary", "label": {"column": "fav"}, "loss": "focal"},
        ],
        "model": {"mlp": [8], "embedding_dim": 4, "tower": [4], "expert_mlp": [4]},
        "training": {"epochs": 1, "batch_size": 256},
    }
    p = _write_cfg(tmp_path, cfg)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["compare", "--config", str(p), "--data", str(tmp_path / "events.csv"),
                                  "--variants", "single,mmoe", "--seeds", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "dataset.truth column(s) ['true_buy'] are not in the logs" in r.output
    df = pd.DataFrame(json.loads((out / "results.json").read_text()))
    assert set(df.task) == {"buy", "fav", "all"} and "oracle" not in set(df.variant)


def test_cli_errors_are_clear(tmp_path):
    runner = CliRunner()
    bad = tiny_config_dict()
    bad["tasks"][1]["label"] = {"ratio": ["watch_secs", "duration"]}
    p = _write_cfg(tmp_path, bad)
    (tmp_path / "d").mkdir()
    r = runner.invoke(main, ["compare", "--config", str(p), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "tasks.1.label" in r.output
    good = _write_cfg(tmp_path, tiny_config_dict())
    r = runner.invoke(main, ["compare", "--config", str(good), "--data", str(tmp_path / "d"), "--variants", "foo", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "unknown variant" in r.output
    r = runner.invoke(main, ["compare", "--config", str(good), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "no log files" in r.output
    r = runner.invoke(main, ["compare", "--config", str(good), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                             "--set", "sparse.rounds=0"])
    assert r.exit_code != 0 and "sparse.rounds" in r.output and "--set sparse.rounds=0" in r.output
    r = runner.invoke(main, ["compare", "--config", str(good), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                             "--set", "novalue"])
    assert r.exit_code != 0 and "KEY=VALUE" in r.output
    r = runner.invoke(main, ["generate", "--out", str(tmp_path / "g"), "--days", "2", "--rows-per-day", "300"])
    assert r.exit_code == 0
    r = runner.invoke(main, ["compare", "--config", str(good), "--data", str(tmp_path / "g"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "needs at least 3 day folders" in r.output


def test_help_explains():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0 and "generate" in r.output and "compare" in r.output
    r = CliRunner().invoke(main, ["compare", "--help"])
    assert "--variants" in r.output and "all" in r.output


def test_protocol_and_variant_bad_input_is_named(tmp_path):
    runner = CliRunner()
    good = _write_cfg(tmp_path, tiny_config_dict())
    (tmp_path / "d").mkdir()
    base = ["compare", "--config", str(good), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]
    r = runner.invoke(main, base + ["--patience", "0"])
    assert r.exit_code == 2 and "--patience" in r.output
    r = runner.invoke(main, base + ["--max-epochs", "0", "--patience", "1"])
    assert r.exit_code == 2 and "--max-epochs" in r.output
    r = runner.invoke(main, base + ["--max-epochs", "4"])  # the tiny config has no patience
    assert r.exit_code == 2 and "--max-epochs caps the protocol" in r.output
    r = runner.invoke(main, base + ["--epochs", "2", "--patience", "1"])
    assert r.exit_code == 2 and "exclude each other" in r.output
    r = runner.invoke(main, base + ["--set", "training.patience=0"])
    assert r.exit_code != 0 and "training.patience" in r.output
    r = runner.invoke(main, base + ["--set", "sparse.min_density=1.5"])
    assert r.exit_code != 0 and "sparse.min_density" in r.output
    r = runner.invoke(main, base + ["--variants", "single,connection_theta"])
    assert r.exit_code == 2 and "needs 'connection'" in r.output
    r = runner.invoke(main, base + ["--variants", "connection+turbo"])
    assert r.exit_code == 2 and "unknown switch(es) ['turbo']" in r.output
    r = runner.invoke(main, base + ["--variants", "ple+big"])
    assert r.exit_code == 2 and "not to 'ple'" in r.output
    r = runner.invoke(main, ["generate", "--out", str(tmp_path / "g"), "--scenario", "shop"])
    assert r.exit_code == 2 and "--scenario" in r.output


def test_resolve_variants_presets_switches_and_control_order():
    from models.config import parse_config
    from pipeline.compare import TABLE2_VARIANTS, reference_spec, resolve_variants

    cfg = parse_config(tiny_config_dict())
    runs = resolve_variants(cfg, ["connection_random", "table2"])
    specs = [s for s, _, _ in runs]
    assert set(specs) == set(TABLE2_VARIANTS) and len(specs) == len(TABLE2_VARIANTS)
    assert specs[-2:] == ["connection_random", "connection_theta"]  # controls after their reference
    by = {s: (b, c) for s, b, c in runs}
    base, tuned = by["connection+tuning"]
    assert base == "connection" and tuned.tuning.gradient_conflict.enabled
    assert [t.weight for t in tuned.tasks] == [cfg.tuning.switches.balance[t.name] for t in tuned.tasks]
    assert by["connection+big"][1].tuning.width_multiplier == cfg.tuning.switches.width_multiplier
    assert by["connection+mv"][1].tuning.multi_view_dim == cfg.tuning.switches.multi_view_dim
    assert by["single"][1] == cfg and not by["connection"][1].tuning.gradient_conflict.enabled
    assert reference_spec("connection_theta+gc") == "connection+gc"


def test_seesaw_needs_two_significant_opposite_changes():
    from models.config import parse_config
    from pipeline.compare import render_report, seesaw

    cfg = parse_config(tiny_config_dict())

    def recs(variant, auc, mse):
        return [r for s, (a, m) in enumerate(zip(auc, mse)) for r in (
            {"variant": variant, "seed": s, "task": "ctr", "metric": "auc", "value": a},
            {"variant": variant, "seed": s, "task": "cvr", "metric": "mse", "value": m})]

    single = recs("single", [0.70, 0.71, 0.72], [0.100, 0.110, 0.090])
    # CTR clearly better, CVR clearly worse: a seesaw
    clear = recs("a", [0.72, 0.73, 0.74], [0.110, 0.121, 0.099])
    # CTR clearly better, CVR worse on average but inside the seed noise: not a seesaw
    noisy = recs("b", [0.72, 0.73, 0.74], [0.120, 0.100, 0.095])
    records = single + clear + noisy
    assert seesaw(records, "a", cfg) and not seesaw(records, "b", cfg)
    md = render_report(cfg, records, ["single", "a", "b"], "data", "clean", {"train": {"rows": 1, "ctr": 1, "cvr": 1}})
    row_a = next(line for line in md.splitlines() if line.startswith("| `a` |"))
    row_b = next(line for line in md.splitlines() if line.startswith("| `b` |"))
    assert "**seesaw**" in row_a and "**seesaw**" not in row_b
    assert "+10.00% [" in row_a  # relative MSE difference per seed, mean over seeds


def test_report_merges_runs_of_one_split_and_refuses_other_splits(tmp_path):
    counts = {"train": {"rows": 10, "ctr": 10, "cvr": 3}, "valid": {"rows": 5, "ctr": 5, "cvr": 1},
              "test": {"rows": 5, "ctr": 5, "cvr": 2}}

    def run(name, variants, shift, counts=counts):
        d = tmp_path / name
        d.mkdir()
        recs = [{"variant": v, "seed": s, "task": t, "metric": m, "value": val + shift * (v != "single")}
                for v in variants for s in (1, 2, 3)
                for t, m, val in (("ctr", "auc", 0.70 + 0.001 * s), ("cvr", "mse", 0.10 + 0.001 * s))]
        (d / "results.json").write_text(json.dumps(recs))
        (d / "run.json").write_text(json.dumps({"data": "logs", "cleaning": "read 20 rows", "counts": counts,
                                                "variants": variants, "ranking_note": ""}))
        return d

    a = run("a", ["single", "layer"], 0.01)
    b = run("b", ["single", "connection+tuning"], 0.02)
    cfg = _write_cfg(tmp_path, tiny_config_dict())
    r = CliRunner().invoke(main, ["report", "--config", str(cfg), "--from", str(a), "--from", str(b), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "m" / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows[:3]] == ["`single`", "`layer`", "`connection+tuning`"]
    assert "+0.0200 [+0.0200, +0.0200] *" in rows[2]  # paired against the first run's `single`
    merged = json.loads((tmp_path / "m" / "results.json").read_text())
    assert sum(1 for x in merged if x["variant"] == "single") == 6  # the duplicate single of run b is dropped
    other = run("c", ["mmoe"], 0.0, counts={**counts, "test": {"rows": 6, "ctr": 6, "cvr": 2}})
    r = CliRunner().invoke(main, ["report", "--config", str(cfg), "--from", str(a), "--from", str(other), "--out", str(tmp_path / "n")])
    assert r.exit_code == 1 and "its splits differ" in r.output and str(other) in r.output
    r = CliRunner().invoke(main, ["report", "--config", str(cfg), "--from", str(tmp_path / "m" / ".."), "--out", str(tmp_path / "n")])
    assert r.exit_code == 1 and "not an ncs compare output folder" in r.output
