"""components.atomic_pusher: the filesystem push publishes a version folder in one rename."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tfx.components.pusher import executor as stock_executor  # noqa: E402
from tfx.dsl.io import fileio  # noqa: E402
from tfx.proto import pusher_pb2  # noqa: E402
from tfx.types import standard_artifacts, standard_component_specs  # noqa: E402
from tfx.utils import proto_utils  # noqa: E402

from components import atomic_pusher  # noqa: E402
from components.atomic_pusher import Executor  # noqa: E402


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory):
    """A Model artifact folder with a tiny SavedModel in ``Format-Serving`` (what Trainer writes)."""
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return x * self.w

    uri = tmp_path_factory.mktemp("trainer") / "model"
    m = Tiny()
    tf.saved_model.save(m, str(uri / "Format-Serving"), signatures=m.__call__)
    assert (uri / "Format-Serving" / "saved_model.pb").is_file()
    return str(uri)


def _artifacts(tmp_path, model_uri, blessed=1, infra_blessed=1):
    model = standard_artifacts.Model()
    model.uri = model_uri
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", blessed)  # what Evaluator sets
    infra = standard_artifacts.InfraBlessing()
    infra.uri = str(tmp_path / "infra_blessing")
    infra.set_int_custom_property("blessed", infra_blessed)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed_model")
    fileio.makedirs(pushed.uri)
    inputs = {
        standard_component_specs.MODEL_KEY: [model],
        standard_component_specs.MODEL_BLESSING_KEY: [blessing],
        standard_component_specs.INFRA_BLESSING_KEY: [infra],
    }
    return inputs, {standard_component_specs.PUSHED_MODEL_KEY: [pushed]}, pushed


def _exec_props(base: str) -> dict:
    # Serialized the way ComponentSpec stores a non-use_proto proto ExecutionParameter.
    dest = pusher_pb2.PushDestination(filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=base))
    return {standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(dest)}


def _numeric(base) -> list[str]:
    return sorted(n for n in os.listdir(base) if n.isdigit())


def _hidden(base) -> list[str]:
    return sorted(n for n in os.listdir(base) if n.startswith("."))


def test_push_lands_in_numeric_version_without_staging(tmp_path, model_uri):
    base = tmp_path / "serving"
    inputs, outputs, pushed = _artifacts(tmp_path, model_uri)
    Executor().Do(inputs, outputs, _exec_props(str(base)))

    versions = _numeric(base)
    assert len(versions) == 1 and _hidden(base) == []
    version = versions[0]
    assert (base / version / "saved_model.pb").is_file()
    assert (base / version / "variables" / "variables.index").is_file()
    # same custom properties as the stock executor
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_version") == version
    assert pushed.get_string_custom_property("pushed_destination") == str(base / version)
    assert (tmp_path / "pushed_model" / "saved_model.pb").is_file()  # archive copy, as the stock one
    assert oct(os.stat(base / version).st_mode & 0o777) == oct(0o755)


def test_leftover_staging_is_cleaned_and_never_numeric(tmp_path, model_uri):
    base = tmp_path / "serving"
    killed = base / ".staging-1700000000-abc123"  # a push killed mid-copy
    (killed / "variables").mkdir(parents=True)
    (killed / "variables" / "variables.data-00000-of-00001").write_bytes(b"partial")
    (base / ".replaced-1600000000-deadbeef").mkdir()
    (base / "1600000000").mkdir()  # an older, complete version stays untouched
    (base / "1600000000" / "saved_model.pb").write_bytes(b"x")
    assert _numeric(base) == ["1600000000"]  # the killed push left nothing numeric behind

    inputs, outputs, pushed = _artifacts(tmp_path, model_uri)
    Executor().Do(inputs, outputs, _exec_props(str(base)))

    assert _hidden(base) == []
    versions = _numeric(base)
    assert len(versions) == 2 and "1600000000" in versions
    assert all((base / v / "saved_model.pb").is_file() for v in versions)


def _watch_copies(monkeypatch, base) -> list:
    """Check the base dir after every file copy: each numeric folder must already be complete."""
    seen = []
    real_copy = fileio.copy

    def checking_copy(src, dst, overwrite=False):
        real_copy(src, dst, overwrite)
        if os.path.isdir(base):
            for name in os.listdir(base):
                if name.isdigit():
                    seen.append((name, os.path.isfile(os.path.join(base, name, "saved_model.pb"))))
                else:
                    seen.append((name, None))

    monkeypatch.setattr(fileio, "copy", checking_copy)
    return seen


def test_no_incomplete_numeric_dir_while_pushing(tmp_path, model_uri, monkeypatch):
    base = tmp_path / "serving"
    seen = _watch_copies(monkeypatch, str(base))
    inputs, outputs, _ = _artifacts(tmp_path, model_uri)
    Executor().Do(inputs, outputs, _exec_props(str(base)))

    assert any(name.startswith(".staging-") for name, _ in seen), "copy was not observed mid-push"
    assert [n for n, complete in seen if complete is False] == []
    assert all(not n.isdigit() for n, complete in seen if complete is None)


def test_version_folder_is_the_staging_folder_renamed_not_a_copy(tmp_path, model_uri, monkeypatch):
    """Publishing is one rename: the numeric folder *is* the staging folder (same inode), and no tree copy runs."""
    import shutil

    base = tmp_path / "serving"
    staging_inodes = {}
    real_copy = fileio.copy

    def recording_copy(src, dst, overwrite=False):
        real_copy(src, dst, overwrite)
        for name in os.listdir(base):
            if name.startswith(atomic_pusher.STAGING_PREFIX):
                staging_inodes[name] = os.stat(base / name).st_ino

    def no_tree_copy(*args, **kwargs):
        raise AssertionError(f"a version folder must be published by rename, not copied: copytree{args}")

    monkeypatch.setattr(fileio, "copy", recording_copy)
    monkeypatch.setattr(shutil, "copytree", no_tree_copy)
    inputs, outputs, pushed = _artifacts(tmp_path, model_uri)
    Executor().Do(inputs, outputs, _exec_props(str(base)))

    versions = _numeric(base)
    assert len(versions) == 1 and len(staging_inodes) == 1, (versions, staging_inodes)
    assert os.stat(base / versions[0]).st_ino == next(iter(staging_inodes.values()))
    assert _hidden(base) == []  # the staging name is gone: it became the version
    assert pushed.get_int_custom_property("pushed") == 1


def test_stock_pusher_does_expose_incomplete_versions(tmp_path, model_uri, monkeypatch):
    """Sanity check of the watcher above: the stock executor fails it (that is the bug)."""
    base = tmp_path / "serving"
    seen = _watch_copies(monkeypatch, str(base))
    inputs, outputs, _ = _artifacts(tmp_path, model_uri)
    stock_executor.Executor().Do(inputs, outputs, _exec_props(str(base)))
    assert any(complete is False for _, complete in seen)


@pytest.mark.parametrize("blessed,infra_blessed", [(0, 1), (1, 0)])
def test_not_blessed_pushes_nothing(tmp_path, model_uri, blessed, infra_blessed):
    base = tmp_path / "serving"
    inputs, outputs, pushed = _artifacts(tmp_path, model_uri, blessed=blessed, infra_blessed=infra_blessed)
    Executor().Do(inputs, outputs, _exec_props(str(base)))

    assert not base.exists() or os.listdir(base) == []
    assert os.listdir(tmp_path / "pushed_model") == []
    assert pushed.get_int_custom_property("pushed") == 0


def test_existing_complete_version_is_kept(tmp_path, model_uri, monkeypatch):
    monkeypatch.setattr(Executor, "_model_version", staticmethod(lambda fs: "1700000000"))
    base = tmp_path / "serving"
    (base / "1700000000").mkdir(parents=True)
    (base / "1700000000" / "saved_model.pb").write_bytes(b"earlier push")
    inputs, outputs, pushed = _artifacts(tmp_path, model_uri)
    Executor().Do(inputs, outputs, _exec_props(str(base)))

    assert (base / "1700000000" / "saved_model.pb").read_bytes() == b"earlier push"
    assert not (base / "1700000000" / "variables").exists()  # not half-overwritten
    assert _hidden(base) == []
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_version") == "1700000000"


def test_existing_incomplete_version_is_replaced(tmp_path, model_uri, monkeypatch):
    monkeypatch.setattr(Executor, "_model_version", staticmethod(lambda fs: "1700000000"))
    base = tmp_path / "serving"
    (base / "1700000000" / "variables").mkdir(parents=True)  # stock push killed before saved_model.pb
    (base / "1700000000" / "junk").write_bytes(b"partial")
    inputs, outputs, pushed = _artifacts(tmp_path, model_uri)
    Executor().Do(inputs, outputs, _exec_props(str(base)))

    assert (base / "1700000000" / "saved_model.pb").is_file()
    assert (base / "1700000000" / "variables" / "variables.index").is_file()
    assert not (base / "1700000000" / "junk").exists()
    assert _hidden(base) == [] and _numeric(base) == ["1700000000"]
    assert pushed.get_int_custom_property("pushed") == 1


def test_non_local_destination_falls_back_to_stock(tmp_path, model_uri, monkeypatch):
    calls = []
    monkeypatch.setattr(stock_executor.Executor, "Do", lambda self, i, o, e: calls.append(e))
    inputs, outputs, _ = _artifacts(tmp_path, model_uri)
    props = _exec_props("gs://bucket/serving")
    Executor().Do(inputs, outputs, props)
    assert calls == [props]


def test_helper_wires_custom_executor_into_stock_pusher():
    from tfx import types
    from tfx.components import Pusher

    pusher = atomic_pusher.atomic_pusher(
        model=types.Channel(type=standard_artifacts.Model),
        model_blessing=types.Channel(type=standard_artifacts.ModelBlessing),
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory="/tmp/x")),
    )
    assert type(pusher) is Pusher
    assert pusher.id == "Pusher"
    assert pusher.executor_spec.executor_class is Executor
