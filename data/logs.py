"""Reading click/view logs described by a config, with row-level cleaning.

Rules (see docs/bad-input.md):

* a file whose header lacks a column the config uses stops with :class:`LogFormatError`
  naming the file, the missing columns and the config keys that use them
  (:func:`check_configured_columns`); ``dataset.truth`` columns are optional;
* a CSV file that is not UTF-8 or cannot be parsed (e.g. a field over the csv
  module's size limit) stops with an error naming the file and the line; a UTF-8
  byte-order mark is accepted;
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
from typing import Iterable, Iterator

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


def column_uses(config: ProjectConfig) -> dict[str, list[str]]:
    """``{column: [config keys using it]}`` for every column a comparison reads (truth excluded)."""
    uses: dict[str, list[str]] = {}

    def add(column, key):
        if column:
            uses.setdefault(column, []).append(key)

    for i, f in enumerate(config.features):
        add(f.source, f"features.{i}.column" if f.column else f"features.{i}.name")
    for i, t in enumerate(config.tasks):
        for c in t.label_columns:
            add(c, f"tasks.{i}.label")
        if t.where_clause:
            add(t.where_clause[0], f"tasks.{i}.where")
    ds = config.dataset
    add(ds.group_key, "dataset.group_key")
    add(ds.duration_column, "dataset.duration_column")
    add(ds.split.hash_key, "dataset.split.hash_key")
    gc = config.tuning.gradient_conflict
    if gc.enabled:
        add(gc.watch_column, "tuning.gradient_conflict.watch_column")
        add(gc.duration_column, "tuning.gradient_conflict.duration_column")
    if config.ranking is not None:
        for key in ("request_key", "length_column", "outcome_column"):
            add(getattr(config.ranking, key), f"ranking.{key}")
    return uses


def check_configured_columns(columns: Iterable[str], config: ProjectConfig, source: str) -> list[str]:
    """Check that ``columns`` (a file's header) carry every column the config uses.

    Features, labels, ``where`` filters, ``dataset.group_key``, ``dataset.duration_column``,
    ``dataset.split.hash_key`` and the ranking columns are required: a missing one raises
    :class:`LogFormatError` naming ``source``, the column and the config key(s) using it.
    ``dataset.truth`` columns are optional diagnostics (oracle, ranking truth): the missing
    ones are returned, in config order, for the caller to skip what needs them with a warning.
    """
    columns = list(columns)
    have = set(columns)
    missing = {c: keys for c, keys in column_uses(config).items() if c not in have}
    if missing:
        detail = ", ".join(f"{c!r} ({', '.join(keys)})" for c, keys in missing.items())
        shown = ", ".join(columns[:40]) + (f", ... ({len(columns)} columns)" if len(columns) > 40 else "")
        raise LogFormatError(f"{source}: lacks configured column(s) {detail}; it has: {shown or 'no columns'}")
    return [c for c in dict.fromkeys(config.dataset.truth.values()) if c not in have]


def _loaded_columns(config: ProjectConfig) -> list[str]:
    """Required columns plus ``split.hash_key`` (read as text even when nothing else uses it)."""
    return list(dict.fromkeys([*config.required_columns, *column_uses(config)]))


def _utf8_error(file: Path) -> LogFormatError:
    """The error for a file that is not UTF-8, naming its first undecodable line."""
    with open(file, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return LogFormatError(
                    f"{file}:{n}: not UTF-8 text (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line); "
                    "re-encode the file as UTF-8"
                )
    return LogFormatError(f"{file}: not UTF-8 text; re-encode the file as UTF-8")


def iter_csv(file: str | Path) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of every record of a UTF-8 CSV file, header first.

    ``line`` is the physical line the record starts on (blank lines give ``[]``). A UTF-8
    byte-order mark is skipped. Invalid UTF-8 and CSV syntax errors (e.g. a field longer than
    ``csv.field_size_limit()``, usually an unbalanced quote) raise :class:`LogFormatError`
    naming the file and the line.
    """
    file = Path(file)
    try:
        fh = open(file, newline="", encoding="utf-8-sig")
    except OSError as err:
        raise LogFormatError(f"{file}: cannot open: {err.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        start = 1
        while True:
            try:
                rec = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:  # decoding works on blocks: find the line
                raise _utf8_error(file) from None
            except csv.Error as err:
                where = f"{start}" if reader.line_num <= start else f"{start} (record starting there, error at line {reader.line_num})"
                hint = "; usually an unbalanced quote" if "field larger than field limit" in str(err) else ""
                raise LogFormatError(f"{file}:{where}: cannot parse CSV: {err}{hint}") from None
            yield start, rec
            start = reader.line_num + 1


def read_columns(file: str | Path) -> list[str]:
    """The column names of one log file (CSV header, Parquet schema, TFRecord features)."""
    file = Path(file)
    kind = _EXTS.get(file.suffix)
    if kind == "csv":
        for _, header in iter_csv(file):
            return header
        raise LogFormatError(f"{file}: empty file (no header)")
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(file).names)
        except Exception as err:  # noqa: BLE001 - any Arrow error: unusable file
            raise LogFormatError(f"{file}: cannot read Parquet: {err}") from None
    if kind == "tfrecord":
        return list(_read_tfrecord(file).columns)
    raise LogFormatError(f"{file}: unsupported file type")


def _read_raw(file: Path, config: ProjectConfig, optional: Iterable[str] = ()) -> pd.DataFrame:
    """The columns the config uses (checked, see :func:`check_configured_columns`) and those of
    ``optional`` the file has, as text (absent Parquet/TFRecord values as None)."""
    kind = _EXTS.get(file.suffix)
    if kind == "csv":
        return _read_csv(file, config, optional)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            names = list(pq.read_schema(file).names)
        except Exception as err:  # noqa: BLE001
            raise LogFormatError(f"{file}: cannot read Parquet: {err}") from None
        check_configured_columns(names, config, str(file))
        columns = _loaded_columns(config)
        columns += [c for c in optional if c in names and c not in columns]
        try:
            frame = pd.read_parquet(file, columns=columns)
        except Exception as err:  # noqa: BLE001
            raise LogFormatError(f"{file}: cannot read Parquet: {err}") from None
    elif kind == "tfrecord":
        frame = _read_tfrecord(file)
        check_configured_columns(frame.columns, config, str(file))
        columns = _loaded_columns(config)
        columns += [c for c in optional if c in frame.columns and c not in columns]
    else:
        raise LogFormatError(f"{file}: unsupported file type")
    frame = frame[columns]
    return frame.astype(str).where(frame.notna(), None)  # keep absent values absent


def _read_csv(file: Path, config: ProjectConfig, optional: Iterable[str] = ()) -> pd.DataFrame:
    """Parse a CSV with exact per-row field accounting.

    The csv module (not pandas) is used so that rows with too few or too many
    fields are detected and counted instead of being padded or silently skipped.
    """
    records = iter_csv(file)
    first = next(records, None)
    if first is None:
        raise LogFormatError(f"{file}: empty file (no header)")
    header = first[1]
    check_configured_columns(header, config, str(file))
    columns = _loaded_columns(config)
    columns += [c for c in optional if c in header and c not in columns]
    width = len(header)
    idx = [header.index(c) for c in columns]
    rows, short, long_ = [], 0, 0
    for _, rec in records:
        if not rec:
            continue  # blank line
        if len(rec) != width:
            if len(rec) < width:
                short += 1
            else:
                long_ += 1
            continue
        rows.append([rec[i] for i in idx])
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    frame.attrs["short_rows"] = short
    frame.attrs["long_rows"] = long_
    return frame


def _read_tfrecord(file: Path) -> pd.DataFrame:
    import tensorflow as tf

    rows = []
    try:
        for i, rec in enumerate(tf.data.TFRecordDataset(str(file)).as_numpy_iterator()):
            ex = tf.train.Example.FromString(rec)
            row = {}
            for k, f in ex.features.feature.items():
                kind = f.WhichOneof("kind")
                vals = getattr(f, kind).value if kind else []
                v = vals[0] if len(vals) else ""
                if isinstance(v, bytes):
                    try:
                        v = v.decode()
                    except UnicodeDecodeError:
                        raise LogFormatError(f"{file}: record {i + 1}: feature {k!r} is not UTF-8 text") from None
                row[k] = v
            rows.append(row)
    except LogFormatError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated/corrupt records, not a tf.Example
        raise LogFormatError(f"{file}: cannot read TFRecord: {type(err).__name__}: {err}".splitlines()[0]) from None
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
    ones as float64, the rest as str), ``dataset.split.hash_key`` (as str), ``day``
    (YYYYMMDD or "") and those ``extra_columns`` (e.g. the generator's ``true_ctr``) that
    every file has, as float64; an extra column some file lacks is left out altogether.
    A file lacking a column the config uses raises :class:`LogFormatError`.
    """
    report = CleaningReport()
    frames = []
    keys = [c for c in _loaded_columns(config) if c not in config.required_columns]
    absent: set[str] = set()
    for day, file in list_log_files(path):
        raw = _read_raw(file, config, extra_columns)
        cleaned, keep = clean_frame(raw, config, report)
        for c in keys:
            cleaned[c] = raw[c].fillna("").astype(str).to_numpy()[keep]
        for c in extra_columns:
            if c in raw.columns:
                cleaned[c] = pd.to_numeric(raw[c], errors="coerce").to_numpy()[keep]
            else:
                absent.add(c)
        cleaned["day"] = day or ""
        frames.append(cleaned)
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.drop(columns=[c for c in absent if c in frame.columns])
    return frame, report
