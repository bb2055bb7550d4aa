"""Custom TFX components: thin adapters from TFX artifacts to the ``models`` library.

Importing this package imports TFX; ``models`` never does.
"""

from components.types import TaskMasks, ValidatedSpan  # noqa: F401  (Kubeflow V2 resolves "components.<Type>")
