"""Pre-flight check of local CSV logs before the pipeline starts.

The pipeline's CSV ExampleGen (``components.csv_example_gen``) fails on a ragged row naming the file
but not the line, and only once the Beam job runs. This
check reads the files ``pipeline.input_pattern`` selects (only for a local CSV data root) and
stops with an error naming the file, the line and the problem — before any component runs:
a ragged row, a header lacking a required column, text that is not UTF-8, a record the csv
module cannot parse (e.g. a field over its size limit), a UTF-8 byte-order mark (the CSV
reading of ``ncs compare`` skips it, but ExampleGen reads it as part of the first column's
name, so the run would lack that column).
Folders the pattern selects that hold no files, and files with a header but no rows, are
reported as warnings naming the day; no data rows at all is an error.
Type, domain and range problems are left to ExampleValidator and the curated schema.
"""

from __future__ import annotations

import codecs
import glob
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Optional

from data.logs import LogFormatError, iter_csv
from models.config import ProjectConfig


class CsvLayoutError(ValueError):
    pass


class CsvLayoutWarning(UserWarning):
    """Data that will not fail the run but adds nothing to it (empty day folder, header-only file)."""


def _glob_of(pattern: str) -> str:
    # TFX span/date placeholders ({SPAN}, {YYYY}, {MM}, {DD}, {VERSION}) match any digits
    return re.sub(r"\{(SPAN|YYYY|MM|DD|VERSION)(:\d+)?\}", "*", pattern)


def csv_files(data_root: str, config: ProjectConfig) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(os.path.join(data_root, _glob_of(config.pipeline.input_pattern))) if os.path.isfile(p))


def empty_folders(data_root: str, config: ProjectConfig) -> list[Path]:
    """Folders ``input_pattern``'s directory part selects (the day folders) that hold no matching file."""
    folder_pattern, file_pattern = os.path.split(_glob_of(config.pipeline.input_pattern))
    if not folder_pattern:
        return []
    folders = sorted(Path(p) for p in glob.glob(os.path.join(data_root, folder_pattern)) if os.path.isdir(p))
    return [d for d in folders if not any(os.path.isfile(p) for p in glob.glob(os.path.join(d, file_pattern)))]


def _day_of(folder: Path, data_root: str) -> str:
    """``"day 20260103: "`` for a folder under the data root (its path there), ``""`` for the root itself."""
    try:
        rel = folder.relative_to(data_root)
    except ValueError:
        return f"folder {folder}: "
    return f"day {rel}: " if str(rel) != "." else ""


def _has_bom(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8


def _warn(message: str) -> None:
    warnings.warn(message, CsvLayoutWarning, stacklevel=3)


def check_csv_logs(data_root: str, config: ProjectConfig, max_errors: int = 10,
                   warn: Optional[Callable[[str], None]] = None) -> int:
    """Raise :class:`CsvLayoutError` listing up to ``max_errors`` problems; return the number of rows checked.

    Empty folders and header-only files are passed to ``warn`` (default: a :class:`CsvLayoutWarning`).
    """
    warn = warn or _warn
    pattern = config.pipeline.input_pattern
    file_pattern = os.path.basename(pattern)
    empty = empty_folders(data_root, config)
    for d in empty:
        warn(f"{_day_of(d, data_root)}the folder {d} holds no file matching {file_pattern!r}; it adds no rows")
    files = csv_files(data_root, config)
    if not files:
        raise CsvLayoutError(f"no files match {pattern!r} under {data_root}")
    required = config.required_columns
    errors: list[str] = []
    first_header, first_file = None, None
    rows = 0
    rows_per_folder: dict[Path, int] = {}
    for path in files:
        file_rows, errors_before, first = 0, len(errors), None
        records = iter_csv(path)
        try:
            first = next(records, None)
            if first is None:
                errors.append(f"{path}: empty file (no header)")
                continue
            header = first[1]
            if _has_bom(path):
                first_name = header[0] if header else ""
                errors.append(
                    f"{path}:1: starts with a UTF-8 byte-order mark, which the pipeline's ExampleGen reads as part of the first "
                    f"column's name (the run would lack {first_name!r}); save the file without it, "
                    f"e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' {path}"
                )
            missing = [c for c in required if c not in header]
            if missing:
                errors.append(f"{path}: header lacks required column(s) {missing}")
            if first_header is None:
                first_header, first_file = header, path
            elif header != first_header:
                errors.append(f"{path}: header differs from {first_file} (every file of a run must share one header)")
            for line, row in records:
                if not any(row):
                    continue  # blank line
                file_rows += 1
                if len(row) != len(header):
                    errors.append(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
                    if len(errors) >= max_errors:
                        break
        except LogFormatError as err:  # not UTF-8, unparsable CSV: the message names file and line
            errors.append(str(err))
        finally:
            records.close()
            rows += file_rows
            rows_per_folder[path.parent] = rows_per_folder.get(path.parent, 0) + file_rows
        if first is not None and file_rows == 0 and len(errors) == errors_before:
            warn(f"{_day_of(path.parent, data_root)}{path} has a header but no rows")
        if len(errors) >= max_errors:
            break
    if errors:
        raise CsvLayoutError("malformed CSV logs (fix or remove these rows/files):\n  " + "\n  ".join(errors))
    if rows == 0:
        raise CsvLayoutError(f"no data rows: the {len(files)} file(s) matching {pattern!r} under {data_root} hold a header only")
    for folder, n in sorted(rows_per_folder.items()):
        if n == 0 and sum(1 for f in files if f.parent == folder) > 1:
            warn(f"{_day_of(folder, data_root)}none of the {sum(1 for f in files if f.parent == folder)} files in {folder} has a row")
    return rows
