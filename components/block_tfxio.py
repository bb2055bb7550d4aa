"""A TFXIO for tf.Example TFRecord files that hands Beam batches of records, not single records.

tfx_bsl's ``TFExampleRecord.BeamSource`` reads each record as its own Beam element (Beam's Python TFRecord reader:
a CRC and a buffer copy in Python per record), then batches the elements again (``BatchElements``) before the
C++ decoder turns each batch into an Arrow RecordBatch. On the DirectRunner that per-record path costs about as
much as everything the stage then does with the data. This TFXIO reads each file with TensorFlow's C++ TFRecord
reader a batch at a time and decodes each batch with tfx_bsl's decoder, the same one ``TFExampleRecord`` uses: the
same RecordBatches (same schema, same columns, raw-record column if asked), in file order.

Input: ``file_pattern`` (a glob or a list of them) of GZIP (or uncompressed) TFRecord files of ``tf.Example``s.
Output of ``BeamSource(batch_size)``: a PCollection of ``pa.RecordBatch`` of up to ``batch_size`` rows
(``DEFAULT_BATCH_ROWS`` when None). A file is read by one worker (GZIP files do not split), so a stage has at
most as many parallel reads as files.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

import apache_beam as beam
import pyarrow as pa
from tfx.components.util import tfxio_utils
from tfx.dsl.io import fileio
from tfx_bsl.tfxio import tf_example_record

DEFAULT_BATCH_ROWS = 1000  # tfx_bsl's cap of an automatically sized batch


def _compression(path: str) -> str:
    return "GZIP" if path.endswith(".gz") else ""


_RECORD_FRAMING = 16  # bytes around each TFRecord payload: length (8) + its CRC (4) + the payload's CRC (4)


def read_batches(path: str, batch_size: int) -> Iterator[List[bytes]]:
    """The records of one TFRecord file, ``batch_size`` at a time (TensorFlow's C++ reader).

    Raises ``ValueError`` naming the file when it is truncated or corrupt. TensorFlow's reader reports a record cut
    in the middle, but a GZIP file cut where its decompressed bytes end between two records reads as a shorter,
    valid file; so a GZIP file's records must add up to the size its trailer records (``check_gzip_complete``).
    """
    import tensorflow as tf

    compression = _compression(path)
    dataset = tf.data.TFRecordDataset([path], compression_type=compression).batch(batch_size)
    decompressed = 0
    try:
        for batch in dataset.as_numpy_iterator():
            records = batch.tolist()
            decompressed += sum(map(len, records)) + _RECORD_FRAMING * len(records)
            yield records
    except tf.errors.OpError as e:  # truncated or corrupt: name the file (TF's message may not)
        raise ValueError(f"{path}: {e.message}") from None
    if compression == "GZIP":
        check_gzip_complete(path, decompressed)


def check_gzip_complete(path: str, decompressed: int) -> None:
    """Raises ``ValueError`` naming ``path`` unless it is a whole GZIP file of ``decompressed`` bytes.

    Fast path: a one-member file (what TensorFlow's and Beam's writers produce) ends with its size modulo 2**32
    (RFC 1952's ISIZE); a cut file ends with whatever bytes were cut at. Otherwise (several members, or a cut file)
    Python's gzip module reads the file through, which checks every member's end marker and CRC.
    """
    import gzip
    import zlib

    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        size = f.size()
        if size >= 18:  # a GZIP member's header (10) and trailer (8)
            f.seek(size - 4)
            if int.from_bytes(f.read(4), "little") == decompressed % 2**32:
                return
        f.seek(0)
        read = 0
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as unzipped:
                while chunk := unzipped.read(1 << 20):
                    read += len(chunk)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{path}: truncated or corrupt GZIP file ({e})") from None
    if read != decompressed:
        raise ValueError(f"{path}: the GZIP file holds {read} bytes but its TFRecords add up to {decompressed}")


class BlockTFExampleRecord(tf_example_record.TFExampleRecord):
    """``TFExampleRecord`` whose Beam source reads and decodes a batch of records per element."""

    def BeamSource(self, batch_size: Optional[int] = None) -> beam.PTransform:  # noqa: N802 (TFXIO API)
        patterns = list(self._file_pattern)
        decode = tf_example_record._DecodeBatchExamplesDoFn(self._GetSchemaForDecoding(), self.raw_record_column_name)
        rows = batch_size or DEFAULT_BATCH_ROWS

        @beam.typehints.with_input_types(beam.Pipeline)
        @beam.typehints.with_output_types(pa.RecordBatch)
        def _source(pipeline):
            files = sorted({f for pattern in patterns for f in fileio.glob(pattern)})
            if not files:
                raise ValueError(f"no TFRecord files match {patterns}")
            return (pipeline
                    | "TFRecordFiles" >> beam.Create(files)
                    | "SpreadFiles" >> beam.Reshuffle()  # the files to all workers (a Create is one bundle)
                    | "ReadBatches" >> beam.FlatMap(read_batches, rows)
                    | "Decode" >> beam.ParDo(decode))

        return beam.ptransform_fn(_source)()

    def _ProjectImpl(self, tensor_names: List[str]) -> "BlockTFExampleRecord":
        return block_reader_of(super()._ProjectImpl(tensor_names))


def block_reader_of(tfxio):
    """The block-reading equivalent of a ``TFExampleRecord`` (another TFXIO is returned unchanged)."""
    if type(tfxio) is not tf_example_record.TFExampleRecord:
        return tfxio
    return BlockTFExampleRecord(file_pattern=tfxio._file_pattern, schema=tfxio._schema,
                                raw_record_column_name=tfxio.raw_record_column_name,
                                telemetry_descriptors=tfxio.telemetry_descriptors)


@contextlib.contextmanager
def block_reading():
    """While open, TFX's executors read tf.Example TFRecords through ``BlockTFExampleRecord``.

    TFX's executors (StatisticsGen, Transform) make their TFXIO with ``tfxio_utils.make_tfxio`` and offer no hook
    for another reader; this points that factory at one returning the block reader, for the executor's ``Do``
    only (the TFXIO builds the Beam pipeline there; workers run what was built).
    """
    original = tfxio_utils.make_tfxio

    def make_tfxio(*args, **kwargs):
        return block_reader_of(original(*args, **kwargs))

    tfxio_utils.make_tfxio = make_tfxio
    try:
        yield
    finally:
        tfxio_utils.make_tfxio = original
