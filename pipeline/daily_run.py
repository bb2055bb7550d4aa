"""``ncs daily``: incremental retraining of one day, or of the missed days up to it, in date order.

Per day (under a per-pipeline and a per-day lock, recorded in the :class:`DailyLedger`):

1. *validate*: the daily pipeline up to ValidationGate (ExampleGen takes the day's span). A day
   with anomalies is **rejected** here: nothing downstream runs, the served version stays, and
   the day never enters a later training window.
2. *decide about the masks* (:func:`pipeline.daily.decide_mask_refresh`): asked, age, vocabulary
   growth and TFDV drift of the day's statistics against the masks' day, a sustained metric drop,
   or masks that are missing / do not fit the network (``daily.refresh.on_incompatible``).
3. *train*: the full daily pipeline; the validation steps are cached from step 1. The trainer
   warm-starts from the latest blessed model on the window of validated days; the Evaluator
   compares against that model; the Pusher publishes a new version atomically if blessed.
4. record the outcome (status, metrics, pushed version, masks and the reason) in the ledger.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import os
import time
from typing import Callable

from models.config import SPARSE_VARIANTS, CategoricalFeature, ProjectConfig
from models.metrics import HIGHER_IS_BETTER, primary_metric
from pipeline.daily import (
    DailyLedger,
    DayRecord,
    RefreshPolicy,
    day_lock,
    days_to_run,
    decide_mask_refresh,
    feature_drift,
    parse_day,
    pipeline_lock,
    vocabulary_growth,
)
from pipeline.runner import LocalPaths


class NoDataError(RuntimeError):
    """The day folder is missing or holds no file matching the daily input pattern."""


class MasksUnusableError(RuntimeError):
    """The latest masks are missing or do not fit the network, and the policy says: error."""


@dataclasses.dataclass
class DailyOptions:
    config: ProjectConfig
    data_root: str
    paths: LocalPaths
    schema_path: str | None = None
    beam_args: list[str] | None = None
    refresh_asked: bool = False
    log: Callable[[str], None] = print


def yesterday() -> str:
    return (dt.date.today() - dt.timedelta(days=1)).strftime("%Y%m%d")


def day_files(config: ProjectConfig, data_root: str, day: str) -> list[str]:
    pattern = config.daily_input_pattern().replace("{YYYY}{MM}{DD}", day)
    return sorted(f for f in glob.glob(os.path.join(data_root, pattern)) if os.path.isfile(f))


def refresh_policy(config: ProjectConfig) -> RefreshPolicy:
    r = config.daily.refresh
    return RefreshPolicy(r.every_days, r.max_vocab_growth, r.max_drift, r.metric_drop_days, r.max_metric_drop)


# ----------------------------------------------------------------------------- MLMD lookups


def _store(paths: LocalPaths):
    from pipeline.runner import metadata_store

    return metadata_store(paths.metadata) if paths.metadata.exists() else None


def max_artifact_id(paths: LocalPaths) -> int:
    store = _store(paths)
    return max((a.id for a in store.get_artifacts()), default=0) if store else 0


def _span_of(artifact) -> int | None:
    if "span" in artifact.properties:
        return artifact.properties["span"].int_value
    if "span" in artifact.custom_properties:
        return artifact.custom_properties["span"].int_value
    return None


def day_statistics_uri(paths: LocalPaths, span: int) -> str | None:
    """TFDV statistics of ``span``, from the newest ValidatedSpan marker of that span."""
    store = _store(paths)
    marks = [a for a in (store.get_artifacts_by_type("components.ValidatedSpan") if store else []) if _span_of(a) == span]
    if not marks:
        return None
    return max(marks, key=lambda a: a.id).custom_properties["statistics_uri"].string_value or None


def latest_masks_uri(paths: LocalPaths) -> str | None:
    """The TaskMasks the reuse resolver will pick (the newest one)."""
    store = _store(paths)
    arts = store.get_artifacts_by_type("components.TaskMasks") if store else []
    arts = [a for a in arts if a.state == 2]  # LIVE
    return max(arts, key=lambda a: a.id).uri if arts else None


def trained_window(paths: LocalPaths) -> list[str]:
    """Days (YYYYMMDD) of the Examples the run's Transform read."""
    from ml_metadata.proto import metadata_store_pb2
    from tfx.components.example_gen.utils import span_number_to_date

    store = _store(paths)
    if store is None:
        return []
    types = [t for t in store.get_execution_types() if t.name.endswith(".Transform")]
    execs = [e for t in types for e in store.get_executions_by_type(t.name)]
    execs = [e for e in execs if e.last_known_state in (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)]
    if not execs:
        return []
    latest = max(execs, key=lambda e: e.id)
    inputs = [ev.artifact_id for ev in store.get_events_by_execution_ids([latest.id]) if ev.type == ev.INPUT]
    examples_type = store.get_artifact_type("Examples").id
    out = []
    for a in store.get_artifacts_by_id(inputs):
        span = _span_of(a)
        if a.type_id == examples_type and span is not None:
            out.append("%04d%02d%02d" % span_number_to_date(span))
    return sorted(set(out))


