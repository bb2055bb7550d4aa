"""Bad input outside serving: the compare split, the CSV pre-flight of `ncs run`, configs.

Nothing here runs the TFX pipeline: `ncs run` is driven up to its pre-flight, with
`run_local` replaced by a stub where the pre-flight passes.
"""

import csv
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from data.logs import read_logs
from data.synthetic import write_logs
from models.config import ConfigError, load_config, parse_config
from pipeline.cli import main
from pipeline.preflight import CsvLayoutError, CsvLayoutWarning, check_csv_logs
from tests.conftest import VIDEO_CONFIG, tiny_config_dict

CFG = parse_config(tiny_config_dict())


def _split_frame():
    from pipeline.compare import split_frame  # imports the models (TensorFlow): only where needed

    return split_frame


def _write_cfg(tmp_path, data, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


# ---------------------------------------------------------------- item 8: split key only in dataset.columns


def test_split_hash_key_used_by_nothing_else_splits(tmp_path):
    n = 600
    pd.DataFrame({"uid": [f"u{i % 50}" for i in range(n)], "session": [f"s{i % 97}" for i in range(n)],
                  "price": np.linspace(1, 9, n), "buy": [i % 3 == 0 for i in range(n)]}).astype(
        {"buy": int}).to_csv(tmp_path / "events.csv", index=False)
    data = {
        "dataset": {"name": "shop", "columns": ["uid", "session", "price", "buy"],
                    "split": {"by": "hash", "hash_key": "session"}},
        "features": [{"name": "uid", "type": "categorical", "hash_buckets": 64},
                     {"name": "price", "type": "numeric"}],
        "tasks": [{"name": "buy", "type": "binary", "label": {"column": "buy"}}],
    }
    r = CliRunner().invoke(main, ["validate-config", str(_write_cfg(tmp_path, data))])
    assert r.exit_code == 0 and r.output.startswith("ok")
    cfg = parse_config(data)
    frame, _ = read_logs(tmp_path / "events.csv", cfg)
    splits = _split_frame()(frame, cfg)
    assert sum(len(s) for s in splits.values()) == n and all(len(s) for s in splits.values())
    seen = [set(s["session"]) for s in splits.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])  # a session stays in one split


def test_split_hash_key_must_be_a_dataset_column():
    d = tiny_config_dict()
    d["dataset"]["split"] = {"by": "day", "hash_key": "sesion"}
    with pytest.raises(ConfigError, match=r"dataset.split.hash_key: column 'sesion' is not in dataset.columns"):
        parse_config(d, "cfg.yaml")
    d["dataset"]["split"] = {"by": "hash"}
    with pytest.raises(ConfigError, match="dataset.split.hash_key: missing"):
        parse_config(d, "cfg.yaml")
    d["dataset"]["split"] = {"by": "hash", "hash_key": "user_id", "valid_fraction": 0.5, "test_fraction": 0.5}
    with pytest.raises(ConfigError, match="dataset.split: valid_fraction . test_fraction = 1 leaves no rows"):
        parse_config(d, "cfg.yaml")


# ---------------------------------------------------------------- item 9: single file without split:


