"""The local endpoint (`ncs serve`) and the clients: REST = gRPC = direct call, error codes, hot swap.

The SavedModels here are tiny stand-ins with the pipeline's signature contract
(``serving_default`` on serialized examples, ``serving_raw`` on named tensors, outputs
``ctr``, ``cvr``, ``rank_score``), so the tests run in seconds.
"""

import json
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.client import GrpcClient, PredictionError, RestClient, serialize_examples
from serving.server import DevServer
from tests.serving.conftest import ROWS, install

def test_rest_grpc_and_direct_call_agree(server):
    srv, base = server
    direct = tf.saved_model.load(str(base / "1")).signatures["serving_default"](examples=tf.constant(serialize_examples(ROWS)))
    rest = RestClient(f"http://127.0.0.1:{srv.rest_port}", "ctr_cvr", batch_size=5)
    grpc_client = GrpcClient(f"127.0.0.1:{srv.grpc_port}", "ctr_cvr", batch_size=5)
    via_rest = rest.predict_examples(serialize_examples(ROWS))
    via_grpc = grpc_client.predict_examples(serialize_examples(ROWS))
    for k in ("ctr", "cvr", "rank_score"):
        # the same batches through REST and gRPC give identical float32 predictions
        np.testing.assert_array_equal(via_rest[k].astype(np.float32), via_grpc[k])
        # equal to calling the SavedModel directly (one batch of 12 vs batches of 5: last-ulp differences)
        np.testing.assert_allclose(via_grpc[k], direct[k].numpy(), rtol=1e-6)
    # the row format (b64 examples as instances) gives the same predictions
    via_rows = rest.predict_examples(serialize_examples(ROWS), fmt="row")
    for k in ("ctr", "cvr", "rank_score"):
        np.testing.assert_array_equal(via_rows[k], via_rest[k])
    # serving_raw, row format with named inputs
    body = {"signature_name": "serving_raw", "instances": ROWS}
    r = httpx.post(f"http://127.0.0.1:{srv.rest_port}/v1/models/ctr_cvr:predict", json=body)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == len(ROWS) and set(preds[0]) == {"ctr", "cvr", "rank_score"}
    np.testing.assert_allclose([p["ctr"] for p in preds], direct["ctr"].numpy(), rtol=1e-6)
    raw = grpc_client.predict({"watch": np.array([r["watch"] for r in ROWS], np.float32),
                               "page": np.array([r["page"].encode() for r in ROWS], dtype=object),
                               "duration": np.array([r["duration"] for r in ROWS], np.int64)}, signature="serving_raw")
    np.testing.assert_allclose(raw["rank_score"], direct["rank_score"].numpy(), rtol=1e-6)
    # status and metadata
    status = httpx.get(f"http://127.0.0.1:{srv.rest_port}/v1/models/ctr_cvr").json()
    assert status["model_version_status"][0]["version"] == "1" and status["model_version_status"][0]["state"] == "AVAILABLE"
    meta = httpx.get(f"http://127.0.0.1:{srv.rest_port}/v1/models/ctr_cvr/metadata").json()
    assert {"serving_default", "serving_raw"} <= set(meta["metadata"]["signature_def"]["signature_def"])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}"))
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "ctr_cvr"
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(req, timeout=10).metadata["signature_def"].Unpack(sig_map)
    assert "serving_raw" in sig_map.signature_def


def _post(srv, body, path="/v1/models/ctr_cvr:predict", raw=None):
    return httpx.post(f"http://127.0.0.1:{srv.rest_port}{path}", content=raw if raw is not None else json.dumps(body))


