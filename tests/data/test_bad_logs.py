"""Bad log input for `ncs compare`'s reader: configured columns, split key, encodings, CSV limits."""

import csv

import pandas as pd
import pytest

from data.logs import LogFormatError, check_configured_columns, column_uses, iter_csv, read_columns, read_logs
from data.synthetic import write_logs
from models.config import parse_config
from tests.conftest import tiny_config_dict

CFG = parse_config(tiny_config_dict())
TRUTH = tuple(CFG.dataset.truth.values())  # ("true_ctr", "true_cvr")


def _day_file(tmp_path, rows=20, **kw):
    write_logs(tmp_path, days=1, rows_per_day=rows, seed=1, **kw)
    return tmp_path / "20260101" / "part-00000.csv"


@pytest.fixture(scope="module")
def headers(tmp_path_factory):
    """``{with_truth: header}`` of generated logs."""
    return {
        truth: list(pd.read_csv(_day_file(tmp_path_factory.mktemp(f"h{truth}"), with_truth=truth), nrows=0).columns)
        for truth in (False, True)
    }


# ---------------------------------------------------------------- item 7: configured columns


def test_check_configured_columns_names_column_config_key_and_source(headers):
    header = [c for c in headers[False] if c not in ("user_id", "request_id")]
    with pytest.raises(LogFormatError) as e:
        check_configured_columns(header, CFG, "logs/20260101/part-00000.csv")
    msg = str(e.value)
    assert "logs/20260101/part-00000.csv" in msg
    assert "'user_id' (features.0.name, dataset.group_key)" in msg
    assert "'request_id' (ranking.request_key)" in msg
    assert "page" not in msg.split(";")[0]  # only the missing ones are listed before the file's columns


def test_check_configured_columns_requires_the_split_key(headers):
    d = tiny_config_dict()
    d["dataset"]["columns"].append("session")
    d["dataset"]["split"] = {"by": "hash", "hash_key": "session"}
    cfg = parse_config(d)
    assert column_uses(cfg)["session"] == ["dataset.split.hash_key"]
    with pytest.raises(LogFormatError, match=r"'session' \(dataset.split.hash_key\)"):
        check_configured_columns(headers[False], cfg, "events.csv")


def test_check_configured_columns_returns_missing_truth_columns(headers):
    assert check_configured_columns(headers[False], CFG, "x.csv") == ["true_ctr", "true_cvr"]
    assert check_configured_columns(headers[True], CFG, "x.csv") == []
    partial = list(headers[True])
    partial.remove("true_cvr")
    assert check_configured_columns(partial, CFG, "x.csv") == ["true_cvr"]
    d = tiny_config_dict()
    d["dataset"]["truth"] = {}
    assert check_configured_columns(headers[False], parse_config(d), "x.csv") == []


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_truth_columns_absent_from_the_logs_are_left_out_not_an_error(tmp_path, fmt):
    write_logs(tmp_path, days=1, rows_per_day=30, fmt=fmt, with_truth=False)
    frame, _ = read_logs(tmp_path, CFG, extra_columns=TRUTH)
    assert len(frame) == 30 and not set(TRUTH) & set(frame.columns)


def test_truth_column_missing_from_one_file_is_left_out_altogether(tmp_path):
    write_logs(tmp_path / "a", days=1, rows_per_day=30, seed=1, with_truth=True)
    write_logs(tmp_path / "b", days=1, rows_per_day=30, seed=2, start_date="20260102", with_truth=False)
    data = tmp_path / "d"
    data.mkdir()
    (tmp_path / "a" / "20260101").rename(data / "20260101")
    (tmp_path / "b" / "20260102").rename(data / "20260102")
    frame, _ = read_logs(data, CFG, extra_columns=TRUTH)
    assert len(frame) == 60 and "true_ctr" not in frame.columns


def test_read_logs_names_the_config_key_of_a_missing_column(tmp_path):
    f = _day_file(tmp_path)
    f.write_text(f.read_text().replace("request_id", "req", 1))
    with pytest.raises(LogFormatError) as e:
        read_logs(tmp_path, CFG)
    assert str(f) in str(e.value) and "'request_id' (ranking.request_key)" in str(e.value)