# ----------------------------------------------------------------------------- the mask decision


def _train_stats(uri: str):
    import tensorflow_data_validation as tfdv

    path = os.path.join(uri, "Split-train", "FeatureStats.pb")
    return tfdv.load_stats_binary(path)


def unique_counts(stats, columns: list[str]) -> dict[str, int]:
    """Distinct values per categorical column (TFDV ``string_stats.unique``)."""
    out = {}
    for f in stats.datasets[0].features:
        name = f.path.step[0] if f.path.step else f.name
        if name in columns and f.HasField("string_stats"):
            out[name] = int(f.string_stats.unique)
    return out


def check_masks(config: ProjectConfig, masks_uri: str) -> str | None:
    """``None`` when the masks at ``masks_uri`` fit the network the config builds, else why not."""
    from components.mask_search import load_masks_artifact
    from models.features import embedding_tables
    from models.masks import MaskShapeError
    from models.variants import build_model

    try:
        masks, _ = load_masks_artifact(masks_uri)
    except (MaskShapeError, OSError, ValueError) as err:
        return f"masks at {masks_uri} cannot be read ({err})"
    if masks.structure != config.model.variant:
        return f"masks at {masks_uri} are {masks.structure!r} masks, the config trains {config.model.variant!r}"
    vocab = {f.name: ["x"] for f in config.features if getattr(f, "vocab_size", None) is not None}
    model = build_model(config, embedding_tables(config, vocab), seed=0)
    try:
        masks.check_compatible(model, source=f"masks at {masks_uri}")
    except MaskShapeError as err:
        return str(err)
    return None


def decide(opts: DailyOptions, ledger: DailyLedger, day: str, stats_uri: str | None) -> tuple[bool, str, str | None]:
    """``(refresh?, reason, masks uri to reuse)`` for ``day``."""
    config = opts.config
    masks_uri = latest_masks_uri(opts.paths)
    if masks_uri is None:
        return True, "no masks yet: first mask search", None
    problem = check_masks(config, masks_uri)
    if problem:
        if config.daily.refresh.on_incompatible == "error":
            raise MasksUnusableError(f"{problem}\npolicy daily.refresh.on_incompatible=error: run with --refresh-masks to search new masks")
        return True, f"masks unusable, searching new ones: {problem}", None
    rec = ledger.masks_record(masks_uri)
    if rec is None:
        return True, f"masks at {masks_uri} were not searched by a daily run (no reference statistics): first daily mask search", None
    vocab_growth, drift = {}, {}
    if stats_uri and rec.statistics_uri and os.path.exists(os.path.join(rec.statistics_uri, "Split-train")):
        columns = config.daily.refresh.drift_features or [
            f.source for f in config.features if isinstance(f, CategoricalFeature) and f.shared_embedding is None
        ]
        new, ref = _train_stats(stats_uri), _train_stats(rec.statistics_uri)
        # growth of the vocabulary *tables*: a hashed column's table has a fixed size, and a table
        # keeps the top vocab_size tokens, so distinct values beyond that cannot grow it
        caps = {f.source: f.vocab_size for f in config.features if getattr(f, "vocab_size", None) is not None and f.source in columns}
        sizes = [{c: min(n, caps[c]) for c, n in unique_counts(s, list(caps)).items()} for s in (ref, new)]
        vocab_growth = vocabulary_growth(*sizes)
        if opts.schema_path:
            import tensorflow_data_validation as tfdv

            drift = feature_drift(new, ref, tfdv.load_schema_text(opts.schema_path), columns)
    history, higher = [], False
    for t in config.tasks:  # a sustained drop of any task's primary metric counts
        key = f"{t.name}/{primary_metric(t.type)}"
        h = ledger.metric_history(key, since=rec.day)
        if len(h) > len(history):
            history, higher = h, HIGHER_IS_BETTER[primary_metric(t.type)]
    refresh, reason = decide_mask_refresh(
        refresh_policy(config), today=day, masks_day=rec.day, asked=opts.refresh_asked,
        vocab_growth=vocab_growth, drift=drift, metric_history=history, higher_is_better=higher,
    )
    return refresh, reason, masks_uri


