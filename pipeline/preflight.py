"""Pre-flight check of local CSV logs before the pipeline starts.

Beam's CSV decoder (inside CsvExampleGen) fails on a ragged row with the row's values but
without the file or line; files with different headers fail with no file named either. This
check reads the files ``pipeline.input_pattern`` selects (only for a local CSV data root) and
stops with an error naming the file, the line and the problem — before any component runs.
Type, domain and range problems are left to ExampleValidator and the curated schema.
"""

from __future__ import annotations

import csv
import glob
import os
import re
from pathlib import Path

from models.config import ProjectConfig


class CsvLayoutError(ValueError):
    pass


def _glob_of(pattern: str) -> str:
    # TFX span/date placeholders ({SPAN}, {YYYY}, {MM}, {DD}, {VERSION}) match any digits
    return re.sub(r"\{(SPAN|YYYY|MM|DD|VERSION)(:\d+)?\}", "*", pattern)


def csv_files(data_root: str, config: ProjectConfig) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(os.path.join(data_root, _glob_of(config.pipeline.input_pattern))) if os.path.isfile(p))


def check_csv_logs(data_root: str, config: ProjectConfig, max_errors: int = 10) -> int:
    """Raise :class:`CsvLayoutError` listing up to ``max_errors`` problems; return the number of rows checked."""
    files = csv_files(data_root, config)
    if not files:
        raise CsvLayoutError(f"no files match {config.pipeline.input_pattern!r} under {data_root}")
    required = config.required_columns
    errors: list[str] = []
    first_header, first_file = None, None
    rows = 0
    for path in files:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                errors.append(f"{path}: empty file (no header)")
                continue
            missing = [c for c in required if c not in header]
            if missing:
                errors.append(f"{path}: header lacks required column(s) {missing}")
            if first_header is None:
                first_header, first_file = header, path
            elif header != first_header:
                errors.append(f"{path}: header differs from {first_file} (every file of a run must share one header)")
            for line, row in enumerate(reader, start=2):
                rows += 1
                if len(row) != len(header) and any(row):
                    errors.append(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
                    if len(errors) >= max_errors:
                        break
        if len(errors) >= max_errors:
            break
    if errors:
        raise CsvLayoutError("malformed CSV logs (fix or remove these rows/files):\n  " + "\n  ".join(errors))
    return rows