# ---------------------------------------------------------------- item 8: split key read


def test_split_hash_key_only_in_dataset_columns_is_read(tmp_path):
    f = _day_file(tmp_path, rows=40)
    frame = pd.read_csv(f, dtype=str, keep_default_na=False)
    frame.insert(3, "session", [f"s{i % 7}" for i in range(len(frame))])
    frame.to_csv(f, index=False)
    d = tiny_config_dict()
    d["dataset"]["columns"].append("session")
    d["dataset"]["split"] = {"by": "hash", "hash_key": "session"}
    cfg = parse_config(d)
    assert "session" not in cfg.required_columns  # nothing but the split uses it
    out, report = read_logs(tmp_path, cfg)
    assert report.rows_dropped == 0
    assert list(out["session"]) == [f"s{i % 7}" for i in range(40)]


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_split_hash_key_is_read_from_other_formats(tmp_path, fmt):
    write_logs(tmp_path, days=1, rows_per_day=20, fmt=fmt)
    d = tiny_config_dict()
    d["dataset"]["split"] = {"by": "hash", "hash_key": "video_category"}
    d["features"] = [f for f in d["features"] if f["name"] != "video_category"]
    cfg = parse_config(d)
    assert "video_category" not in cfg.required_columns
    out, _ = read_logs(tmp_path, cfg)
    assert out["video_category"].map(type).eq(str).all() and len(out) == 20


# ---------------------------------------------------------------- item 10: encodings and CSV limits


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    f = _day_file(tmp_path)
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    assert read_columns(f)[0] == "request_id"
    frame, report = read_logs(tmp_path, CFG)
    assert len(frame) == 20 and report.rows_dropped == 0


def test_invalid_utf8_names_file_and_line(tmp_path):
    f = _day_file(tmp_path)
    lines = f.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b",", b",caf\xe9", 1)  # latin-1 'é' on line 5
    f.write_bytes(b"\n".join(lines))
    with pytest.raises(LogFormatError) as e:
        read_logs(tmp_path, CFG)
    msg = str(e.value)
    assert f"{f}:5:" in msg and "not UTF-8" in msg and "0xe9" in msg


def test_field_over_the_csv_limit_names_file_and_line(tmp_path):
    f = _day_file(tmp_path)
    lines = f.read_text().split("\n")
    lines[3] = lines[3].replace(",", "," + "x" * (csv.field_size_limit() + 10), 1)  # line 4
    f.write_text("\n".join(lines))
    with pytest.raises(LogFormatError) as e:
        read_logs(tmp_path, CFG)
    msg = str(e.value)
    assert f"{f}:4:" in msg and "field limit" in msg


def test_unbalanced_quote_names_where_the_record_starts(tmp_path):
    f = _day_file(tmp_path, rows=5)
    lines = f.read_text().split("\n")
    lines[2] = lines[2].replace(",", ',"', 1)  # line 3 opens a quote that never closes
    lines[3] = lines[3] + "y" * csv.field_size_limit()
    f.write_text("\n".join(lines))
    with pytest.raises(LogFormatError) as e:
        read_logs(tmp_path, CFG)
    assert f"{f}:3 (record starting there, error at line 4)" in str(e.value)


def test_iter_csv_line_numbers_count_physical_lines(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text('a,b\n\n1,"two\nlines"\n3,4\n')
    assert list(iter_csv(f)) == [(1, ["a", "b"]), (2, []), (3, ["1", "two\nlines"]), (5, ["3", "4"])]


def test_corrupt_parquet_names_the_file(tmp_path):
    write_logs(tmp_path, days=1, rows_per_day=10, fmt="parquet")
    f = next((tmp_path / "20260101").glob("*.parquet"))
    f.write_bytes(b"not parquet at all")
    with pytest.raises(LogFormatError, match=str(f)):
        read_logs(tmp_path, CFG)
