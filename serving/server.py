"""``ncs serve``: a local stand-in for TF Serving (development and tests, not production).

It implements the subset of TF Serving's APIs this project's clients use, on the official
protos and wire formats:

- REST (aiohttp): ``GET /v1/models/NAME[/versions/V]`` (model status),
  ``GET /v1/models/NAME[/versions/V]/metadata`` (signature defs as JSON),
  ``POST /v1/models/NAME[/versions/V]:predict`` with ``instances`` (row format) or ``inputs``
  (columnar format), ``{"b64": ...}`` for binary strings; errors as ``{"error": "<field>: ..."}``
  with 400 (bad request) / 404 (unknown model or version) / 408 (client too slow) / 413 (body
  over the limit) / 503 (nothing loaded yet, or too many requests in flight: ``Retry-After``) /
  504 (not answered within the request timeout).
- gRPC (grpcio): ``tensorflow.serving.PredictionService/Predict`` and
  ``/GetModelMetadata`` with ``tensorflow-serving-api`` messages; errors as
  ``INVALID_ARGUMENT`` / ``NOT_FOUND`` / ``UNAVAILABLE`` / ``RESOURCE_EXHAUSTED``.

Every request is validated before it reaches the model (:mod:`serving.rest_json`,
:mod:`serving.validation`): each row carries each input, dtypes and shapes match the signature,
values lie in the domain the model accepts (from the schema stored with the model), and the
work a request can cause is bounded (:class:`Limits`: body size, rows, requests in flight,
timeouts). REST requests are decoded, parsed and run in a worker pool, off the event loop.

It loads the newest version under ``--model-base-path``, polls for new versions and swaps
atomically (see :mod:`serving.registry`), and binds to 127.0.0.1 unless told otherwise.
Production uses the official ``tensorflow/serving`` image (``ncs deploy-files``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from concurrent import futures

from serving.registry import ModelRegistry, ServingError, invalid

log = logging.getLogger("ncs.serving")

HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "DEADLINE_EXCEEDED": 504, "UNAVAILABLE": 503}
DEFAULT_MAX_BATCH = 10_000
MAX_VERSION_DIGITS = 18  # a version is an int64; Pusher writes unix times (10 digits)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on the work one client can make the server do (``ncs serve`` options)."""

    max_batch: int = DEFAULT_MAX_BATCH  # rows per request; checked while parsing (REST) / before decoding (gRPC)
    max_body_bytes: int = 8 * 1024 * 1024  # REST body / gRPC message; larger is a 413 / RESOURCE_EXHAUSTED
    max_in_flight: int = 32  # concurrent predict requests; more get 503 + Retry-After (REST) / RESOURCE_EXHAUSTED (gRPC)
    request_timeout: float = 30.0  # seconds from the request's headers to its answer; then 504
    read_timeout: float = 10.0  # seconds a client may take to send the request head, then the body; then 408
    workers: int = 4  # threads decoding, validating and predicting REST requests


# ----------------------------------------------------------------------------- REST


def _version(request):
    v = request.match_info.get("version")
    if v is None:
        return None
    if len(v) > MAX_VERSION_DIGITS:
        raise invalid(f"version: \"{v[:20]}...\" ({len(v)} digits) is not a model version (a 64-bit integer)")
    return int(v)


def predict_sync(registry: ModelRegistry, name: str, version, raw: bytes, charset, limits: Limits) -> tuple[int, bytes]:
    """One REST predict, start to end, off the event loop: ``(HTTP status, JSON body)``."""
    from serving.rest_json import decode_body, format_predict_response, inputs_from_body, parse_body, signature_name

    try:
        loaded = registry.get(name, version)
        body = parse_body(decode_body(raw, charset), limits.max_batch)
        signature = signature_name(body, loaded.signatures)
        arrays, fmt, at, root = inputs_from_body(body, loaded.input_specs(signature), limits.max_batch)
        outputs = loaded.run(signature, arrays, limits.max_batch, at, root)
        return 200, json.dumps(format_predict_response(outputs, fmt)).encode()
    except ServingError as err:
        return HTTP_STATUS.get(err.code, 500), json.dumps({"error": err.message}).encode()
    except Exception as err:  # noqa: BLE001 - a bug, not the client's fault: log it, answer 500 with JSON
        log.exception("predict failed")
        return 500, json.dumps({"error": f"internal error: {type(err).__name__}: {str(err)[:200]}"}).encode()


