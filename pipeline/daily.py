"""Daily-run bookkeeping (groundwork for ``ncs daily``): the ledger of days, one run per day at a
time, catch-up order, and the mask-refresh decision.

- :class:`DailyLedger`: a JSON file under ``$NCS_HOME/daily/`` recording every day's outcome
  (succeeded / rejected / failed), the pushed version, the masks used and why they were or were
  not refreshed. Written atomically (temp file + rename), so a killed run never leaves it torn.
- :func:`day_lock`: an exclusive, non-blocking ``flock`` per (pipeline, day): a second run of the
  same day while one is running stops at once with :class:`DayLockedError`.
- :func:`days_to_run`: the day folders after the last success up to the target date that have
  data and have not succeeded yet, oldest first — a missed day is caught up in date order, and
  re-running a day that already succeeded is a no-op.
- :func:`decide_mask_refresh`: re-run the mask search when asked, every ``every_days`` days, when
  the vocabulary grew too much, when features drifted (TFDV statistics vs the masks' span), or
  after a sustained metric drop; the decision comes with its reason, for logs and artifacts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import re
from pathlib import Path

DAY_RE = re.compile(r"^\d{8}$")


def parse_day(day: str) -> dt.date:
    if not DAY_RE.match(day):
        raise ValueError(f"expected a date YYYYMMDD, got {day!r}")
    return dt.datetime.strptime(day, "%Y%m%d").date()


@dataclasses.dataclass
class DayRecord:
    day: str
    status: str  # "succeeded" | "rejected" (validation) | "failed"
    finished_at: str = ""
    pushed_version: str | None = None
    masks_uri: str | None = None
    masks_refreshed: bool = False
    refresh_reason: str = ""
    metrics: dict = dataclasses.field(default_factory=dict)
    error: str = ""
    blessed: bool | None = None
    statistics_uri: str | None = None  # the day's TFDV statistics (drift reference while its masks live)
    window: list = dataclasses.field(default_factory=list)  # days the trainer saw
    warm_started_from: str | None = None
    seconds: float = 0.0


class DailyLedger:
    """Outcome of every day of one pipeline, newest record of a day wins."""

    def __init__(self, home: str | Path, pipeline_name: str):
        self.path = Path(home) / "daily" / f"{pipeline_name}.json"
        self.records: dict[str, DayRecord] = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"daily ledger {self.path} is not valid JSON ({err}); fix or move it away") from None
            self.records = {d: DayRecord(**r) for d, r in raw.get("days", {}).items()}

    def record(self, rec: DayRecord) -> None:
        parse_day(rec.day)
        rec.finished_at = rec.finished_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.records[rec.day] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"days": {d: dataclasses.asdict(r) for d, r in sorted(self.records.items())}}, indent=1))
        os.replace(tmp, self.path)  # atomic: readers see the old or the new ledger, never half of one

    def succeeded(self, day: str) -> bool:
        r = self.records.get(day)
        return r is not None and r.status == "succeeded"

    def last_success(self) -> DayRecord | None:
        ok = [r for d, r in sorted(self.records.items()) if r.status == "succeeded"]
        return ok[-1] if ok else None

    def last_refresh(self) -> DayRecord | None:
        ref = [r for d, r in sorted(self.records.items()) if r.status == "succeeded" and r.masks_refreshed]
        return ref[-1] if ref else None

    def metric_history(self, key: str, since: str | None = None) -> list[float]:
        """``key`` (e.g. ``"cvr/mse"``) of the succeeded days (from ``since`` on), oldest first."""
        return [r.metrics[key] for d, r in sorted(self.records.items())
                if r.status == "succeeded" and key in r.metrics and (since is None or d >= since)]

    def masks_record(self, masks_uri: str) -> DayRecord | None:
        """The day whose run searched the masks at ``masks_uri``."""
        for _, r in sorted(self.records.items()):
            if r.masks_refreshed and r.masks_uri == masks_uri:
                return r
        return None


class DayLockedError(RuntimeError):
    pass


@contextlib.contextmanager
def _exclusive(path: Path, what: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise DayLockedError(f"{what} is already running (pid {holder}; lock {path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing releases the flock, also when the process is killed


def day_lock(home: str | Path, pipeline_name: str, day: str):
    """Hold an exclusive lock for (pipeline, day) while the body runs; fail at once if it is held."""
    parse_day(day)
    return _exclusive(Path(home) / "daily" / "locks" / f"{pipeline_name}-{day}.lock", f"day {day} of {pipeline_name}")


def pipeline_lock(home: str | Path, pipeline_name: str):
    """One ``ncs daily`` per pipeline at a time (days share the metadata store and run in order)."""
    return _exclusive(Path(home) / "daily" / "locks" / f"{pipeline_name}.lock", f"a daily run of {pipeline_name}")


def days_to_run(ledger: DailyLedger, data_root: str | Path, until: str) -> list[str]:
    """Day folders with data, after the last success and up to ``until``, not yet succeeded; oldest first."""
    until_d = parse_day(until)
    last = ledger.last_success()
    after = parse_day(last.day) if last else None
    out = []
    root = Path(data_root)
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if not (p.is_dir() and DAY_RE.match(p.name)) or not any(f.is_file() for f in p.iterdir()):
            continue
        d = parse_day(p.name)
        if d > until_d or (after is not None and d <= after) or ledger.succeeded(p.name):
            continue
        out.append(p.name)
    return out


@dataclasses.dataclass(frozen=True)
class RefreshPolicy:
    every_days: int | None = 7  # None: never on age alone
    max_vocab_growth: float = 0.2  # refresh when a vocabulary grew by more than 20% since the masks
    max_drift: float = 0.1  # TFDV L-infinity (categorical) / Jensen-Shannon (numeric) distance
    metric_drop_days: int = 3  # refresh after this many consecutive worse days ...
    max_metric_drop: float = 0.01  # ... each worse than the masks' day by more than this (relative)


def decide_mask_refresh(policy: RefreshPolicy, *, today: str, masks_day: str | None, asked: bool = False,
                        vocab_growth: dict[str, float] | None = None, drift: dict[str, float] | None = None,
                        metric_history: list[float] | None = None, higher_is_better: bool = False) -> tuple[bool, str]:
    """``(refresh?, reason)``. ``metric_history`` starts with the masks' day, one value per day since."""
    if masks_day is None:
        return True, "no masks yet: first mask search"
    if asked:
        return True, "refresh requested (--refresh-masks)"
    age = (parse_day(today) - parse_day(masks_day)).days
    if policy.every_days is not None and age >= policy.every_days:
        return True, f"masks are {age} days old (policy: every {policy.every_days} days)"
    grown = {k: g for k, g in (vocab_growth or {}).items() if g > policy.max_vocab_growth}
    if grown:
        worst = max(grown, key=grown.get)
        return True, f"vocabulary growth {grown[worst]:.0%} in {worst!r} > {policy.max_vocab_growth:.0%}"
    drifted = {k: v for k, v in (drift or {}).items() if v > policy.max_drift}
    if drifted:
        worst = max(drifted, key=drifted.get)
        return True, f"feature drift {drifted[worst]:.3f} in {worst!r} > {policy.max_drift} since the masks' span"
    hist = metric_history or []
    if len(hist) > policy.metric_drop_days:
        base, recent = hist[0], hist[-policy.metric_drop_days:]
        sign = -1.0 if higher_is_better else 1.0
        worse = [sign * (v - base) / abs(base) > policy.max_metric_drop for v in recent if base]
        if worse and all(worse):
            return True, f"metric worse than on the masks' day by > {policy.max_metric_drop:.1%} for {policy.metric_drop_days} days"
    checks = [f"{age} days old"]
    if drift:
        worst = max(drift, key=drift.get)
        checks.append(f"max drift {drift[worst]:.3f} ({worst}) <= {policy.max_drift}")
    if vocab_growth:
        worst = max(vocab_growth, key=vocab_growth.get)
        checks.append(f"max vocabulary growth {vocab_growth[worst]:.0%} ({worst})")
    checks.append("no sustained metric drop")
    return False, f"masks from {masks_day} kept ({', '.join(checks)})"


