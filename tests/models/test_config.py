import copy

import pytest
from pydantic import ValidationError

from models.config import ConfigError, load_config, parse_config
from tests.conftest import VIDEO_CONFIG, tiny_config_dict


def test_default_config_loads():
    cfg = load_config(VIDEO_CONFIG)
    assert cfg.task_names == ["ctr", "cvr"]
    assert cfg.task("cvr").where_clause == ("click", "==", 1.0)
    assert cfg.task("ctr").where_clause is None
    assert cfg.model.mlp == [512, 256, 128]
    assert "watch_seconds" in cfg.required_columns


def _err(data) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(data, "test.yaml")
    return str(e.value)


def test_unknown_shared_embedding_names_key():
    d = tiny_config_dict()
    d["features"][6]["shared_embedding"] = "no_such_feature"
    msg = _err(d)
    assert "features.6.shared_embedding" in msg and "no_such_feature" in msg


def test_missing_column_names_key():
    d = tiny_config_dict()
    d["tasks"][1]["label"] = {"ratio": ["watch_secs", "duration"]}
    msg = _err(d)
    assert "tasks.1.label" in msg and "watch_secs" in msg


def test_feature_column_not_in_dataset():
    d = tiny_config_dict()
    d["features"].append({"name": "country", "type": "categorical", "vocab_size": 3})
    assert f"features.{len(d['features']) - 1}.column" in _err(d)


def test_task_without_label_names_key():
    d = tiny_config_dict()
    del d["tasks"][0]["label"]
    msg = _err(d)
    assert "tasks.0.label" in msg and "required" in msg.lower()


@pytest.mark.parametrize(
    "path,value,key",
    [
        (("model", "mlp"), [512, "wide"], "model.mlp.1"),
        (("training", "batch_size"), -5, "training.batch_size"),
        (("model", "variant"), "transformer", "model.variant"),
        (("tasks", 1, "where"), "click = 1 and", "tasks.1.where"),
        (("tasks", 0, "loss"), "mse", "tasks.0"),
        (("features", 0, "type"), "embedding", "features.0"),
    ],
)
def test_bad_types_name_key(path, value, key):
    d = tiny_config_dict()
    node = d
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    assert key in _err(d)


def test_unknown_key_rejected():
    d = tiny_config_dict()
    d["training"]["learning_rte"] = 0.1
    assert "training.learning_rte" in _err(d)


def test_categorical_needs_one_id_space():
    d = tiny_config_dict()
    d["features"][0] = {"name": "user_id", "type": "categorical"}
    assert "features.0" in _err(d)


def test_yaml_errors_name_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("dataset: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_with_overrides_revalidates_and_leaves_the_original_alone():
    cfg = parse_config(tiny_config_dict())
    before = copy.deepcopy(cfg.model_dump())
    other = cfg.with_overrides(model={"variant": "mmoe"}, training={"epochs": 3})
    assert other.model.variant == "mmoe" and other.training.epochs == 3
    assert other.model.mlp == cfg.model.mlp and other.training.batch_size == cfg.training.batch_size  # merged, not replaced
    with pytest.raises(ValidationError, match=r"model\.variant") as e:
        cfg.with_overrides(model={"variant": "nope"})
    assert "nope" in str(e.value)
    # the original config is unchanged, and the copy shares no mutable state with it
    assert cfg.model_dump() == before
    other.model.mlp.append(99)
    assert cfg.model_dump() == before
