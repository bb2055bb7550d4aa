"""The ``tf.distribute`` strategy of a training process, built from ``TF_CONFIG``.

``tf.distribute.MultiWorkerMirroredStrategy`` (MWMS) is configured from the ``TF_CONFIG``
environment variable, exactly as Kubeflow's TFJob or Vertex AI custom jobs set it::

    TF_CONFIG='{"cluster": {"worker": ["host0:port", "host1:port"]},
                "task": {"type": "worker", "index": 0}}'

The training engine (``models.engine``) runs under the strategy: every worker holds a full
replica of the model, reads the same global batches and takes rows ``index::workers`` of
each, and every step all-reduces the gradients and the loss denominators, so the weights
stay identical on every worker and equal those of one process with the same global batch.
MaskSearch and MaskedTrainer build their strategy with :func:`strategy_from_env`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Callable

import numpy as np
import tensorflow as tf


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- strategy
def parse_tf_config(raw: str | None = None) -> dict:
    """The parsed ``TF_CONFIG`` (``{}`` when unset or empty); ``ValueError`` naming TF_CONFIG if malformed."""
    raw = os.environ.get("TF_CONFIG", "") if raw is None else raw
    if not raw.strip():
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {raw[:200]!r}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {type(cfg).__name__}")
    cluster = cfg.get("cluster", {})
    if not isinstance(cluster, dict) or not all(isinstance(v, list) for v in cluster.values()):
        raise ValueError('TF_CONFIG "cluster" must map job names to lists of "host:port"')
    return cfg


def cluster_workers(tf_config: dict) -> int:
    """Number of training workers in ``TF_CONFIG`` (``chief`` + ``worker`` entries)."""
    cluster = tf_config.get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _check_task(tf_config: dict) -> None:
    task = tf_config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError('TF_CONFIG names a multi-worker cluster but no "task": {"type": ..., "index": ...}')
    jobs = tf_config["cluster"].get(task["type"])
    if jobs is None or not isinstance(task["index"], int) or not 0 <= task["index"] < len(jobs):
        raise ValueError(
            f"TF_CONFIG task {task} does not name an entry of cluster {sorted(tf_config['cluster'])}"
        )


def strategy_from_env(log: Callable[[str], None] | None = _stderr) -> tf.distribute.Strategy:
    """MWMS when ``TF_CONFIG`` names a cluster of > 1 worker, else the default strategy.

    Must run before TensorFlow executes any op in this process (MWMS configures
    collective ops at start-up); it blocks until every worker of the cluster is up.
    """
    tf_config = parse_tf_config()
    n = cluster_workers(tf_config)
    if n > 1:
        _check_task(tf_config)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = tf_config["task"]
        if log:
            log(f"strategy: MultiWorkerMirroredStrategy, {n} workers, this is {task['type']} {task['index']}, "
                f"{strategy.num_replicas_in_sync} replicas in sync")
        return strategy
    strategy = tf.distribute.get_strategy()
    if log:
        log(f"strategy: default ({type(strategy).__name__}), single process"
            + (" (TF_CONFIG names one worker)" if n == 1 else " (no TF_CONFIG)"))
    return strategy


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's task id in the cluster (0 for the default strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id) if resolver is not None and resolver.task_id is not None else 0


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Workers (``chief`` + ``worker`` tasks) of the strategy's cluster (1 for the default strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return max(1, len(jobs.get("chief", [])) + len(jobs.get("worker", [])))


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """``MultiWorkerMirroredStrategy`` (whose class is ``CollectiveAllReduceStrategy``) or the class name."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: worker 0 (or a ``chief`` task), or a single process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in resolver.cluster_spec().as_dict())


def weights_checksum(model) -> tuple[str, str]:
    """(sum of |w| over every weight, 6 decimals; sha256 of the float32 bytes of every weight)."""
    weights = [np.asarray(w, dtype=np.float32) for w in model.get_weights()]
    total = float(sum(np.abs(w).astype(np.float64).sum() for w in weights))
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in weights)).hexdigest()
    return f"{total:.6f}", digest
