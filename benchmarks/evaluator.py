"""Benchmark: TFX's Evaluator executor (TFMA) on the artifacts of a finished `ncs run`, in this process.

Not a test; run by hand, numbers go to docs/benchmarks.md. It scores the newest trained Model on the newest
ExampleGen output's eval split with the pipeline's ``eval_config`` (optionally with the same model as the
baseline, as a daily run has one) and prints the executor's wall time: run it on two commits to compare an
``eval_config`` change on the same model and data.

    NCS_HOME=H ncs run --config configs/video.yaml ...        # once, to have artifacts
    python benchmarks/evaluator.py --home H [--baseline] [--beam-arg=--direct_num_workers=1]
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.beam_executor import run_beam_executor, shown  # noqa: E402 - after the path


def _newest(pattern: str) -> str:
    found = sorted(glob.glob(pattern), key=lambda p: int(os.path.basename(p)))
    if not found:
        raise click.ClickException(f"no artifact matches {pattern}: run `ncs run` with this NCS_HOME first")
    return found[-1]


def overall_lines(evaluation_uri: str) -> str:
    """``output/metric side = value`` lines of the overall slice of a TFMA evaluation (as the run summary reads
    it), sorted."""
    from pipeline.runner import overall_metrics

    return "\n".join(sorted(
        f"  {output}/{name} {side} = {value:.6f}"
        for output, by_name in overall_metrics(evaluation_uri).items()
        for name, sides in by_name.items()
        for side, value in sides.items()
    ))


@click.command()
@click.option("--home", required=True, type=click.Path(exists=True, file_okay=False), help="NCS_HOME of a finished run.")
@click.option("--config", "config_path", default=str(REPO / "configs" / "video.yaml"), show_default=True)
@click.option("--baseline", is_flag=True, help="Also score the same model as the baseline (a daily run's two models).")
@click.option("--examples", "examples_uri", type=click.Path(exists=True, file_okay=False),
              help="An ExampleGen artifact folder (default: the newest under --home).")
@click.option("--model", "model_uri", type=click.Path(exists=True, file_okay=False),
              help="A MaskedTrainer model artifact folder (default: the newest under --home).")
@click.option("--beam-arg", "beam_args", multiple=True, metavar="ARG",
              help="Beam arg (repeatable); default: the config's pipeline.beam_args + stage_beam_args.Evaluator.")
def main(home, config_path, baseline, examples_uri, model_uri, beam_args):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from tfx.components.evaluator import executor as evaluator
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from pipeline.cli import _load
    from pipeline.pipeline import eval_config

    cfg = _load(config_path)
    root = Path(home).resolve() / "pipelines" / cfg.pipeline.name
    examples = standard_artifacts.Examples()
    examples.uri = examples_uri or _newest(str(root / "CsvExampleGen" / "examples" / "*"))
    examples.split_names = json.dumps(["train", "valid", "eval"])
    model = standard_artifacts.Model()
    model.uri = model_uri or _newest(str(root / "MaskedTrainer" / "model" / "*"))
    inputs = {"examples": [examples], "model": [model]}
    if baseline:
        base = standard_artifacts.Model()
        base.uri, base.id = model.uri, 1
        inputs["baseline_model"] = [base]
    out = Path(tempfile.mkdtemp(prefix="bench_evaluator_"))
    try:
        evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
        evaluation.uri, blessing.uri = str(out / "evaluation"), str(out / "blessing")
        os.makedirs(evaluation.uri)
        os.makedirs(blessing.uri)
        args = list(beam_args) or cfg.pipeline.beam_args_of("Evaluator")
        props = {"eval_config": proto_utils.proto_to_json(eval_config(cfg)), "example_splits": json.dumps(["eval"])}
        seconds = run_beam_executor(evaluator.Executor, inputs, {"evaluation": [evaluation], "blessing": [blessing]},
                                    props, args, out)
        print(f"Evaluator on {examples.uri}/Split-eval, model {model.uri}, baseline {baseline}, "
              f"beam args {shown(args)}: {seconds:.1f} s")
        # the overall slice's values, to check that an eval_config change computes the same numbers
        print(overall_lines(evaluation.uri))
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
