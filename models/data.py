"""Streaming input: Transform's output as ``tf.data`` pipelines of ``(inputs, labels, weights)``.

The TFT ``preprocessing_fn`` (``components.transform``) is the only code that computes model
inputs, labels, sample spaces and weights; it writes them as (GZIP) TFRecords of
``tf.Example`` s, one column per model input plus, per task ``t``:

- ``label__t``  the task's label,
- ``space__t``  1 on the task's sample space (e.g. clicked rows for CVR), else 0,
- ``weight__t`` the space times any per-row weight (gradient-conflict tuning).

:class:`SplitStream` reads one split of those files. Nothing is held in memory but the
shuffle buffer (``training.shuffle_buffer`` serialized rows) and the batches in flight, so
memory does not grow with the number of rows. Per-task sample-space streams (the CVR task's
clicked rows) are filtered from the same files batch by batch.
"""

from __future__ import annotations

import dataclasses
import glob
import os

import numpy as np
import tensorflow as tf

LABEL, SPACE, WEIGHT = "label__", "space__", "weight__"
ROW_ID = "row__"  # a pass-through row index (``ncs compare`` joins predictions back to its raw rows)


class EmptySampleSpaceError(ValueError):
    """A task has no rows in its sample space in a split."""


class MissingColumnError(ValueError):
    """Transformed examples lack a column the config needs."""


def split_files(examples_uri: str | list[str], split: str) -> list[str]:
    """Files of ``split`` (``Split-<split>/*``) of one Examples folder, or of several (a daily window)."""
    uris = [examples_uri] if isinstance(examples_uri, str) else list(examples_uri)
    files = [f for uri in uris for f in sorted(glob.glob(os.path.join(uri, f"Split-{split}", "*")))]
    if not files:
        raise FileNotFoundError(f"no example files for split {split!r} under {', '.join(uris)}")
    return files


