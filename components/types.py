"""Custom TFX artifact types.

``TYPE_NAME`` is ``<importable module>.<Class>`` so Kubeflow Pipelines V2 accepts it
(``^[a-z][a-z0-9-_]{2,20}\\.[A-Z][a-zA-Z0-9-_]{2,49}$``); ``components`` re-exports the class.
"""

from tfx.types.artifact import Artifact


class TaskMasks(Artifact):
    """Per-task masks of the sparse-sharing network and the rewind point θ.

    Files: ``masks.npz`` (``models.masks.TaskMasks``), ``theta.npz`` (the warm-up weights
    every mask is relative to), ``mask_analytics.json``, ``mask_sharing.png``,
    ``pruning_curve.png``. Summary numbers (densities, chosen rounds, search seconds)
    are custom properties (Kubeflow V2 accepts custom types only without declared properties).
    """

    TYPE_NAME = "components.TaskMasks"


class ValidatedSpan(Artifact):
    """A marker that one ExampleGen output passed validation (written by ``ValidationGate``).

    Custom properties: ``span`` (ExampleGen span number), ``examples_id`` (the MLMD id of the
    validated Examples artifact) and ``statistics_uri`` (its TFDV statistics). The daily span-window resolver only trains on spans
    that have one, so a rejected (corrupted) day never enters a later day's window.
    """

    TYPE_NAME = "components.ValidatedSpan"
