"""The ServingSmokeCheck body (its TFX adapter is ``components.definitions.ServingSmokeCheck``): a Docker-free
stand-in for InfraValidator.

Loads the exported SavedModel in a *fresh Python process* (so nothing from the training
process — custom objects, graphs, caches — can make a broken export look fine), calls
every signature on sampled eval examples and checks shapes, ranges and finiteness:

- ``serving_default`` on serialized raw examples → every task output and ``rank_score``,
  shape ``[N]``, finite; task outputs in [0, 1]; ``rank_score >= 0``;
- ``serving_raw`` on the same rows parsed into named tensors → equal to ``serving_default``
  within 1e-5;
- ``transform_features`` → every model input and ``label__<task>`` present with ``N`` rows.

Writes ``smoke_check.json`` and ``INFRA_BLESSED`` / ``INFRA_NOT_BLESSED`` into the
``InfraBlessing`` artifact and sets its ``blessed`` custom property (what Pusher checks).
"""


import json
import os
import subprocess
import sys

REPORT = "smoke_check.json"


def check_saved_model(model_dir: str, example_files: list[str], rows: int, task_names: list[str]) -> dict:
    """Runs in the fresh process. Returns ``{"ok": bool, "checks": [...], "errors": [...]}``."""
    import numpy as np
    import tensorflow as tf

    checks, errors = [], []
    records = [r.numpy() for r in tf.data.TFRecordDataset(example_files, compression_type="GZIP").take(rows)]
    if not records:
        return {"ok": False, "checks": [], "errors": ["no eval examples to call the model with"]}
    n = len(records)
    loaded = tf.saved_model.load(model_dir)
    sigs = loaded.signatures
    for name in ("serving_default", "serving_raw", "transform_features"):
        if name not in sigs:
            errors.append(f"signature {name!r} missing (has {sorted(sigs)})")
    if errors:
        return {"ok": False, "checks": checks, "errors": errors}

    out = {k: v.numpy() for k, v in sigs["serving_default"](examples=tf.constant(records)).items()}
    for key in [*task_names, "rank_score"]:
        if key not in out:
            errors.append(f"serving_default: output {key!r} missing (has {sorted(out)})")
            continue
        v = out[key]
        if v.shape != (n,):
            errors.append(f"serving_default: {key} shape {v.shape} != ({n},)")
        elif not np.all(np.isfinite(v)):
            errors.append(f"serving_default: {key} has non-finite values")
        elif key in task_names and not (v.min() >= 0.0 and v.max() <= 1.0):
            errors.append(f"serving_default: {key} outside [0, 1]: [{v.min()}, {v.max()}]")
        elif key == "rank_score" and v.min() < 0:
            errors.append(f"serving_default: rank_score negative: {v.min()}")
        else:
            checks.append(f"serving_default {key}: shape ({n},), range [{v.min():.4g}, {v.max():.4g}]")

    raw_sig = sigs["serving_raw"]
    spec = {k: tf.io.FixedLenFeature([], s.dtype) for k, s in raw_sig.structured_input_signature[1].items()}
    parsed = tf.io.parse_example(tf.constant(records), spec)
    raw_out = {k: v.numpy() for k, v in raw_sig(**parsed).items()}
    for key in [*task_names, "rank_score"]:
        if key in out and key in raw_out:
            diff = float(np.max(np.abs(raw_out[key] - out[key]) / np.maximum(1.0, np.abs(out[key]))))
            if diff > 1e-5:
                errors.append(f"serving_raw: {key} differs from serving_default by {diff:.3g}")
            else:
                checks.append(f"serving_raw {key}: equals serving_default (max rel diff {diff:.2g})")

    tf_out = sigs["transform_features"](examples=tf.constant(records))
    for key in [f"label__{t}" for t in task_names]:
        if key not in tf_out:
            errors.append(f"transform_features: output {key!r} missing")
        elif tf_out[key].shape[0] != n:
            errors.append(f"transform_features: {key} has {tf_out[key].shape[0]} rows, expected {n}")
    if not errors:
        checks.append(f"transform_features: {len(tf_out)} outputs for {n} rows")
    return {"ok": not errors, "rows": n, "checks": checks, "errors": errors}


def run_in_fresh_process(model_dir: str, example_files: list[str], rows: int, task_names: list[str], timeout: int = 600) -> dict:
    cmd = [sys.executable, "-m", "components.smoke_check", json.dumps(
        {"model_dir": model_dir, "files": example_files, "rows": rows, "tasks": task_names})]
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "checks": [], "errors": [f"loading/calling the model took more than {timeout}s"]}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"ok": False, "checks": [], "errors": [f"model process failed (exit {proc.returncode}): {proc.stderr[-2000:]}"]}
    return json.loads(lines[-1])


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    print(json.dumps(check_saved_model(args["model_dir"], args["files"], args["rows"], args["tasks"])))
