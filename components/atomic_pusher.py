"""Pusher executor whose filesystem push is atomic: a version folder appears complete or not at all.

Why: the stock ``tfx.components.Pusher`` with ``PushDestination.Filesystem`` copies the model
into ``<base>/<version>/`` file by file (``io_utils.copy_dir``, then ``saved_model.pb`` last).
TF Serving's file-system source polls ``<base>`` and loads every subdirectory whose name is an
integer, so it can see a version that is still being written, and a run killed mid-push leaves
a half-written numeric folder behind for ever (the stock executor then *skips* a re-push of the
same version because the folder "already exists").

This executor keeps the stock logic (blessing checks, model path, versioning, the archive copy
into the ``PushedModel`` artifact and its custom properties ``pushed`` / ``pushed_destination``
/ ``pushed_version``) and only changes where the bytes go:

1. stale ``<base>/.staging-*`` (and ``.replaced-*``) folders left by killed pushes are removed;
2. the model is copied into a hidden, non-numeric ``<base>/.staging-<version>-<random>/`` on
   the same filesystem (``saved_model.pb`` last, as the stock executor does), then fsync'ed;
3. one ``os.rename(staging, <base>/<version>)`` publishes it; ``rename`` within one local
   filesystem is atomic, so a poller sees either no ``<version>`` folder or the complete one.

If ``<base>/<version>`` already exists (re-run with the same version): when it is complete
(has ``saved_model.pb``) it is kept and reported as pushed, like the stock executor does;
otherwise it is renamed away to a hidden ``.replaced-*`` folder and the fresh copy renamed into
place (two renames; there is never a partially written numeric folder that was not already
there, and the incomplete one only ever disappears or becomes complete).

Non-local base directories (``gs://``, ``s3://``, ``hdfs://`` ...) have no atomic directory
rename, so for them the parent executor runs unchanged and a warning says the push is not
atomic there.

Assumes one pusher at a time per base directory (the daily run holds a per-day lock): step 1
would delete the staging folder of a concurrent push.

Wiring (keeps the component type and node id ``Pusher``, so MLMD queries and tests that look
for ``Pusher`` / ``PushedModel`` keep working)::

    from tfx.dsl.components.base import executor_spec
    from components import atomic_pusher

    pusher = tfx.components.Pusher(
        model=..., model_blessing=..., infra_blessing=...,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)),
        custom_executor_spec=executor_spec.ExecutorClassSpec(atomic_pusher.Executor),
    )

or simply ``atomic_pusher.atomic_pusher(model=..., ..., push_destination=...)``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

STAGING_PREFIX = ".staging-"
REPLACED_PREFIX = ".replaced-"
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_Versioning = pusher_pb2.Versioning


def is_local_path(path: str) -> bool:
    """True for plain paths (``os.rename`` works on them); False for ``scheme://`` URIs."""
    return "://" not in path


def is_complete_version(path: str) -> bool:
    """A pushed version folder counts as complete when its SavedModel proto is there (written last)."""
    return any(os.path.isfile(os.path.join(path, f)) for f in _SAVED_MODEL_FILES)


def _fsync_tree(root: str) -> None:
    """Flush every file and directory under ``root`` so the rename publishes durable data."""
    for dir_name, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dir_name, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dir_name)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse_push_destination(value: Any) -> pusher_pb2.PushDestination:
    if isinstance(value, pusher_pb2.PushDestination):
        return value
    dest = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(value, dest)
    return dest


