"""StatisticsGen executor: TFX's own, reading its examples a batch of records per Beam element.

The statistics are TFDV's, computed by TFX's executor unchanged; only the reader differs
(``components.block_tfxio``: the same RecordBatches without Beam's per-record read).
"""

from __future__ import annotations

from typing import Any, Dict, List

from tfx import types
from tfx.components.statistics_gen import executor as statistics_gen_executor

from components.block_tfxio import block_reading


class Executor(statistics_gen_executor.Executor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        with block_reading():
            super().Do(input_dict, output_dict, exec_properties)
