"""Custom TFX components: thin adapters from TFX artifacts to the ``models`` library.

The component definitions (``components.definitions``) and artifact types import TFX; the
bodies they call (``mask_search``, ``masked_trainer``, ``smoke_check``, ``data``,
``transform``) do not, so a training worker or the serving check's fresh process starts
without TFX's import cost. ``models`` never imports TFX.
"""

_ARTIFACT_TYPES = ("TaskMasks", "ValidatedSpan")


def __getattr__(name):
    # Kubeflow V2 resolves artifact types as "components.<Type>"; imported on first use only
    if name in _ARTIFACT_TYPES:
        from components import types

        return getattr(types, name)
    raise AttributeError(f"module 'components' has no attribute {name!r}")
