"""Runners: local (LocalDagRunner + SQLite MLMD under ``$NCS_HOME``) and Kubeflow V2 (offline compile).

Also the post-run summary ``ncs run`` prints: per-task TFMA metrics of the new model vs the
baseline, blessing, mask density/overlap, where the SavedModel was pushed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from models.config import ProjectConfig
from models.metrics import primary_metric


def ncs_home() -> Path:
    return Path(os.environ.get("NCS_HOME", ".ncs")).resolve()


@dataclasses.dataclass
class LocalPaths:
    home: Path
    pipeline_root: Path
    metadata: Path
    serving_dir: Path

    @classmethod
    def make(cls, pipeline_name: str, serving_dir: str | os.PathLike | None = None, home: Path | None = None):
        home = Path(home or ncs_home())
        return cls(
            home,
            home / "pipelines" / pipeline_name,
            home / "metadata" / f"{pipeline_name}.sqlite",
            Path(serving_dir or "serving_models/ctr_cvr").resolve(),
        )


LOCAL_REQUIREMENTS = "# Beam DirectRunner: the workers are processes of this Python environment; nothing to install\n"


def local_beam_args(beam_args: list[str], home: Path) -> list[str]:
    """``beam_args`` for a run on Beam's DirectRunner in this environment.

    Given no dependency flag, every TFX Beam component (ExampleGen, StatisticsGen, Transform, Evaluator) first
    packs TFX itself into an sdist for remote workers: 2.2-2.8 s each, and the 49 MB build folder stays in the
    temp directory, run after run. The DirectRunner never stages packages (its workers are threads or
    processes of this interpreter), so on it an empty requirements file under ``home`` is named instead.
    Other runners (Flink, Spark, Dataflow) and explicit dependency flags are left as given.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(flags=list(beam_args)).get_all_options()
    runner = (options.get("runner") or "DirectRunner").lower()
    # the flags TFX's dependency_utils takes as "dependencies given"
    given = any(options.get(k) for k in ("extra_packages", "setup_file", "requirements_file",
                                         "worker_harness_container_image", "sdk_container_image"))
    if runner not in ("directrunner", "direct") or given:
        return list(beam_args)
    requirements = home / "beam_local_requirements.txt"
    if not requirements.exists() or requirements.read_text() != LOCAL_REQUIREMENTS:
        requirements.write_text(LOCAL_REQUIREMENTS)
    return [*beam_args, f"--requirements_file={requirements}"]


@contextlib.contextmanager
def program_name_only_argv() -> Iterator[None]:
    """``sys.argv`` cut to the program name for the block.

    TFX's Beam executors parse ``sys.argv`` plus the Beam args as absl flags
    (``BaseBeamExecutor.__init__``), so our own command line reached absl: ``ncs daily -v --date D`` made
    absl read ``-v`` as its ``--verbosity`` flag with the value ``--date`` and every Beam stage failed;
    ``ncs run ... -v`` failed with "Missing value for flag -v". Our arguments are not absl's; the Beam
    args (where absl flags for the workers belong) still reach it.
    """
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def input_megabytes(config: ProjectConfig, data_root: str | os.PathLike, day: str | None = None,
                    daily: bool = False) -> float:
    """MB of the input logs a run ingests: the files of ``pipeline.input_pattern`` (``ncs run``) or of the daily
    pattern for ``day`` (``ncs daily``). A span pattern (``{YYYY}{MM}{DD}``) without a day counts the newest span
    folder only, the one ExampleGen takes."""
    import glob
    import re

    root = Path(data_root)
    pattern = config.daily_input_pattern() if daily else config.pipeline.input_pattern
    if day is not None:
        pattern = pattern.replace("{YYYY}{MM}{DD}", day)
    spans = re.search(r"\{[A-Z]+\}", pattern) is not None
    files = [Path(f) for f in glob.glob(str(root / re.sub(r"\{[A-Z]+\}", "*", pattern))) if os.path.isfile(f)]
    if spans and files:
        newest = max(f.relative_to(root).parts[0] for f in files)
        files = [f for f in files if f.relative_to(root).parts[0] == newest]
    return sum(f.stat().st_size for f in files) / 2**20


