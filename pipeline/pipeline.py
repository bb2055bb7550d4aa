"""TFX pipeline assembly (components only; the logic lives in ``models/`` and ``components/``).

::

    ExampleGen (CSV | TFRecord | Parquet; train / valid / eval hash splits)
      -> StatisticsGen -> SchemaGen or ImportSchemaGen (curated schema) -> ExampleValidator
      -> ValidationGate (anomalies stop the run here)
      -> Transform (vocabularies + OOV buckets, normalization, labels, sample spaces)
      -> MaskSearch (connection / neuron only: warm-up + per-task lottery-ticket search -> TaskMasks)
      -> MaskedTrainer (joint masked training, or any baseline variant -> Format-Serving)
      -> Evaluator (TFMA; per-task metrics and thresholds vs the latest blessed model)
      -> ServingSmokeCheck (fresh-process load + call of every signature -> InfraBlessing)
      -> Pusher (filesystem, TF Serving layout <base>/<version>/, atomic rename; only when both blessings hold)

Daily mode (``daily=DailyRun(...)``, ``ncs daily``): ExampleGen ingests one day folder as one
span; ValidationGate marks it validated; a span-window resolver hands Transform the last
``daily.window_days`` validated spans, with the analyzer cache of an earlier day's Transform (so only
the new span is analyzed; ``components.transform_cache``); the masks are searched again (refresh) or the latest
``TaskMasks`` are resolved (reuse; an Importer of a given URI on Kubeflow); the trainer
warm-starts from the latest blessed model (also the Evaluator's baseline) and trains
``daily.epochs`` epochs; the Evaluator scores the new day's eval split.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Sequence

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
# tfx.v1's namespace is not imported: it pulls in the Google Cloud AI Platform extensions (importing this module
# and pipeline.runner took 17.8 s with it, 11.7 s without, per process) for nothing a local or Kubeflow run uses;
# these are the modules it re-exports
from tfx.components import (
    Evaluator,
    ExampleValidator,
    SchemaGen,
    StatisticsGen,
    Transform,
)
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.example_gen.import_example_gen.component import ImportExampleGen
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.common.importer import Importer
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.orchestration.metadata import sqlite_metadata_connection_config
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2, pusher_pb2, range_config_pb2, transform_pb2
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

from components import csv_example_gen as csv_executor
from components import parquet_example_gen as parquet_executor
from components import statistics_gen as statistics_gen_executor
from components.atomic_pusher import atomic_pusher
from components.resolvers import EarlierAnalyzerCache, ValidatedSpanWindow
from components.definitions import MaskSearch, MaskedTrainer, ServingSmokeCheck
from components.transform import DURATION_BUCKET, FORCE_TF_COMPAT_V1, LABEL, SLICE, SPACE, transform_config_json
from components.transform_cache import use_cache_executor
from components.types import TaskMasks, ValidatedSpan
from components.validation_gate import ValidationGate
from models.config import SPARSE_VARIANTS, ProjectConfig
from models import keras_metrics
from pipeline.tfma_metrics import BatchedCalibrationPlot, BatchedKerasMetric

# Defaults when pipeline.thresholds does not name a task: a sanity bound only
# (AUC must beat chance; MSE must beat predicting 0.5 for a [0,1] label), and the
# candidate may not be worse than the last blessed model by more than this.
DEFAULT_AUC_MIN, DEFAULT_AUC_MAX_DROP = 0.5, 0.01
DEFAULT_MSE_MAX, DEFAULT_MSE_MAX_RISE = 0.25, 0.005
TRANSFORM_ID = "Transform"  # node id the analyzer-cache resolver reads caches from
MASK_SEARCH_ID = "MaskSearch"  # node id the reuse resolver reads masks from (also across ncs run / ncs daily)


def _overall_only(**threshold) -> list:
    # a MetricConfig.threshold would apply to every slice; blessing is decided on the whole eval
    # split (small slices are reported, not gated)
    return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=tfma.MetricThreshold(**threshold))]


def _batched_metric(metrics: Sequence[tuple[type, str]], **fields) -> tfma.MetricConfig:
    """A MetricConfig for ``models.keras_metrics`` metrics, ``(class, name in the results)``, computed by one
    combiner (one pass over the examples) of ``pipeline.tfma_metrics.BatchedKerasMetric``, a batch at a time (that
    module says why); thresholds in ``fields`` refer to the first."""
    (metric_class, name), *also = metrics
    config = {"metric": metric_class.__name__, "name": name}
    if also:
        config["also"] = {n: c.__name__ for c, n in also}
    return tfma.MetricConfig(class_name=BatchedKerasMetric.__name__, module=BatchedKerasMetric.__module__,
                             config=json.dumps(config), **fields)


_EXAMPLE_COUNT = (keras_metrics.BatchedExampleCount, "example_count")
# the candidate's metrics of every task beside its gated one and its type's own
_CANDIDATE_METRICS = (
    (keras_metrics.BatchedCalibration, "calibration"),
    (keras_metrics.BatchedMeanLabel, "mean_label"),
    (keras_metrics.BatchedMeanPrediction, "mean_prediction"),
    _EXAMPLE_COUNT,  # weighted by the sample space (a second, weighted count would be the same number again)
)


def slice_feature(column: str) -> str:
    """The Transform output TFMA slices on for a configured slice column (raw values, not ids)."""
    return column if column == DURATION_BUCKET else SLICE + column


def eval_config(config: ProjectConfig) -> tfma.EvalConfig:
    """TFMA config: per task output, MetricsSpecs weighted by the task's sample space.

    Labels and weights come from the model's ``transform_features`` signature
    (``label__t``, ``space__t``), so CVR is scored on clicked rows only. With a baseline model
    (a daily run, a re-run after a blessed one) only each task's gated metric is computed for
    the baseline too — the change threshold and the summary read nothing else of it — and the
    rest for the candidate only: TFMA feeds every example to every metric combiner of every
    slice in Python, per model. Without a baseline TFMA scores the one model with every spec.

    The metrics are ``models.keras_metrics`` (Keras metrics under TFMA's metric names), fed a
    batch at a time by ``pipeline.tfma_metrics.BatchedKerasMetric``; TFMA 0.47's own
    ``MeanSquaredError`` also depends on how Beam groups the rows (it merges its first
    accumulator twice). The calibration plot is TFMA's
    ``CalibrationPlot``, computed a batch at a time too (``BatchedCalibrationPlot``).
    """
    model_spec = tfma.ModelSpec(
        signature_name="serving_default",
        preprocessing_function_names=["transform_features"],
        label_keys={t: LABEL + t for t in config.task_names},
        example_weight_keys={t: SPACE + t for t in config.task_names},
    )
    specs = []
    for task in config.tasks:
        th = config.pipeline.thresholds.get(task.name)
        if task.type == "binary":
            lo = th.value if th and th.value is not None else DEFAULT_AUC_MIN
            drop = th.max_change if th and th.max_change is not None else DEFAULT_AUC_MAX_DROP
            primary = _batched_metric(
                [(keras_metrics.BatchedAUC, "auc")],
                per_slice_thresholds=_overall_only(
                    value_threshold=tfma.GenericValueThreshold(lower_bound={"value": lo}),
                    change_threshold=tfma.GenericChangeThreshold(
                        direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -drop}
                    ),
                ),
            )
            # the candidate's other metrics: one combiner, one pass over the examples
            metrics = [_batched_metric([(keras_metrics.LogLoss, "logloss"), *_CANDIDATE_METRICS])]
            if config.pipeline.calibration_plot:
                # TFMA's CalibrationPlot, a batch of rows at a time (pipeline.tfma_metrics says why)
                metrics.append(tfma.MetricConfig(class_name=BatchedCalibrationPlot.__name__,
                                                 module=BatchedCalibrationPlot.__module__, config='{"num_buckets": 20}'))
        else:
            hi = th.value if th and th.value is not None else DEFAULT_MSE_MAX
            rise = th.max_change if th and th.max_change is not None else DEFAULT_MSE_MAX_RISE
            primary = _batched_metric(
                [(keras_metrics.BatchedMeanSquaredError, "mse")],
                per_slice_thresholds=_overall_only(
                    value_threshold=tfma.GenericValueThreshold(upper_bound={"value": hi}),
                    change_threshold=tfma.GenericChangeThreshold(
                        direction=tfma.MetricDirection.LOWER_IS_BETTER, absolute={"value": rise}
                    ),
                ),
            )
            metrics = [_batched_metric(_CANDIDATE_METRICS)]
        specs.append(tfma.MetricsSpec(output_names=[task.name], metrics=[primary]))  # every model (the change threshold)
        specs.append(tfma.MetricsSpec(output_names=[task.name], metrics=metrics, model_names=[tfma.CANDIDATE_KEY]))
        if task.where_clause is None:
            continue  # every row is in the sample space: the weighted count is the row count
        # the plain row count beside the sample-space (weighted) count: CVR's is all rows vs clicked rows
        specs.append(
            tfma.MetricsSpec(
                output_names=[task.name],
                metrics=[_batched_metric([_EXAMPLE_COUNT])],
                example_weights=tfma.ExampleWeightOptions(unweighted=True),
                model_names=[tfma.CANDIDATE_KEY],
            )
        )
    slicing = [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[slice_feature(k)]) for k in config.pipeline.slices]
    return tfma.EvalConfig(model_specs=[model_spec], metrics_specs=specs, slicing_specs=slicing)


def statistics_options(config: ProjectConfig) -> tfdv.StatsOptions:
    """StatisticsGen's TFDV options: every row of every split (no sampling: the validation must see a rare new
    category), top values and distinct counts from sketches unless ``pipeline.statistics_sketches`` is false."""
    return tfdv.StatsOptions(use_sketch_based_topk_uniques=config.pipeline.statistics_sketches)


@dataclasses.dataclass(frozen=True)
class DailyRun:
    """What differs on a daily run (``ncs daily``).

    day: ``YYYYMMDD`` of the span to ingest; ``None`` = the latest day folder (Kubeflow schedules).
    refresh_masks: run MaskSearch on the window (True) or reuse the latest ``TaskMasks``.
    masks_decision: why (stored on the model artifact).
    masks_uri: reuse these masks through an Importer (Kubeflow, where custom resolvers do not
      compile) instead of the latest-artifact resolver.
    validate_only: stop after ValidationGate (``ncs daily`` validates a day first, then decides
      about the masks with the day's statistics; the full run then finds those steps cached).
    """

    day: str | None = None
    refresh_masks: bool = False
    masks_decision: str = ""
    masks_uri: str | None = None
    validate_only: bool = False

    @property
    def span(self) -> int | None:
        if self.day is None:
            return None
        from tfx.components.example_gen.utils import date_to_span_number  # ExampleGen's {YYYY}{MM}{DD} span

        d = dt.datetime.strptime(self.day, "%Y%m%d").date()
        return date_to_span_number(d.year, d.month, d.day)


def _example_gen(config: ProjectConfig, data_root: str, daily: DailyRun | None = None):
    pc = config.pipeline
    pattern = config.daily_input_pattern() if daily else pc.input_pattern
    input_config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="logs", pattern=pattern)])
    range_config = None
    if daily and daily.span is not None:
        range_config = range_config_pb2.RangeConfig(
            static_range=range_config_pb2.StaticRange(start_span_number=daily.span, end_span_number=daily.span)
        )
    output_config = example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name=n, hash_buckets=pc.splits[n]) for n in ("train", "valid", "eval")]
        )
    )
    if pc.format == "tfrecord":
        return ImportExampleGen(
            input_base=data_root, input_config=input_config, output_config=output_config, range_config=range_config
        )
    if pc.format == "csv":
        # the stock CsvExampleGen's examples and splits, encoded a block at a time (3x faster); the node keeps the
        # stock component's id, which earlier runs' artifacts and the span resolvers are recorded under
        executor, node_id = csv_executor.Executor, "CsvExampleGen"
    else:
        executor, node_id = parquet_executor.Executor, "FileBasedExampleGen"  # keeps zeros (the stock one drops them)
    return FileBasedExampleGen(
        input_base=data_root,
        input_config=input_config,
        output_config=output_config,
        range_config=range_config,
        custom_executor_spec=executor_spec.BeamExecutorSpec(executor),
    ).with_id(node_id)


def create_pipeline(
    config: ProjectConfig,
    data_root: str,
    pipeline_root: str,
    serving_dir: str,
    metadata_path: str | None = None,
    schema_path: str | None = None,
    beam_pipeline_args: list[str] | None = None,
    enable_cache: bool = True,
    daily: DailyRun | None = None,
    stage_beam_args: dict[str, list[str]] | None = None,
) -> Pipeline:
    """The whole production pipeline as a ``Pipeline``.

    Args:
      config: the project config (model variant, tasks, ``pipeline`` section).
      data_root: folder of daily log folders (local path or a gs:// / s3:// URI).
      pipeline_root: where artifacts go.
      serving_dir: Pusher's filesystem base directory (TF Serving layout ``<base>/<version>/``).
      metadata_path: SQLite MLMD file (local runs); ``None`` lets the orchestrator decide (Kubeflow).
      schema_path: a curated schema folder/file for ImportSchemaGen; ``None`` infers one with SchemaGen.
      beam_pipeline_args: passed to every Beam-powered component (Flink/Spark/Dataflow args work unchanged).
      stage_beam_args: more args per Beam stage (``models.config.BEAM_STAGES``), after ``beam_pipeline_args``;
        ``None``: the config's ``pipeline.stage_beam_args``.
      daily: a daily incremental run (see :class:`DailyRun`); ``None`` trains from scratch on every span.
    """
    config_json = config.model_dump_json()
    per_stage = config.pipeline.stage_beam_args if stage_beam_args is None else stage_beam_args

    def stage(component, name: str):
        """``component`` with its stage's own Beam args (TFX puts them after the pipeline's)."""
        args = per_stage.get(name)
        return component.with_beam_pipeline_args(list(args)) if args else component

    example_gen = stage(_example_gen(config, data_root, daily), "ExampleGen")
    statistics_gen = StatisticsGen(examples=example_gen.outputs["examples"], stats_options=statistics_options(config))
    statistics_gen.executor_spec = executor_spec.BeamExecutorSpec(statistics_gen_executor.Executor)  # block reads
    statistics_gen = stage(statistics_gen, "StatisticsGen")
    if schema_path:
        schema_gen = ImportSchemaGen(schema_file=schema_path)
    else:
        schema_gen = SchemaGen(statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    gate = ValidationGate(
        anomalies=example_validator.outputs["anomalies"],
        examples=example_gen.outputs["examples"],
        statistics=statistics_gen.outputs["statistics"],
    )
    components = [example_gen, statistics_gen, schema_gen, example_validator, gate]

    def finish(components):
        return Pipeline(
            pipeline_name=config.pipeline.name,
            pipeline_root=pipeline_root,
            components=components,
            enable_cache=enable_cache,
            metadata_connection_config=(
                sqlite_metadata_connection_config(metadata_path) if metadata_path else None
            ),
            beam_pipeline_args=list(beam_pipeline_args if beam_pipeline_args is not None else config.pipeline.beam_args),
        )

    if daily and daily.validate_only:
        return finish(components)

    examples_to_transform = example_gen.outputs["examples"]
    windowed = daily is not None and daily.span is not None  # a local daily run of a given day
    cache = None
    if windowed:
        # the training window: the last K validated spans (today's included), from MLMD
        window = Resolver(
            strategy_class=ValidatedSpanWindow,
            config={"end_span": daily.span, "num_spans": config.daily.window_days},
            examples=Channel(type=standard_artifacts.Examples, producer_component_id=example_gen.id),
            validated=Channel(type=ValidatedSpan, producer_component_id=gate.id),
        ).with_id("span_window_resolver")
        window.add_upstream_node(gate)  # resolve after today's span is validated
        # the window re-reads yesterday's spans: TFT's analyzer cache of the latest finished Transform of an earlier
        # day (LIVE artifacts only) lets the analysis read only the new span; components.transform_cache trusts a
        # cache only under the same config, schema and TFT version. A whole-history run (`ncs run`) has nothing to reuse.
        cache = Resolver(
            strategy_class=EarlierAnalyzerCache,
            config={"end_span": daily.span},
            cache=Channel(type=standard_artifacts.TransformCache, producer_component_id=TRANSFORM_ID),
        ).with_id("earlier_analyzer_cache_resolver")
        components += [window, cache]
        examples_to_transform = window.outputs["examples"]
    transform = stage(use_cache_executor(Transform(
        examples=examples_to_transform,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn="components.transform.preprocessing_fn",
        custom_config={"config_json": transform_config_json(config)},
        # the eval split is scored by the Evaluator from the raw examples through the model's transform_features
        # signature, so only the splits training reads are materialized
        splits_config=transform_pb2.SplitsConfig(analyze=["train"], transform=["train", "valid"]),
        analyzer_cache=cache.outputs["cache"] if cache is not None else None,
        disable_analyzer_cache=not windowed,
        # TFDV statistics of the raw and the transformed splits: nothing downstream reads them (StatisticsGen and
        # ExampleValidator check the raw data) and each is one more pass over the data inside Transform
        disable_statistics=True,
        force_tf_compat_v1=FORCE_TF_COMPAT_V1,
    )), "Transform")
    transform.add_upstream_node(gate)
    components.append(transform)

    model_resolver = Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    trainer_inputs = dict(
        transformed_examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        config_json=config_json,
    )
    if daily:
        trainer_inputs["masks_decision"] = daily.masks_decision
        if not (daily.refresh_masks and config.model.variant in SPARSE_VARIANTS):
            # warm start from yesterday's blessed model and a short increment; after a new mask
            # search, joint training starts from the search's θ (the masks' rewind point) instead
            trainer_inputs.update(base_model=model_resolver.outputs["model"], epochs=config.daily.epochs)
    if config.model.variant in SPARSE_VARIANTS:
        if daily is None or daily.refresh_masks:
            masks_node = MaskSearch(
                transformed_examples=transform.outputs["transformed_examples"],
                transform_graph=transform.outputs["transform_graph"],
                config_json=config_json,
            )
        elif daily.masks_uri:
            masks_node = Importer(source_uri=daily.masks_uri, artifact_type=TaskMasks).with_id("masks_importer")
        else:
            masks_node = Resolver(
                strategy_class=LatestArtifactStrategy,
                masks=Channel(type=TaskMasks, producer_component_id=MASK_SEARCH_ID),
            ).with_id("latest_masks_resolver")
        components.append(masks_node)
        trainer_inputs["masks"] = masks_node.outputs["masks" if not isinstance(masks_node, Importer) else "result"]
    trainer = MaskedTrainer(**trainer_inputs)
    components.append(trainer)

    evaluator = stage(Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config(config),
        example_splits=["eval"],
    ), "Evaluator")
    smoke = ServingSmokeCheck(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        tasks_json=json.dumps(config.task_names),
        rows=config.pipeline.smoke_check_rows,
    )
    # atomic filesystem push: TF Serving never sees a partly written version folder
    pusher = atomic_pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=smoke.outputs["blessing"],
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=serving_dir)
        ),
    )
    components += [model_resolver, evaluator, smoke, pusher]
    return finish(components)


__all__ = ["create_pipeline", "eval_config", "DailyRun", "DURATION_BUCKET"]
