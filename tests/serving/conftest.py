"""Tiny SavedModels with the pipeline's serving contract, saved once per session, and servers on them.

``serving_default`` takes serialized examples, ``serving_raw`` named tensors; outputs ``ctr``,
``cvr``, ``rank_score``. Like an exported pipeline model, the ``v1``/``v2`` models carry
``assets.extra/ncs/raw_features.json`` written from a schema (``duration >= 1``, ``watch`` in
[0, 1000], ``page`` one of four values with no tolerance); ``plain`` has none.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from serving.server import DevServer
from serving.validation import ASSETS_EXTRA, raw_features_json

SPEC = {"watch": tf.io.FixedLenFeature([], tf.float32), "page": tf.io.FixedLenFeature([], tf.string),
        "duration": tf.io.FixedLenFeature([], tf.int64)}

TOY_SCHEMA = """
feature { name: "watch" type: FLOAT float_domain { min: 0.0 max: 1000.0 } }
feature { name: "page" type: BYTES domain: "page" }
feature { name: "duration" type: INT int_domain { min: 1 } }
feature { name: "click" type: INT int_domain { min: 0 max: 1 } }
string_domain { name: "page" value: "home" value: "search" value: "related" value: "channel" }
"""

ROWS = [{"watch": 0.1 * i, "page": "search" if i % 3 == 0 else "home", "duration": 30 + i} for i in range(12)]


class _Toy(tf.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = tf.Variable(scale)

    def _out(self, watch, page, duration):
        bonus = tf.where(page == b"search", 0.5, 0.0)
        ctr = tf.sigmoid(self.scale * watch + bonus)
        cvr = tf.sigmoid(-self.scale * watch)
        return {"ctr": ctr, "cvr": cvr, "rank_score": ctr * cvr * tf.cast(duration, tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        f = tf.io.parse_example(examples, SPEC)
        return self._out(f["watch"], f["page"], f["duration"])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="watch"), tf.TensorSpec([None], tf.string, name="page"),
                                  tf.TensorSpec([None], tf.int64, name="duration")])
    def raw(self, watch, page, duration):
        return self._out(watch, page, duration)


def toy_schema():
    return text_format.Parse(TOY_SCHEMA, schema_pb2.Schema())


def save_toy(path: Path, scale: float, rules: bool = True) -> Path:
    m = _Toy(scale)
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve, "serving_raw": m.raw})
    if rules:  # what serving.export writes next to a pipeline model
        extra = path / ASSETS_EXTRA
        extra.mkdir(parents=True, exist_ok=True)
        (extra / "raw_features.json").write_text(json.dumps(raw_features_json(SPEC, toy_schema()), indent=1))
    return path


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy_models")
    return {"v1": save_toy(root / "v1", 1.0), "v2": save_toy(root / "v2", 3.0), "plain": save_toy(root / "plain", 1.0, rules=False)}


def install(toy_models, base: Path, version: int, which: str = "v1") -> Path:
    """Copy a saved toy model into ``base/<version>`` (a finished push)."""
    return Path(shutil.copytree(toy_models[which], base / str(version)))


def start_server(toy_models, base: Path, which: str = "v1", **kwargs) -> DevServer:
    install(toy_models, base, 1, which)
    kwargs = {"poll_seconds": 0.2, "max_batch": 100, **kwargs}
    srv = DevServer(str(base), "ctr_cvr", rest_port=0, grpc_port=0, **kwargs).start(wait_for_model=10)
    assert srv.registry.latest is not None
    return srv


@pytest.fixture
def server(tmp_path, toy_models):
    """A server of its own (tests that add versions), max_batch 100."""
    srv = start_server(toy_models, tmp_path / "models")
    yield srv, tmp_path / "models"
    srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory, toy_models):
    """One server per module for tests that only send requests (max_batch 100)."""
    srv = start_server(toy_models, tmp_path_factory.mktemp("shared") / "models")
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path, toy_models):
    """``make_server(**limits)``: a server with the given limits, stopped after the test."""
    started = []

    def make(which="v1", **kwargs):
        srv = start_server(toy_models, tmp_path / f"models{len(started)}", which, **kwargs)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
