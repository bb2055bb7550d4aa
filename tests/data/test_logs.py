import pytest

from data.logs import LogFormatError, read_logs
from data.synthetic import write_logs
from models.config import load_config
from tests.conftest import VIDEO_CONFIG

CFG = load_config(VIDEO_CONFIG)


def _corrupt(tmp_path):
    write_logs(tmp_path, days=1, rows_per_day=50, seed=5)
    f = tmp_path / "20260101" / "part-00000.csv"
    lines = f.read_text().splitlines()
    header = lines[0].split(",")
    idx = {c: i for i, c in enumerate(header)}

    def edit(row, col, value):
        parts = lines[row].split(",")
        parts[idx[col]] = value
        lines[row] = ",".join(parts)

    lines[1] = ",".join(lines[1].split(",")[:-3])          # missing fields
    edit(2, "duration", "abc")                              # non-numeric duration
    edit(3, "watch_seconds", "-4")                          # negative watch time
    edit(4, "watch_seconds", "nan")                         # NaN watch time
    edit(5, "duration", "0")                                # zero duration
    edit(6, "page", "brand_new_page")                       # unknown category: kept
    lines[7] = lines[7] + ",extra"                          # too many fields
    f.write_text("\n".join(lines) + "\n")
    return f


def test_unusable_rows_are_dropped_and_counted(tmp_path):
    _corrupt(tmp_path)
    frame, report = read_logs(tmp_path, CFG)
    assert report.rows_read == 50
    assert report.rows_dropped == 6
    assert len(frame) == 44
    assert "brand_new_page" in set(frame["page"])
    s = report.summary()
    for fragment in ("missing fields", "'duration'", "negative 'watch_seconds'", "'watch_seconds'", "'duration' <= 0", "extra fields"):
        assert fragment in s, (fragment, s)
    assert frame["duration"].gt(0).all() and frame["watch_seconds"].ge(0).all()
    assert set(frame["day"]) == {"20260101"}


def test_wrong_header_names_file_and_columns(tmp_path):
    write_logs(tmp_path, days=1, rows_per_day=10)
    f = tmp_path / "20260101" / "part-00000.csv"
    text = f.read_text().replace("watch_seconds", "watch_secs", 1).replace("page,", "pg,", 1)
    f.write_text(text)
    with pytest.raises(LogFormatError) as e:
        read_logs(tmp_path, CFG)
    msg = str(e.value)
    assert str(f) in msg and "watch_seconds" in msg and "page" in msg


def test_no_files(tmp_path):
    with pytest.raises(LogFormatError, match="no log files"):
        read_logs(tmp_path, CFG)


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_other_formats_read_back(tmp_path, fmt):
    write_logs(tmp_path, days=1, rows_per_day=40, fmt=fmt)
    frame, report = read_logs(tmp_path, CFG)
    assert len(frame) == 40 and report.rows_dropped == 0
    assert frame["duration"].dtype.kind == "f"
