"""gRPC Predict: a TensorProto is checked against what it actually carries before it is decoded."""

import threading
import time

import grpc
import numpy as np
import psutil
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.client import serialize_examples
from tests.serving.conftest import ROWS


@pytest.fixture(scope="module")
def stub(shared_server):
    channel = grpc.insecure_channel(f"127.0.0.1:{shared_server.grpc_port}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def request(signature="serving_raw", **inputs) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "ctr_cvr"
    req.model_spec.signature_name = signature
    for k, proto in inputs.items():
        req.inputs[k].CopyFrom(proto)
    return req


def declared(dtype, dims, **values):
    """A TensorProto declaring ``dims`` and carrying only ``values`` (e.g. ``float_val=[1.0]``)."""
    p = tf.make_tensor_proto(np.zeros([0], dtype.as_numpy_dtype) if dtype != tf.string else np.array([], dtype=object))
    p.Clear()
    p.dtype = dtype.as_datatype_enum
    for d in dims:
        p.tensor_shape.dim.add(size=d)
    for field, vals in values.items():
        if field == "tensor_content":
            p.tensor_content = vals
        else:
            getattr(p, field).extend(vals)
    return p


def good_inputs(n=3):
    return {"watch": tf.make_tensor_proto(np.array([r["watch"] for r in ROWS[:n]], np.float32)),
            "page": tf.make_tensor_proto(np.array([r["page"].encode() for r in ROWS[:n]], dtype=object)),
            "duration": tf.make_tensor_proto(np.array([r["duration"] for r in ROWS[:n]], np.int64))}


def rejected(stub, req) -> str:
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    return e.value.details()


class _PeakRss:
    """Peak resident memory of this process (the server runs in it) while the block runs."""

    def __enter__(self):
        self.proc, self.stop = psutil.Process(), threading.Event()
        self.start = self.peak = self.proc.memory_info().rss

        def sample():
            while not self.stop.is_set():
                self.peak = max(self.peak, self.proc.memory_info().rss)
                time.sleep(0.002)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.grown_mb = (self.peak - self.start) / 1e6


def test_a_tiny_request_declaring_50_million_rows_is_rejected_without_allocating(stub, monkeypatch):
    decoded = []
    real = tf.make_ndarray
    monkeypatch.setattr(tf, "make_ndarray", lambda p: decoded.append(p.dtype) or real(p))
    n = 50_000_000
    one = request(watch=declared(tf.float32, [n], float_val=[1.0]), page=good_inputs()["page"], duration=good_inputs()["duration"])
    every = request(watch=declared(tf.float32, [n], float_val=[1.0]), page=declared(tf.string, [n], string_val=[b"home"]),
                    duration=declared(tf.int64, [n], int64_val=[3]))
    assert every.ByteSize() < 120
    for req in (one, every):
        t0 = time.perf_counter()
        with _PeakRss() as mem:
            msg = rejected(stub, req)
        seconds = time.perf_counter() - t0
        assert "batch of 50000000 rows exceeds the limit of 100" in msg and "inputs[\"" in msg, msg
        # before: 0.26 s / +201 MB (one input), 19.7 s / +3.4 GB (all three); now nothing is decoded
        assert seconds < 2.0 and mem.grown_mb < 50, (seconds, mem.grown_mb)
    assert decoded.count(tf.float32.as_datatype_enum) == 0 and decoded.count(tf.string.as_datatype_enum) == 0
    # a good request afterwards is decoded and answered
    assert set(stub.Predict(request(**good_inputs()), timeout=30).outputs) == {"ctr", "cvr", "rank_score"}
    assert decoded


@pytest.mark.parametrize("name,proto,words", [
    ("content-too-short", declared(tf.float32, [3], tensor_content=b"\0" * 8), ["tensor_content has 8 bytes", "needs 12"]),
    ("content-too-long", declared(tf.float32, [3], tensor_content=b"\0" * 16), ["tensor_content has 16 bytes"]),
    ("more-values-than-declared", declared(tf.float32, [2], float_val=[1, 2, 3]), ["3 values for the declared shape [2]"]),
    ("no-values", declared(tf.float32, [3]), ["no values for the declared shape [3]"]),
    ("negative-dim", declared(tf.float32, [-1], float_val=[1.0]), ["dimension 0 is -1"]),
    ("rank-2", declared(tf.float32, [3, 1], float_val=[1, 2, 3]), ["has rank 2", "expects [None]"]),
    ("wrong-dtype", declared(tf.float64, [3], double_val=[1, 2, 3]), ["dtype float64", "expects float32"]),
])
def test_inconsistent_tensor_protos_are_invalid_argument_naming_the_input(stub, name, proto, words):
    inputs = good_inputs()
    inputs["watch"] = proto
    msg = rejected(stub, request(**inputs))
    assert msg.startswith("inputs[\"watch\"]: ") and all(w in msg for w in words), msg


def test_unknown_rank_missing_and_unknown_inputs(stub):
    inputs = good_inputs()
    inputs["watch"] = declared(tf.float32, [], float_val=[1.0])
    inputs["watch"].tensor_shape.unknown_rank = True
    assert rejected(stub, request(**inputs)).startswith("inputs[\"watch\"]: unknown rank")
    inputs = good_inputs()
    del inputs["page"]
    assert rejected(stub, request(**inputs)).startswith("inputs: missing input(s) ['page']")
    inputs = good_inputs()
    inputs["pages"] = inputs["page"]
    assert rejected(stub, request(**inputs)).startswith("inputs: unknown input(s) ['pages']")
    assert rejected(stub, request("nope", **good_inputs())).startswith("model_spec.signature_name: \"nope\" not found")


def test_repeat_last_value_encoding_is_accepted_within_the_batch_limit(stub):
    # what tf.make_tensor_proto(x, shape=...) writes: one value, a declared shape
    compact = tf.make_tensor_proto(0.5, dtype=tf.float32, shape=[3])
    assert len(compact.float_val) == 1 and not compact.tensor_content
    inputs = good_inputs()
    inputs["watch"] = compact
    got = stub.Predict(request(**inputs), timeout=30).outputs["ctr"]
    inputs["watch"] = tf.make_tensor_proto(np.full(3, 0.5, np.float32))
    full = stub.Predict(request(**inputs), timeout=30).outputs["ctr"]
    np.testing.assert_array_equal(tf.make_ndarray(got), tf.make_ndarray(full))


def test_values_outside_the_domain_and_garbage_examples_over_grpc(stub):
    inputs = good_inputs()
    inputs["duration"] = tf.make_tensor_proto(np.array([3, -1, 3], np.int64))
    msg = rejected(stub, request(**inputs))
    assert msg.startswith("inputs[\"duration\"][1]: -1 is outside") and "min 1" in msg, msg
    inputs = good_inputs()
    inputs["watch"] = tf.make_tensor_proto(np.array([0.5, np.inf, 0.5], np.float32))
    assert rejected(stub, request(**inputs)).startswith("inputs[\"watch\"][1]: inf is not a finite number")
    examples = serialize_examples(ROWS[:2]) + [b"\x08\xff garbage"]
    msg = rejected(stub, request("serving_default", examples=tf.make_tensor_proto(np.array(examples, dtype=object))))
    assert msg.startswith("inputs[\"examples\"][2]: not a serialized tf.Example"), msg


def test_grpc_message_size_and_concurrency_are_bounded(make_server, monkeypatch):
    srv = make_server(max_body_bytes=64 * 1024, max_in_flight=1)
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    big = request("serving_default", examples=tf.make_tensor_proto(np.array([b"x" * 100_000], dtype=object)))
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(big, timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    loaded, real = srv.registry.latest, srv.registry.latest.run
    monkeypatch.setattr(loaded, "run", lambda *a, **k: time.sleep(1.0) or real(*a, **k))
    codes = []

    def call():
        try:
            stub.Predict(request(**good_inputs()), timeout=30)
            codes.append("OK")
        except grpc.RpcError as err:
            codes.append(err.code().name)

    first = threading.Thread(target=call)
    first.start()
    time.sleep(0.3)
    call()  # while the first is in flight
    first.join()
    assert sorted(codes) == ["OK", "RESOURCE_EXHAUSTED"], codes
    channel.close()
