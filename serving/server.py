"""``ncs serve``: a local stand-in for TF Serving (development and tests, not production).

It implements the subset of TF Serving's APIs this project's clients use, on the official
protos and wire formats:

- REST (aiohttp): ``GET /v1/models/NAME[/versions/V]`` (model status),
  ``GET /v1/models/NAME[/versions/V]/metadata`` (signature defs as JSON),
  ``POST /v1/models/NAME[/versions/V]:predict`` with ``instances`` (row format) or ``inputs``
  (columnar format), ``{"b64": ...}`` for binary strings; errors as ``{"error": "..."}``
  with 400 (bad request) / 404 (unknown model or version) / 503 (nothing loaded yet).
- gRPC (grpcio): ``tensorflow.serving.PredictionService/Predict`` and
  ``/GetModelMetadata`` with ``tensorflow-serving-api`` messages; errors as
  ``INVALID_ARGUMENT`` / ``NOT_FOUND`` / ``UNAVAILABLE``.

It loads the newest version under ``--model-base-path``, polls for new versions and swaps
atomically (see :mod:`serving.registry`), and binds to 127.0.0.1 unless told otherwise.
Production uses the official ``tensorflow/serving`` image (``ncs deploy-files``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from concurrent import futures

import numpy as np

from serving.registry import ModelRegistry, ServingError, invalid

log = logging.getLogger("ncs.serving")

HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNAVAILABLE": 503}
DEFAULT_MAX_BATCH = 10_000


# ----------------------------------------------------------------------------- JSON <-> arrays


def _decode(value):
    """JSON value -> Python value; ``{"b64": s}`` -> bytes (recursively for lists)."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError):
                raise invalid("invalid base64 in a {\"b64\": ...} value") from None
        raise invalid(f"unexpected object value {json.dumps(value)[:80]}")
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _encode(array: np.ndarray):
    if array.dtype.kind in ("S", "O"):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.tolist()]
    return array.tolist()


