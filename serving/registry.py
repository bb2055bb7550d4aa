"""Versions of one model under a TF Serving base path, loaded and swapped atomically.

``ModelRegistry.poll()`` looks for numeric version folders (``<base>/<version>/``, what
Pusher writes). A version is loaded only when it looks complete — ``saved_model.pb`` and
``variables/variables.index`` exist and the folder's file listing (names, sizes, mtimes)
did not change between two polls — so a half-copied version is never loaded. A version
that fails to load is logged and skipped (until its files change); the previous version
stays live. The served version is swapped by replacing one reference, so a request that
already took the old :class:`LoadedVersion` finishes on it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger("ncs.serving")


class ServingError(Exception):
    """An error returned to the client; ``code`` is a gRPC status name."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(msg: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", msg)


def not_found(msg: str) -> ServingError:
    return ServingError("NOT_FOUND", msg)


@dataclasses.dataclass
class LoadedVersion:
    version: int
    path: Path
    loaded: object  # the tf.saved_model.load result (kept alive: signatures reference it)
    signatures: dict
    signature_defs: dict  # name -> SignatureDef proto (for metadata)
    rules: dict = dataclasses.field(default_factory=dict)  # raw feature -> serving.validation.FeatureRule

    def input_specs(self, signature: str) -> dict:
        return dict(self.signatures[signature].structured_input_signature[1])

    def examples_input(self, signature: str) -> str | None:
        """The input name when ``signature`` takes one batch of serialized tf.Examples."""
        specs = self.input_specs(signature)
        if len(specs) == 1:
            (name, spec), = specs.items()
            if name == "examples" and spec.dtype.name == "string":
                return name
        return None

    def run(self, signature: str, inputs: dict, max_batch: int, at=None, root: str = "inputs") -> dict[str, np.ndarray]:
        """Validate ``inputs`` (name -> array) against the signature and the model's rules, then call it.

        ``at(name, i)`` names row ``i`` of input ``name`` in errors, ``root`` the request's inputs.
        """
        import tensorflow as tf

        from serving.validation import check_examples, check_rule, locate_bad_example, tf_error_summary

        at = at or (lambda name, i: f"{root}[\"{name}\"][{i}]")
        if signature not in self.signatures:
            raise invalid(f"signature_name: \"{signature}\" not found in signature def (have {sorted(self.signatures)})")
        specs = self.input_specs(signature)
        missing = sorted(set(specs) - set(inputs))
        if missing:
            raise invalid(f"{root}: missing input(s) {missing} for signature \"{signature}\" (expects {sorted(specs)})")
        extra = sorted(set(inputs) - set(specs))
        if extra:
            raise invalid(f"{root}: unknown input(s) {extra} for signature \"{signature}\" (expects {sorted(specs)})")
        tensors, batch, first = {}, None, None
        for name, spec in sorted(specs.items()):
            value = np.asarray(inputs[name], dtype=object) if isinstance(inputs[name], list) and spec.dtype == tf.string else inputs[name]
            try:
                t = tf.constant(value, dtype=spec.dtype)
            except (TypeError, ValueError, OverflowError) as err:
                raise invalid(f"{root}[\"{name}\"]: expects dtype {spec.dtype.name}: {str(err).splitlines()[0][:200]}") from None
            if not spec.shape.is_compatible_with(t.shape):
                raise invalid(f"{root}[\"{name}\"]: shape {t.shape.as_list()} is not compatible with {spec.shape.as_list()}")
            n = int(t.shape[0]) if t.shape.rank else 1
            if batch is not None and n != batch:
                raise invalid(f"{root}[\"{name}\"]: batch size {n} differs from {root}[\"{first}\"]'s {batch}")
            batch, first = n, name
            tensors[name] = t
        if batch is not None and batch > max_batch:
            raise invalid(f"{root}: batch of {batch} rows exceeds the limit of {max_batch} (--max-batch)")
        examples = self.examples_input(signature)
        if self.rules:
            if examples:
                check_examples(tensors[examples].numpy(), self.rules, lambda i: at(examples, i))
            for name, t in tensors.items():
                rule = self.rules.get(name)
                if rule is not None and t.shape.rank:
                    arr = t.numpy()
                    per = max(1, int(np.prod(arr.shape[1:])))
                    check_rule(rule, arr.reshape(-1), np.repeat(np.arange(arr.shape[0]), per), lambda i, n=name: at(n, i))
        try:
            out = self.signatures[signature](**tensors)
        except (tf.errors.InvalidArgumentError, UnicodeDecodeError) as err:
            where = root
            if examples:
                locate_bad_example(tensors[examples].numpy(), self.rules, lambda i: at(examples, i))
                where = f"{root}: input \"{examples}\""
            raise invalid(f"{where}: the model rejected the request: {tf_error_summary(err)}") from None
        return {k: v.numpy() for k, v in out.items()}


