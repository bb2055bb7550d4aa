"""Reading click/view logs described by a config, with row-level cleaning.

Rules (see README "Bad input"):

* a file whose header lacks a required column stops with :class:`LogFormatError`
  naming the file and the missing columns;
* a row with a missing field, a non-numeric or non-finite numeric feature, a
  label that cannot be computed (negative/NaN numerator, denominator <= 0, a
  binary label outside {0, 1}) is dropped and counted per reason;
* unknown categorical values are *not* dropped: they go to OOV buckets at
  lookup time.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from models.config import ColumnLabel, NumericFeature, ProjectConfig

DAY_RE = re.compile(r"^\d{8}$")
_EXTS = {".csv": "csv", ".parquet": "parquet", ".tfrecord": "tfrecord"}


class LogFormatError(ValueError):
    """A log file cannot be used at all (wrong header, unreadable)."""


@dataclasses.dataclass
class CleaningReport:
    rows_read: int = 0
    dropped: Counter = dataclasses.field(default_factory=Counter)

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())

    def merge(self, other: "CleaningReport") -> None:
        self.rows_read += other.rows_read
        self.dropped.update(other.dropped)

    def summary(self) -> str:
        if not self.rows_dropped:
            return f"read {self.rows_read} rows, none dropped"
        reasons = ", ".join(f"{n} {why}" for why, n in self.dropped.most_common())
        return f"read {self.rows_read} rows, dropped {self.rows_dropped} unusable: {reasons}"


def list_log_files(path: str | Path) -> list[tuple[str | None, Path]]:
    """``[(day or None, file)]`` under ``path``: a file, or day folders ``YYYYMMDD/part-*``."""
    path = Path(path)
    if path.is_file():
        return [(None, path)]
    if not path.is_dir():
        raise LogFormatError(f"no such data path: {path}")
    files: list[tuple[str | None, Path]] = []
    day_dirs = sorted(d for d in path.iterdir() if d.is_dir() and DAY_RE.match(d.name))
    if day_dirs:
        for d in day_dirs:
            for f in sorted(d.iterdir()):
                if f.is_file() and f.suffix in _EXTS and not f.name.startswith("."):
                    files.append((d.name, f))
    else:
        files = [(None, f) for f in sorted(path.iterdir()) if f.is_file() and f.suffix in _EXTS]
    if not files:
        raise LogFormatError(f"no log files (*.csv, *.parquet, *.tfrecord) under {path}")
    return files


def _read_raw(file: Path, columns: list[str]) -> pd.DataFrame:
    kind = _EXTS.get(file.suffix)
    if kind == "csv":
        return _read_csv(file, columns)
    if kind == "parquet":
        frame = pd.read_parquet(file)
    elif kind == "tfrecord":
        frame = _read_tfrecord(file)
    else:
        raise LogFormatError(f"{file}: unsupported file type")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LogFormatError(f"{file}: lacks required column(s) {missing}")
    frame = frame[columns]
    return frame.astype(str).where(frame.notna(), None)  # keep absent values absent


def _read_csv(file: Path, columns: list[str]) -> pd.DataFrame:
    """Parse a CSV with exact per-row field accounting.

    The csv module (not pandas) is used so that rows with too few or too many
    fields are detected and counted instead of being padded or silently skipped.
    """
    try:
        with open(file, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise LogFormatError(f"{file}: empty file (no header)")
            missing = [c for c in columns if c not in header]
            if missing:
                raise LogFormatError(f"{file}: header lacks required column(s) {missing}")
            width = len(header)
            idx = [header.index(c) for c in columns]
            rows, short, long_ = [], 0, 0
            for rec in reader:
                if not rec:
                    continue  # blank line
                if len(rec) != width:
                    if len(rec) < width:
                        short += 1
                    else:
                        long_ += 1
                    continue
                rows.append([rec[i] for i in idx])
    except UnicodeDecodeError as err:
        raise LogFormatError(f"{file}: not UTF-8 text: {err}") from None
    except csv.Error as err:
        raise LogFormatError(f"{file}: cannot parse CSV: {err}") from None
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    frame.attrs["short_rows"] = short
    frame.attrs["long_rows"] = long_
    return frame


def _read_tfrecord(file: Path) -> pd.DataFrame:
    import tensorflow as tf

    rows = []
    for rec in tf.data.TFRecordDataset(str(file)).as_numpy_iterator():
        ex = tf.train.Example.FromString(rec)
        row = {}
        for k, f in ex.features.feature.items():
            kind = f.WhichOneof("kind")
            vals = getattr(f, kind).value if kind else []
            v = vals[0] if len(vals) else ""
            row[k] = v.decode() if isinstance(v, bytes) else v
        rows.append(row)
    return pd.DataFrame(rows)


def clean_frame(frame: pd.DataFrame, config: ProjectConfig, report: CleaningReport) -> tuple[pd.DataFrame, np.ndarray]:
    """Typed, validated copy of ``frame`` and the boolean mask of kept rows.

    Unusable rows are dropped and counted in ``report`` by reason.
    """
    n = len(frame)
    short, long_ = int(frame.attrs.get("short_rows", 0)), int(frame.attrs.get("long_rows", 0))
    report.rows_read += n + short + long_
    if short:
        report.dropped["malformed (missing fields)"] += short
    if long_:
        report.dropped["malformed (extra fields)"] += long_
    keep = np.ones(n, dtype=bool)
    missing = frame.isna().any(axis=1).to_numpy()  # Parquet/TFRecord rows lacking a value
    if missing.any():
        report.dropped["missing value"] += int(missing.sum())
    keep &= ~missing
    out = pd.DataFrame(index=frame.index)

    numeric_cols = {f.source for f in config.features if isinstance(f, NumericFeature)}
    label_cols = {c for t in config.tasks for c in t.label_columns}
    where_cols = {t.where_clause[0] for t in config.tasks if t.where_clause}
    if config.dataset.duration_column:
        numeric_cols.add(config.dataset.duration_column)
    for c in sorted(numeric_cols | label_cols | where_cols):
        vals = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(vals) & keep
        if bad.any():
            report.dropped[f"non-numeric/NaN '{c}'"] += int(bad.sum())
        keep &= np.isfinite(vals)
        out[c] = vals
    for t in config.tasks:
        if isinstance(t.label, ColumnLabel):
            v = out[t.label.column].to_numpy()
            if t.type == "binary":
                bad = ~np.isin(v, (0.0, 1.0)) & keep
                why = f"'{t.label.column}' not 0/1"
            else:
                bad = (v < 0) & keep
                why = f"negative '{t.label.column}'"
        else:
            num, den = t.label.ratio
            bad_num = (out[num].to_numpy() < 0) & keep
            if bad_num.any():
                report.dropped[f"negative '{num}'"] += int(bad_num.sum())
            keep &= ~bad_num
            bad = (out[den].to_numpy() <= 0) & keep
            why = f"'{den}' <= 0"
        if bad.any():
            report.dropped[why] += int(bad.sum())
        keep &= ~bad
    for c in config.required_columns:
        if c not in out.columns:
            out[c] = frame[c].fillna("").astype(str)
    out = out[config.required_columns]
    return out.loc[keep].reset_index(drop=True), keep


def read_logs(path: str | Path, config: ProjectConfig, extra_columns: tuple[str, ...] = ()):
    """Read and clean every log file under ``path``.

    Returns ``(frame, report)``; ``frame`` has the config's required columns (numeric
    ones as float64, the rest as str), plus ``day`` (YYYYMMDD or "") and any
    ``extra_columns`` present in the files (e.g. the generator's ``true_ctr``).
    """
    report = CleaningReport()
    frames = []
    for day, file in list_log_files(path):
        raw = _read_raw(file, _file_columns(file, config, extra_columns))
        cleaned, keep = clean_frame(raw, config, report)
        for c in extra_columns:
            if c in raw.columns:
                cleaned[c] = pd.to_numeric(raw[c], errors="coerce").to_numpy()[keep]
        cleaned["day"] = day or ""
        frames.append(cleaned)
    frame = pd.concat(frames, ignore_index=True)
    return frame, report


def _file_columns(file: Path, config: ProjectConfig, extra: tuple[str, ...]) -> list[str]:
    cols = list(config.required_columns)
    if not extra:
        return cols
    if file.suffix == ".csv":
        with open(file, newline="") as fh:
            header = fh.readline().rstrip("\r\n").split(",")
        return cols + [c for c in extra if c in header and c not in cols]
    return cols + [c for c in extra if c not in cols]