class Executor(pusher_executor.Executor):
    """Stock Pusher executor with an atomic (stage + ``os.rename``) local filesystem push.

    See the module docstring for why; the blessing checks, model path resolution, versioning
    and the ``PushedModel`` custom properties are the parent's.
    """

    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        raw_dest = exec_properties.get(standard_component_specs.PUSH_DESTINATION_KEY)
        if not raw_dest:
            return super().Do(input_dict, output_dict, exec_properties)
        push_destination = _parse_push_destination(raw_dest)
        if push_destination.WhichOneof("destination") != "filesystem":
            return super().Do(input_dict, output_dict, exec_properties)
        base = push_destination.filesystem.base_directory
        if not is_local_path(base):
            logging.warning(
                "Push destination %s is not a local filesystem: no atomic directory rename there, "
                "falling back to the stock (non-atomic, file-by-file) Pusher copy.", base)
            return super().Do(input_dict, output_dict, exec_properties)

        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        model_version = self._model_version(push_destination.filesystem)
        logging.info("Model version: %s", model_version)
        serving_path = os.path.join(base, model_version)
        self._push_atomically(model_path, base, model_version)

        # As the parent: copy the model to the pushing uri for archiving, then mark pushed.
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=model_version)
        logging.info("Model pushed to %s.", model_push.uri)

    @staticmethod
    def _model_version(fs_config: pusher_pb2.PushDestination.Filesystem) -> str:
        """Same versioning as the parent: AUTO means UNIX_TIMESTAMP; nothing else is supported."""
        versioning = fs_config.versioning
        if versioning == _Versioning.AUTO:
            versioning = _Versioning.UNIX_TIMESTAMP
        if versioning == _Versioning.UNIX_TIMESTAMP:
            return str(int(time.time()))
        raise NotImplementedError(f"Invalid Versioning {fs_config.versioning}")

    @staticmethod
    def _clean_stale(base: str) -> None:
        """Remove hidden staging / replaced folders left behind by killed pushes."""
        for name in os.listdir(base):
            if name.startswith((STAGING_PREFIX, REPLACED_PREFIX)):
                path = os.path.join(base, name)
                logging.info("Removing leftover folder of an interrupted push: %s", path)
                shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def _copy_model(model_path: str, dst: str) -> None:
        # Same order as the parent: everything but saved_model.pb, then saved_model.pb last.
        io_utils.copy_dir(model_path, dst, deny_regex_patterns=[r"saved_model\.pb"])
        saved_model_path = os.path.join(model_path, "saved_model.pb")
        if os.path.exists(saved_model_path):
            io_utils.copy_file(saved_model_path, os.path.join(dst, "saved_model.pb"))

    def _push_atomically(self, model_path: str, base: str, model_version: str) -> None:
        serving_path = os.path.join(base, model_version)
        os.makedirs(base, exist_ok=True)
        self._clean_stale(base)
        if is_complete_version(serving_path):
            logging.info("Destination directory %s already exists and is complete, skipping current push.",
                         serving_path)
            return

        staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{model_version}-", dir=base)
        try:
            self._copy_model(model_path, staging)
            if not is_complete_version(staging):
                raise RuntimeError(f"Model at {model_path} has no saved_model.pb; refusing to push it.")
            _fsync_tree(staging)
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the serving process may run as another user
            if os.path.lexists(serving_path):
                # An incomplete folder from an interrupted stock push: move it out of the numeric
                # namespace in one rename, then publish the fresh copy in another.
                replaced = os.path.join(base, f"{REPLACED_PREFIX}{model_version}-{uuid.uuid4().hex[:8]}")
                logging.warning("Destination %s exists but is incomplete; replacing it.", serving_path)
                os.rename(serving_path, replaced)
            else:
                replaced = None
            try:
                os.rename(staging, serving_path)
            except OSError:
                if is_complete_version(serving_path):  # a concurrent push of the same version won
                    logging.info("Destination %s appeared complete during the push; keeping it.", serving_path)
                else:
                    raise
            _fsync_dir(base)
            if replaced is not None:
                shutil.rmtree(replaced, ignore_errors=True)
            logging.info("Model written atomically to serving path %s.", serving_path)
        finally:
            if os.path.exists(staging):
                shutil.rmtree(staging, ignore_errors=True)


def atomic_pusher(**pusher_kwargs):
    """``tfx.components.Pusher(**pusher_kwargs)`` running :class:`Executor` (node id stays ``Pusher``).

    TFX logs a one-line deprecation warning for ``custom_executor_spec``; the argument is still
    supported in TFX 1.16 and keeps the component type, unlike subclassing the component.
    """
    from tfx.components import Pusher  # the class tfx.v1.components.Pusher re-exports
    from tfx.dsl.components.base import executor_spec

    if "custom_executor_spec" in pusher_kwargs:
        raise TypeError("atomic_pusher sets custom_executor_spec itself")
    return Pusher(
        **pusher_kwargs, custom_executor_spec=executor_spec.ExecutorClassSpec(Executor))