def make_rest_app(registry: ModelRegistry, limits: Limits | int = Limits()):
    from aiohttp import web

    if isinstance(limits, int):  # the former signature: make_rest_app(registry, max_batch)
        limits = Limits(max_batch=limits)
    pool = futures.ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="predict")
    in_flight = [0]  # touched on the event loop only

    def error(err: ServingError):
        return web.json_response({"error": err.message}, status=HTTP_STATUS.get(err.code, 500))

    @web.middleware
    async def json_errors(request, handler):
        try:
            return await handler(request)
        except ServingError as err:
            return error(err)
        except web.HTTPException as err:
            if err.status < 400:
                raise
            return web.json_response({"error": f"request: {request.method} {request.path[:100]}: {err.reason}"}, status=err.status,
                                     headers={k: v for k, v in err.headers.items() if k == "Allow"})

    async def status(request):
        loaded = registry.get(request.match_info["name"], _version(request))
        states = registry.status() if _version(request) is None else [s for s in registry.status() if s["version"] == str(loaded.version)]
        return web.json_response({"model_version_status": states})

    async def metadata(request):
        loaded = registry.get(request.match_info["name"], _version(request))
        return web.json_response({
            "model_spec": {"name": registry.model_name, "signature_name": "", "version": str(loaded.version)},
            "metadata": {"signature_def": {"signature_def": {k: signature_def_json(v) for k, v in loaded.signature_defs.items()}}},
        })

    async def predict(request):
        loop = asyncio.get_running_loop()
        if in_flight[0] >= limits.max_in_flight:
            return web.json_response(
                {"error": f"server: {in_flight[0]} predict requests in flight, the limit is {limits.max_in_flight} "
                          "(--max-in-flight); retry later"}, status=503, headers={"Retry-After": "1"})
        in_flight[0] += 1
        handed_off = False
        try:
            deadline = loop.time() + limits.request_timeout
            name, version = request.match_info["name"], _version(request)
            registry.get(name, version)  # 404 / 503 before reading a body
            if request.content_length is not None and request.content_length > limits.max_body_bytes:
                return _too_large(web, request.content_length, limits)
            budget, which = min((limits.read_timeout, "--read-timeout"), (deadline - loop.time(), "--request-timeout"))
            try:
                raw = await asyncio.wait_for(request.read(), budget)
            except asyncio.TimeoutError:
                return _closing(web.json_response({"error": f"request body: not received within {budget:.3g} s ({which})"}, status=408))
            except web.HTTPRequestEntityTooLarge:
                return _too_large(web, None, limits)
            except Exception as err:  # noqa: BLE001 - a malformed (e.g. chunked) body or a client gone mid-body
                return _closing(web.json_response({"error": f"request body: could not be read: {type(err).__name__}: "
                                                            f"{str(err)[:120]}"}, status=400))
            work = pool.submit(predict_sync, registry, name, version, raw, request.charset, limits)
            handed_off = True

            def release(_):
                try:
                    loop.call_soon_threadsafe(_release)
                except RuntimeError:  # the loop is closed: the server stopped
                    pass

            work.add_done_callback(release)
            try:
                code, payload = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(work)), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                work.cancel()  # drops it if no worker started it yet; a running one finishes and frees its slot then
                return web.json_response({"error": f"request: not answered within {limits.request_timeout:g} s "
                                                   "(--request-timeout)"}, status=504)
            return web.Response(body=payload, status=code, content_type="application/json")
        finally:
            if not handed_off:
                in_flight[0] -= 1

    def _release():
        in_flight[0] -= 1

    app = web.Application(client_max_size=limits.max_body_bytes, middlewares=[json_errors])
    name = "{name:[^/:]+}"
    app.router.add_get(f"/v1/models/{name}", status)
    app.router.add_get(f"/v1/models/{name}/versions/{{version:\\d+}}", status)
    app.router.add_get(f"/v1/models/{name}/metadata", metadata)
    app.router.add_get(f"/v1/models/{name}/versions/{{version:\\d+}}/metadata", metadata)
    app.router.add_post(f"/v1/models/{name}:predict", predict)
    app.router.add_post(f"/v1/models/{name}/versions/{{version:\\d+}}:predict", predict)
    app.on_cleanup.append(lambda _: _shutdown(pool))
    return app


async def _shutdown(pool):
    pool.shutdown(wait=False, cancel_futures=True)


def _closing(resp):
    resp.force_close()  # no keep-alive: the rest of the body is not read as a next request
    return resp


def _too_large(web, size, limits: Limits):
    got = f" ({size} bytes)" if size is not None else ""
    return _closing(web.json_response({"error": f"request body: larger than the limit of {limits.max_body_bytes} bytes{got} "
                                                "(--max-body-bytes); split the batch"}, status=413))


def signature_def_json(sig) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(sig)


