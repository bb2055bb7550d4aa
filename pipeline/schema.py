"""Curated TFDV schema: inferred from known-good logs, then tightened from the config.

The pipeline validates every ingested span against this schema (ImportSchemaGen ->
ExampleValidator), so a day with a missing column, a wrong type, an out-of-range label or a
categorical distribution that moved away from the known values stops the run before training.
``ncs schema`` writes it; review it and commit it next to the config (``pipeline.schema_file``).

Tightening rules (all derived from the config, nothing data-set specific):

- every column the pipeline reads must be present in every row (``presence.min_fraction = 1``);
- a binary task's label column has the domain {0, 1};
- a ratio label's numerator is ``>= 0`` and its denominator ``>= 1`` (``duration`` of 0 or a
  negative watch time is an anomaly, not a silently corrupted label);
- inferred string domains (small categorical columns) allow at most 1% of unseen values
  (``distribution_constraints.min_domain_mass = 0.99``): a few new categories go to OOV buckets,
  a new value distribution stops the run;
- columns the config does not list (e.g. the generator's ``true_ctr``) are ``DEPRECATED``:
  neither required nor validated.
"""

from __future__ import annotations

from pathlib import Path

from models.config import ColumnLabel, ProjectConfig

MIN_DOMAIN_MASS = 0.99


def curate_schema(schema, config: ProjectConfig):
    """Tighten an inferred ``tensorflow_metadata`` Schema in place (see module doc); returns it."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    required = set(config.required_columns)
    listed = set(config.dataset.columns)
    binary_labels = {t.label.column for t in config.tasks if isinstance(t.label, ColumnLabel) and t.type == "binary"}
    numerators = {t.label.ratio[0] for t in config.tasks if not isinstance(t.label, ColumnLabel)}
    denominators = {t.label.ratio[1] for t in config.tasks if not isinstance(t.label, ColumnLabel)}
    present = {f.name for f in schema.feature}
    missing = sorted(required - present)
    if missing:
        raise ValueError(f"the statistics have no column(s) {missing} that the config needs")
    for f in schema.feature:
        if f.name not in listed:
            f.lifecycle_stage = schema_pb2.DEPRECATED
            continue
        if f.name in required:
            f.presence.min_fraction = 1.0
            f.presence.min_count = 1
        if f.name in binary_labels:
            if f.type != schema_pb2.INT:
                raise ValueError(f"binary label column {f.name!r} is not integer in the data")
            f.int_domain.min, f.int_domain.max = 0, 1
        for cols, lo in ((numerators, 0), (denominators, 1)):
            if f.name in cols:
                if f.type == schema_pb2.INT:
                    f.int_domain.min = lo
                elif f.type == schema_pb2.FLOAT:
                    f.float_domain.min = float(lo)
        if f.HasField("domain") or f.HasField("string_domain"):
            f.distribution_constraints.min_domain_mass = MIN_DOMAIN_MASS
    return schema


def infer_curated_schema(config: ProjectConfig, data_pattern: str, out_file: str | Path) -> Path:
    """Compute statistics of ``data_pattern`` (CSV) with TFDV, infer, curate, write pbtxt."""
    import tensorflow_data_validation as tfdv

    stats = tfdv.generate_statistics_from_csv(data_location=data_pattern)
    schema = tfdv.infer_schema(stats, infer_feature_shape=True)
    curate_schema(schema, config)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, str(out))
    return out
