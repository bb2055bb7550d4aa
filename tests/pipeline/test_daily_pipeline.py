"""End-to-end: `ncs daily` over consecutive days (catch-up, a mask refresh, a warm start), a corrupted day, a kill
during training."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from tests.conftest import tiny_config_dict


ROWS_PER_DAY = 800
TRAINING_EPOCHS, DAILY_EPOCHS = 2, 1  # different, so the daily override is visible


# the daily orchestration does not depend on the feature set: every kind of feature goes through the pipeline in the
# TFX end-to-end test (tests/conftest.py's TINY_FEATURES). Here, one of each kind of analysis the window's analyzer
# cache carries (a vocabulary with OOV buckets, a z-score) and a hashed id the warm start keeps: each more vocabulary
# costs every day's Transform, training and evaluation (an 800-row day: Transform 20.6 -> 11.8 s with these three).
DAILY_FEATURES = ("user_id", "video_id", "duration")


def _config(tmp_path: Path) -> Path:
    d = tiny_config_dict(variant="connection")
    d["features"] = [f for f in d["features"] if f["name"] in DAILY_FEATURES]
    assert len(d["features"]) == len(DAILY_FEATURES)
    d["training"]["epochs"] = TRAINING_EPOCHS  # a day with new masks trains from their θ for this many epochs
    d["sparse"] = {"rounds": 1, "final_density": 0.5}
    # tiny data: value thresholds only check sanity, change thresholds allow day-to-day noise
    d["pipeline"]["thresholds"] = {"ctr": {"value": 0.3, "max_change": 0.5}, "cvr": {"value": 0.5, "max_change": 0.5}}
    d["pipeline"]["smoke_check_rows"] = 16
    d["pipeline"]["slices"] = []  # TFMA slices cost Evaluator time and are not what this test checks
    d["pipeline"]["calibration_plot"] = False  # a plot nobody reads here, Evaluator time
    d["daily"] = {"window_days": 2, "epochs": DAILY_EPOCHS, "refresh": {"every_days": 7, "max_drift": 0.3}}
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _daily(cfg, data, serving, home, day, *extra):
    args = ["daily", "--config", str(cfg), "--data", str(data), "--date", day, "--serving-dir", str(serving),
            "--beam-arg=--direct_num_workers=1", *extra]
    return CliRunner().invoke(main, args, env={"NCS_HOME": str(home)}, catch_exceptions=False)


def _versions(serving: Path) -> list[str]:
    return sorted(p.name for p in serving.iterdir() if p.name.isdigit()) if serving.exists() else []


def _ledger(home: Path) -> dict:
    return json.loads((home / "daily" / "ncs-ctr-cvr.json").read_text())["days"]


def _store(home: Path):
    from pipeline.runner import metadata_store

    return metadata_store(home / "metadata" / "ncs-ctr-cvr.sqlite")


def _trainer_run(home: Path, model_uri: str) -> dict:
    """How the MaskedTrainer that wrote ``model_uri`` ran: its ``epochs`` parameter (0 = the configured
    epochs), its inputs (``base_model``, ``masks`` URIs or None) and the epochs it trained (its summary)."""
    from serving.export import ASSETS_EXTRA

    store = _store(home)
    model = next(a for a in store.get_artifacts_by_type("Model") if a.uri == model_uri)
    ex_id = next(e.execution_id for e in store.get_events_by_artifact_ids([model.id]) if e.type == e.OUTPUT)
    execution = store.get_executions_by_id([ex_id])[0]
    inputs = {}
    for e in store.get_events_by_execution_ids([ex_id]):
        if e.type == e.INPUT:
            inputs.setdefault(e.path.steps[0].key, []).extend(a.uri for a in store.get_artifacts_by_id([e.artifact_id]))
    summary = json.loads((Path(model_uri) / "Format-Serving" / ASSETS_EXTRA / "training_summary.json").read_text())
    return {
        "epochs_param": execution.custom_properties["epochs"].int_value,
        "base_model": inputs.get("base_model", [None])[0],
        "masks": inputs["masks"][0],
        "trained_epochs": summary["epochs"],
        "warm_start": summary.get("warm_start", {}).get("from"),
    }


@pytest.mark.e2e(seconds=400)
def test_daily_catch_up_refresh_from_theta_reject_kill_and_warm_start(tmp_path):
    data, home, serving = tmp_path / "logs", tmp_path / "home", tmp_path / "serving"
    r = CliRunner().invoke(main, ["generate", "--out", str(data), "--days", "4", "--rows-per-day", str(ROWS_PER_DAY),
                                  "--drift", "0.5", "--drift-day", "3"])
    assert r.exit_code == 0, r.output
    cfg = _config(tmp_path)
    # day 3 arrives corrupted (types and label domain broken)
    bad_file = next((data / "20260103").glob("*.csv"))
    bad = pd.read_csv(bad_file)
    bad["duration"] = bad["duration"].astype(str)
    bad.loc[::7, "duration"] = "n/a"
    bad.loc[::11, "click"] = 2
    bad.to_csv(bad_file, index=False)

    # the first daily run catches up days 1..2 in date order, new masks asked for: day 1 searches the first
    # masks; day 2 searches again and, although day 1's model is blessed, joint training starts from the
    # new search's θ (not a warm start), for training.epochs
    r = _daily(cfg, data, serving, home, "20260102", "--refresh-masks")
    assert r.exit_code == 0, r.output
    days = _ledger(home)
    assert [d for d in days] == ["20260101", "20260102"]
    assert all(days[d]["status"] == "succeeded" for d in days)
    assert [days[d]["masks_refreshed"] for d in days] == [True, True]
    assert "first mask search" in days["20260101"]["refresh_reason"]
    assert "refresh requested" in days["20260102"]["refresh_reason"]
    masks1, masks2 = days["20260101"]["masks_uri"], days["20260102"]["masks_uri"]
    assert masks1 != masks2
    assert [days[d]["warm_started_from"] for d in days] == [None, None]
    assert days["20260101"]["window"] == ["20260101"]
    assert days["20260102"]["window"] == ["20260101", "20260102"]
    pushed = [days[d]["pushed_version"] for d in days]
    assert all(pushed) and pushed == sorted(pushed) and _versions(serving) == pushed
    models = {d: _model_uri_of(home, days[d]["pushed_version"]) for d in days}
    for d, masks in (("20260101", masks1), ("20260102", masks2)):
        assert _trainer_run(home, models[d]) == {
            "epochs_param": 0, "base_model": None, "masks": masks, "trained_epochs": TRAINING_EPOCHS, "warm_start": None}
    for d in days:
        assert 0 < days[d]["metrics"]["ctr/auc"] < 1 and days[d]["metrics"]["cvr/mse"] >= 0
    assert "ctr/auc/baseline" in days["20260102"]["metrics"]  # evaluated against day 1's blessed model
    # day 2's Transform read day 1's analyzer cache (stamped with the key of this config and schema), so its
    # analysis only read the new span
    (t1, c1), (t2, c2) = _transform_runs(home)
    assert c1["in"] == [] and c2["in"] == c1["out"] and len(c1["out"]) == 1
    assert c1["out_keys"] == c2["out_keys"] and c1["out_keys"][0]

    # re-running a day that succeeded is a no-op
    r = _daily(cfg, data, serving, home, "20260102")
    assert r.exit_code == 0 and "nothing to do" in r.output

    # the corrupted day is rejected at validation; the served versions do not change
    r = _daily(cfg, data, serving, home, "20260103")
    assert r.exit_code == 1 and "REJECTED" in r.output, r.output
    # the anomalies name both broken columns and the report file
    assert "ExampleValidator found anomalies" in r.output and "SchemaDiff.pb" in r.output, r.output
    assert "duration" in r.output and "click" in r.output, r.output
    assert _versions(serving) == pushed
    assert len(_store(home).get_artifacts_by_type("Model")) == 2  # nothing trained on the rejected day
    assert _ledger(home)["20260103"]["status"] == "rejected"

    # day 4: killed during training, nothing is pushed; the re-run completes
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "daily", "--config", str(cfg), "--data", str(data), "--date", "20260104",
             "--serving-dir", str(serving), "--beam-arg=--direct_num_workers=1"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NCS_HOME": str(home)}, start_new_session=True,
        )
        deadline = time.time() + 600
        while "MaskedTrainer: joint training from" not in log.read_text():  # training has started
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _versions(serving) == pushed
    assert _ledger(home)["20260104"]["status"] == "running"  # what a killed run leaves

    r = _daily(cfg, data, serving, home, "20260104")
    assert r.exit_code == 0, r.output
    # the re-run re-used what the killed run had finished
    from ml_metadata.proto.metadata_store_pb2 import Execution

    store = _store(home)
    types = {t.id: t.name.split(".")[-1] for t in store.get_execution_types()}
    last = max(e.id for e in store.get_executions() if types[e.type_id] == "FileBasedExampleGen")  # the CSV executor
    cached = {types[e.type_id] for e in store.get_executions() if e.id >= last and e.last_known_state == Execution.CACHED}
    assert {"FileBasedExampleGen", "StatisticsGen", "ExampleValidator", "ValidationGate", "Transform"} <= cached, cached
    assert "MaskedTrainer" not in cached  # the killed step runs again
    # day 4's Transform (of the killed run, re-used by the re-run) read day 2's cache: the newest of an earlier day
    runs = _transform_runs(home)
    assert len(runs) == 3 and runs[2][1]["in"] == runs[1][1]["out"], runs
    days = _ledger(home)
    d4 = days["20260104"]
    assert d4["status"] == "succeeded" and d4["pushed_version"] > pushed[-1]
    assert _versions(serving) == pushed + [d4["pushed_version"]]
    assert d4["window"] == ["20260104"]  # 2 days: the rejected day 3 stays out, day 2 is too old
    # day 2's masks are kept (checked against day 2's statistics); the model warm-starts from the latest
    # blessed one (day 2's: day 3 was rejected) and trains daily.epochs
    assert not d4["masks_refreshed"] and "masks from 20260102 kept" in d4["refresh_reason"], d4
    assert "drift" in d4["refresh_reason"]
    assert d4["masks_uri"] == masks2 and d4["warm_started_from"] == models["20260102"]
    assert _trainer_run(home, _model_uri_of(home, d4["pushed_version"])) == {
        "epochs_param": DAILY_EPOCHS, "base_model": models["20260102"], "masks": masks2, "trained_epochs": DAILY_EPOCHS,
        "warm_start": models["20260102"]}
    assert "ctr/auc/baseline" in d4["metrics"] and 0 < d4["metrics"]["ctr/auc"] < 1

    # the history table and its plot
    r = CliRunner().invoke(main, ["history", "--config", str(cfg), "--plot", str(tmp_path / "days.png")],
                           env={"NCS_HOME": str(home)})
    assert r.exit_code == 0, r.output
    assert re.search(r"20260103\s+rejected", r.output) and "searched" in r.output and "reused" in r.output, r.output
    assert (tmp_path / "days.png").stat().st_size > 0


def _transform_runs(home: Path) -> list:
    """Per finished Transform execution, oldest first: ``(id, {"in": cache URIs read, "out": cache URIs written,
    "out_keys": their ncs_cache_key})``."""
    from ml_metadata.proto.metadata_store_pb2 import Execution

    from components.transform_cache import CACHE_KEY

    store = _store(home)
    t_type = next(t.id for t in store.get_execution_types() if t.name.endswith("Transform"))
    runs = []
    for ex in sorted(store.get_executions(), key=lambda e: e.id):
        if ex.type_id != t_type or ex.last_known_state != Execution.COMPLETE:
            continue
        io = {"in": [], "out": [], "out_keys": []}
        for e in store.get_events_by_execution_ids([ex.id]):
            key = e.path.steps[0].key
            if key in ("analyzer_cache", "updated_analyzer_cache"):
                a = store.get_artifacts_by_id([e.artifact_id])[0]
                io["in" if e.type == e.INPUT else "out"].append(a.uri)
                if e.type == e.OUTPUT:
                    io["out_keys"].append(a.custom_properties[CACHE_KEY].string_value if CACHE_KEY in a.custom_properties else "")
        runs.append((ex.id, io))
    return runs


def _model_uri_of(home: Path, version: str) -> str:
    """The Model artifact pushed as ``version`` (the PushedModel's lineage in MLMD)."""
    store = _store(home)
    for pm in store.get_artifacts_by_type("PushedModel"):
        if pm.custom_properties["pushed_version"].string_value == version:
            ex = [e.execution_id for e in store.get_events_by_artifact_ids([pm.id]) if e.type == e.OUTPUT][0]
            ins = [e.artifact_id for e in store.get_events_by_execution_ids([ex]) if e.type == e.INPUT]
            model_type = store.get_artifact_type("Model").id
            return [a.uri for a in store.get_artifacts_by_id(ins) if a.type_id == model_type][0]
    raise AssertionError(f"no push of version {version}")


def test_kubeflow_daily_compile_imports_masks_and_writes_a_recurring_run(tmp_path):
    cfg = _config(tmp_path)
    out, rr = tmp_path / "kfp" / "daily.json", tmp_path / "kfp" / "recurring.json"
    base = ["compile", "--config", str(cfg), "--image", "registry.example/ncs:1", "--out", str(out), "--daily"]
    r = CliRunner().invoke(main, base)
    assert r.exit_code != 0 and "--masks-uri" in r.output  # a sparse variant must say which masks to reuse
    r = CliRunner().invoke(main, base + ["--masks-uri", "gs://bucket/ncs/MaskSearch/masks/7", "--recurring-run", str(rr),
                                         "--cron", "0 30 2 * * *"])
    assert r.exit_code == 0, r.output
    dag = json.loads(out.read_text())["pipelineSpec"]["root"]["dag"]["tasks"]
    assert {"masks_importer", "latest_blessed_model_resolver-model-resolver", "MaskedTrainer", "Evaluator", "Pusher"} <= set(dag)
    assert "MaskSearch" not in dag
    # the trainer warm-starts from the latest blessed model and trains with the imported masks
    inputs = dag["MaskedTrainer"]["inputs"]["artifacts"]
    assert inputs["base_model"]["taskOutputArtifact"]["producerTask"] == "latest_blessed_model_resolver-model-resolver"
    assert inputs["masks"]["taskOutputArtifact"]["producerTask"] == "masks_importer"
    text = out.read_text()
    assert "gs://bucket/ncs/MaskSearch/masks/7" in text and "{YYYY}{MM}{DD}" in text
    spec = json.loads(rr.read_text())
    assert spec["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"
    assert spec["max_concurrency"] == "1" and spec["no_catchup"] is False
    assert "root" in spec["pipeline_spec"]


def test_daily_bad_input_is_named(tmp_path):
    cfg = _config(tmp_path)
    data, home = tmp_path / "logs", tmp_path / "home"
    (data / "20260101").mkdir(parents=True)
    r = _daily(cfg, data, tmp_path / "serving", home, "2026-01-01")
    assert r.exit_code == 2 and "YYYYMMDD" in r.output
    r = _daily(cfg, data, tmp_path / "serving", home, "20260101")  # a day folder without files
    assert r.exit_code == 1 and "NO DATA" in r.output and "20260101/*.csv" in r.output, r.output
    assert _ledger(home)["20260101"]["status"] == "no_data"
