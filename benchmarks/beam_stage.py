"""Benchmark: one Beam stage of a finished run, replayed under different Beam args (worker counts).

Not a test; run by hand, numbers go to docs/benchmarks.md. It reads the newest execution of
``--stage`` (StatisticsGen, Transform or Evaluator) from the run's ML Metadata store — its input
artifacts and exec properties — and runs that stage's executor again on the same inputs into a
temporary folder, once per ``--variant``, each in a fresh Python process (so no variant inherits
another's warm caches or imports), and prints the executor's wall time per variant. The
variants run in turn in one invocation, so their ratio is measured under the same load.

    python benchmarks/beam_stage.py --home H --stage Transform \\
        --variant "in-process=--direct_num_workers=1" \\
        --variant "2 workers=--direct_running_mode=multi_processing --direct_num_workers=2"

Exec properties this code derives from the config replace the recorded ones (StatisticsGen's TFDV
options), so a config setting is compared by running the command with and without ``--set``:

    python benchmarks/beam_stage.py --home H --stage StatisticsGen --variant "in-process=--direct_num_workers=1" \\
        [--set pipeline.statistics_sketches=false]
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.beam_executor import run_beam_executor  # noqa: E402 - after the path

EXECUTORS = {
    "StatisticsGen": "components.statistics_gen.Executor",  # what the pipeline runs (pipeline.pipeline)
    "Transform": "components.transform_cache.Executor",  # what the pipeline runs (pipeline.pipeline)
    "Evaluator": "tfx.components.evaluator.executor.Executor",
}


def _recorded_execution(home: Path, cfg, stage: str):
    """``(inputs, output types, exec_properties)`` of the newest execution of ``stage`` in the run's MLMD."""
    from tfx.orchestration import data_types_utils
    from tfx.types import artifact_utils

    from pipeline.runner import metadata_store

    path = home / "metadata" / f"{cfg.pipeline.name}.sqlite"
    if not path.exists():
        raise click.ClickException(f"no metadata store at {path}: run `ncs run` or `ncs daily` with this home first")
    store = metadata_store(path)
    types = [t for t in store.get_execution_types() if t.name.split(".")[-1] == stage]
    executions = [e for t in types for e in store.get_executions_by_type(t.name)
                  if e.last_known_state == e.COMPLETE]  # CACHED ones ran nothing
    if not executions:
        raise click.ClickException(f"no finished {stage} execution in {path}")
    execution = max(executions, key=lambda e: e.id)
    inputs: dict[str, list] = {}
    outputs: dict[str, object] = {}
    for event in store.get_events_by_execution_ids([execution.id]):
        artifact = store.get_artifacts_by_id([event.artifact_id])[0]
        artifact_type = store.get_artifact_types_by_id([artifact.type_id])[0]
        key = event.path.steps[0].key
        if event.type == event.INPUT:
            inputs.setdefault(key, []).append(artifact_utils.deserialize_artifact(artifact_type, artifact))
        elif event.type == event.OUTPUT:
            outputs[key] = artifact_type
    props = {k: data_types_utils.get_metadata_value(v) for k, v in execution.custom_properties.items()}
    return inputs, outputs, props, execution.id


def configured_exec_properties(stage: str, cfg) -> dict:
    """The exec properties the pipeline sets from the config for ``stage`` (they replace the recorded ones)."""
    if stage == "StatisticsGen":
        from pipeline.pipeline import statistics_options

        return {"stats_options_json": statistics_options(cfg).to_json()}
    return {}


def run_once(home: Path, config_path: str, stage: str, beam_args: list[str], overrides=()) -> dict:
    """Run the recorded ``stage`` once in this process; its executor's wall time."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import importlib

    from tfx.types import artifact_utils

    from pipeline.cli import _load

    cfg = _load(config_path, overrides)
    inputs, output_types, props, execution_id = _recorded_execution(home, cfg, stage)
    props.update(configured_exec_properties(stage, cfg))
    module, name = EXECUTORS[stage].rsplit(".", 1)
    executor_class = getattr(importlib.import_module(module), name)
    out = Path(tempfile.mkdtemp(prefix=f"bench_{stage}_"))
    try:
        outputs = {}
        for key, artifact_type in output_types.items():
            artifact = artifact_utils.deserialize_artifact(artifact_type)
            artifact.uri = str(out / key)
            os.makedirs(artifact.uri)
            if "split_names" in artifact_type.properties and inputs.get("examples"):
                artifact.split_names = inputs["examples"][0].split_names
            outputs[key] = [artifact]
        seconds = run_beam_executor(executor_class, inputs, outputs, props, beam_args, out, unique_id=str(execution_id))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"execution": execution_id, "inputs": {k: [a.uri for a in v] for k, v in inputs.items()},
            "seconds": seconds}


@click.command()
@click.option("--home", required=True, type=click.Path(exists=True, file_okay=False), help="NCS_HOME of a finished run.")
@click.option("--config", "config_path", default=str(REPO / "configs" / "video.yaml"), show_default=True)
@click.option("--stage", required=True, type=click.Choice(sorted(EXECUTORS)))
@click.option("--variant", "variants", multiple=True, metavar="NAME=ARGS",
              help="A name and the Beam args of one run (repeatable), e.g. "
                   "'2 workers=--direct_running_mode=multi_processing --direct_num_workers=2'.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config override for the exec properties the pipeline derives from the config (StatisticsGen's "
                   "TFDV options), e.g. --set pipeline.statistics_sketches=false. Repeatable.")
@click.option("--one", hidden=True, help="Internal: run one variant's Beam args in this process, print JSON.")
def main(home, config_path, stage, variants, overrides, one):
    home = Path(home).resolve()
    if one is not None:
        print("RESULT " + json.dumps(run_once(home, config_path, stage, shlex.split(one), overrides)), flush=True)
        return
    if not variants:
        raise click.UsageError("give at least one --variant NAME=ARGS")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    rows = []
    for variant in variants:
        name, _, args = variant.partition("=")
        p = subprocess.run([sys.executable, __file__, "--home", str(home), "--config", config_path, "--stage", stage,
                            *(f"--set={o}" for o in overrides), "--one", args], env=env, capture_output=True, text=True)
        result = next((json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("RESULT ")), None)
        if p.returncode != 0 or result is None:
            raise click.ClickException(f"variant {name!r} failed:\n{p.stderr[-3000:]}")
        rows.append((name, args, result["seconds"]))
        print(f"{stage} execution {result['execution']}, {name} ({args}): {result['seconds']:.1f} s", flush=True)
    print(f"\n| {stage} (execution {result['execution']}) | Beam args | executor s |\n|---|---|---|")
    for name, args, seconds in rows:
        print(f"| {name} | `{args}` | {seconds:.1f} |")


if __name__ == "__main__":
    main()