def parse_predict_body(body: dict, input_names: list[str]) -> tuple[dict, str]:
    """``(inputs by name, "row" | "columnar")`` from a TF Serving REST predict body."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    if ("instances" in body) == ("inputs" in body):
        raise invalid("JSON Value must have exactly one of \"instances\" (row format) or \"inputs\" (columnar format)")
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise invalid("\"instances\" must be a non-empty list")
        if len(input_names) == 1 and not (isinstance(rows[0], dict) and set(rows[0]) - {"b64"}):
            return {input_names[0]: _decode(rows)}, "row"
        columns: dict[str, list] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise invalid(f"instances[{i}]: expected an object of named inputs")
            for k, v in row.items():
                columns.setdefault(k, []).append(_decode(v))
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) > 1:
            short = sorted(k for k, n in lengths.items() if n < len(rows))
            raise invalid(f"instances: input(s) {short} missing in some instances")
        return columns, "row"
    inputs = body["inputs"]
    if isinstance(inputs, dict):
        return {k: _decode(v) for k, v in inputs.items()}, "columnar"
    if len(input_names) == 1:
        return {input_names[0]: _decode(inputs)}, "columnar"
    raise invalid("\"inputs\" must be an object of named inputs for a signature with several inputs")


def format_predict_response(outputs: dict, fmt: str) -> dict:
    if fmt == "columnar":
        if len(outputs) == 1:
            return {"outputs": _encode(next(iter(outputs.values())))}
        return {"outputs": {k: _encode(v) for k, v in outputs.items()}}
    names = sorted(outputs)
    cols = {k: _encode(outputs[k]) for k in names}
    n = len(next(iter(cols.values()))) if cols else 0
    if len(names) == 1:
        return {"predictions": cols[names[0]]}
    return {"predictions": [{k: cols[k][i] for k in names} for i in range(n)]}


def signature_def_json(sig) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(sig)


# ----------------------------------------------------------------------------- REST


def make_rest_app(registry: ModelRegistry, max_batch: int = DEFAULT_MAX_BATCH):
    from aiohttp import web

    loop_pool = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="predict")

    def error(err: ServingError):
        return web.json_response({"error": err.message}, status=HTTP_STATUS.get(err.code, 500))

    def _version(request):
        v = request.match_info.get("version")
        return int(v) if v is not None else None

    async def status(request):
        try:
            loaded = registry.get(request.match_info["name"], _version(request))
        except ServingError as err:
            return error(err)
        states = registry.status() if _version(request) is None else [s for s in registry.status() if s["version"] == str(loaded.version)]
        return web.json_response({"model_version_status": states})

    async def metadata(request):
        try:
            loaded = registry.get(request.match_info["name"], _version(request))
        except ServingError as err:
            return error(err)
        return web.json_response({
            "model_spec": {"name": registry.model_name, "signature_name": "", "version": str(loaded.version)},
            "metadata": {"signature_def": {"signature_def": {k: signature_def_json(v) for k, v in loaded.signature_defs.items()}}},
        })

    async def predict(request):
        try:
            loaded = registry.get(request.match_info["name"], _version(request))
            try:
                body = json.loads(await request.text())
            except json.JSONDecodeError as err:
                raise invalid(f"JSON Parse error: {err.msg} at offset {err.pos}") from None
            signature = body.get("signature_name", "serving_default") if isinstance(body, dict) else "serving_default"
            if signature not in loaded.signatures:
                raise invalid(f"Serving signature name: \"{signature}\" not found in signature def")
            inputs, fmt = parse_predict_body(body, sorted(loaded.input_specs(signature)))
            outputs = await asyncio.get_running_loop().run_in_executor(loop_pool, loaded.run, signature, inputs, max_batch)
        except ServingError as err:
            return error(err)
        return web.json_response(format_predict_response(outputs, fmt))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    name = "{name:[^/:]+}"
    app.router.add_get(f"/v1/models/{name}", status)
    app.router.add_get(f"/v1/models/{name}/versions/{{version:\\d+}}", status)
    app.router.add_get(f"/v1/models/{name}/metadata", metadata)
    app.router.add_get(f"/v1/models/{name}/versions/{{version:\\d+}}/metadata", metadata)
    app.router.add_post(f"/v1/models/{name}:predict", predict)
    app.router.add_post(f"/v1/models/{name}/versions/{{version:\\d+}}:predict", predict)
    return app


# ----------------------------------------------------------------------------- gRPC


def make_grpc_servicer(registry: ModelRegistry, max_batch: int = DEFAULT_MAX_BATCH):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def _loaded(self, spec, context):
            version = spec.version.value if spec.HasField("version") else None
            try:
                return registry.get(spec.name, version)
            except ServingError as err:
                context.abort(getattr(grpc.StatusCode, err.code), err.message)

        def Predict(self, request, context):  # noqa: N802 (gRPC method name)
            loaded = self._loaded(request.model_spec, context)
            signature = request.model_spec.signature_name or "serving_default"
            try:
                inputs = {}
                for k, proto in request.inputs.items():
                    try:
                        inputs[k] = tf.make_ndarray(proto)
                    except Exception as err:  # noqa: BLE001
                        raise invalid(f"input \"{k}\": bad TensorProto: {err}") from None
                outputs = loaded.run(signature, inputs, max_batch)
            except ServingError as err:
                context.abort(getattr(grpc.StatusCode, err.code), err.message)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = registry.model_name
            response.model_spec.version.value = loaded.version
            response.model_spec.signature_name = signature
            for k, v in outputs.items():
                response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
            return response

        def GetModelMetadata(self, request, context):  # noqa: N802
            loaded = self._loaded(request.model_spec, context)
            fields = list(request.metadata_field) or ["signature_def"]
            if fields != ["signature_def"]:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field(s) {fields} not supported; only signature_def")
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for k, v in loaded.signature_defs.items():
                sig_map.signature_def[k].CopyFrom(v)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = registry.model_name
            response.model_spec.version.value = loaded.version
            response.metadata["signature_def"].Pack(sig_map)
            return response

    return PredictionService()


# ----------------------------------------------------------------------------- the server


class DevServer:
    """REST + gRPC over one :class:`ModelRegistry`, with a polling thread. Use ``start()``/``stop()``."""

    def __init__(self, base_path: str, model_name: str, host: str = "127.0.0.1", rest_port: int = 8501,
                 grpc_port: int = 8500, poll_seconds: float = 2.0, max_batch: int = DEFAULT_MAX_BATCH, keep_versions: int = 2):
        self.registry = ModelRegistry(model_name, base_path, keep_versions)
        self.host, self.rest_port, self.grpc_port = host, rest_port, grpc_port
        self.poll_seconds = poll_seconds
        self.max_batch = max_batch
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop = None
        self._runner = None
        self._grpc = None

    def _poll_loop(self):
        while not self._stop.wait(self.poll_seconds):
            try:
                self.registry.poll()
            except Exception:  # noqa: BLE001 - polling must never stop serving
                log.exception("polling %s failed", self.registry.base_path)

    def start(self, wait_for_model: float = 0.0) -> "DevServer":
        import time

        import grpc
        from aiohttp import web
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        # first load: a fresh folder is stable once it was listed twice
        deadline = time.time() + wait_for_model
        self.registry.poll()
        while self.registry.poll() is None and self.registry.latest is None and time.time() < deadline:
            time.sleep(0.2)

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            make_grpc_servicer(self.registry, self.max_batch), self._grpc
        )
        self.grpc_port = self._grpc.add_insecure_port(f"{self.host}:{self.grpc_port}")
        self._grpc.start()

        ready = threading.Event()

        def serve_rest():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._runner = web.AppRunner(make_rest_app(self.registry, self.max_batch), access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.rest_port)
            self._loop.run_until_complete(site.start())
            self.rest_port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        for target in (serve_rest, self._poll_loop):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        ready.wait(30)
        return self

    def stop(self):
        self._stop.set()
        if self._grpc is not None:
            self._grpc.stop(grace=1)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        for t in self._threads:
            t.join(timeout=10)
