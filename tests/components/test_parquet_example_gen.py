import numpy as np

from components.parquet_example_gen import row_to_example


def test_zeros_are_values_not_missing():
    ex = row_to_example({"click": np.int64(0), "watch_seconds": 0.0, "hour": 0, "page": b"home", "x": None, "y": float("nan")})
    f = ex.features.feature
    assert list(f["click"].int64_list.value) == [0]
    assert list(f["watch_seconds"].float_list.value) == [0.0]
    assert list(f["hour"].int64_list.value) == [0]
    assert list(f["page"].bytes_list.value) == [b"home"]
    assert f["x"].WhichOneof("kind") is None and f["y"].WhichOneof("kind") is None
