"""Clients for TF Serving (or ``ncs serve``): REST (httpx) and gRPC (tensorflow-serving-api).

Both split large requests into batches of ``batch_size`` rows, apply a per-call timeout and
retry only when the server says it is unavailable (HTTP 503 / connection refused for REST,
``UNAVAILABLE`` for gRPC) with exponential back-off; any other error is raised at once with
the server's message (:class:`PredictionError`).
"""

from __future__ import annotations

import base64
import time

import numpy as np


class PredictionError(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def serialize_examples(rows: list[dict]) -> list[bytes]:
    """Rows of raw column values -> serialized ``tf.Example`` s (ints, floats, strings)."""
    import tensorflow as tf

    out = []
    for row in rows:
        feature = {}
        for k, v in row.items():
            if isinstance(v, (bytes, str)):
                feature[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() if isinstance(v, str) else v]))
            elif isinstance(v, (bool, int, np.integer)):
                feature[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
            else:
                feature[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))
        out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return out


def _batches(inputs: dict, batch_size: int):
    n = len(next(iter(inputs.values())))
    for lo in range(0, n, batch_size):
        yield {k: v[lo : lo + batch_size] for k, v in inputs.items()}


def _concat(parts: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


class RestClient:
    """``POST {url}/v1/models/{name}[/versions/{v}]:predict`` in columnar format."""

    def __init__(self, url: str, model_name: str, version: int | None = None, timeout: float = 10.0,
                 retries: int = 3, backoff: float = 0.2, batch_size: int = 1024):
        import httpx

        self.url = url.rstrip("/")
        self.model_name, self.version = model_name, version
        self.timeout, self.retries, self.backoff, self.batch_size = timeout, retries, backoff, batch_size
        self._http = httpx.Client(timeout=timeout)

    def _path(self, suffix: str = "") -> str:
        v = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.url}/v1/models/{self.model_name}{v}{suffix}"

    def _post(self, body: dict) -> dict:
        import httpx

        for attempt in range(self.retries + 1):
            try:
                r = self._http.post(self._path(":predict"), json=body)
            except (httpx.ConnectError, httpx.RemoteProtocolError) as err:
                if attempt == self.retries:
                    raise PredictionError("UNAVAILABLE", str(err)) from None
            else:
                if r.status_code == 200:
                    return r.json()
                try:
                    message = r.json().get("error", r.text)
                except ValueError:
                    message = r.text
                code = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 503: "UNAVAILABLE"}.get(r.status_code, f"HTTP_{r.status_code}")
                if code != "UNAVAILABLE" or attempt == self.retries:
                    raise PredictionError(code, message)
            time.sleep(min(self.backoff * 2**attempt, 5.0))
        raise AssertionError("unreachable")

    def predict(self, inputs: dict, signature: str = "serving_default", fmt: str = "columnar") -> dict[str, np.ndarray]:
        """``inputs``: name -> list/array of ``[B]`` values (bytes are sent as ``{"b64": ...}``).

        ``fmt="columnar"`` sends ``{"inputs": {name: [...]}}``; ``fmt="row"`` sends
        ``{"instances": [...]}`` (one value per row for a single-input signature, else one
        object of named values per row). Both return ``{output: [B] array}``.
        """
        if fmt not in ("columnar", "row"):
            raise ValueError(f"fmt must be 'columnar' or 'row', got {fmt!r}")
        parts = []
        for batch in _batches(inputs, self.batch_size):
            cols = {
                k: [{"b64": base64.b64encode(x).decode()} if isinstance(x, bytes) else (x.item() if hasattr(x, "item") else x) for x in v]
                for k, v in batch.items()
            }
            if fmt == "columnar":
                out = self._post({"signature_name": signature, "inputs": cols})["outputs"]
                parts.append(out if isinstance(out, dict) else {"output": out})
                continue
            names = list(cols)
            n = len(cols[names[0]])
            instances = cols[names[0]] if len(names) == 1 else [{k: cols[k][i] for k in names} for i in range(n)]
            preds = self._post({"signature_name": signature, "instances": instances})["predictions"]
            if preds and isinstance(preds[0], dict):
                parts.append({k: [p[k] for p in preds] for k in preds[0]})
            else:
                parts.append({"output": preds})
        return _concat(parts)

    def predict_examples(self, examples: list[bytes], fmt: str = "columnar") -> dict[str, np.ndarray]:
        return self.predict({"examples": examples}, fmt=fmt)

    def status(self) -> dict:
        return self._http.get(self._path()).json()


class GrpcClient:
    """``tensorflow.serving.PredictionService/Predict`` over an insecure channel."""

    def __init__(self, target: str, model_name: str, version: int | None = None, timeout: float = 10.0,
                 retries: int = 3, backoff: float = 0.2, batch_size: int = 1024):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.model_name, self.version = model_name, version
        self.timeout, self.retries, self.backoff, self.batch_size = timeout, retries, backoff, batch_size
        self._channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024),
                                                               ("grpc.max_send_message_length", 64 * 1024 * 1024)])
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def _call(self, request):
        import grpc

        for attempt in range(self.retries + 1):
            try:
                return self._stub.Predict(request, timeout=self.timeout)
            except grpc.RpcError as err:
                code = err.code().name
                if code != "UNAVAILABLE" or attempt == self.retries:
                    raise PredictionError(code, err.details()) from None
            time.sleep(min(self.backoff * 2**attempt, 5.0))
        raise AssertionError("unreachable")

    def predict(self, inputs: dict, signature: str = "serving_default") -> dict[str, np.ndarray]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        parts = []
        for batch in _batches(inputs, self.batch_size):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = self.model_name
            request.model_spec.signature_name = signature
            if self.version is not None:
                request.model_spec.version.value = self.version
            for k, v in batch.items():
                request.inputs[k].CopyFrom(tf.make_tensor_proto(np.asarray(v)))
            response = self._call(request)
            parts.append({k: tf.make_ndarray(p) for k, p in response.outputs.items()})
        return _concat(parts)

    def predict_examples(self, examples: list[bytes]) -> dict[str, np.ndarray]:
        return self.predict({"examples": np.array(examples, dtype=object)})

    def close(self):
        self._channel.close()
