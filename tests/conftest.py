"""Shared fixtures: a tiny config and a small synthetic frame (fast to train on)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VIDEO_CONFIG = REPO / "configs" / "video.yaml"


# One feature of every kind the config knows (a hashed id, a vocabulary with OOV buckets, small vocabularies, a
# multi-valued feature and one sharing its table, a log-scaled numeric): each more feature of a known kind only adds
# Transform analyzers and graph ops to trace, i.e. test time, not coverage.
TINY_FEATURES = ("user_id", "video_id", "interests", "tags", "page", "hour", "duration")


def tiny_config_dict(**model_overrides) -> dict:
    """The default video config, small: the features of ``TINY_FEATURES``, narrow layers, a fixed 1-epoch budget."""
    data = yaml.safe_load(VIDEO_CONFIG.read_text())
    data["features"] = [f for f in data["features"] if f["name"] in TINY_FEATURES]
    data["model"].update(
        {"embedding_dim": 4, "mlp": [16, 8], "tower": [4], "expert_mlp": [8], "num_experts": 2,
         "specific_experts": 1, "shared_experts": 1}
    )
    data["model"].update(model_overrides)
    data["training"].update({"batch_size": 256, "epochs": 1, "patience": None})  # fixed budget: tests test mechanics
    # the curated schema sits next to the default config; tests write configs elsewhere
    data["pipeline"]["schema_file"] = str(VIDEO_CONFIG.parent / data["pipeline"]["schema_file"])
    return data


@pytest.fixture
def tiny_config():
    from models.config import parse_config

    return parse_config(tiny_config_dict())


@pytest.fixture(scope="session")
def small_frame():
    """2 days x 1500 rows of synthetic logs, cleaned and typed like read_logs output."""
    import pandas as pd

    from data.synthetic import generate_days

    frames = []
    for day, f in generate_days(2, 1500, seed=3, with_truth=True):
        f["day"] = day
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    for c in ("duration", "hour", "click", "watch_seconds"):
        frame[c] = frame[c].astype(float)
    frame["hour"] = frame["hour"].astype(int).astype(str)
    return frame


def three_day_splits(rows: int = 1500, seed: int = 3) -> dict:
    """``{"train", "valid", "test"}`` frames: three synthetic days, typed like ``read_logs`` output."""
    import pandas as pd

    from data.synthetic import generate_days

    out = {}
    for name, (day, f) in zip(("train", "valid", "test"), generate_days(3, rows, seed=seed, with_truth=True)):
        for c in ("duration", "click", "watch_seconds"):
            f[c] = f[c].astype(float)
        f["hour"] = f["hour"].astype(int).astype(str)
        f["day"] = day
        out[name] = f.reset_index(drop=True)
    return out


def shared_transform(tmp_path_factory, config, frames) -> Path:
    """``pipeline.local_transform`` output of ``frames``, computed once per test run.

    The folder sits above the per-worker temp dirs, so pytest-xdist workers share it; a file
    lock makes the second worker wait for the first instead of transforming again.
    """
    import fcntl

    from pipeline.local_transform import run_local_transform

    root = tmp_path_factory.getbasetemp().parent / "ncs-transformed"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return run_local_transform(config, frames, root, log=lambda msg: None)


@pytest.fixture(scope="session")
def transformed(tmp_path_factory):
    """Three synthetic days transformed by the pipeline's ``preprocessing_fn`` (the tiny config)."""
    from models.config import parse_config

    return shared_transform(tmp_path_factory, parse_config(tiny_config_dict()), three_day_splits())


class Prepared(tuple):
    """``(config, tables, train, valid)``: streamed splits of the tiny config, ready to train on."""

    config = property(lambda self: self[0])
    tables = property(lambda self: self[1])
    train = property(lambda self: self[2])
    valid = property(lambda self: self[3])

    def batch(self, n: int = 256, split: str = "train") -> dict:
        """The first ``n`` rows of a split as model inputs (a dict of tensors)."""
        stream = self.train if split == "train" else self.valid
        x, _, _ = next(iter(stream.batches(n)))
        return x