def _listing(path: Path) -> tuple:
    items = []
    for root, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            items.append((os.path.relpath(os.path.join(root, f), path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(items))


def _signature_defs(path: Path) -> dict:
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    return dict(sm.meta_graphs[0].signature_def)


class ModelRegistry:
    def __init__(self, model_name: str, base_path: str | Path, keep_versions: int = 2):
        self.model_name = model_name
        self.base_path = Path(base_path)
        self.keep_versions = keep_versions
        self._versions: dict[int, LoadedVersion] = {}
        self._latest: LoadedVersion | None = None
        self._seen: dict[int, tuple] = {}  # version -> listing at the previous poll
        self._failed: dict[int, tuple] = {}  # version -> listing that failed to load
        self._errors: dict[int, str] = {}  # version -> why it failed to load
        self.polls = 0  # completed polls (tests wait on this, not on the clock)
        self._lock = threading.Lock()  # serializes polls, not requests

    # ---- lookups (lock-free: one reference read)
    def get(self, name: str, version: int | None = None) -> LoadedVersion:
        if name != self.model_name:
            raise not_found(f"model \"{name}\": Servable not found for request: Latest({name}) (this server serves \"{self.model_name}\")")
        if version is None:
            current = self._latest
            if current is None:
                raise ServingError("UNAVAILABLE", f"model \"{name}\": no version is loaded yet")
            return current
        loaded = self._versions.get(int(version))
        if loaded is None:
            raise not_found(f"version {version}: Servable not found for request: Specific({name}, {version}) "
                            f"(loaded: {sorted(self._versions)})")
        return loaded

    @property
    def latest(self) -> LoadedVersion | None:
        """The version new requests get (None until one loaded)."""
        return self._latest

    @property
    def failed_versions(self) -> dict[int, str]:
        """Versions that failed to load (and are skipped until their files change) -> the error."""
        return {v: self._errors[v] for v in self._failed if v in self._errors}

    def status(self) -> list[dict]:
        return [
            {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for v in sorted(self._versions, reverse=True)
        ]

    # ---- polling
    def candidates(self) -> list[int]:
        if not self.base_path.is_dir():
            return []
        return sorted(int(p.name) for p in self.base_path.iterdir() if p.is_dir() and p.name.isdigit())

    def poll(self) -> int | None:
        """Load the newest complete, not-yet-loaded version; return it if a swap happened."""
        with self._lock:
            try:
                return self._poll()
            finally:
                self.polls += 1

    def _poll(self) -> int | None:
        """One poll (the caller holds the lock)."""
        for version in reversed(self.candidates()):
            if version in self._versions:
                return None  # the newest loadable version is already live
            path = self.base_path / str(version)
            listing = _listing(path)
            complete = (path / "saved_model.pb").exists() and (path / "variables" / "variables.index").exists()
            stable = self._seen.get(version) == listing
            self._seen[version] = listing
            if self._failed.get(version) == listing:
                continue  # broken and unchanged: fall back to older versions
            if not complete or not stable:
                continue  # still being written; look again at the next poll
            try:
                loaded = self._load(version, path)
            except Exception as err:  # noqa: BLE001 - any load failure keeps the old version live
                self._failed[version] = listing
                self._errors[version] = str(err).splitlines()[0] if str(err) else type(err).__name__
                log.error("version %s of %s at %s failed to load, skipped: %s", version, self.model_name, path,
                          self._errors[version])
                continue
            self._failed.pop(version, None)
            self._errors.pop(version, None)
            if self._latest is not None and version < self._latest.version:
                return None  # never go back to an older version
            self._versions[version] = loaded
            self._latest = loaded  # the atomic swap
            for old in sorted(self._versions)[: -self.keep_versions]:
                del self._versions[old]
            log.info("serving %s version %s from %s", self.model_name, version, path)
            return version
        return None

    def _load(self, version: int, path: Path) -> LoadedVersion:
        import tensorflow as tf

        from serving.validation import load_rules

        loaded = tf.saved_model.load(str(path))
        sigs = dict(loaded.signatures)
        if not sigs:
            raise ValueError("SavedModel has no signatures")
        return LoadedVersion(version, path, loaded, sigs, _signature_defs(path), load_rules(path))
