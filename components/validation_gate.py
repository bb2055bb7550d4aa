"""ValidationGate component: stop the run before Transform/training when ExampleValidator found anomalies.

ExampleValidator only records anomalies (``SchemaDiff.pb`` per split); a production run must
not train on a day whose columns, types, domains or ranges broke the schema. The gate reads
every split's anomalies and fails the component — the local runner then stops the pipeline,
so nothing downstream (training, evaluation, push) runs and the served model is untouched.
A clean day gets a ``ValidatedSpan`` marker naming the validated Examples artifact (the daily
window resolver trains only on marked spans).
"""


import glob
import os

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts  # not tfx.v1: see pipeline/pipeline.py

from components.types import ValidatedSpan


class DataValidationError(RuntimeError):
    """Anomalies were found; the message lists them and names the report file."""


def collect_anomalies(anomalies_uri: str) -> list[tuple[str, str, str]]:
    """``[(report path, feature, description)]`` for every anomaly of every split."""
    from tensorflow_data_validation.utils.anomalies_util import load_anomalies_binary

    found = []
    for path in sorted(glob.glob(os.path.join(anomalies_uri, "Split-*", "SchemaDiff.pb"))):
        anomalies = load_anomalies_binary(path)
        for feature, info in anomalies.anomaly_info.items():
            reasons = "; ".join(r.description or r.short_description for r in info.reason) or info.description
            found.append((path, feature, reasons))
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            found.append((path, "<dataset>", "; ".join(r.description for r in info.reason)))
    return found


@component
def ValidationGate(
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    examples: InputArtifact[standard_artifacts.Examples],
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    validated: OutputArtifact[ValidatedSpan],
):
    found = collect_anomalies(anomalies.uri)
    if found:
        lines = [f"  {os.path.basename(os.path.dirname(path))}: {feature}: {why}" for path, feature, why in found]
        reports = sorted({p for p, _, _ in found})
        raise DataValidationError(
            "ExampleValidator found anomalies; stopping before training (nothing is pushed):\n"
            + "\n".join(lines)
            + "\nanomaly report(s): "
            + ", ".join(reports)
        )
    validated.set_int_custom_property("examples_id", examples.id)
    # ExampleGen stores the span as a custom property (a string in old TFX versions)
    span = examples.get_string_custom_property("span") or examples.get_int_custom_property("span")
    validated.set_int_custom_property("span", int(span or 0))
    validated.set_string_custom_property("statistics_uri", statistics.uri)  # the day's drift reference
