"""MultiWorkerMirroredStrategy from TF_CONFIG: two worker processes on 127.0.0.1 train the masked network."""

import json
import math
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml

from models.config import parse_config
from models.distributed import (
    apply_masks,
    fixed_masks,
    masked_for_all,
    masked_weights_unchanged,
    run,
    strategy_from_env,
    train_masked_distributed,
)
from models.masks import TaskMasks
from models.variants import build_model
from tests.conftest import REPO, tiny_config_dict

ROWS, EPOCHS, TIMEOUT_S = 4000, 2, 100


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A small config (mlp [32, 16]) and 2 days x 2000 rows of synthetic logs."""
    from data.synthetic import write_logs

    root = tmp_path_factory.mktemp("distributed")
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_dict(variant="connection", mlp=[32, 16])))
    write_logs(root / "logs", 2, 2000, seed=0)
    return root, cfg, root / "logs"


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


def test_strategy_from_env_default(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert strategy_from_env(log=None) is tf.distribute.get_strategy()
    # a one-worker cluster is not distributed either
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}))
    assert strategy_from_env(log=None).num_replicas_in_sync == 1
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        strategy_from_env(log=None)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 5}}))
    with pytest.raises(ValueError, match="TF_CONFIG task"):
        strategy_from_env(log=None)


def test_single_process_neuron_masks(prepared):
    """The same trainer under the default strategy: unit masks, masked weights frozen, apply_masks == masks.apply."""
    config, tables, split = prepared
    holder = {}

    def make(model):
        holder["m"] = fixed_masks(model, "neuron", density=0.5, seed=1)
        return holder["m"]

    res = train_masked_distributed(config, tables, split, make, epochs=1, structure="neuron")
    masks = holder["m"]
    assert res.steps_per_epoch == len(split) // config.training.batch_size
    assert all(math.isfinite(x) for x in res.epoch_losses)
    unchanged, n_dead = masked_weights_unchanged(res, masks)
    assert unchanged and n_dead > 0
    # live weights did train
    live = [~d for d in masked_for_all(masks)]
    assert any(not np.array_equal(layer.kernel.numpy()[a], k0[a])
               for layer, k0, a in zip(res.model.masked_layers, res.initial_kernels, live))
    # apply_masks (whole-variable assign, needed for mirrored variables) sets what masks.apply sets
    other = build_model(config, tables, variant="neuron", seed=0)
    other({k: v[:2] for k, v in split.inputs.items()})
    masks.apply(other)
    for a, b in zip(other.masked_layers, res.model.masked_layers):
        np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
    apply_masks(TaskMasks.all_ones(other, "neuron"), other)
    assert all(np.all(layer.mask.numpy() == 1) for layer in other.masked_layers)


def test_two_workers_from_tf_config(workdir, monkeypatch):
    root, cfg, logs = workdir
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, errs, outs = [], [], []
    t0 = time.perf_counter()
    for i in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
            "TF_USE_LEGACY_KERAS": "1",
            "CUDA_VISIBLE_DEVICES": "-1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        out, err = root / f"worker{i}.json", root / f"worker{i}.stderr"
        cmd = [sys.executable, "-m", "models.distributed", "--config", str(cfg), "--data", str(logs),
               "--rows", str(ROWS), "--epochs", str(EPOCHS), "--out", str(out)]
        with open(err, "w") as fh:
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=fh))
        errs.append(err)
        outs.append(out)
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
    wall = time.perf_counter() - t0
    reports = [json.loads(o.read_text()) for o in outs]
    print(f"two workers: {wall:.1f}s wall; losses {reports[0]['epoch_losses']}; metrics {reports[0]['metrics']}")

    assert [r["worker_index"] for r in reports] == [0, 1]
    for r in reports:
        assert r["num_workers"] == 2 and r["num_replicas"] == 2
        assert r["strategy"] == "MultiWorkerMirroredStrategy"
        assert len(r["epoch_losses"]) == EPOCHS and all(math.isfinite(x) for x in r["epoch_losses"])
        assert r["masked_weights_unchanged"] is True and r["masked_for_all_tasks"] > 0
        for task in ("ctr", "cvr"):
            m = r["metrics"][task]
            assert m["count"] > 0 and all(v is not None and math.isfinite(v) for v in m.values()), (task, m)
    # all-reduced gradients: identical weights on both workers
    assert reports[0]["weights_checksum"] == reports[1]["weights_checksum"]
    assert reports[0]["weights_sha256"] == reports[1]["weights_sha256"]
    assert reports[0]["epoch_losses"] == reports[1]["epoch_losses"]

    # a single process with the same global batch sees the same rows per step: same losses up to float rounding
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = parse_config(yaml.safe_load(cfg.read_text()))
    single = run(config, logs, ROWS, EPOCHS, strategy=tf.distribute.get_strategy(), log=None)
    assert single["num_workers"] == 1 and single["masked_weights_unchanged"] is True
    np.testing.assert_allclose(reports[0]["epoch_losses"], single["epoch_losses"], rtol=1e-5)
    np.testing.assert_allclose(reports[0]["metrics"]["ctr"]["auc"], single["metrics"]["ctr"]["auc"], atol=1e-4)
    np.testing.assert_allclose(reports[0]["metrics"]["cvr"]["mse"], single["metrics"]["cvr"]["mse"], rtol=1e-4)