def run_local(config: ProjectConfig, data_root: str, paths: LocalPaths, schema_path: str | None = None,
              beam_args: list[str] | None = None, enable_cache: bool = True, daily=None) -> None:
    """Run the whole pipeline in this process with LocalDagRunner (raises if a component fails).

    ``daily``: a :class:`pipeline.pipeline.DailyRun` (``ncs daily``), else the from-scratch run.
    """
    from absl import logging
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from pipeline import beam_signatures
    from pipeline.pipeline import create_pipeline

    beam_signatures.install()  # every in-process Beam stage builds and runs its transforms faster
    paths.pipeline_root.mkdir(parents=True, exist_ok=True)
    paths.metadata.parent.mkdir(parents=True, exist_ok=True)
    paths.serving_dir.mkdir(parents=True, exist_ok=True)
    # Beam args given here (`--beam-arg`) are the whole set: they replace pipeline.beam_args and stage_beam_args
    stage_args = {}
    if beam_args is None:
        input_mb = input_megabytes(config, data_root, daily.day if daily else None, daily=daily is not None)
        stage_args = config.pipeline.stage_beam_args_for(input_mb)
        if config.pipeline.is_large_input(input_mb):
            logging.info("input logs %.0f MB >= pipeline.large_input_mb %s: %s also get %s", input_mb,
                         config.pipeline.large_input_mb, ", ".join(config.pipeline.large_input_stages),
                         " ".join(config.pipeline.large_input_beam_args))
    beam_args = local_beam_args(beam_args if beam_args is not None else config.pipeline.beam_args, paths.home)
    p = create_pipeline(
        config,
        data_root=str(Path(data_root).resolve()),
        pipeline_root=str(paths.pipeline_root),
        serving_dir=str(paths.serving_dir),
        metadata_path=str(paths.metadata),
        schema_path=schema_path,
        beam_pipeline_args=beam_args,
        enable_cache=enable_cache,
        daily=daily,
        stage_beam_args=stage_args,
    )
    with program_name_only_argv():
        LocalDagRunner().run(p)


def compile_kubeflow(config: ProjectConfig, image: str, out_file: str, data_root: str, pipeline_root: str,
                     serving_dir: str, schema_path: str | None = None, beam_args: list[str] | None = None,
                     daily=None) -> Path:
    """Write a Kubeflow Pipelines V2 (Vertex-compatible) JSON spec offline; no cluster needed.

    ``daily``: a :class:`pipeline.pipeline.DailyRun` with ``day=None`` (newest span) for a schedule.
    """
    from tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner import KubeflowV2DagRunner, KubeflowV2DagRunnerConfig

    from pipeline.pipeline import create_pipeline

    p = create_pipeline(
        config,
        data_root=data_root,
        pipeline_root=pipeline_root,
        serving_dir=serving_dir,
        metadata_path=None,
        schema_path=schema_path,
        beam_pipeline_args=beam_args,
        daily=daily,
        stage_beam_args=None if beam_args is None else {},  # given args replace the config's, as in run_local
    )
    out = Path(out_file).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    runner = KubeflowV2DagRunner(
        config=KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=str(out.parent),
        output_filename=out.name,
    )
    runner.run(p, write_out=True)
    return out


def recurring_run_spec(pipeline_file: Path, pipeline_name: str, cron: str) -> dict:
    """A KFP v2beta1 ``RecurringRun`` (REST body of ``POST /apis/v2beta1/recurringruns``) for a compiled spec.

    ``max_concurrency`` 1: two runs never overlap; ``no_catchup`` false: the scheduler starts
    the runs it missed (e.g. during an outage) one after the other.
    """
    spec = json.loads(Path(pipeline_file).read_text())
    return {
        "display_name": f"{pipeline_name}-daily",
        "description": "Daily incremental retraining (warm start, reused masks, TFMA gate, push)",
        "pipeline_spec": spec.get("pipelineSpec", spec),
        "runtime_config": spec.get("runtimeConfig", {}),
        "trigger": {"cron_schedule": {"cron": cron}},
        "max_concurrency": "1",
        "no_catchup": False,
        "mode": "ENABLE",
    }


# ----------------------------------------------------------------------------- summary


def _latest(store, type_name: str, since_id: int = 0):
    arts = [a for a in store.get_artifacts_by_type(type_name) if a.id > since_id]
    return max(arts, key=lambda a: a.id) if arts else None


def _props(artifact) -> dict:
    out = {}
    for k, v in artifact.custom_properties.items():
        which = v.WhichOneof("value")
        if which in ("int_value", "double_value", "string_value"):
            out[k] = getattr(v, which)
    return out


def _threshold_text(th) -> str:
    if th.HasField("value_threshold"):
        v = th.value_threshold
        parts = [f">= {v.lower_bound.value:g}" if v.HasField("lower_bound") else "", f"<= {v.upper_bound.value:g}" if v.HasField("upper_bound") else ""]
        return " and ".join(p for p in parts if p)
    c = th.change_threshold
    return f"change {'>=' if c.direction == 2 else '<='} {c.absolute.value:g} vs the last blessed model"


def metadata_store(path: str | Path):
    """A read-only ML Metadata store on a local run's SQLite file."""
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    cc = metadata_store_pb2.ConnectionConfig()
    cc.sqlite.filename_uri = str(path)
    cc.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return mlmd.MetadataStore(cc)


def overall_metrics(evaluation_uri: str) -> dict:
    """The overall slice of a TFMA evaluation: ``{output: {metric: {side: value}}}``, side ``candidate``,
    ``baseline`` or ``diff`` (candidate minus baseline); numbers only (plots are left out)."""
    import tensorflow_model_analysis as tfma

    metrics: dict = {}
    for rec in tfma.load_metrics(evaluation_uri):
        if rec.slice_key.single_slice_keys:
            continue  # overall slice only
        for key_and_value in rec.metric_keys_and_values:
            k = key_and_value.key
            v = key_and_value.value
            if not v.HasField("double_value"):
                continue
            side = "baseline" if k.model_name and "baseline" in k.model_name else "candidate"
            if k.is_diff:
                side = "diff"
            # the example count comes weighted and unweighted (CVR: clicked rows, all rows); the
            # weighted one (by the task's sample space) keeps the plain name
            name = k.name + ("_unweighted" if k.HasField("example_weighted") and not k.example_weighted.value else "")
            metrics.setdefault(k.output_name or "all", {}).setdefault(name, {})[side] = v.double_value.value
    return metrics


