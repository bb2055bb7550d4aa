"""Run one TFX Beam executor the way a local pipeline run does, and time it (shared by the stage benchmarks).

A local run (``pipeline.runner.run_local``) memoizes Beam's signature inspection, names the DirectRunner's
empty requirements file instead of TFX's sdist, and keeps the command line from TFX's absl flag parsing;
timing an executor any other way would time something the pipeline does not run.
"""

from __future__ import annotations

import time
from pathlib import Path


def shown(beam_args: list[str]) -> str:
    """The Beam args as given (without the requirements file the local run adds)."""
    return " ".join(a for a in beam_args if not a.startswith("--requirements_file"))


def run_beam_executor(executor_class, inputs: dict, outputs: dict, exec_properties: dict, beam_args: list[str],
                      work_dir: Path, unique_id: str = "1") -> float:
    """``executor_class(...).Do(inputs, outputs, exec_properties)`` under ``beam_args``; its wall seconds.

    ``work_dir`` (created if missing) holds the requirements file and the executor's tmp dir.
    """
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

    from pipeline import beam_signatures
    from pipeline.runner import local_beam_args, program_name_only_argv

    beam_signatures.install()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    args = local_beam_args(list(beam_args), work_dir)
    with program_name_only_argv():
        executor = executor_class(BaseBeamExecutor.Context(beam_pipeline_args=args, tmp_dir=str(work_dir / "tmp"),
                                                           unique_id=unique_id))
        t0 = time.perf_counter()
        executor.Do(inputs, outputs, exec_properties)
        return time.perf_counter() - t0