def rewrite_stream(stream, out_dir, config, change, name=None):
    """A copy of ``stream``'s rows as new TFRecords, each row's columns passed through ``change``.

    ``change(columns: {name: np.ndarray [N, ...]}) -> columns`` may add task columns
    (``label__t``, ``space__t``, ``weight__t``) or edit values; returns a SplitStream of
    ``config``'s features and tasks over the new file (the transformed examples format).
    """
    import numpy as np
    import tensorflow as tf

    from models.data import SplitStream

    spec = stream.spec
    cols = {k: [] for k in spec}
    for serialized in tf.data.TFRecordDataset(stream.files, compression_type="GZIP").batch(4096):
        for k, v in tf.io.parse_example(serialized, spec).items():
            cols[k].append(v.numpy())
    cols = change({k: np.concatenate(v) for k, v in cols.items()})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = str(out / "part.tfrecord")
    n = len(next(iter(cols.values())))
    with tf.io.TFRecordWriter(path) as w:
        for i in range(n):
            feats = {}
            for k, v in cols.items():
                row = np.asarray(v[i]).reshape(-1)
                if row.dtype.kind in "iu":
                    feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=row.tolist()))
                else:
                    feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=row.astype(np.float32).tolist()))
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    new_spec = {k: (spec[k] if k in spec else tf.io.FixedLenFeature(
        list(np.asarray(v).shape[1:]), tf.int64 if np.asarray(v).dtype.kind in "iu" else tf.float32)) for k, v in cols.items()}
    return SplitStream.from_feature_spec([path], new_spec, [f.name for f in config.features], config.task_names,
                                         name or stream.name, f"rewritten {stream.source}")


@pytest.fixture
def prepared(tiny_config, transformed):
    """:class:`Prepared` on the shared transformed splits (nothing held in memory)."""
    import tensorflow_transform as tft

    from components.data import embedding_tables_from_transform, stream_split

    out = tft.TFTransformOutput(str(transformed / "transform"))
    train, valid = (stream_split(str(transformed), s, tiny_config, out) for s in ("train", "valid"))
    return Prepared((tiny_config, embedding_tables_from_transform(tiny_config, out), train, valid))


# ----------------------------------------------------------------------------- scheduling

E2E_TIMEOUT = 1200  # seconds (the daily test took ~890 s on a loaded 2-core machine); other tests: `timeout` in pyproject.toml


def _chunk_sizes(n: int, workers: int) -> list[int]:
    """How pytest-xdist's ``worksteal`` scheduler first splits ``n`` tests: contiguous chunks, one per worker."""
    sizes = []
    for i in range(workers):
        sizes.append(n // (workers - i))
        n -= sizes[-1]
    return sizes


def _expected_seconds(item) -> float:
    """``@pytest.mark.e2e(seconds=...)``: the test's rough duration on a 2-core machine (default 120)."""
    return float(item.get_closest_marker("e2e").kwargs.get("seconds", 120))


def pytest_collection_modifyitems(config, items):
    """Start the known-slow end-to-end tests (marker ``e2e``) first, spread over the xdist workers.

    Under ``-n N --dist worksteal`` each worker starts on a contiguous chunk of the collection
    and idle workers steal from the *end* of the others' queues, so the slow tests go to the
    heads of the chunks: longest first, each to the chunk with the least slow work so far
    (``seconds`` of the marker), and the fast tests fill the rest. Without xdist they simply run
    first. Each ``e2e`` test also gets a generous timeout (unless it sets its own).
    """
    slow = [it for it in items if it.get_closest_marker("e2e")]
    if not slow:
        return
    for it in slow:
        if not it.get_closest_marker("timeout"):
            it.add_marker(pytest.mark.timeout(E2E_TIMEOUT))
    slow.sort(key=_expected_seconds, reverse=True)  # stable: collection order among equals
    rest = [it for it in items if not it.get_closest_marker("e2e")]
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    if workers <= 1:
        items[:] = slow + rest
        return
    chunks: list[list] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for it in slow:
        w = load.index(min(load))
        chunks[w].append(it)
        load[w] += _expected_seconds(it)
    ordered = []
    for chunk, size in zip(chunks, _chunk_sizes(len(items), workers)):
        take = max(0, size - len(chunk))
        chunk += rest[:take]
        del rest[:take]
        ordered += chunk
    items[:] = ordered + rest
