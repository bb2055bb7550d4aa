"""The pipeline's Transform, run in-process for ``ncs compare``: same ``preprocessing_fn``, same files.

``ncs compare`` splits its logs itself (day folders or a hash), so it cannot use the TFX
Transform component, but it must train on exactly what production trains on. This module
runs the one ``preprocessing_fn`` (``components.transform``) with ``tft_beam`` on the
DirectRunner: analyze on the train split, transform train, valid and test, and write

    <out>/<key>/transform/               the transform graph (``tft.TFTransformOutput``)
    <out>/<key>/Split-<split>/*.gz       transformed tf.Examples (GZIP TFRecords)
    <out>/<key>/complete.json            written last; a folder without it is never reused

the same layout as a TFX Transform artifact, so ``components.data.stream_split`` reads it.
``key`` hashes everything the output depends on (the Transform view of the config, the
rows and columns of every split, and a format version): a rerun on the same data reuses it.
One column is added to the transform output: ``row__``, each row's index in its split's
frame (a pass-through), so predictions can be joined back to the raw rows (groups, ranking).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from components.transform import FORCE_TF_COMPAT_V1, preprocessing_fn, transform_config_json
from models.config import ProjectConfig
from models.data import ROW_ID

FORMAT_VERSION = "4"
SPLITS = ("train", "valid", "test")


def transform_columns(config: ProjectConfig, frame: pd.DataFrame) -> list[str]:
    """Raw columns the ``preprocessing_fn`` reads from a frame (required + slice columns present)."""
    cols = list(config.required_columns)
    cols += [c for c in config.pipeline.slices if c in frame.columns and c not in cols]
    return cols


def cache_key(config: ProjectConfig, frames: dict[str, pd.DataFrame]) -> str:
    """Hash of the Transform config and of every split's rows (values, columns, dtypes)."""
    h = hashlib.sha256()
    h.update(FORMAT_VERSION.encode())
    h.update(f"tf_compat_v1={FORCE_TF_COMPAT_V1}".encode())  # the transform graph's format
    h.update(transform_config_json(config).encode())
    for name in SPLITS:
        f = frames[name][transform_columns(config, frames[name])]
        h.update(name.encode())
        h.update(json.dumps([[c, str(t)] for c, t in f.dtypes.items()]).encode())
        h.update(pd.util.hash_pandas_object(f, index=True).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _raw_schema(frame: pd.DataFrame, columns: list[str]):
    """Raw feature spec: one value per row and column (as the pipeline's schema has it), numeric
    columns float32, the rest strings, the row index int64."""
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import schema_utils

    spec = {c: tf.io.FixedLenFeature([], tf.float32 if _is_numeric(frame[c]) else tf.string) for c in columns}
    spec[ROW_ID] = tf.io.FixedLenFeature([], tf.int64)
    return schema_utils.schema_from_feature_spec(spec)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series)


def _write_raw_examples(frame: pd.DataFrame, columns: list[str], schema, path: Path, chunk: int = 20000) -> None:
    """The split's raw columns (and ``row__``) as tf.Examples, encoded column-wise (no per-row Python)."""
    import pyarrow as pa
    import tensorflow as tf
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    encoder = RecordBatchToExamplesEncoder(schema)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for lo in range(0, len(frame), chunk):
            part = frame.iloc[lo : lo + chunk]
            n = len(part)
            offsets = pa.array(np.arange(n + 1, dtype=np.int32))
            arrays = [pa.ListArray.from_arrays(offsets, pa.array(np.arange(lo, lo + n, dtype=np.int64)))]
            for c in columns:
                if _is_numeric(frame[c]):
                    values = pa.array(part[c].to_numpy(dtype=np.float32))
                else:
                    values = pa.array(part[c].astype(str).tolist(), type=pa.binary())
                arrays.append(pa.ListArray.from_arrays(offsets, values))
            batch = pa.RecordBatch.from_arrays(arrays, [ROW_ID] + columns)
            for example in encoder.encode(batch):
                writer.write(example)


def run_local_transform(config: ProjectConfig, frames: dict[str, pd.DataFrame], out_dir: str | Path,
                        log: Callable[[str], None] = print) -> Path:
    """Transform ``frames`` (``train``/``valid``/``test``) into ``out_dir/<key>``, or reuse it; returns that folder."""
    out_dir = Path(out_dir)
    key = cache_key(config, frames)
    target = out_dir / key
    if (target / "complete.json").exists():
        log(f"transform: reusing {target}")
        return target
    if target.exists():
        shutil.rmtree(target)  # a killed run's leftovers: never trusted
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=out_dir))
    try:
        _transform(config, frames, staging)
        rows = {name: len(frames[name]) for name in SPLITS}
        (staging / "complete.json").write_text(json.dumps({"key": key, "rows": rows}))
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log(f"transform: wrote {target}")
    return target


def _transform(config: ProjectConfig, frames: dict[str, pd.DataFrame], out: Path) -> None:
    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
    from tfx_bsl.public import tfxio

    from pipeline import beam_signatures

    beam_signatures.install()
    columns = transform_columns(config, frames["train"])
    schema = _raw_schema(frames["train"], columns)
    raw_dir = out / "raw"
    raw_dir.mkdir()
    for name in SPLITS:
        _write_raw_examples(frames[name], columns, schema, raw_dir / f"{name}.tfrecord")
    custom_config = {"config_json": transform_config_json(config)}

    def fn(inputs):
        outputs = preprocessing_fn(inputs, custom_config)
        outputs[ROW_ID] = tf.reshape(inputs[ROW_ID], [-1])  # pass-through
        return outputs

    def source(name):
        return tfxio.TFExampleRecord(str(raw_dir / f"{name}.tfrecord"), schema=schema,
                                     telemetry_descriptors=["ncs", "compare"])

    class Encode(beam.DoFn):
        def setup(self):
            self.encoder = RecordBatchToExamplesEncoder()

        def process(self, element):
            yield from self.encoder.encode(element[0])

    def write(pcoll, name):
        return (
            pcoll
            | f"Encode{name}" >> beam.ParDo(Encode())
            | f"Write{name}" >> beam.io.WriteToTFRecord(str(out / f"Split-{name}" / "transformed_examples"),
                                                          file_name_suffix=".gz",
                                                          compression_type=beam.io.filesystem.CompressionTypes.GZIP)
        )

    options = PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    with beam.Pipeline(options=options) as p, tft_beam.Context(temp_dir=str(out / "tmp"), force_tf_compat_v1=FORCE_TF_COMPAT_V1):
        train_io = source("train")
        raw_train = p | "ReadTrain" >> train_io.BeamSource()
        (transformed, _), transform_fn = (raw_train, train_io.TensorAdapterConfig()) | tft_beam.AnalyzeAndTransformDataset(
            fn, output_record_batches=True
        )
        write(transformed, "train")
        for name in ("valid", "test"):
            io = source(name)
            raw = p | f"Read{name}" >> io.BeamSource()
            (out_data, _) = ((raw, io.TensorAdapterConfig()), transform_fn) | f"Transform{name}" >> tft_beam.TransformDataset(
                output_record_batches=True
            )
            write(out_data, name)
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(str(out / "transform"))
    # the raw schema beside the graph, as the Transform component writes it (TFTransformOutput.raw_metadata)
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(schema), str(out / "transform" / "metadata"))
    shutil.rmtree(raw_dir)
    shutil.rmtree(out / "tmp", ignore_errors=True)