# ----------------------------------------------------------------------------- one day


def _is_validation_error(err: BaseException) -> bool:
    return "ExampleValidator found anomalies" in str(err) or type(err).__name__ == "DataValidationError"


def run_day(opts: DailyOptions, ledger: DailyLedger, day: str) -> DayRecord:
    """Validate, decide, train, evaluate and push one day; the outcome is recorded and returned."""
    from pipeline.pipeline import DailyRun
    from pipeline.runner import run_local, run_summary

    config, paths, log = opts.config, opts.paths, opts.log
    t0 = time.perf_counter()
    files = day_files(config, opts.data_root, day)
    if not files:
        rec = DayRecord(day, "no_data", error=f"no files match {config.daily_input_pattern().replace('{YYYY}{MM}{DD}', day)} under {opts.data_root}")
        ledger.record(rec)
        return rec
    ledger.record(DayRecord(day, "running"))
    daily = DailyRun(day=day)
    log(f"[{day}] validating {len(files)} file(s) (ExampleGen span {daily.span} -> StatisticsGen -> ExampleValidator)")
    try:
        run_local(config, opts.data_root, paths, opts.schema_path, opts.beam_args, daily=dataclasses.replace(daily, validate_only=True))
    except Exception as err:  # noqa: BLE001 - recorded, then reported by the caller
        status = "rejected" if _is_validation_error(err) else "failed"
        rec = DayRecord(day, status, error=f"{type(err).__name__}: {err}", seconds=time.perf_counter() - t0)
        ledger.record(rec)
        return rec
    stats_uri = day_statistics_uri(paths, daily.span)
    reuse_uri = None
    if config.model.variant in SPARSE_VARIANTS:
        try:
            refresh, reason, reuse_uri = decide(opts, ledger, day, stats_uri)
        except MasksUnusableError as err:
            ledger.record(DayRecord(day, "failed", error=f"MasksUnusableError: {err}", statistics_uri=stats_uri))
            raise
        except Exception as err:  # noqa: BLE001 - e.g. unreadable statistics: the day fails, the ledger says why
            rec = DayRecord(day, "failed", error=f"mask decision: {type(err).__name__}: {err}", statistics_uri=stats_uri,
                            seconds=time.perf_counter() - t0)
            ledger.record(rec)
            return rec
        log(f"[{day}] masks: {'SEARCH' if refresh else 'reuse'} - {reason}")
    else:
        refresh, reason = False, f"variant {config.model.variant} has no masks"
    before = max_artifact_id(paths)
    log(f"[{day}] training on the last {config.daily.window_days} validated day(s), warm start from the latest blessed model (if any)")
    failed = None
    try:
        run_local(config, opts.data_root, paths, opts.schema_path, opts.beam_args,
                  daily=dataclasses.replace(daily, refresh_masks=refresh, masks_decision=reason))
    except Exception as err:  # noqa: BLE001
        failed = err
    summary = run_summary(config, paths, push_since_id=before) if not failed else {}
    model = summary.get("model", {})
    metrics = {}
    for t in config.tasks:
        row = summary.get("metrics", {}).get(t.name, {})
        for k in (primary_metric(t.type), "example_count"):  # rows in the task's sample space
            for side in ("candidate", "baseline"):
                if side in row.get(k, {}):
                    metrics[f"{t.name}/{k}" + ("" if side == "candidate" else "/baseline")] = row[k][side]
    push = summary.get("push", {})
    masks = summary.get("masks", {}) if refresh else {"uri": model.get("masks_uri", reuse_uri)}
    rec = DayRecord(
        day,
        "failed" if failed else "succeeded",
        pushed_version=str(push.get("pushed_version")) if push.get("pushed") == 1 else None,
        masks_uri=masks.get("uri"),
        masks_refreshed=refresh and not failed,
        refresh_reason=reason,
        metrics=metrics,
        error=f"{type(failed).__name__}: {failed}" if failed else "",
        blessed=summary.get("validation_ok"),
        statistics_uri=stats_uri,
        window=trained_window(paths),
        warm_started_from=model.get("warm_started_from"),
        seconds=time.perf_counter() - t0,
    )
    ledger.record(rec)
    return rec


