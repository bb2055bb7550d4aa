"""Typed project configuration: one YAML file describes a data set and a model.

The YAML is parsed into pydantic models; every check (unknown feature, missing
column, task without label, bad type, bad expression) fails at load time with a
message that names the offending key, e.g. ``tasks.1.label: Field required``.
Code everywhere else reads these typed objects, never raw dicts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

VARIANTS = (
    "single",
    "layer",
    "shared_bottom",
    "mmoe",
    "cgc",
    "ple",
    "esmm",
    "masked",
    "connection",
    "neuron",
)
# variants trained by the three-step sparse-sharing engine (models.sparse_sharing)
SPARSE_VARIANTS = ("connection", "neuron")
# ablation controls of the mask search (ncs compare): joint masked training from the same θ with
# masks of the densities the search chose for `connection`, but picked by |θ| or at random
CONTROL_VARIANTS = ("connection_theta", "connection_random")
# Table-2 switches a compared variant can carry (`connection+balance+gc`); values in tuning.switches
SWITCHES = ("balance", "gc", "mv", "big", "tuning")

_WHERE_RE = re.compile(
    r"^\s*(?P<column>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>-?\d+(\.\d+)?)\s*$"
)


class ConfigError(ValueError):
    """Raised when a config file cannot be loaded; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- features


class CategoricalFeature(_Strict):
    """A single-valued string/int id column.

    Exactly one of ``vocab_size`` (keep the most frequent values seen in training,
    the rest go to ``oov_buckets`` hashed out-of-vocabulary buckets) or
    ``hash_buckets`` (hash every value, no vocabulary) must be given.
    """

    name: str
    type: Literal["categorical"]
    column: Optional[str] = None
    vocab_size: Optional[int] = Field(default=None, gt=0)
    hash_buckets: Optional[int] = Field(default=None, gt=0)
    oov_buckets: int = Field(default=1, ge=1)
    shared_embedding: Optional[str] = None
    embedding_dim: Optional[int] = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_id_space(self):
        if self.shared_embedding is None and (self.vocab_size is None) == (self.hash_buckets is None):
            raise ValueError("give exactly one of 'vocab_size' or 'hash_buckets'")
        return self

    @property
    def source(self) -> str:
        return self.column or self.name


class MultiCategoricalFeature(CategoricalFeature):
    """A multi-valued column ("a|b|c"), embedded and pooled by mean."""

    type: Literal["multi_categorical"]  # type: ignore[assignment]
    separator: str = "|"
    max_length: int = Field(default=8, gt=0)


class NumericFeature(_Strict):
    """A numeric column, optionally log1p-transformed, then z-normalized."""

    name: str
    type: Literal["numeric"]
    column: Optional[str] = None
    log: bool = False

    @property
    def source(self) -> str:
        return self.column or self.name


Feature = Annotated[
    Union[CategoricalFeature, MultiCategoricalFeature, NumericFeature],
    Field(discriminator="type"),
]

# --------------------------------------------------------------------------- tasks


class ColumnLabel(_Strict):
    column: str


class RatioLabel(_Strict):
    """``clip(numerator / denominator, 0, 1)``; rows with denominator <= 0 are unusable."""

    ratio: tuple[str, str]