@dataclasses.dataclass
class SplitStream:
    """One split of transformed examples, read as a stream.

    Args:
      files: TFRecord files (``.gz`` = GZIP), read in this order.
      spec: ``{column: tf.io.FixedLenFeature}`` of the columns to parse (model inputs, labels,
        spaces, weights; see :meth:`from_feature_spec`).
      features: model input names; ``tasks``: task names.
      name: the split's name and ``source`` the artifact it comes from (for error messages).
    """

    files: list[str]
    spec: dict
    features: list[str]
    tasks: list[str]
    name: str = "train"
    source: str = ""
    _counts: dict | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_feature_spec(cls, files: list[str], feature_spec: dict, features: list[str], tasks: list[str],
                          name: str, source: str, row_ids: bool = False) -> "SplitStream":
        """Keep the columns the engine reads; a clear error naming every missing column and ``source``."""
        keep = list(features) + [p + t for t in tasks for p in (LABEL, SPACE, WEIGHT)] + ([ROW_ID] if row_ids else [])
        missing = [k for k in keep if k not in feature_spec]
        if missing:
            raise MissingColumnError(
                f"transformed examples of {source} ({name} split) lack column(s) {missing} that the config needs; "
                "was Transform run with this config?"
            )
        return cls(list(files), {k: feature_spec[k] for k in keep}, list(features), list(tasks), name, source)

    @property
    def has_row_ids(self) -> bool:
        return ROW_ID in self.spec

    @property
    def _compression(self) -> str:
        return "GZIP" if self.files and self.files[0].endswith(".gz") else ""

    def _records(self):
        return tf.data.TFRecordDataset(self.files, compression_type=self._compression, buffer_size=1 << 20)

    # ------------------------------------------------------------------ counts
    def counts(self) -> dict[str, int]:
        """``{"rows": N, <task>: rows in the task's sample space}``: one streaming pass, cached."""
        if self._counts is None:
            spec = {SPACE + t: self.spec[SPACE + t] for t in self.tasks}
            ds = self._records().batch(16384).map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
            counts = {"rows": 0, **{t: 0 for t in self.tasks}}
            for batch in ds:
                counts["rows"] += int(tf.shape(batch[SPACE + self.tasks[0]])[0])
                for t in self.tasks:
                    counts[t] += int(tf.math.count_nonzero(tf.reshape(batch[SPACE + t], [-1]) > 0))
            self._counts = counts
        return self._counts

    def __len__(self) -> int:
        return self.counts()["rows"]

    def check_sample_spaces(self) -> None:
        """Raise :class:`EmptySampleSpaceError` naming the task and split (before any training)."""
        counts = self.counts()
        if counts["rows"] == 0:
            raise EmptySampleSpaceError(f"the {self.name} split of {self.source} has no rows")
        for t in self.tasks:
            if counts[t] == 0:
                raise EmptySampleSpaceError(
                    f"task {t!r} has no rows in its sample space in the {self.name} split ({self.source})"
                )

    # ------------------------------------------------------------------ batches
    def _parse(self, weights: str):
        key = WEIGHT if weights == "weight" else SPACE

        def parse(serialized):
            cols = tf.io.parse_example(serialized, self.spec)
            x = {f: cols[f] for f in self.features}
            y = {t: tf.reshape(cols[LABEL + t], [-1]) for t in self.tasks}
            w = {t: tf.reshape(cols[key + t], [-1]) for t in self.tasks}
            if self.has_row_ids:
                x[ROW_ID] = tf.reshape(cols[ROW_ID], [-1])
            return x, y, w

        return parse

    def batches(self, batch_size: int, *, shuffle_seed: int | None = None, shuffle_buffer: int = 65536,
                task: str | None = None, weights: str = "weight", shard: tuple[int, int] = (0, 1)) -> tf.data.Dataset:
        """``tf.data`` of ``(inputs, {task: label [B]}, {task: weight [B]})`` batches.

        Args:
          shuffle_seed: shuffle rows (a ``shuffle_buffer``-row window, same order for the same
            seed) or ``None`` for file order.
          task: keep only rows of this task's sample space (``space__task > 0``): its stream.
          weights: ``"weight"`` (training weights) or ``"space"`` (the plain 0/1 sample space).
          shard: ``(index, count)``: this input pipeline takes rows ``index::count`` of every
            global batch (multi-worker training; every worker reads the same global batches).
        """
        ds = self._records()
        if task is not None:
            # keep the task's rows while still serialized (parsing one column), so only they are shuffled and parsed
            space_spec = {SPACE + task: self.spec[SPACE + task]}

            def in_space(serialized):
                space = tf.reshape(tf.io.parse_example(serialized, space_spec)[SPACE + task], [-1])
                return tf.boolean_mask(serialized, space > 0)

            ds = ds.batch(4096).map(in_space, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
        if shuffle_seed is not None:
            ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
        ds = ds.batch(batch_size)
        ds = ds.map(self._parse(weights), num_parallel_calls=tf.data.AUTOTUNE)
        index, count = shard
        if count > 1:
            ds = ds.map(lambda x, y, w: tf.nest.map_structure(lambda v: v[index::count], (x, y, w)))
        # tf.data's autotuner is off: the engine stops reading an epoch's iterator after its last step, and deleting
        # an iterator whose autotuning thread was still running waited for that thread (7.5 s after make run's
        # warm-up epoch, 2 s after a search round); the epochs took as long without it (docs/pipeline.md#components).
        # AUTOTUNE parallelism then means tf.data's default (min(16, cores)), prefetch a buffer that grows as the
        # consumer waits.
        options = tf.data.Options()
        options.autotune.enabled = False
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

    def steps(self, batch_size: int, task: str | None = None) -> int:
        """Batches per epoch of the mixed stream (``task=None``) or of ``task``'s stream."""
        n = self.counts()["rows" if task is None else task]
        return int(np.ceil(n / batch_size))

