"""Version loading, poll by poll (no threads, no clock): what is loaded, what is skipped, and why."""

import json
import shutil

import pytest
import tensorflow as tf

from serving.registry import ModelRegistry
from serving.validation import ASSETS_EXTRA
from tests.serving.conftest import install


@pytest.fixture
def registry(tmp_path, toy_models):
    base = tmp_path / "models"
    install(toy_models, base, 1)
    reg = ModelRegistry("ctr_cvr", base)
    assert reg.poll() is None  # first sighting: not yet known to be stable
    assert reg.poll() == 1
    return reg, base


def test_a_complete_but_still_changing_copy_is_not_loaded_until_it_stops_changing(registry, toy_models):
    reg, base = registry
    # version 2 has every file a SavedModel needs: it WOULD load right now ...
    path = install(toy_models, base, 2, "v2")
    assert "serving_raw" in tf.saved_model.load(str(path)).signatures
    summary = path / ASSETS_EXTRA / "training_summary.json"
    summary.write_text("{")  # ... but the copy is still running (a file still growing)
    assert reg.poll() is None and reg.latest.version == 1  # first sighting
    for i in range(3):  # every poll sees a different listing: never stable, never loaded
        summary.write_text("{" + " " * (i + 1))
        assert reg.poll() is None and reg.latest.version == 1
    # the copy finished: the next poll sees the same listing and swaps
    assert reg.poll() == 2 and reg.latest.version == 2
    assert reg.get("ctr_cvr").version == 2 and reg.get("ctr_cvr", 1).version == 1


def test_saved_model_pb_without_variables_is_never_loaded(registry, toy_models):
    reg, base = registry
    (base / "2").mkdir()
    shutil.copy(toy_models["v2"] / "saved_model.pb", base / "2" / "saved_model.pb")
    for _ in range(4):  # stable, but incomplete
        assert reg.poll() is None and reg.latest.version == 1
    assert reg.failed_versions == {}  # not even tried


def test_a_corrupt_version_is_skipped_reported_and_retried_when_its_files_change(registry, toy_models):
    reg, base = registry
    (base / "3" / "variables").mkdir(parents=True)
    (base / "3" / "saved_model.pb").write_bytes(b"garbage")
    (base / "3" / "variables" / "variables.index").write_bytes(b"garbage")
    assert reg.poll() is None and 3 not in reg.failed_versions  # first sighting
    assert reg.poll() is None and 3 in reg.failed_versions and reg.failed_versions[3]
    assert reg.latest.version == 1
    polls = reg.polls
    assert reg.poll() is None and reg.polls == polls + 1 and reg.latest.version == 1  # skipped, not retried
    # fixed in place (the push is redone): loaded once stable
    shutil.rmtree(base / "3")
    install(toy_models, base, 3, "v2")
    assert reg.poll() is None
    assert reg.poll() == 3 and 3 not in reg.failed_versions


def test_rules_stored_with_the_model_are_loaded_and_a_broken_rules_file_fails_the_version(registry, toy_models):
    reg, base = registry
    rules = reg.latest.rules
    assert rules["duration"].min == 1 and rules["page"].values == {b"home", b"search", b"related", b"channel"}
    assert rules["watch"].min == 0 and rules["watch"].max == 1000
    path = install(toy_models, base, 2, "v2")
    (path / ASSETS_EXTRA / "raw_features.json").write_text("[1, 2")
    reg.poll()
    assert reg.poll() is None and 2 in reg.failed_versions and reg.latest.version == 1
    (path / ASSETS_EXTRA / "raw_features.json").write_text(json.dumps({"duration": {"dtype": "int64", "shape": []}}))
    reg.poll()
    assert reg.poll() == 2 and set(reg.latest.rules) == {"duration"} and reg.latest.rules["duration"].min is None
