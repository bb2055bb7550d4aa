"""``ncs``: the command-line interface.

Commands import their heavy dependencies (TensorFlow) lazily so ``ncs --help``
and ``ncs generate`` start fast.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import click

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# google-api-core (pulled in by TFX/Beam) warns about Python 3.10 on every import; TFX 1.16 requires 3.10
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core")


def _legacy_keras_guard():
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise click.ClickException("TF_USE_LEGACY_KERAS=1 must be set before TensorFlow is imported")


def _load(config_path, overrides=()):
    """Load a config and apply ``--set section.key=value`` overrides (values parsed as YAML)."""
    import yaml

    from models.config import ConfigError, parse_config, read_config_data

    path = Path(config_path)
    try:
        data = read_config_data(path)  # names the file (and line) for unreadable, non-UTF-8 or invalid YAML
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise click.BadParameter(f"{key}: {part!r} is not a section", param_hint="--set")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[parts[-1]] = raw  # not YAML (e.g. a glob starting with '*'): take it as a string
    try:
        return parse_config(data, str(path) + (f" (with --set {', '.join(overrides)})" if overrides else ""))
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ncs-ranking")
def main():
    """Multi-task CTR/CVR ranking with neuron-connection sharing (NCS4CVR / LT4REC).

    \b
    Typical session:
      ncs generate --out .ncs/data/video --days 4 --rows-per-day 50000 --with-truth
      ncs compare --config configs/video.yaml --data .ncs/data/video --variants all --seeds 3 --out .ncs/compare
      ncs run --config configs/video.yaml --data .ncs/data/video          # the TFX pipeline -> serving_models/ctr_cvr
      ncs daily --config configs/video.yaml --data .ncs/data/video --date 20260105   # incremental day
      ncs history --config configs/video.yaml --plot days.png
      ncs inspect serving_models/ctr_cvr
      ncs serve --model-base-path serving_models/ctr_cvr --model-name ctr_cvr
    """


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder; days go to OUT/YYYYMMDD/.")
@click.option("--days", default=4, show_default=True, type=click.IntRange(min=1), help="Number of daily folders.")
@click.option("--rows-per-day", default=50_000, show_default=True, type=click.IntRange(min=1), help="Impressions per day.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the simulated world and its days.")
@click.option("--start-date", default="20260101", show_default=True, help="First day, YYYYMMDD.")
@click.option("--format", "fmt", type=click.Choice(["csv", "tfrecord", "parquet"]), default="csv", show_default=True)
@click.option("--rows-per-file", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--with-truth", is_flag=True, help="Also write true_ctr / true_cvr per row (oracle, ranking simulation).")
@click.option("--drift", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="User-interest drift per day from --drift-day on (0 = stationary).")
@click.option("--drift-day", default=2, show_default=True, type=click.IntRange(min=0), help="0-based day index where drift starts.")
@click.option("--scenario", type=click.Choice(["video", "purchase"]), default="video", show_default=True,
              help="video: click + watch ratio (configs/video.yaml); purchase: also a binary purchase after a click, "
                   "1-3%% of clicks, that click bait lowers (configs/purchase.yaml).")
def generate(out, days, rows_per_day, seed, start_date, fmt, rows_per_file, with_truth, drift, drift_day, scenario):
    """Write synthetic click/view logs (the embedded default data set).

    One row per impression, daily folders OUT/YYYYMMDD/part-NNNNN.<format>. The
    simulation (shared interest, click-bait/duration conflicts) is documented in
    docs/data.md and fixed: it is never retuned to make a model win.
    """
    import dataclasses

    from tqdm.auto import tqdm

    from data.synthetic import GeneratorParams, write_logs

    params = dataclasses.replace(GeneratorParams(), drift=drift, drift_day=drift_day)
    bar = tqdm(total=days, desc="generate", unit="day")

    def progress(day, n):
        bar.update(1)
        bar.set_postfix_str(f"{day}: {n} rows")

    files = write_logs(out, days, rows_per_day, seed, start_date, fmt, rows_per_file, with_truth, params, progress,
                       scenario=scenario)
    bar.close()
    click.echo(f"wrote {len(files)} file(s), {days * rows_per_day} impressions under {out}")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Project YAML.")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="A log file, a folder of files, or a folder of YYYYMMDD day folders.")
@click.option("--variants", default="single,layer", show_default=True,
              help="Comma-separated variants or presets. A variant is a model (single, layer, shared_bottom, mmoe, cgc, "
                   "ple, esmm, masked, connection, neuron), a control of the mask search (connection_theta: |θ| masks, "
                   "connection_random: random masks, both at the densities connection chose), optionally with Table-2 "
                   "switches: +balance (task weights), +gc (gradient conflict), +mv (multi-view), +big (wider net), "
                   "+tuning (balance + gc), e.g. connection+tuning. Presets: 'all' (every model), 'table2' (the papers' "
                   "Table 2 rows, the gated experts and the two controls).")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="Seeds per variant (training.seed, +1, ...).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Writes results.json and report.md here.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Fixed budget: exactly this many epochs per variant (turns training.patience off).")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="The budget protocol: every variant, search round and joint training stops when the validation loss "
                   "has not improved for this many epochs (best epoch restored). Overrides training.patience.")
@click.option("--max-epochs", type=click.IntRange(min=1), default=None,
              help="The cap under --patience / training.patience (overrides training.max_epochs).")
@click.option("-v", "--verbose", "--keras-verbose", "verbose", type=click.IntRange(0, 2), default=0, show_default=True,
              help="1: a line per epoch and per mask-search round; 2: also a progress bar per epoch.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set sparse.schedule=joint --set model.mlp=[256,128]. Repeatable.")
def compare(config_path, data_path, variants, seeds, out_dir, epochs, patience, max_epochs, verbose, overrides):
    """Train variants on one split over several seeds and write a Table-2-style report.

    The split is transformed once by the pipeline's own preprocessing_fn (TensorFlow
    Transform, in-process; cached under OUT/transformed) and every variant trains through
    the same engine on the same streamed data and budget: the protocol (training.patience:
    every variant, search round and joint training until validation stops improving) or a
    fixed training.epochs. connection/neuron additionally run the warm-up and the mask
    search, whose wall time and optimizer steps are counted in the variant's budget. The
    report gives paired differences vs single and vs the best baseline with 95% intervals.
    """
    _legacy_keras_guard()
    cfg = _load(config_path, overrides)
    if epochs and (patience or max_epochs):
        raise click.UsageError("--epochs (a fixed budget) and --patience/--max-epochs (the protocol) exclude each other")
    if epochs:
        cfg = cfg.with_overrides(training={"epochs": epochs, "patience": None})
    if patience or max_epochs:
        cfg = cfg.with_overrides(training={k: v for k, v in (("patience", patience), ("max_epochs", max_epochs)) if v})
    if max_epochs and cfg.training.patience is None:
        raise click.UsageError("--max-epochs caps the protocol: give --patience too (or set training.patience)")
    names = [v.strip() for v in variants.split(",") if v.strip()]

    from data.logs import LogFormatError
    from models.data import EmptySampleSpaceError, MissingColumnError
    from pipeline.compare import SplitError, VariantError, compare_main_table, resolve_variants, run_compare

    try:
        resolve_variants(cfg, names)
    except VariantError as err:
        raise click.BadParameter(str(err), param_hint="--variants") from None

    try:
        records = run_compare(cfg, data_path, names, seeds, out_dir, verbose=verbose, echo=click.echo)
    except (LogFormatError, SplitError, EmptySampleSpaceError, MissingColumnError) as err:
        raise click.ClickException(str(err)) from None
    click.echo("")
    click.echo(compare_main_table(records, cfg))
    click.echo(f"\nreport: {Path(out_dir) / 'report.md'}   records: {Path(out_dir) / 'results.json'}")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The project YAML the runs were made with.")
@click.option("--from", "run_dirs", required=True, multiple=True, type=click.Path(exists=True, file_okay=False),
              help="An `ncs compare` output folder (results.json + run.json). Repeat for each run to merge.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Writes results.json, report.md.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="The same --set the runs were made with.")
def report(config_path, run_dirs, out_dir, overrides):
    """Merge `ncs compare` runs of the same split into one report.

    A long comparison (`--variants table2`) can be split into several runs, one per process
    or machine, each with some of the variants and the same --seeds; this pools their records
    (the first folder wins on a variant both ran) and renders one report.md with the paired
    intervals across all of them.
    """
    from pipeline.compare import MergeError, merge_runs

    cfg = _load(config_path, overrides)
    try:
        merge_runs(cfg, list(run_dirs), out_dir)
    except MergeError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"report: {Path(out_dir) / 'report.md'}   records: {Path(out_dir) / 'results.json'}")


def _schema_path(cfg, config_path, override=None):
    """``--schema`` or ``pipeline.schema_file`` (relative to the config file); None = infer with SchemaGen."""
    name = override or cfg.pipeline.schema_file
    if not name:
        return None
    p = Path(name)
    if not p.is_absolute():
        p = Path(config_path).resolve().parent / p
    if not p.exists():
        raise click.ClickException(f"schema file not found: {p} (pipeline.schema_file in {config_path})")
    return str(p)


@main.command()
@click.option("--config", "config_path", default="configs/video.yaml", show_default=True,
              type=click.Path(exists=True, dir_okay=False), help="Project YAML (its pipeline: section drives the run).")
@click.option("--data", "data_root", default=".ncs/data/video", show_default=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of daily log folders YYYYMMDD/ (pipeline.input_pattern picks the files).")
@click.option("--serving-dir", default="serving_models/ctr_cvr", show_default=True, type=click.Path(file_okay=False),
              help="Pusher's base directory; versions land in SERVING_DIR/<unix time>/ (TF Serving layout).")
@click.option("--schema", "schema_override", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Curated schema (pbtxt) instead of pipeline.schema_file.")
@click.option("--beam-arg", "beam_args", multiple=True, metavar="ARG",
              help="Beam pipeline arg (repeatable), e.g. --beam-arg=--direct_num_workers=1; given args replace pipeline.beam_args and pipeline.stage_beam_args.")
@click.option("--no-cache", is_flag=True, help="Re-run every component instead of reusing cached outputs.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value, e.g. --set model.variant=ple.")
@click.option("-v", "--verbose", is_flag=True, help="Print every TFX/Beam/TensorFlow log line here (default: one line per component, progress, errors; the rest goes to $NCS_HOME/logs/).")
def run(config_path, data_root, serving_dir, schema_override, beam_args, no_cache, overrides, verbose):
    """Run the TFX pipeline locally (LocalDagRunner, Beam DirectRunner).

    \b
    ExampleGen -> StatisticsGen -> (Import)SchemaGen -> ExampleValidator -> ValidationGate
      -> Transform -> MaskSearch (connection/neuron) -> MaskedTrainer
      -> Evaluator (TFMA, vs last blessed model) -> ServingSmokeCheck -> Pusher

    Artifacts and the SQLite ML Metadata store live under $NCS_HOME (default ./.ncs/).
    Finished components are cached: a run killed mid-way re-uses them when started again.
    A summary (metrics vs the baseline, blessing, masks, push) is printed at the end and
    written to $NCS_HOME/last_run.json.
    """
    _legacy_keras_guard()
    cfg = _load(config_path, overrides)
    schema = _schema_path(cfg, config_path, schema_override)
    from pipeline.console import console
    from pipeline.runner import LocalPaths, format_summary, run_local, run_summary, write_summary

    paths = LocalPaths.make(cfg.pipeline.name, serving_dir)
    if cfg.pipeline.format == "csv":
        from pipeline.preflight import CsvLayoutError, check_csv_logs

        try:
            n = check_csv_logs(data_root, cfg, warn=lambda m: click.echo(f"warning: {m}", err=True))
        except CsvLayoutError as err:
            raise click.ClickException(f"{err}\nnothing was run; served versions under {paths.serving_dir} are unchanged") from None
        click.echo(f"pre-flight: {n} CSV rows, layout ok")
    click.echo(
        f"pipeline {cfg.pipeline.name}: variant {cfg.model.variant}, data {Path(data_root).resolve()} "
        f"({cfg.pipeline.format}, {cfg.pipeline.input_pattern}), schema {schema or 'inferred by SchemaGen'}\n"
        f"artifacts {paths.pipeline_root}, metadata {paths.metadata}, serving {paths.serving_dir}"
    )
    import time

    t0 = time.perf_counter()
    failed = None
    with console(verbose, paths.home / "logs", "run", click.echo):
        try:
            run_local(cfg, data_root, paths, schema, list(beam_args) or None, enable_cache=not no_cache)
        except Exception as err:  # noqa: BLE001 - report the failing component's error, then the summary
            failed = err
        summary = run_summary(cfg, paths) if paths.metadata.exists() else {}
    summary["seconds"] = time.perf_counter() - t0
    if failed is not None:
        summary["error"] = f"{type(failed).__name__}: {failed}"
    write_summary(summary, paths.home / "last_run.json")
    if failed is not None:
        raise click.ClickException(f"pipeline stopped: {failed}\nnothing was pushed by this run; served versions under {paths.serving_dir} are unchanged")
    click.echo(format_summary(summary, cfg))
    click.echo(f"finished in {summary['seconds']:.0f}s; summary: {paths.home / 'last_run.json'}")


@main.command()
@click.option("--config", "config_path", default="configs/video.yaml", show_default=True,
              type=click.Path(exists=True, dir_okay=False), help="Project YAML (its daily: section drives the increment).")
@click.option("--data", "data_root", default=".ncs/data/video", show_default=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of daily log folders YYYYMMDD/ (daily.input_pattern picks a day's files).")
@click.option("--date", "day", default=None, metavar="YYYYMMDD", help="The day to train on (default: yesterday).")
@click.option("--serving-dir", default="serving_models/ctr_cvr", show_default=True, type=click.Path(file_okay=False),
              help="Pusher's base directory (the same as ncs run's).")
@click.option("--refresh-masks", is_flag=True, help="Search new masks today whatever the refresh policy says.")
@click.option("--catch-up/--no-catch-up", default=True, show_default=True,
              help="Also run missed days since the last successful day, oldest first.")
@click.option("--schema", "schema_override", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Curated schema (pbtxt) instead of pipeline.schema_file.")
@click.option("--beam-arg", "beam_args", multiple=True, metavar="ARG",
              help="Beam pipeline arg (repeatable), e.g. --beam-arg=--runner=FlinkRunner; given args replace pipeline.beam_args and pipeline.stage_beam_args.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value, e.g. --set daily.window_days=5.")
@click.option("-v", "--verbose", is_flag=True, help="Print every TFX/Beam/TensorFlow log line here (default: one line per component, progress, errors; the rest goes to $NCS_HOME/logs/).")
def daily(config_path, data_root, day, serving_dir, refresh_masks, catch_up, schema_override, beam_args, overrides, verbose):
    """Incremental daily retraining on DATA/<date>/ (schedule it with cron / a systemd timer).

    \b
    Per day: ExampleGen takes the day's span -> validation (a corrupted day is rejected here,
    the served model stays) -> mask decision (reuse, or search again when asked, every
    daily.refresh.every_days, on vocabulary growth, TFDV drift vs the masks' day, a sustained
    metric drop, or unusable masks) -> Transform on the last daily.window_days validated days
    -> MaskedTrainer warm-started from the latest blessed model for daily.epochs (reused masks;
    after a new search: from the search's θ) -> Evaluator vs that model -> smoke check ->
    atomic push of a new version.

    \b
    Safe to re-run: a day that already succeeded is a no-op; a second run of the pipeline
    while one is running stops at once (lock under $NCS_HOME/daily/locks/); missed days are
    caught up in date order. Outcomes: $NCS_HOME/daily/<pipeline>.json (see ncs history).
    Exit status 1 when a day was rejected, failed or had no data.
    """
    _legacy_keras_guard()
    from pipeline.daily import DayLockedError, parse_day
    from pipeline.daily_run import DailyOptions, MasksUnusableError, run_daily, yesterday

    day = day or yesterday()
    try:
        parse_day(day)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--date") from None
    cfg = _load(config_path, overrides)
    try:
        cfg.daily_input_pattern()
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    schema = _schema_path(cfg, config_path, schema_override)
    from pipeline.console import console
    from pipeline.runner import LocalPaths

    paths = LocalPaths.make(cfg.pipeline.name, serving_dir)
    for p in (paths.pipeline_root, paths.metadata.parent, paths.serving_dir):
        p.mkdir(parents=True, exist_ok=True)
    opts = DailyOptions(cfg, str(Path(data_root).resolve()), paths, schema, list(beam_args) or None, refresh_masks,
                        log=lambda m: click.echo(m, err=True))
    click.echo(f"daily {cfg.pipeline.name}: {day} (variant {cfg.model.variant}, window {cfg.daily.window_days} day(s), "
               f"{cfg.daily.epochs} epoch(s)); serving {paths.serving_dir}", err=True)
    try:
        with console(verbose, paths.home / "logs", "daily", lambda m: click.echo(m, err=True)):
            records = run_daily(opts, day, catch_up)
    except (DayLockedError, MasksUnusableError) as err:
        raise click.ClickException(str(err)) from None
    if not records:
        click.echo(f"{day} already succeeded: nothing to do")
        return
    bad = []
    for r in records:
        if r.status == "succeeded":
            pushed = f"pushed version {r.pushed_version}" if r.pushed_version else "NOT pushed (not blessed; the served version stays)"
            click.echo(f"{r.day}: succeeded in {r.seconds:.0f}s, {pushed}; masks {'searched' if r.masks_refreshed else 'reused'} ({r.refresh_reason})")
        else:
            bad.append(r)
            what = {"rejected": "REJECTED by data validation", "no_data": "NO DATA", "failed": "FAILED"}.get(r.status, r.status)
            click.echo(f"{r.day}: {what}; nothing pushed, the served version stays\n  {r.error}")
    from pipeline.daily import DailyLedger
    from pipeline.daily_run import format_history

    click.echo("\n" + format_history(DailyLedger(paths.home, cfg.pipeline.name), cfg))
    if bad:
        raise click.ClickException(f"{len(bad)} of {len(records)} day(s) did not succeed: {', '.join(r.day + ' ' + r.status for r in bad)}")


@main.command()
@click.option("--config", "config_path", default="configs/video.yaml", show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False), help="Also write a PNG of the metrics per day.")
@click.option("--json", "as_json", is_flag=True, help="Print the ledger records as JSON.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def history(config_path, plot_path, as_json, overrides):
    """The daily runs of the pipeline: status, metrics vs the served model, pushes, masks, window."""
    import dataclasses
    import json

    from pipeline.daily import DailyLedger
    from pipeline.daily_run import format_history, plot_history
    from pipeline.runner import ncs_home

    cfg = _load(config_path, overrides)
    try:
        ledger = DailyLedger(ncs_home(), cfg.pipeline.name)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps({d: dataclasses.asdict(r) for d, r in sorted(ledger.records.items())}, indent=1))
    else:
        click.echo(format_history(ledger, cfg))
    if plot_path:
        plot_history(ledger, cfg, plot_path)
        click.echo(f"wrote {plot_path}")


@main.command("compile")
@click.option("--config", "config_path", default="configs/video.yaml", show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--runner", type=click.Choice(["kubeflow"]), default="kubeflow", show_default=True,
              help="Orchestrator to compile for (Kubeflow Pipelines V2 / Vertex AI Pipelines JSON).")
@click.option("--image", required=True, help="Container image with this project installed (see Dockerfile).")
@click.option("--out", "out_file", default="pipeline.json", show_default=True, type=click.Path(dir_okay=False))
@click.option("--data", "data_root", default="gs://YOUR_BUCKET/logs", show_default=True, help="Data root as the cluster sees it.")
@click.option("--pipeline-root", default="gs://YOUR_BUCKET/ncs/pipeline_root", show_default=True)
@click.option("--serving-dir", default="gs://YOUR_BUCKET/ncs/serving/ctr_cvr", show_default=True)
@click.option("--schema", "schema_uri", default=None, help="Schema file URI as the cluster sees it (default: pipeline.schema_file baked into the image).")
@click.option("--beam-arg", "beam_args", multiple=True, metavar="ARG", help="Beam arg (repeatable), e.g. --beam-arg=--runner=DataflowRunner; given args replace pipeline.beam_args and pipeline.stage_beam_args.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--daily", is_flag=True,
              help="Compile the daily increment: newest day's span, warm start from the latest blessed model, masks imported from --masks-uri.")
@click.option("--masks-uri", default=None, help="With --daily: the TaskMasks artifact folder to reuse (from a first `ncs compile` run's MaskSearch).")
@click.option("--recurring-run", "recurring_path", default=None, type=click.Path(dir_okay=False),
              help="With --daily: also write a KFP v2beta1 RecurringRun JSON (cron, max_concurrency 1, catch-up).")
@click.option("--cron", default="0 0 3 * * *", show_default=True, help="KFP cron (6 fields, seconds first) of the recurring run.")
def compile_cmd(config_path, runner, image, out_file, data_root, pipeline_root, serving_dir, schema_uri, beam_args, overrides,
                daily, masks_uri, recurring_path, cron):
    """Compile the pipeline to a Kubeflow Pipelines V2 JSON spec (offline, no cluster needed).

    Submit it with the KFP SDK (kfp.Client().create_run_from_pipeline_package) or
    Vertex AI Pipelines. Paths must be ones the cluster can read (gs://, s3://, a PVC).

    \b
    --daily compiles the incremental pipeline for a schedule: ExampleGen takes the newest
    day folder ({YYYY}{MM}{DD} span), the trainer warm-starts from the latest blessed model,
    and the masks come from an Importer of --masks-uri (Kubeflow V2 compiles only the
    built-in resolvers). --recurring-run writes the schedule to upload with the KFP API.
    """
    if (masks_uri or recurring_path) and not daily:
        raise click.UsageError("--masks-uri and --recurring-run need --daily")
    cfg = _load(config_path, overrides)
    schema = schema_uri
    if schema is None and cfg.pipeline.schema_file:
        # the image carries the repo at /app (Dockerfile), so the config's schema is there
        schema = str(Path("/app") / Path(config_path).parent / cfg.pipeline.schema_file)
    from pipeline.runner import compile_kubeflow

    daily_run = None
    if daily:
        from models.config import SPARSE_VARIANTS
        from pipeline.pipeline import DailyRun

        if cfg.model.variant in SPARSE_VARIANTS and not masks_uri:
            raise click.UsageError(f"--daily with variant {cfg.model.variant} needs --masks-uri (the masks to reuse every day)")
        daily_run = DailyRun(day=None, masks_uri=masks_uri, masks_decision=f"reused {masks_uri} (compiled schedule)")
    out = compile_kubeflow(cfg, image, out_file, data_root, pipeline_root, serving_dir, schema, list(beam_args) or None,
                           daily=daily_run)
    click.echo(f"wrote {out} (Kubeflow Pipelines V2, image {image})")
    if recurring_path:
        from pipeline.runner import recurring_run_spec

        import json as _json

        Path(recurring_path).write_text(_json.dumps(recurring_run_spec(out, cfg.pipeline.name, cron), indent=1))
        click.echo(f"wrote {recurring_path} (KFP RecurringRun: cron {cron!r}, one run at a time, missed runs caught up)")


@main.command()
@click.option("--config", "config_path", default="configs/video.yaml", show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", "data_pattern", required=True, help="Known-good CSV logs, a glob such as 'DIR/*/*.csv'.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Schema pbtxt to write.")
def schema(config_path, data_pattern, out_file):
    """Infer a TFDV schema from known-good logs and tighten it from the config (curated schema).

    Review the file, commit it next to the config and point pipeline.schema_file at it:
    every later run validates new logs against it before training.
    """
    _legacy_keras_guard()
    cfg = _load(config_path)
    from pipeline.schema import infer_curated_schema

    try:
        out = infer_curated_schema(cfg, data_pattern, out_file)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {out}")


@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
def inspect(model_dir):
    """Show a SavedModel's signatures (like saved_model_cli show --all) and its stored mask analytics.

    MODEL_DIR is a SavedModel folder, a trainer output (with Format-Serving/) or a TF Serving
    base folder (its newest version is shown).
    """
    _legacy_keras_guard()
    from serving.inspect_model import describe

    try:
        click.echo(describe(model_dir))
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from None


@main.command("deploy-files")
@click.option("--out", "out_dir", default="deploy", show_default=True, type=click.Path(file_okay=False))
@click.option("--model-name", default="ctr_cvr", show_default=True)
@click.option("--push-dir", default="./serving_models/ctr_cvr", show_default=True,
              help="Host folder Pusher writes versions to (mounted into the container).")
@click.option("--pvc", default="ncs-serving-models", show_default=True, help="PersistentVolumeClaim holding the push folder (Kubernetes).")
@click.option("--keep-versions", default=2, show_default=True, type=click.IntRange(min=1), help="Versions TF Serving keeps loaded.")
@click.option("--replicas", default=2, show_default=True, type=click.IntRange(min=1))
def deploy_files(out_dir, model_name, push_dir, pvc, keep_versions, replicas):
    """Write models.config, docker-compose.yml and k8s.yaml for the official TF Serving server."""
    from serving.deploy import write_deployment_files

    for p in write_deployment_files(out_dir, model_name, push_dir, pvc, keep_versions, replicas):
        click.echo(f"wrote {p}")


@main.command()
@click.option("--model-base-path", required=True, type=click.Path(file_okay=False),
              help="TF Serving base folder with numeric version folders (Pusher's --serving-dir).")
@click.option("--model-name", default="ctr_cvr", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback by default).")
@click.option("--rest-port", default=8501, show_default=True, type=int)
@click.option("--grpc-port", default=8500, show_default=True, type=int)
@click.option("--poll-seconds", default=2.0, show_default=True, type=float, help="How often to look for new versions.")
@click.option("--max-batch", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="Rows per request; more is a 400 (checked while the body is parsed).")
@click.option("--max-body-bytes", default=8 * 1024 * 1024, show_default=True, type=click.IntRange(min=1),
              help="Largest REST body / gRPC message; more is a 413 / RESOURCE_EXHAUSTED.")
@click.option("--max-in-flight", default=32, show_default=True, type=click.IntRange(min=1),
              help="Predict requests handled at once; more get 503 with Retry-After (gRPC: RESOURCE_EXHAUSTED).")
@click.option("--request-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds to answer a REST predict (reading, parsing, the model); then 504.")
@click.option("--read-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a client may take to send a request's headers, then its body; then 408.")
def serve(model_base_path, model_name, host, rest_port, grpc_port, poll_seconds, max_batch, max_body_bytes, max_in_flight,
          request_timeout, read_timeout):
    """A local development stand-in for TF Serving: REST + gRPC PredictionService.

    \b
    REST  GET  /v1/models/NAME[/versions/V]            model status
          GET  /v1/models/NAME[/versions/V]/metadata   signature defs
          POST /v1/models/NAME[/versions/V]:predict    {"instances": [...]} or {"inputs": {...}}
    gRPC  tensorflow.serving.PredictionService/Predict, /GetModelMetadata

    Loads the newest complete version, polls for new ones and swaps atomically; a broken
    version is skipped with a logged error. Requests are validated before the model (every
    row carries every input, dtypes, shapes, the schema's domains) and bounded by the limits
    below; errors are 4xx naming the field (docs/serving.md). Not a TF Serving replacement:
    production runs the official tensorflow/serving image (see `ncs deploy-files`).
    """
    _legacy_keras_guard()
    import logging
    import signal
    import threading

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from serving.server import DevServer, Limits

    limits = Limits(max_batch=max_batch, max_body_bytes=max_body_bytes, max_in_flight=max_in_flight,
                    request_timeout=request_timeout, read_timeout=read_timeout)
    srv = DevServer(model_base_path, model_name, host, rest_port, grpc_port, poll_seconds, limits=limits).start(
        wait_for_model=poll_seconds * 3)
    loaded = srv.registry.latest
    click.echo(
        f"serving {model_name} from {model_base_path} (version {loaded.version if loaded else 'none yet'}): "
        f"REST http://{host}:{srv.rest_port}/v1/models/{model_name}  gRPC {host}:{srv.grpc_port}  (Ctrl-C stops)"
    )
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    srv.stop()


@main.command()
@click.option("--csv", "csv_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Raw log rows to score (the columns the model reads; extra columns are ignored).")
@click.option("--model-name", default="ctr_cvr", show_default=True)
@click.option("--rest", "rest_url", default=None, help="REST base URL, e.g. http://127.0.0.1:8501.")
@click.option("--grpc", "grpc_target", default=None, help="gRPC target, e.g. 127.0.0.1:8500.")
@click.option("--version", type=int, default=None, help="A specific model version (default: the newest).")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--timeout", default=10.0, show_default=True, type=float)
@click.option("--retries", default=3, show_default=True, type=click.IntRange(min=0), help="Retries on UNAVAILABLE only.")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False), help="Write predictions as CSV (default: print).")
def predict(csv_path, model_name, rest_url, grpc_target, version, batch_size, timeout, retries, out_path):
    """Score CSV rows against TF Serving or `ncs serve` (serialized tf.Examples, serving_default)."""
    import pandas as pd

    if bool(rest_url) == bool(grpc_target):
        raise click.UsageError("give exactly one of --rest or --grpc")
    from serving.client import GrpcClient, PredictionError, RestClient, serialize_examples

    frame = pd.read_csv(csv_path)
    examples = serialize_examples(frame.to_dict("records"))
    client = (RestClient(rest_url, model_name, version, timeout, retries, batch_size=batch_size) if rest_url
              else GrpcClient(grpc_target, model_name, version, timeout, retries, batch_size=batch_size))
    try:
        out = client.predict_examples(examples)
    except PredictionError as err:
        raise click.ClickException(str(err)) from None
    result = pd.DataFrame({k: v for k, v in out.items()})
    if out_path:
        result.to_csv(out_path, index=False)
        click.echo(f"wrote {len(result)} predictions to {out_path}")
    else:
        click.echo(result.to_string(index=False))


@main.command()
@click.option("--model-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A MaskedTrainer output (the Model artifact folder: Format-Serving/ + warm_start/).")
@click.option("--transform-graph", required=True, type=click.Path(exists=True, file_okay=False), help="The run's TransformGraph artifact folder.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Where to write the compacted SavedModel.")
@click.option("--examples", "examples_glob", default=None,
              help="Glob of gzipped tf.Example TFRecords (e.g. the ExampleGen eval split) to check equality and time latency.")
def compact(model_dir, transform_graph, out_dir, examples_glob):
    """Write a smaller serving model of a connection/neuron model (same signatures, outputs within 1e-5).

    neuron: units a task does not use are removed from its tower (dead-unit constants folded
    into the next bias). connection: base weights stored once with per-task uint8 masks, rows
    and columns no task uses dropped (unstructured zeros inside stay dense: no CPU speed-up).
    """
    _legacy_keras_guard()
    import glob as _glob
    import json as _json

    from serving.compact import compact_saved_model, compare_saved_models

    try:
        summary = compact_saved_model(model_dir, transform_graph, out_dir)
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {out_dir} ({summary['structure']}): towers {summary['towers']}")
    if examples_glob:
        import tensorflow as tf

        files = sorted(_glob.glob(examples_glob))
        if not files:
            raise click.ClickException(f"no files match {examples_glob}")
        examples = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(256)]
        report = compare_saved_models(str(Path(model_dir) / "Format-Serving"), out_dir, examples)
        click.echo(_json.dumps(report, indent=1))
        if report["max_rel_diff"] > 1e-5:
            raise click.ClickException(f"compacted outputs differ by {report['max_rel_diff']:.3g} (> 1e-5)")


@main.command("validate-config")
@click.argument("config_path", type=click.Path(exists=True, dir_okay=False))
def validate_config(config_path):
    """Check a config file and print a summary (no TensorFlow needed)."""
    cfg = _load(config_path)
    click.echo(
        f"ok: {len(cfg.features)} features, tasks {cfg.task_names}, variant {cfg.model.variant}, MLP {cfg.model.mlp}"
    )


if __name__ == "__main__":
    main()
