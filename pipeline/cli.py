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

    from models.config import ConfigError, parse_config

    path = Path(config_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise click.ClickException(f"invalid YAML in {path}: {err}") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"invalid config {path}: top level must be a mapping")
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
        node[parts[-1]] = yaml.safe_load(raw)
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
      ncs generate --out .ncs/data/video --days 4 --rows-per-day 50000
      ncs compare --config configs/video.yaml --data .ncs/data/video --variants all --seeds 3 --out .ncs/compare
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
def generate(out, days, rows_per_day, seed, start_date, fmt, rows_per_file, with_truth, drift, drift_day):
    """Write synthetic click/view logs (the embedded default data set).

    One row per impression, daily folders OUT/YYYYMMDD/part-NNNNN.<format>. The
    simulation (shared interest, click-bait/duration conflicts) is documented in
    the README and fixed: it is never retuned to make a model win.
    """
    import dataclasses

    from tqdm.auto import tqdm

    from data.synthetic import GeneratorParams, write_logs

    params = dataclasses.replace(GeneratorParams(), drift=drift, drift_day=drift_day)
    bar = tqdm(total=days, desc="generate", unit="day")

    def progress(day, n):
        bar.update(1)
        bar.set_postfix_str(f"{day}: {n} rows")

    files = write_logs(out, days, rows_per_day, seed, start_date, fmt, rows_per_file, with_truth, params, progress)
    bar.close()
    click.echo(f"wrote {len(files)} file(s), {days * rows_per_day} impressions under {out}")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Project YAML.")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="A log file, a folder of files, or a folder of YYYYMMDD day folders.")
@click.option("--variants", default="single,layer", show_default=True,
              help="Comma-separated variants, or 'all' (single, layer, shared_bottom, mmoe, cgc, ple, esmm, masked, connection, neuron). connection/neuron run warm-up, mask search and joint training.")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="Seeds per variant (training.seed, +1, ...).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Writes results.json and report.md here.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override training.epochs.")
@click.option("--keras-verbose", type=click.IntRange(0, 2), default=0, show_default=True,
              help="Keras fit verbosity per run; >0 also prints the mask search rounds.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set sparse.schedule=joint --set model.mlp=[256,128]. Repeatable.")
def compare(config_path, data_path, variants, seeds, out_dir, epochs, keras_verbose, overrides):
    """Train variants on one split over several seeds and write a Table-2-style report.

    Every variant gets the same features, split and epoch budget; connection/neuron
    additionally run the warm-up and the mask search (their cost is reported).
    """
    _legacy_keras_guard()
    from models.config import VARIANTS

    cfg = _load(config_path, overrides)
    if epochs:
        cfg = cfg.with_overrides(training={"epochs": epochs})
    names = list(VARIANTS) if variants.strip() == "all" else [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise click.BadParameter(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)} or 'all'", param_hint="--variants")

    from data.logs import LogFormatError
    from models.data import EmptySampleSpaceError
    from pipeline.compare import SplitError, compare_main_table, run_compare

    try:
        records = run_compare(cfg, data_path, names, seeds, out_dir, keras_verbose=keras_verbose, echo=click.echo)
    except (LogFormatError, SplitError, EmptySampleSpaceError) as err:
        raise click.ClickException(str(err)) from None
    click.echo("")
    click.echo(compare_main_table(records, cfg))
    click.echo(f"\nreport: {Path(out_dir) / 'report.md'}   records: {Path(out_dir) / 'results.json'}")


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