def run_daily(opts: DailyOptions, until: str, catch_up: bool = True) -> list[DayRecord]:
    """Run ``until`` and, with ``catch_up``, every missed day before it (oldest first).

    A day that already succeeded is a no-op (empty result). Days rejected earlier are not
    retried during a catch-up (their data is what it was); name the day to retry it.
    """
    parse_day(until)
    config, paths = opts.config, opts.paths
    ledger = DailyLedger(paths.home, config.pipeline.name)
    with pipeline_lock(paths.home, config.pipeline.name):
        if ledger.succeeded(until):
            return []
        days = days_to_run(ledger, opts.data_root, until) if catch_up else []
        days = [d for d in days if d == until or ledger.records.get(d) is None or ledger.records[d].status not in ("rejected",)]
        if until not in days:
            days.append(until)  # the named day always runs (a no-data day is reported as such)
        out = []
        for d in sorted(days):
            with day_lock(paths.home, config.pipeline.name, d):
                out.append(run_day(opts, ledger, d))
        return out


# ----------------------------------------------------------------------------- report


def history_rows(ledger: DailyLedger, config: ProjectConfig) -> list[dict]:
    rows = []
    for d, r in sorted(ledger.records.items()):
        row = {"day": d, "status": r.status}
        for t in config.tasks:
            k = f"{t.name}/{primary_metric(t.type)}"
            row[k] = r.metrics.get(k, float("nan"))
            row[k + " (baseline)"] = r.metrics.get(k + "/baseline", float("nan"))
        row["pushed"] = r.pushed_version or "-"
        row["masks"] = ("searched" if r.masks_refreshed else "reused") if r.status == "succeeded" else "-"
        row["window"] = ",".join(x[4:] for x in r.window) or "-"
        row["seconds"] = round(r.seconds)
        row["note"] = r.refresh_reason if r.status == "succeeded" else r.error.splitlines()[0][:100] if r.error else ""
        rows.append(row)
    return rows


def format_history(ledger: DailyLedger, config: ProjectConfig) -> str:
    import pandas as pd

    rows = history_rows(ledger, config)
    if not rows:
        return "(no daily runs recorded)"
    frame = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_colwidth", 70, "display.float_format", "{:.4f}".format):
        return frame.to_string(index=False, na_rep="-")


def plot_history(ledger: DailyLedger, config: ProjectConfig, out_path: str) -> None:
    """One panel per task: the new model's primary metric per day vs the baseline, pushes marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in history_rows(ledger, config) if r["status"] == "succeeded"]
    fig, axes = plt.subplots(1, len(config.tasks), figsize=(5 * len(config.tasks), 3.5), squeeze=False)
    for ax, t in zip(axes[0], config.tasks):
        k = f"{t.name}/{primary_metric(t.type)}"
        days = [r["day"][4:] for r in rows]
        ax.plot(days, [r[k] for r in rows], "o-", label="new model")
        ax.plot(days, [r[k + " (baseline)"] for r in rows], "s--", label="served (baseline)")
        for i, r in enumerate(rows):
            if r["pushed"] != "-":
                ax.annotate("pushed", (days[i], r[k]), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        ax.set_title(f"{t.name}: {primary_metric(t.type).upper()} on each day's eval split")
        ax.set_xlabel("day (MMDD)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
