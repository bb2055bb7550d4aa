"""Benchmark: TFX's stock CsvExampleGen executor vs ours (components/csv_example_gen.py) on the same CSV logs.

Not a test; run by hand, numbers go to docs/benchmarks.md. Both executors run in this process, one after the
other, with the same Beam args and the pipeline's split config; the script prints each one's wall time, the
ratio, and whether both wrote the same examples into the same splits.

    python benchmarks/example_gen.py --data .ncs/data/video [--beam-arg=--direct_num_workers=1] [--only-ours]
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.beam_executor import run_beam_executor, shown  # noqa: E402 - after the path


def run_executor(executor_cls, data: str, pattern: str, out: Path, splits: dict, beam_args: list[str]) -> float:
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    split_config = example_gen_pb2.SplitConfig(
        splits=[example_gen_pb2.SplitConfig.Split(name=n, hash_buckets=b) for n, b in splits.items()]
    )
    props = {
        "input_base": data,
        "input_config": proto_utils.proto_to_json(
            example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="logs", pattern=pattern)])
        ),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output(split_config=split_config)),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    }
    return run_beam_executor(executor_cls, {}, {"examples": [examples]}, props, beam_args, Path(str(out) + "_work"))


def split_digests(out: Path, names) -> dict:
    """Split -> (rows, digest of the sorted deterministic serializations)."""
    import hashlib

    import tensorflow as tf

    digests = {}
    for name in names:
        files = sorted(glob.glob(str(out / f"Split-{name}" / "*")))
        records = sorted(
            tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
        )
        digests[name] = (len(records), hashlib.sha256(b"".join(records)).hexdigest()[:16])
    return digests


@click.command()
@click.option("--data", default=str(REPO / ".ncs" / "data" / "video"), show_default=True, type=click.Path(exists=True))
@click.option("--pattern", default="*/*.csv", show_default=True, help="Split pattern under --data.")
@click.option("--beam-arg", "beam_args", multiple=True, metavar="ARG",
              help="Beam arg for both executors (repeatable); default: the project's pipeline.beam_args + stage_beam_args.ExampleGen.")
@click.option("--only-ours", is_flag=True,
              help="Time our executor alone (the stock one takes ~0.5 ms a row): to compare two commits of ours.")
def main(data, pattern, beam_args, only_ours):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from tfx.components.example_gen.csv_example_gen import executor as stock

    from components import csv_example_gen
    from models.config import PipelineConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench_example_gen_"))
    args = list(beam_args) or PipelineConfig().beam_args_of("ExampleGen")
    splits = {"train": 8, "valid": 1, "eval": 1}
    try:
        seconds, digests = {}, {}
        executors = (("stock CsvExampleGen", stock.Executor), ("ours", csv_example_gen.Executor))
        for name, cls in executors[1:] if only_ours else executors:
            out = tmp / name.replace(" ", "_")
            seconds[name] = run_executor(cls, str(Path(data).resolve()), pattern, out, splits, list(args))
            digests[name] = split_digests(out, splits)
            print(f"{name}: {seconds[name]:.1f} s  {digests[name]}", flush=True)
        if only_ours:
            return
        same = digests["stock CsvExampleGen"] == digests["ours"]
        print(f"beam args {shown(args)}: stock / ours = {seconds['stock CsvExampleGen'] / seconds['ours']:.2f}x; "
              f"same examples in the same splits: {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
