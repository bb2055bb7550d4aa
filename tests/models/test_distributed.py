"""MultiWorkerMirroredStrategy from TF_CONFIG: the real MaskedTrainer body as two workers on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml

from models.distributed import is_chief, strategy_from_env
from tests.conftest import REPO, tiny_config_dict

TIMEOUT_S = 300


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path, n=40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "<no stderr>"


def test_strategy_from_env(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = strategy_from_env(log=None)
    assert strategy is tf.distribute.get_strategy() and is_chief(strategy)
    # a one-worker cluster is not distributed either
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}))
    assert strategy_from_env(log=None).num_replicas_in_sync == 1
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        strategy_from_env(log=None)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 5}}))
    with pytest.raises(ValueError, match="TF_CONFIG task"):
        strategy_from_env(log=None)
    # a cluster that names no task for this process
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}}))
    with pytest.raises(ValueError, match='TF_CONFIG names a multi-worker cluster but no "task"'):
        strategy_from_env(log=None)


def _masks_artifact(config, tables, out):
    """A TaskMasks artifact (masks + θ + vocabularies) with seeded random masks on a fresh θ."""
    from components.mask_search import MASKS_FILE, THETA_FILE, THETA_VOCAB_FILE, save_theta
    from models.masks import TaskMasks, prune
    from models.variants import build_model
    from models.warm_start import table_vocabularies

    model = build_model(config, tables, seed=11)
    base = TaskMasks.all_ones(model, "connection")
    rng = np.random.default_rng(0)
    masks = TaskMasks("connection", base.layer_names, {
        t: prune("connection", [rng.random(m.shape) for m in ms], ms, 0.5) for t, ms in base.masks.items()
    })
    out.mkdir(parents=True)
    masks.save(out / MASKS_FILE)
    save_theta(str(out / THETA_FILE), [np.array(w) for w in model.get_weights()])
    (out / THETA_VOCAB_FILE).write_text(json.dumps(table_vocabularies(tables)))
    return masks, [np.array(w) for w in model.get_weights()]


@pytest.mark.e2e
def test_masked_trainer_body_two_workers_equal_one_process(transformed, tmp_path, monkeypatch):
    import tensorflow_transform as tft

    from components.data import embedding_tables_from_transform
    from components.masked_trainer import train_and_export
    from models.config import parse_config
    from models.warm_start import read_warm_start

    data = tiny_config_dict(variant="connection", mlp=[32, 16])
    data["training"].update({"batch_size": 128, "epochs": 1})
    config = parse_config(data)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(data))
    transform = str(transformed / "transform")
    tables = embedding_tables_from_transform(config, tft.TFTransformOutput(transform))
    masks, theta = _masks_artifact(config, tables, tmp_path / "masks")

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, errs = [], []
    t0 = time.perf_counter()
    for i in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
               "TF_USE_LEGACY_KERAS": "1", "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        err = tmp_path / f"worker{i}.stderr"
        cmd = [sys.executable, "-m", "components.masked_trainer", "--config", str(cfg_file), "--examples", str(transformed),
               "--transform", transform, "--masks", str(tmp_path / "masks"), "--model-dir", str(tmp_path / f"worker{i}")]
        with open(err, "w") as fh:
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=fh))
        errs.append(err)
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    if any(p.poll() is None for p in procs):
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        pytest.fail(f"workers timed out after {TIMEOUT_S}s\n" + "\n".join(f"--- worker {i}\n{_tail(e)}" for i, e in enumerate(errs)))
    for i, (p, e) in enumerate(zip(procs, errs)):
        assert p.returncode == 0, f"worker {i} exited {p.returncode}\n{_tail(e)}"
    print(f"two workers: {time.perf_counter() - t0:.1f}s wall")

    summaries = [json.loads((tmp_path / f"worker{i}" / "summary.json").read_text()) for i in range(2)]
    assert all(s["workers"] == 2 for s in summaries)
    assert (tmp_path / "worker0" / "Format-Serving" / "saved_model.pb").exists()  # the chief exports ...
    assert not (tmp_path / "worker1" / "Format-Serving").exists()  # ... the other worker does not

    # one process, same config and global batch: the same rows per step
    monkeypatch.delenv("TF_CONFIG", raising=False)
    single = train_and_export(config, str(transformed), transform, str(tmp_path / "single"), str(tmp_path / "single_run"),
                              str(tmp_path / "masks"), strategy=tf.distribute.get_strategy(), export=False)
    assert single["workers"] == 1 and single["steps"] == summaries[0]["steps"] > 0

    names0, w0, _ = read_warm_start(str(tmp_path / "worker0" / "warm_start"))
    _, w1, _ = read_warm_start(str(tmp_path / "worker1" / "warm_start"))
    _, ws, _ = read_warm_start(str(tmp_path / "single" / "warm_start"))
    for a, b in zip(w0, w1):  # all-reduced gradients: identical weights on both workers
        np.testing.assert_array_equal(a, b)
    moved = False
    for name, a, b, t in zip(names0, w0, ws, theta):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
        moved |= "kernel" in name and not np.allclose(a, t)
    assert moved  # training did happen
    np.testing.assert_allclose(summaries[0]["valid_metrics"]["cvr"]["mse"], single["valid_metrics"]["cvr"]["mse"], rtol=1e-4)
    # kernel entries masked out for every task keep θ's value on the workers
    dead = [np.all([masks.masks[t][i] == 0 for t in masks.tasks], axis=0) for i in range(len(masks.layer_names))]
    kernels = [(a, t) for name, a, t in zip(names0, w0, theta) if "masked_dense" in name and name.endswith("kernel:0")]
    assert len(kernels) == len(dead)
    for (a, t), d in zip(kernels, dead):
        np.testing.assert_array_equal(a[d], t[d])