def vocabulary_growth(old_sizes: dict[str, int], new_sizes: dict[str, int]) -> dict[str, float]:
    """Relative growth of each vocabulary present in both."""
    return {k: (new_sizes[k] - v) / v for k, v in old_sizes.items() if k in new_sizes and v > 0}


def feature_drift(new_stats, ref_stats, schema, features: list[str], threshold: float = 0.0) -> dict[str, float]:
    """TFDV drift of ``features`` between two statistics protos (L-infinity for categorical,
    Jensen-Shannon for numeric): ``{feature: distance}``."""
    import copy

    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = copy.deepcopy(schema)
    for f in schema.feature:
        if f.name not in features:
            continue
        if f.type == schema_pb2.BYTES:
            f.drift_comparator.infinity_norm.threshold = threshold
        else:
            f.drift_comparator.jensen_shannon_divergence.threshold = threshold
    anomalies = tfdv.validate_statistics(new_stats, schema, previous_statistics=ref_stats)
    # the measured distances, from TFDV's structured drift info (the anomaly descriptions print small values in
    # scientific notation, e.g. 8.977e-05, so reading numbers off the text is wrong)
    out = {}
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        if name in features:
            out[name] = max([out.get(name, 0.0), *(float(m.value) for m in info.drift_measurements)])
    for name in features:
        out.setdefault(name, 0.0)
    return out