def run_summary(config: ProjectConfig, paths: LocalPaths, push_since_id: int = 0) -> dict:
    """Read MLMD and the artifacts of the latest run: metrics, blessing, masks, push.

    ``push_since_id``: report a push only if its artifact is newer than this MLMD id (a daily
    run's own push; the model and evaluation may be cached from an interrupted attempt).
    """
    import tensorflow_model_analysis as tfma

    store = metadata_store(paths.metadata)
    out: dict = {"pipeline_root": str(paths.pipeline_root), "metadata": str(paths.metadata)}

    model = _latest(store, "Model")
    if model is not None:
        out["model"] = {"uri": model.uri, **_props(model)}
    evaluation = _latest(store, "ModelEvaluation")
    if evaluation is not None:
        out["evaluation_uri"] = evaluation.uri
        out["metrics"] = overall_metrics(evaluation.uri)
        try:
            vr = tfma.load_validation_result(evaluation.uri)
            out["validation_ok"] = bool(vr.validation_ok)
            out["validation_failures"] = [
                f"{f.metric_key.output_name}/{f.metric_key.name}"
                + (" (vs baseline)" if f.metric_key.is_diff else "")
                + f" = {f.metric_value.double_value.value:.5f} violates {_threshold_text(f.metric_threshold)}"
                for m in vr.metric_validations_per_slice
                for f in m.failures
            ]
        except Exception:  # noqa: BLE001 - no validation result when no thresholds
            pass
    masks = _latest(store, "components.TaskMasks")
    if masks is not None:
        out["masks"] = {"uri": masks.uri, **_props(masks)}
    smoke = _latest(store, "InfraBlessing")
    if smoke is not None:
        out["smoke_check"] = {"uri": smoke.uri, **_props(smoke)}
    pushed = _latest(store, "PushedModel", push_since_id)
    if pushed is not None:
        out["push"] = {"uri": pushed.uri, **_props(pushed)}
    return out


def format_summary(summary: dict, config: ProjectConfig) -> str:
    lines = ["", "== run summary =="]
    m = summary.get("model", {})
    lines.append(f"model: variant {m.get('variant', '?')}, trained in {m.get('train_seconds', float('nan')):.0f}s  ({m.get('uri', '?')})")
    metrics = summary.get("metrics", {})
    for t in config.tasks:
        key = primary_metric(t.type)
        row = metrics.get(t.name, {})
        prim = row.get(key, {})
        cand, base = prim.get("candidate"), prim.get("baseline")
        w = row.get("example_count", {}).get("candidate")  # weighted by the task's sample space
        s = f"  {t.name}: {key.upper()} {cand:.5f}" if cand is not None else f"  {t.name}: {key.upper()} –"
        s += f" (baseline {base:.5f})" if base is not None else " (no blessed baseline yet)"
        if w is not None:
            s += f", {int(w)} eval rows in its sample space"
        extra = [f"{k} {row[k]['candidate']:.4f}" for k in ("calibration", "logloss") if k in row and "candidate" in row[k]]
        if extra:
            s += "; " + ", ".join(extra)
        lines.append(s)
    if "validation_ok" in summary:
        lines.append(f"TFMA blessing: {'BLESSED' if summary['validation_ok'] else 'NOT blessed'}")
        for f in summary.get("validation_failures", []):
            lines.append(f"  failed: {f}")
    if "masks" in summary:
        mk = summary["masks"]
        dens = ", ".join(f"{t} {mk[f'density_{t}']:.3f}" for t in config.task_names if f"density_{t}" in mk)
        lines.append(
            f"masks: density {dens}; shared {mk.get('shared_fraction', float('nan')):.3f}, unused {mk.get('unused_fraction', float('nan')):.3f} "
            f"of MLP connections; search {mk.get('search_seconds', float('nan')):.0f}s  ({mk['uri']})"
        )
    if "smoke_check" in summary:
        lines.append(f"serving smoke check: {'passed' if summary['smoke_check'].get('blessed') == 1 else 'FAILED'}")
    push = summary.get("push")
    if push and push.get("pushed") == 1:
        dest = push.get("pushed_destination", "?")
        lines.append(f"pushed: {dest}")
        base = os.path.dirname(dest.rstrip("/"))
        lines.append(
            "serve it: docker run -p 8501:8501 -p 8500:8500 -v "
            f"{base}:/models/ctr_cvr -e MODEL_NAME=ctr_cvr tensorflow/serving"
        )
    else:
        lines.append("pushed: nothing (a blessing did not hold; the served model is unchanged)")
    return "\n".join(lines)


def write_summary(summary: dict, path: Path) -> None:
    path.write_text(json.dumps(summary, indent=1, default=str))