def _single_file_frame(n=2000):
    """One file, no day folders; every column has few values (the case that emptied two splits)."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({"page": rng.integers(0, 9, n).astype(str), "click": rng.integers(0, 2, n).astype(float),
                         "day": [""] * n})


def _single_file_cfg(**split):
    d = {
        "dataset": {"name": "one", "columns": ["page", "click"], **({"split": split} if split else {})},
        "features": [{"name": "page", "type": "categorical", "vocab_size": 9}],
        "tasks": [{"name": "ctr", "type": "binary", "label": {"column": "click"}}],
    }
    return parse_config(d)


def test_single_file_without_split_is_a_row_level_hash_and_says_so():
    frame = _single_file_frame()
    cfg = _single_file_cfg()
    assert cfg.required_columns[0] == "page"  # the old fallback hashed this 9-value column
    with pytest.warns(UserWarning, match="no YYYYMMDD day folders: splitting by a row-level hash"):
        splits = _split_frame()(frame, cfg)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sum(sizes.values()) == len(frame)
    assert 0.07 < sizes["valid"] / len(frame) < 0.13 and 0.07 < sizes["test"] / len(frame) < 0.13
    for split in splits.values():  # every page value lands in every split: rows, not values, are hashed
        assert set(split["page"]) == set(frame["page"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = _split_frame()(frame, cfg)
    assert all(again[k].equals(splits[k]) for k in splits)  # deterministic


def test_low_cardinality_hash_key_that_empties_a_split_is_an_error_naming_it():
    from pipeline.compare import SplitError

    frame = _single_file_frame()
    frame["page"] = "home"
    cfg = _single_file_cfg(by="hash", hash_key="page")
    with pytest.raises(SplitError) as e:
        _split_frame()(frame, cfg)
    msg = str(e.value)
    assert "dataset.split.hash_key 'page' (1 distinct values)" in msg and "empty" in msg and "row-level" in msg


def test_day_folders_still_split_by_day(small_frame, tiny_config):
    frame = pd.concat([small_frame, small_frame.assign(day="20260103")], ignore_index=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = _split_frame()(frame, tiny_config)
    assert not [w for w in caught if "split" in str(w.message)]  # no fallback warning with day folders
    assert [sorted(set(s["day"])) for s in splits.values()] == [["20260101"], ["20260102"], ["20260103"]]


# ---------------------------------------------------------------- items 10, 11: CSV pre-flight of `ncs run`


@pytest.fixture
def logs(tmp_path):
    """Three day folders of 30 rows each, CSV."""
    root = tmp_path / "logs"
    write_logs(root, days=3, rows_per_day=30, seed=4)
    return root


def _first_file(root, day):
    return next((root / day).glob("*.csv"))


def _preflight_error(root, cfg=CFG) -> str:
    with pytest.raises(CsvLayoutError) as e:
        check_csv_logs(str(root), cfg)
    return str(e.value)


def test_preflight_invalid_utf8_names_file_and_line(logs):
    f = _first_file(logs, "20260102")
    lines = f.read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b",", b",M\xfcnchen", 1)  # line 7
    f.write_bytes(b"\n".join(lines))
    msg = _preflight_error(logs)
    assert f"{f}:7: not UTF-8" in msg and "Traceback" not in msg


def test_preflight_field_over_csv_limit_names_file_and_line(logs):
    f = _first_file(logs, "20260103")
    lines = f.read_text().split("\n")
    lines[9] = lines[9].replace(",", "," + "z" * (csv.field_size_limit() + 1), 1)  # line 10
    f.write_text("\n".join(lines))
    msg = _preflight_error(logs)
    assert f"{f}:10: cannot parse CSV" in msg and "field limit" in msg


def test_preflight_names_a_byte_order_mark_instead_of_a_missing_column(logs):
    f = _first_file(logs, "20260101")
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    msg = _preflight_error(logs)
    assert f"{f}:1: starts with a UTF-8 byte-order mark" in msg and "'request_id'" in msg
    assert "header lacks" not in msg and "header differs" not in msg


def test_preflight_still_counts_rows_and_ragged_rows(logs):
    assert check_csv_logs(str(logs), CFG) == 90
    f = _first_file(logs, "20260102")
    lines = f.read_text().split("\n")
    lines[2] += ",extra"
    f.write_text("\n".join(lines))
    assert f"{f}:3: " in _preflight_error(logs)


def test_preflight_warns_about_an_empty_day_folder_and_a_header_only_file(logs):
    (logs / "20260104").mkdir()
    f = _first_file(logs, "20260102")
    f.write_text(f.read_text().split("\n", 1)[0] + "\n")
    got = []
    assert check_csv_logs(str(logs), CFG, warn=got.append) == 60
    assert len(got) == 2
    assert got[0].startswith("day 20260104: ") and "no file matching '*.csv'" in got[0]
    assert got[1].startswith("day 20260102: ") and f"{f} has a header but no rows" in got[1]
    with pytest.warns(CsvLayoutWarning, match="day 20260104"):
        check_csv_logs(str(logs), CFG)


def test_preflight_no_data_rows_at_all_is_an_error(logs):
    for f in logs.glob("*/*.csv"):
        f.write_text(f.read_text().split("\n", 1)[0] + "\n")
    with pytest.warns(CsvLayoutWarning):
        msg = _preflight_error(logs)
    assert msg.startswith("no data rows") and "header only" in msg


def test_ncs_run_prints_the_warnings_naming_the_day(logs, tmp_path, monkeypatch):
    import pipeline.runner

    def stub(*args, **kwargs):
        raise RuntimeError("stub: the pipeline is not run in this test")

    (tmp_path / "home").mkdir()
    monkeypatch.setenv("NCS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(pipeline.runner, "run_local", stub)
    cfg = _write_cfg(tmp_path, tiny_config_dict())
    args = ["run", "--config", str(cfg), "--data", str(logs), "--serving-dir", str(tmp_path / "serving")]
    (logs / "20260104").mkdir()
    f = _first_file(logs, "20260103")
    f.write_text(f.read_text().split("\n", 1)[0] + "\n")
    r = CliRunner().invoke(main, args)
    assert "warning: day 20260104: " in r.output and "warning: day 20260103: " in r.output
    assert "pre-flight: 60 CSV rows" in r.output and "stub: the pipeline is not run" in r.output
    # a component that fails: exit 1, its error, and what happened to the served versions
    assert r.exit_code == 1 and "pipeline stopped: stub: the pipeline is not run" in r.output, r.output
    assert "nothing was pushed by this run" in r.output
    assert "RuntimeError: stub" in json.loads((tmp_path / "home" / "last_run.json").read_text())["error"]
    for f in logs.glob("*/*.csv"):
        f.write_text(f.read_text().split("\n", 1)[0] + "\n")
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "no data rows" in r.output and "nothing was run" in r.output
    assert "stub" not in r.output


# ---------------------------------------------------------------- item 12: config files that are not UTF-8


def test_config_not_utf8_names_file_line_and_column(tmp_path):
    text = VIDEO_CONFIG.read_text().replace("name: synthetic-video", "name: vid\u00e9o", 1)
    p = tmp_path / "latin1.yaml"
    p.write_bytes(text.encode("latin-1"))
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "vid\u00e9o" in s)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and f"line {line}, column 12" in msg and "not UTF-8" in msg and "0xe9" in msg
    r = CliRunner().invoke(main, ["validate-config", str(p)])
    assert r.exit_code == 1 and "Traceback" not in r.output and r.exception.__class__ is SystemExit
    assert f"{p}: line {line}, column 12: not UTF-8" in r.output


def test_config_with_byte_order_mark_and_invalid_yaml(tmp_path):
    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + VIDEO_CONFIG.read_bytes())
    assert load_config(p).dataset.name == "synthetic-video"
    r = CliRunner().invoke(main, ["validate-config", str(p)])
    assert r.exit_code == 0 and r.output.startswith("ok")
    p.write_text("dataset: [unclosed\n")
    r = CliRunner().invoke(main, ["validate-config", str(p)])
    assert r.exit_code == 1 and f"invalid YAML in {p}" in r.output and "line 2" in r.output