class TaskConfig(_Strict):
    """One prediction task.

    ``where`` restricts the task's sample space (loss and metrics), e.g. ``click == 1``
    for CVR; ``None`` means all rows.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: Literal["binary", "regression"]
    label: Union[ColumnLabel, RatioLabel]
    where: Optional[str] = None
    loss: Literal["bce", "focal", "mse"] = "bce"
    weight: float = Field(default=1.0, ge=0.0)
    focal_alpha: float = Field(default=0.75, ge=0.0, le=1.0)
    focal_gamma: float = Field(default=2.0, ge=0.0)

    @field_validator("where")
    @classmethod
    def _parse_where(cls, v):
        if v is None or v.strip().lower() in ("", "all"):
            return None
        if not _WHERE_RE.match(v):
            raise ValueError(
                f"cannot parse {v!r}; expected '<column> <op> <number>' with op in ==, !=, >, >=, <, <= (or 'all')"
            )
        return v.strip()

    @model_validator(mode="after")
    def _loss_matches_type(self):
        if self.type == "binary" and self.loss not in ("bce", "focal"):
            raise ValueError(f"binary task needs loss 'bce' or 'focal', got {self.loss!r}")
        if self.type == "regression" and self.loss != "mse":
            raise ValueError(f"regression task needs loss 'mse', got {self.loss!r}")
        return self

    @property
    def label_columns(self) -> list[str]:
        return [self.label.column] if isinstance(self.label, ColumnLabel) else list(self.label.ratio)

    @property
    def where_clause(self) -> Optional[tuple[str, str, float]]:
        if self.where is None:
            return None
        m = _WHERE_RE.match(self.where)
        return m["column"], m["op"], float(m["value"])


# --------------------------------------------------------------------------- model / training


class ModelConfig(_Strict):
    variant: Literal[VARIANTS] = "layer"  # type: ignore[valid-type]
    embedding_dim: int = Field(default=16, gt=0)
    mlp: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [512, 256, 128], min_length=1)
    tower: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [64])
    interaction: Literal["dot", "none"] = "dot"
    activation: Literal["relu", "gelu", "swish"] = "relu"
    num_experts: int = Field(default=4, ge=1)
    expert_mlp: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [256, 128], min_length=1)
    specific_experts: int = Field(default=2, ge=1)
    shared_experts: int = Field(default=2, ge=1)
    ple_levels: int = Field(default=2, ge=2)
    # DLRM's bottom MLP for the numeric features: hidden widths before the projection to
    # embedding_dim ([] = one ReLU projection, the historical behaviour)
    dense_mlp: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list)


class SparseSharingConfig(_Strict):
    """Warm-up -> per-task mask search -> joint masked training (design.md §2).

    The search trains ``rounds + 1`` times per task: the dense mask, then after each
    of ``rounds`` prunings of ``q = 1 - final_density ** (1 / rounds)`` of the
    weights still alive, so the last trained mask has density ``final_density``.
    """

    warmup_epochs: int = Field(default=1, ge=1)
    rounds: int = Field(default=4, ge=1)
    final_density: float = Field(default=0.2, gt=0.0, le=1.0)
    round_epochs: int = Field(default=1, ge=1)  # fixed budget; under training.patience rounds stop early
    # rewind point: θ after this many warm-up optimizer steps (None: after warmup_epochs)
    warmup_steps: Optional[int] = Field(default=None, ge=1)
    # keep pruning past `rounds` (same q) while the latest round is the task's best on
    # validation, down to min_density (None: stop at final_density)
    extend: bool = False
    min_density: Optional[float] = Field(default=None, gt=0.0, lt=1.0)
    scope: Literal["per_layer", "global"] = "per_layer"
    allow_dense: bool = True  # False: the dense (round 0) mask may not be chosen
    min_layer_density: float = Field(default=0.01, gt=0.0, le=1.0)  # guard against emptied layers
    # joint training: ``alternate`` task batches (one optimizer per task) or ``mixed`` (sum of the
    # masked task losses on every mixed batch); ``joint`` is the old name of ``mixed``
    schedule: Literal["alternate", "mixed"] = "alternate"
    joint_epochs: Optional[int] = Field(default=None, ge=1)  # default: training.epochs

    @field_validator("schedule", mode="before")
    @classmethod
    def _old_schedule_name(cls, v):
        return "mixed" if v == "joint" else v

    @model_validator(mode="after")
    def _density_bound(self):
        if self.min_density is not None and self.min_density > self.final_density:
            raise ValueError(
                f"sparse.min_density: {self.min_density:g} is above sparse.final_density {self.final_density:g}; "
                "the lower bound must be at or below the planned final density"
            )
        return self

    @property
    def prune_rate(self) -> float:
        return 1.0 - self.final_density ** (1.0 / self.rounds)


class GradientConflictConfig(_Strict):
    """Raise the CVR loss weight of clicks followed by a very short watch.

    A clicked row of ``task`` whose ``watch_column`` is below the threshold of its
    duration bucket gets weight ``weight``; thresholds are ``[max_duration_s, min_watch_s]``
    pairs in increasing duration (the last bucket covers longer videos too).
    """

    enabled: bool = False
    task: str = "cvr"
    watch_column: str = "watch_seconds"
    duration_column: str = "duration"
    thresholds: list[tuple[float, float]] = Field(default_factory=lambda: [(60, 3), (300, 5), (1e9, 10)])
    weight: float = Field(default=2.0, gt=0)


class SwitchValues(_Strict):
    """What the Table-2 switches of a compared variant (``connection+balance``) turn on.

    ``balance``: task loss weights replacing ``tasks[].weight`` (the papers' CVR up-weighting);
    ``gc``: ``tuning.gradient_conflict`` enabled; ``mv``: ``multi_view_dim``; ``big``:
    ``width_multiplier``; ``tuning``: ``balance`` and ``gc`` together (the papers' "+ tuning").
    """

    balance: dict[str, Annotated[float, Field(ge=0.0)]] = Field(default_factory=lambda: {"ctr": 0.5, "cvr": 0.5})
    multi_view_dim: int = Field(default=8, gt=0)
    width_multiplier: float = Field(default=2.0, gt=0)


class TuningConfig(_Strict):
    """The papers' tuning techniques, each a switch (all off by default)."""

    gradient_conflict: GradientConflictConfig = Field(default_factory=GradientConflictConfig)
    multi_view_dim: int = Field(default=0, ge=0)  # >0: task-exclusive embedding of this dim per task
    width_multiplier: float = Field(default=1.0, gt=0)  # "bigger net": scales model.mlp
    dynamic_loss_gamma: dict[str, float] = Field(default_factory=dict)  # PLE: w_k * gamma_k ** epoch
    switches: SwitchValues = Field(default_factory=SwitchValues)


class TrainingConfig(_Strict):
    """The training engine (``models.engine``), shared by every variant and phase.

    ``schedule`` is how the baselines train: ``mixed`` (all task losses on each mixed batch) or
    ``alternate`` (per-task sample-space streams interleaved, one optimizer per task).
    ``patience``: stop when the validation loss has not improved for this many epochs and
    restore the best epoch's weights, at most ``max_epochs`` (the budget protocol of ``ncs
    compare``: every variant, search round and joint training converges on validation);
    ``None``: train exactly ``epochs``. ``shuffle_buffer``: rows in the streaming shuffle buffer (memory, not data size).
    """

    batch_size: int = Field(default=1024, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0)
    epochs: int = Field(default=2, ge=1)
    seed: int = 42
    schedule: Literal["mixed", "alternate"] = "mixed"
    patience: Optional[int] = Field(default=None, ge=1)
    max_epochs: int = Field(default=20, ge=1)  # the cap under early stopping (patience set)

    @property
    def budget_epochs(self) -> int:
        """Epochs to pass to the engine: ``max_epochs`` under early stopping, else ``epochs``."""
        return self.max_epochs if self.patience is not None else self.epochs
    shuffle_buffer: int = Field(default=65536, ge=1)


class SplitConfig(_Strict):
    """How ``ncs compare`` splits the data.

    ``day``: day folders ``YYYYMMDD``; the last ``test_days`` are test, the
    ``valid_days`` before them validation, the rest training. ``hash``: a
    deterministic hash of ``hash_key`` (e.g. a user id: all of a user's rows
    land in one split). Data without day folders (a single file, a flat folder)
    is split by a hash even under ``by: day``: of ``hash_key`` when given, else
    of each row's position (a row-level split). ``valid_fraction`` and
    ``test_fraction`` are the hashed shares of validation and test.
    """

    by: Literal["day", "hash"] = "day"
    valid_days: int = Field(default=1, ge=1)
    test_days: int = Field(default=1, ge=1)
    hash_key: Optional[str] = None
    valid_fraction: float = Field(default=0.1, gt=0, lt=1)
    test_fraction: float = Field(default=0.1, gt=0, lt=1)


class DatasetConfig(_Strict):
    name: str
    columns: list[str] = Field(min_length=1)
    group_key: Optional[str] = None
    duration_column: Optional[str] = None
    # optional {task: column with the true probability/expectation} (synthetic data only)
    truth: dict[str, str] = Field(default_factory=dict)
    split: SplitConfig = Field(default_factory=SplitConfig)


class RankingConfig(_Strict):
    """Offline ranking simulation: rank within ``request_key`` by pCTR^a * pCVR^b * length^c."""

    request_key: str
    length_column: str
    ctr_task: str = "ctr"
    cvr_task: str = "cvr"
    outcome_column: str = "watch_seconds"  # logged outcome on real logs (view seconds)
    top_k: int = Field(default=3, ge=1)
    a: float = 1.0
    b: float = 1.0
    c: float = 1.0


class TaskThreshold(_Strict):
    """Blessing thresholds of one task's primary metric (AUC for binary, clicked-only MSE for regression).

    ``value``: the absolute bound (AUC lower bound / MSE upper bound); ``max_change``: how much
    worse than the last blessed model the candidate may be (AUC drop / MSE rise), only checked
    when a blessed baseline exists (the very first run is judged by ``value`` alone).
    """

    value: Optional[float] = None
    max_change: Optional[float] = Field(default=None, ge=0)


# the pipeline's Beam-powered components, by the stage names `pipeline.stage_beam_args` takes
BEAM_STAGES = ("ExampleGen", "StatisticsGen", "Transform", "Evaluator")


class PipelineConfig(_Strict):
    """The TFX pipeline (``ncs run``): ingestion, validation, evaluation and push.

    ``input_pattern`` is relative to the data root; ``*/*.csv`` ingests every day folder
    as one span, ``{YYYY}{MM}{DD}/*.csv`` takes the latest day (TFX span pattern).
    ``splits`` are hash-bucket counts of ExampleGen's output splits; ``valid`` scores the
    mask search rounds, ``eval`` is what TFMA evaluates and blesses on.
    """

    name: str = Field(default="ncs-ctr-cvr", pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    format: Literal["csv", "tfrecord", "parquet"] = "csv"
    input_pattern: str = "*/*.csv"
    splits: dict[str, int] = Field(default_factory=lambda: {"train": 8, "valid": 1, "eval": 1})
    schema_file: Optional[str] = None  # curated schema (pbtxt), relative to the config file; None = SchemaGen infers
    slices: list[str] = Field(default_factory=lambda: ["page", "duration_bucket"])
    duration_buckets: list[float] = Field(default_factory=lambda: [60.0, 300.0, 900.0])
    thresholds: dict[str, TaskThreshold] = Field(default_factory=dict)
    smoke_check_rows: int = Field(default=64, ge=1)
    # TFMA's calibration plot (20 buckets) for each binary task; false saves Evaluator work
    calibration_plot: bool = True
    # connection/neuron: export the compacted network (serving.compact) instead of the masked one
    compact: bool = False
    # StatisticsGen's top values and distinct counts from TFDV's sketches (a Misra-Gries sketch of 1,024 values, a
    # KMV sketch of 16,384) in its combiners, instead of one Beam element per distinct value of every batch: exact
    # for a column of at most 1,024 distinct values (every string domain the validation checks) and distinct counts
    # exact up to 16,384; beyond, counts within rows/1,024 of the truth. false: TFDV's exact (slower) generator
    statistics_sketches: bool = True
    # Beam args of every Beam stage; the default runs them in this process (one DirectRunner worker): faster for
    # reading, statistics and Transform than worker processes, which pay start-up and cross-process transfer
    beam_args: list[str] = Field(default_factory=lambda: ["--direct_num_workers=1"])
    # more Beam args for one stage (ExampleGen, StatisticsGen, Transform, Evaluator), after beam_args and the
    # large-input args (the later flag wins); none by default
    stage_beam_args: dict[str, list[str]] = Field(default_factory=dict)
    # a local run whose input logs hold at least `large_input_mb` MB runs each stage of `large_input_stages` with
    # `large_input_beam_args` too (after beam_args, before stage_beam_args). Worker processes cost a start-up that
    # in-process stages do not pay, and pay back on large inputs: the Evaluator (candidate + baseline) 151.7 s
    # in-process vs 102.1 s on 2 workers on a 1M-row day (82 MB of CSV, 100,000 eval rows), 39.1-41.3 vs 42.9 s on
    # 200,000 rows (40 MB); Transform 196.9 vs 140.7 s on the 1M day. ExampleGen writes each split as one file per
    # input file (at least 4), so both workers have files to read (GZIP files do not split).
    # null: never. `ncs compile` (Kubeflow) cannot see the input: the args there are beam_args + stage_beam_args.
    large_input_mb: Optional[float] = Field(default=64.0, gt=0)
    large_input_beam_args: list[str] = Field(
        default_factory=lambda: ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    # not StatisticsGen: with its block reader it is as fast in-process on a 1M-row day (71.7 s in-process vs 83.2 s
    # on 2 workers; its decoding keeps both cores busy in one process), and it is the validation step before Transform
    large_input_stages: list[str] = Field(default_factory=lambda: ["ExampleGen", "Transform", "Evaluator"])

    def is_large_input(self, input_mb: float | None) -> bool:
        return input_mb is not None and self.large_input_mb is not None and input_mb >= self.large_input_mb

    def stage_beam_args_for(self, input_mb: float | None = None) -> dict[str, list[str]]:
        """Each Beam stage's args after ``beam_args`` on input logs of ``input_mb`` MB (``None``: unknown)."""
        extra = self.large_input_beam_args if self.is_large_input(input_mb) else []
        args = {s: [*(extra if s in self.large_input_stages else []), *self.stage_beam_args.get(s, [])]
                for s in BEAM_STAGES}
        return {s: a for s, a in args.items() if a}

    def beam_args_of(self, stage: str, input_mb: float | None = None) -> list[str]:
        """All Beam args ``stage`` (one of ``BEAM_STAGES``) runs with: ``beam_args``, then its own (the later wins)."""
        return [*self.beam_args, *self.stage_beam_args_for(input_mb).get(stage, [])]

    @field_validator("stage_beam_args", "large_input_stages")
    @classmethod
    def _known_stages(cls, v):
        unknown = sorted(set(v) - set(BEAM_STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}: the Beam stages are {list(BEAM_STAGES)}")
        return v

    @field_validator("splits")
    @classmethod
    def _three_splits(cls, v):
        if set(v) != {"train", "valid", "eval"} or any(n < 1 for n in v.values()):
            raise ValueError("must give positive hash buckets for exactly train, valid and eval")
        return v


class MaskRefreshConfig(_Strict):
    """When ``ncs daily`` re-runs the mask search instead of reusing the last ``TaskMasks``."""

    every_days: Optional[int] = Field(default=7, ge=1)  # None: never on age alone
    max_vocab_growth: float = Field(default=0.2, ge=0)  # relative growth of any vocabulary since the masks
    max_drift: float = Field(default=0.1, gt=0, le=1)  # TFDV L-infinity / Jensen-Shannon vs the masks' span
    drift_features: Optional[list[str]] = None  # columns checked for drift; None: every categorical feature
    metric_drop_days: int = Field(default=3, ge=1)  # refresh after this many consecutive days ...
    max_metric_drop: float = Field(default=0.01, ge=0)  # ... worse than the masks' day by more than this (relative)
    on_incompatible: Literal["refresh", "error"] = "refresh"  # masks that do not fit the network


class DailyConfig(_Strict):
    """Daily incremental retraining (``ncs daily``).

    Each day's folder is one ExampleGen span (``input_pattern`` with ``{YYYY}{MM}{DD}``); the
    trainer sees the last ``window_days`` validated spans, warm-starts from the latest blessed
    model and trains ``epochs`` epochs; the masks are reused until ``refresh`` says otherwise.
    """

    input_pattern: Optional[str] = None  # default: pipeline.input_pattern with its leading "*/" -> "{YYYY}{MM}{DD}/"
    window_days: int = Field(default=3, ge=1)
    epochs: int = Field(default=1, ge=1)
    refresh: MaskRefreshConfig = Field(default_factory=MaskRefreshConfig)

    @field_validator("input_pattern")
    @classmethod
    def _has_date(cls, v):
        if v is not None and "{YYYY}{MM}{DD}" not in v:
            raise ValueError("must contain {YYYY}{MM}{DD} (one day folder = one span)")
        return v


class ProjectConfig(_Strict):
    dataset: DatasetConfig
    features: list[Feature] = Field(min_length=1)
    tasks: list[TaskConfig] = Field(min_length=1)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    sparse: SparseSharingConfig = Field(default_factory=SparseSharingConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    ranking: Optional[RankingConfig] = None
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    daily: DailyConfig = Field(default_factory=DailyConfig)

    def daily_input_pattern(self) -> str:
        """The per-day span pattern of ``ncs daily``."""
        if self.daily.input_pattern:
            return self.daily.input_pattern
        p = self.pipeline.input_pattern
        if "{YYYY}{MM}{DD}" in p:
            return p
        if p.startswith("*/"):
            return "{YYYY}{MM}{DD}/" + p[2:]
        raise ValueError(f"daily.input_pattern: cannot derive a per-day pattern from pipeline.input_pattern {p!r}; set it")

    @model_validator(mode="after")
    def _cross_references(self):
        cols = set(self.dataset.columns)
        names = [f.name for f in self.features]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"features: duplicate feature name(s) {sorted(dup)}")
        by_name = {f.name: f for f in self.features}
        for i, f in enumerate(self.features):
            if f.source not in cols:
                raise ValueError(f"features.{i}.column: column {f.source!r} is not in dataset.columns")
            shared = getattr(f, "shared_embedding", None)
            if shared is not None:
                other = by_name.get(shared)
                if other is None:
                    raise ValueError(f"features.{i}.shared_embedding: unknown feature {shared!r}")
                if other.type == "numeric" or getattr(other, "shared_embedding", None):
                    raise ValueError(
                        f"features.{i}.shared_embedding: {shared!r} must be a categorical feature with its own table"
                    )
        tnames = [t.name for t in self.tasks]
        if len(set(tnames)) != len(tnames):
            raise ValueError(f"tasks: duplicate task names {tnames}")
        for i, t in enumerate(self.tasks):
            for c in t.label_columns:
                if c not in cols:
                    raise ValueError(f"tasks.{i}.label: column {c!r} is not in dataset.columns")
            if t.where_clause and t.where_clause[0] not in cols:
                raise ValueError(f"tasks.{i}.where: column {t.where_clause[0]!r} is not in dataset.columns")
        for key in ("group_key", "duration_column"):
            v = getattr(self.dataset, key)
            if v is not None and v not in cols:
                raise ValueError(f"dataset.{key}: column {v!r} is not in dataset.columns")
        for task, col in self.dataset.truth.items():
            if task not in tnames:
                raise ValueError(f"dataset.truth.{task}: unknown task (tasks are {tnames})")
        gc = self.tuning.gradient_conflict
        if gc.enabled:
            if gc.task not in tnames:
                raise ValueError(f"tuning.gradient_conflict.task: unknown task {gc.task!r}")
            for key in ("watch_column", "duration_column"):
                if getattr(gc, key) not in cols:
                    raise ValueError(f"tuning.gradient_conflict.{key}: column {getattr(gc, key)!r} is not in dataset.columns")
        if self.ranking is not None:
            for key in ("request_key", "length_column", "outcome_column"):
                if getattr(self.ranking, key) not in cols:
                    raise ValueError(f"ranking.{key}: column {getattr(self.ranking, key)!r} is not in dataset.columns")
            for key in ("ctr_task", "cvr_task"):
                if getattr(self.ranking, key) not in tnames:
                    raise ValueError(f"ranking.{key}: unknown task {getattr(self.ranking, key)!r}")
        for task in self.tuning.dynamic_loss_gamma:
            if task not in tnames:
                raise ValueError(f"tuning.dynamic_loss_gamma.{task}: unknown task (tasks are {tnames})")
        for task in self.pipeline.thresholds:
            if task not in tnames:
                raise ValueError(f"pipeline.thresholds.{task}: unknown task (tasks are {tnames})")
        sc = self.dataset.split
        if sc.by == "hash" and sc.hash_key is None:
            raise ValueError("dataset.split.hash_key: missing; it must name a column when split.by is 'hash'")
        if sc.hash_key is not None and sc.hash_key not in cols:
            raise ValueError(f"dataset.split.hash_key: column {sc.hash_key!r} is not in dataset.columns")
        if sc.valid_fraction + sc.test_fraction >= 1:
            raise ValueError(
                f"dataset.split: valid_fraction + test_fraction = {sc.valid_fraction + sc.test_fraction:g} "
                "leaves no rows for training (must be < 1)"
            )
        return self

    # ---- convenience
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> TaskConfig:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"unknown task {name!r}; tasks are {self.task_names}")

    def feature(self, name: str):
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"unknown feature {name!r}")

    @property
    def required_columns(self) -> list[str]:
        """Columns the pipeline reads (features, labels, sample-space filters, group key)."""
        need: list[str] = []
        for f in self.features:
            need.append(f.source)
        for t in self.tasks:
            need += t.label_columns
            if t.where_clause:
                need.append(t.where_clause[0])
        for c in (self.dataset.group_key, self.dataset.duration_column):
            if c:
                need.append(c)
        gc = self.tuning.gradient_conflict
        if gc.enabled:
            need += [gc.watch_column, gc.duration_column]
        if self.ranking is not None:
            need += [self.ranking.request_key, self.ranking.length_column, self.ranking.outcome_column]
        return list(dict.fromkeys(need))

    def for_variant(self, spec: str) -> tuple[str, "ProjectConfig"]:
        """``(model variant, config)`` of a compared variant spec ``base[+switch...]``.

        ``connection+balance+gc`` is ``connection`` with the switches of ``tuning.switches`` on
        (see :class:`SwitchValues`). Raises ``ValueError`` naming an unknown base or switch.
        """
        base, *switches = [p.strip() for p in spec.split("+")]
        if base not in VARIANTS and base not in CONTROL_VARIANTS:
            raise ValueError(f"unknown variant {base!r} in {spec!r}; choose from {list(VARIANTS + CONTROL_VARIANTS)}")
        bad = [s for s in switches if s not in SWITCHES]
        if bad:
            raise ValueError(f"variant {spec!r}: unknown switch(es) {bad}; choose from {list(SWITCHES)}")
        on = set(switches)
        masked_bases = ("masked",) + SPARSE_VARIANTS + CONTROL_VARIANTS
        if on & {"mv", "big"} and base not in masked_bases:
            raise ValueError(f"variant {spec!r}: switches mv and big apply to the masked network ({list(masked_bases)}), "
                             f"not to {base!r}")
        if "tuning" in on:
            on |= {"balance", "gc"}
        sw = self.tuning.switches
        data = self.model_dump()
        if "balance" in on:
            unknown = [t for t in sw.balance if t not in self.task_names]
            if unknown:
                raise ValueError(f"tuning.switches.balance: unknown task(s) {unknown} (tasks are {self.task_names})")
            for t in data["tasks"]:
                t["weight"] = sw.balance.get(t["name"], t["weight"])
        if "gc" in on:
            data["tuning"]["gradient_conflict"]["enabled"] = True
        if "mv" in on:
            data["tuning"]["multi_view_dim"] = sw.multi_view_dim
        if "big" in on:
            data["tuning"]["width_multiplier"] = sw.width_multiplier
        return base, ProjectConfig.model_validate(data)

    def with_overrides(self, **sections) -> "ProjectConfig":
        """Return a copy with some fields replaced, re-validated. E.g. ``model={"variant": "mmoe"}``."""
        data = self.model_dump()
        for section, values in sections.items():
            if isinstance(values, dict):
                data[section] = {**data[section], **values}
            else:
                data[section] = values
        return ProjectConfig.model_validate(data)


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc or '<root>'}: {msg}")
    return "\n".join(lines)


# pydantic inserts the discriminator / union member names into error locations; drop them.
_UNION_TAGS = {"categorical", "multi_categorical", "numeric", "ColumnLabel", "RatioLabel"}


def parse_config(data: dict, source: str = "<dict>") -> ProjectConfig:
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def read_config_data(path: str | Path) -> dict:
    """The YAML mapping of a config file, unvalidated.

    Raises :class:`ConfigError` naming the file (and the line and column where known) for a
    missing or unreadable file, text that is not UTF-8, invalid YAML or a top level that is
    not a mapping.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        col = len(raw[raw.rfind(b"\n", 0, err.start) + 1 : err.start].decode("utf-8", "replace")) + 1
        raise ConfigError(
            f"invalid config {path}: line {line}, column {col}: not UTF-8 text (byte 0x{raw[err.start]:02x}); "
            "save the file as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML in {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {path}: top level must be a mapping")
    return data


def load_config(path: str | Path) -> ProjectConfig:
    """Load and validate a YAML config; raises :class:`ConfigError` naming the bad key."""
    return parse_config(read_config_data(path), str(Path(path)))