def test_bad_requests_get_tf_serving_codes_and_the_server_keeps_serving(server):
    srv, _ = server
    cases = [
        (None, "/v1/models/ctr_cvr:predict", b"{not json", 400, "JSON Parse error"),
        ({"signature_name": "serving_raw", "instances": [{"watch": 1.0, "page": "home"}]}, None, None, 400, "duration"),
        ({"signature_name": "serving_raw", "inputs": {"watch": ["x"], "page": ["home"], "duration": [3]}}, None, None, 400, "watch"),
        ({"signature_name": "nope", "instances": [1]}, None, None, 400, "nope"),
        ({"instances": [{"b64": "AAAA"}]}, "/v1/models/other:predict", None, 404, "other"),
        ({"instances": [{"b64": "AAAA"}]}, "/v1/models/ctr_cvr/versions/7:predict", None, 404, "7"),
        ({"signature_name": "serving_raw", "inputs": {"watch": [0.0] * 101, "page": ["a"] * 101, "duration": [1] * 101}}, None, None, 400, "exceeds"),
    ]
    for body, path, raw, code, word in cases:
        r = _post(srv, body, path or "/v1/models/ctr_cvr:predict", raw)
        assert r.status_code == code, (body, r.text)
        assert "error" in r.json() and word in r.json()["error"], r.text
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}"))
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "ctr_cvr"
    req.model_spec.signature_name = "serving_raw"
    req.inputs["watch"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page" in e.value.details()
    req.model_spec.name = "other"
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # still serving
    assert "ctr" in RestClient(f"http://127.0.0.1:{srv.rest_port}", "ctr_cvr").predict_examples(serialize_examples(ROWS[:2]))


def test_new_version_is_picked_up_under_load_with_zero_failures(server, toy_models):
    srv, base = server
    client = RestClient(f"http://127.0.0.1:{srv.rest_port}", "ctr_cvr", retries=0)
    examples = serialize_examples(ROWS[:4])
    v1 = client.predict_examples(examples)["ctr"]
    failures, seen, stop = [], set(), threading.Event()

    def load():
        c = RestClient(f"http://127.0.0.1:{srv.rest_port}", "ctr_cvr", retries=0)
        while not stop.is_set():
            try:
                out = c.predict_examples(examples)["ctr"]
                seen.add("v1" if np.allclose(out, v1) else "v2")
            except Exception as err:  # noqa: BLE001
                failures.append(repr(err))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    # version 2 appears file by file, as a copy into the base folder does (the registry tests check
    # that a complete but still-changing copy is not loaded; here: the swap under load)
    install(toy_models, base, 2, "v2")
    deadline = time.time() + 20
    while srv.registry.get("ctr_cvr").version != 2 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert srv.registry.get("ctr_cvr").version == 2
    assert failures == [] and seen == {"v1", "v2"}

    # a corrupt version is skipped with a logged error; version 2 stays live. Wait for the poller
    # to have tried (and failed) to load it, not for the clock.
    (base / "3" / "variables").mkdir(parents=True)
    (base / "3" / "saved_model.pb").write_bytes(b"garbage")
    (base / "3" / "variables" / "variables.index").write_bytes(b"garbage")
    deadline = time.time() + 20
    while 3 not in srv.registry.failed_versions and time.time() < deadline:
        time.sleep(0.05)
    assert 3 in srv.registry.failed_versions, "the poller never tried version 3"
    polls = srv.registry.polls
    while srv.registry.polls < polls + 2 and time.time() < deadline:  # and it stays skipped on later polls
        time.sleep(0.05)
    assert srv.registry.polls >= polls + 2
    assert srv.registry.get("ctr_cvr").version == 2 and 3 in srv.registry.failed_versions
    assert [s["version"] for s in srv.registry.status()] == ["2", "1"]
    assert not np.allclose(client.predict_examples(examples)["ctr"], v1)


def test_client_retries_only_while_unavailable(tmp_path, toy_models):
    base = tmp_path / "models"
    base.mkdir()
    srv = DevServer(str(base), "ctr_cvr", rest_port=0, grpc_port=0, poll_seconds=0.2).start()
    try:
        url = f"http://127.0.0.1:{srv.rest_port}"
        with pytest.raises(PredictionError) as e:  # nothing loaded: 503 UNAVAILABLE after the retries
            RestClient(url, "ctr_cvr", retries=1, backoff=0.01).predict_examples(serialize_examples(ROWS[:1]))
        assert e.value.code == "UNAVAILABLE"
        threading.Timer(0.5, install, args=(toy_models, base, 1)).start()
        out = RestClient(url, "ctr_cvr", retries=30, backoff=0.1).predict_examples(serialize_examples(ROWS[:3]))
        assert out["ctr"].shape == (3,)
        out = GrpcClient(f"127.0.0.1:{srv.grpc_port}", "ctr_cvr", retries=0).predict_examples(serialize_examples(ROWS[:3]))
        assert out["cvr"].shape == (3,)
    finally:
        srv.stop()


def _count_rest(client: RestClient) -> list:
    sent = []
    client._http.event_hooks["request"].append(lambda request: sent.append(request.url.path))
    return sent


def _count_grpc(client: GrpcClient) -> list:
    sent, predict = [], client._stub.Predict

    def counting(request, **kwargs):
        sent.append(request.model_spec.signature_name)
        return predict(request, **kwargs)

    client._stub.Predict = counting
    return sent


def test_client_does_not_retry_a_bad_request_but_retries_unavailable(server, tmp_path):
    srv, _ = server
    url, target = f"http://127.0.0.1:{srv.rest_port}", f"127.0.0.1:{srv.grpc_port}"
    # a bad request: one request on the wire, whatever the retry budget
    rest = RestClient(url, "ctr_cvr", retries=5, backoff=0.01)
    sent = _count_rest(rest)
    with pytest.raises(PredictionError) as e:
        rest.predict({"watch": [1.0]}, "serving_raw")
    assert e.value.code == "INVALID_ARGUMENT" and "page" in e.value.message
    assert len(sent) == 1
    grpc_client = GrpcClient(target, "ctr_cvr", retries=5, backoff=0.01)
    sent = _count_grpc(grpc_client)
    with pytest.raises(PredictionError) as e:
        grpc_client.predict({"watch": np.array([1.0], np.float32)}, "serving_raw")
    assert e.value.code == "INVALID_ARGUMENT" and len(sent) == 1
    # a model that is not there (404 / NOT_FOUND): not retried either
    rest = RestClient(url, "other", retries=5, backoff=0.01)
    sent = _count_rest(rest)
    with pytest.raises(PredictionError) as e:
        rest.predict_examples(serialize_examples(ROWS[:1]))
    assert e.value.code == "NOT_FOUND" and len(sent) == 1
    # the counters do count retries: nothing loaded (503 UNAVAILABLE) -> 1 + retries requests
    empty = DevServer(str(tmp_path / "empty"), "ctr_cvr", rest_port=0, grpc_port=0, poll_seconds=60).start()
    try:
        rest = RestClient(f"http://127.0.0.1:{empty.rest_port}", "ctr_cvr", retries=3, backoff=0.01)
        sent = _count_rest(rest)
        with pytest.raises(PredictionError) as e:
            rest.predict_examples(serialize_examples(ROWS[:1]))
        assert e.value.code == "UNAVAILABLE" and len(sent) == 4
        grpc_client = GrpcClient(f"127.0.0.1:{empty.grpc_port}", "ctr_cvr", retries=2, backoff=0.01)
        sent = _count_grpc(grpc_client)
        with pytest.raises(PredictionError) as e:
            grpc_client.predict_examples(serialize_examples(ROWS[:1]))
        assert e.value.code == "UNAVAILABLE" and len(sent) == 3
    finally:
        empty.stop()