def _head_timeout_site(runner, host: str, port: int, head_timeout: float):
    """A TCP site whose connections must deliver a complete request head within ``head_timeout``.

    aiohttp waits for a request head without a deadline; a client that opens a connection and
    trickles (or never finishes) its headers would hold it forever. The timer runs while a head
    is expected and stops when a complete head arrived; on expiry the connection is closed (with
    a 408 when nothing was answered on it yet).
    """
    from aiohttp import web
    from aiohttp.web_protocol import RequestHandler

    body = json.dumps({"error": f"request: headers not received within {head_timeout:g} s (--read-timeout)"}).encode()
    reply = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    class HeadTimeoutHandler(RequestHandler):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._head_timer = None
            self._arm()

        def _arm(self):
            if getattr(self, "_head_timer", None) is None:
                self._head_timer = self._loop.call_later(head_timeout, self._head_expired)

        def _disarm(self):
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
                self._head_timer = None

        def _head_expired(self):
            self._head_timer = None
            if self._request_in_progress or self.transport is None:
                return
            if self._request_count == 0:
                self.transport.write(reply)
            self.force_close()

        def data_received(self, data):
            before = self._request_count
            super().data_received(data)
            if self._request_count > before:
                self._disarm()  # a complete head arrived
            elif not self._request_in_progress:
                self._arm()  # part of the next head

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

    class Site(web.TCPSite):
        __slots__ = ()

        async def start(self):
            await web.BaseSite.start(self)
            loop = asyncio.get_running_loop()
            server = self._runner.server
            self._server = await loop.create_server(lambda: HeadTimeoutHandler(server, loop=loop, **server._kwargs),
                                                    self._host, self._port, backlog=self._backlog)

    return Site(runner, host, port)


# ----------------------------------------------------------------------------- gRPC


def grpc_inputs(loaded, signature: str, request, max_batch: int) -> dict:
    """The request's TensorProtos as arrays, each checked against the signature and the batch limit
    before it is materialized (see :func:`serving.validation.array_from_tensor_proto`)."""
    from serving.validation import check_tensor_proto, decode_tensor_proto

    if signature not in loaded.signatures:
        raise invalid(f"model_spec.signature_name: \"{signature[:80]}\" not found in signature def (have {sorted(loaded.signatures)})")
    specs = loaded.input_specs(signature)
    missing = sorted(set(specs) - set(request.inputs))
    if missing:
        raise invalid(f"inputs: missing input(s) {missing} for signature \"{signature}\" (expects {sorted(specs)})")
    extra = sorted(set(request.inputs) - set(specs))
    if extra:
        raise invalid(f"inputs: unknown input(s) {[e[:60] for e in extra[:5]]} for signature \"{signature}\" (expects {sorted(specs)})")
    for k in sorted(specs):  # every input's declared shape and content first, ...
        check_tensor_proto(k, request.inputs[k], specs[k], max_batch)
    return {k: decode_tensor_proto(k, request.inputs[k]) for k in sorted(specs)}  # ... then decode


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
                outputs = loaded.run(signature, grpc_inputs(loaded, signature, request, max_batch), max_batch)
            except ServingError as err:
                context.abort(getattr(grpc.StatusCode, err.code), err.message)
            except Exception as err:  # noqa: BLE001 - a bug, not the client's fault
                log.exception("gRPC predict failed")
                context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}: {str(err)[:200]}")
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
                 grpc_port: int = 8500, poll_seconds: float = 2.0, max_batch: int = DEFAULT_MAX_BATCH, keep_versions: int = 2,
                 limits: Limits | None = None, **limit_overrides):
        self.registry = ModelRegistry(model_name, base_path, keep_versions)
        self.host, self.rest_port, self.grpc_port = host, rest_port, grpc_port
        self.poll_seconds = poll_seconds
        self.limits = dataclasses.replace(limits or Limits(max_batch=max_batch), **limit_overrides)
        self.max_batch = self.limits.max_batch
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

        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            maximum_concurrent_rpcs=self.limits.max_in_flight,
            options=[("grpc.max_receive_message_length", self.limits.max_body_bytes)],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            make_grpc_servicer(self.registry, self.max_batch), self._grpc
        )
        self.grpc_port = self._grpc.add_insecure_port(f"{self.host}:{self.grpc_port}")
        self._grpc.start()

        ready = threading.Event()

        def serve_rest():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            # lingering_time: after an early answer (413, 408), the rest of a body is read and dropped
            # for at most the read timeout, then the connection is closed
            self._runner = web.AppRunner(make_rest_app(self.registry, self.limits), access_log=None,
                                         lingering_time=self.limits.read_timeout)
            self._loop.run_until_complete(self._runner.setup())
            site = _head_timeout_site(self._runner, self.host, self.rest_port, self.limits.read_timeout)
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
