"""REST predict: malformed or out-of-domain requests are 400s naming the field, never 500s or guesses."""

import base64
import json

import httpx
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from serving.client import serialize_examples
from serving.validation import FeatureRule, raw_features_json
from tests.conftest import VIDEO_CONFIG
from tests.serving.conftest import ROWS

PREDICT = "/v1/models/ctr_cvr:predict"


def post(srv, body=None, path=PREDICT, raw=None, headers=None):
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"http://127.0.0.1:{srv.rest_port}{path}", content=content, headers=headers or {}, timeout=30)


def error_of(r, status=400) -> str:
    assert r.status_code == status, r.text
    return r.json()["error"]


def b64(s: bytes) -> dict:
    return {"b64": base64.b64encode(s).decode()}


# ----------------------------------------------------------------------------- 1. row format


def test_every_instance_must_carry_every_input(shared_server):
    # the case: 4 instances, rows 2 and 3 carry disjoint halves of the inputs. The per-key
    # counts (3 each) agree with each other, so the old check let it through: 200 with 3 predictions.
    rows = [dict(r) for r in ROWS[:4]]
    rows[2] = {"watch": 0.5}
    rows[3] = {"page": "home", "duration": 40}
    msg = error_of(post(shared_server, {"signature_name": "serving_raw", "instances": rows}))
    assert msg.startswith("instances[2]: missing input(s) \"duration\", \"page\""), msg
    rows[2] = {"watch": 0.5, "page": "home", "duration": 40}
    rows[3] = {"watch": 0.5, "page": "home"}
    msg = error_of(post(shared_server, {"signature_name": "serving_raw", "instances": rows}))
    assert msg.startswith("instances[3]: missing input(s) \"duration\""), msg
    rows[3] = {"watch": 0.5, "page": "home", "duration": 40, "dration": 1}
    msg = error_of(post(shared_server, {"signature_name": "serving_raw", "instances": rows}))
    assert msg.startswith("instances[3]: unknown input(s) \"dration\""), msg
    rows[3] = [0.5, "home", 40]
    msg = error_of(post(shared_server, {"signature_name": "serving_raw", "instances": rows}))
    assert msg.startswith("instances[3]: expected an object of named inputs"), msg
    # complete rows: one prediction per instance
    r = post(shared_server, {"signature_name": "serving_raw", "instances": ROWS[:4]})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 4


def test_columnar_inputs_need_one_value_per_row(shared_server):
    cols = {k: [r[k] for r in ROWS[:4]] for k in ("watch", "page", "duration")}
    cols["page"] = cols["page"][:3]
    msg = error_of(post(shared_server, {"signature_name": "serving_raw", "inputs": cols}))
    assert msg.startswith("inputs.page: 3 rows, but inputs.duration has 4"), msg
    del cols["page"]
    msg = error_of(post(shared_server, {"signature_name": "serving_raw", "inputs": cols}))
    assert msg.startswith("inputs: missing input(s) \"page\""), msg


# ----------------------------------------------------------------------------- 4. 400, not 500


def nested(depth: int) -> bytes:
    return b'{"instances": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


CASES_400 = [
    # (id, raw body, path, headers, field the error starts with)
    ("nested-900", nested(900), PREDICT, None, "instances[0]: input \"examples\": expected a single value, got a list"),
    ("nested-5000", nested(5000), PREDICT, None, "request body: JSON nested too deeply"),
    ("nested-900-columnar", b'{"inputs": ' + b"[" * 900 + b"]" * 900 + b"}", PREDICT, None, "inputs[0]: input \"examples\": expected a single"),
    ("version-5000-digits", json.dumps({"instances": [b64(b"")]}).encode(), "/v1/models/ctr_cvr/versions/" + "9" * 5000 + ":predict",
     None, "version: "),
    ("int-5000-digits", b'{"signature_name": "serving_raw", "instances": [{"watch": 1, "page": "home", "duration": ' + b"7" * 5000 + b"}]}",
     PREDICT, None, "request body: an integer with 5000 digits is out of range"),
    ("int64-overflow", b'{"signature_name": "serving_raw", "instances": [{"watch": 1, "page": "home", "duration": ' + b"9" * 20 + b"}]}",
     PREDICT, None, "instances[0].duration: 99999999999999999999 is out of the int64 range"),
    ("float-overflow", b'{"signature_name": "serving_raw", "instances": [{"watch": 1e999, "page": "home", "duration": 3}]}',
     PREDICT, None, "request body: the number 1e999 is out of range"),
    ("float32-overflow", b'{"signature_name": "serving_raw", "instances": [{"watch": 1e300, "page": "home", "duration": 3}]}',
     PREDICT, None, "instances[0].watch: 1e+300 is out of the float32 range"),
    ("NaN", b'{"signature_name": "serving_raw", "instances": [{"watch": NaN, "page": "home", "duration": 3}]}',
     PREDICT, None, "request body: NaN is not a JSON number"),
    ("invalid-utf8", b'{"instances": [{"b64": "\xff\xfe"}]}', PREDICT, None, "request body: not valid utf-8 at byte 24"),
    ("unknown-charset", b'{"instances": []}', PREDICT, {"Content-Type": "application/json; charset=no-such-charset"},
     "Content-Type: unknown charset \"no-such-charset\""),
    ("binary-codec-charset", b'{"instances": []}', PREDICT, {"Content-Type": "application/json; charset=base64"},
     "Content-Type: unknown charset \"base64\""),
    ("signature-list", b'{"signature_name": ["serving_raw"], "instances": [1]}', PREDICT, None,
     "signature_name: expected a string, got list"),
    ("signature-object", b'{"signature_name": {"a": 1}, "instances": [1]}', PREDICT, None, "signature_name: expected a string"),
    ("signature-unknown", b'{"signature_name": "nope", "instances": [1]}', PREDICT, None, "signature_name: \"nope\" not found"),
    ("not-json", b"{not json", PREDICT, None, "request body: JSON Parse error: Expecting property name"),
    ("trailing-data", b'{"instances": [1]} x', PREDICT, None, "request body: JSON Parse error: Extra data"),
    ("empty", b"", PREDICT, None, "request body: empty"),
    ("top-level-list", b"[1, 2]", PREDICT, None, "request body: expected a JSON object"),
    ("unknown-key", b'{"instances": [1], "instance": [2]}', PREDICT, None, "request body: unknown key \"instance\""),
    ("duplicate-key", b'{"instances": [1], "instances": [2]}', PREDICT, None, "request body: duplicate key \"instances\""),
    ("both-formats", b'{"instances": [1], "inputs": [2]}', PREDICT, None, "request body: must have exactly one of"),
    ("no-rows", b'{"instances": []}', PREDICT, None, "instances: empty list"),
    ("instances-not-list", b'{"instances": {"a": 1}}', PREDICT, None, "instances: expected a list"),
    ("example-not-b64", b'{"instances": [{"b64": "%%%"}]}', PREDICT, None, "instances[0]: input \"examples\": invalid base64"),
    ("example-number", b'{"instances": [3]}', PREDICT, None, "instances[0]: input \"examples\": expected a string, got a number"),
    ("string-for-float", b'{"signature_name": "serving_raw", "inputs": {"watch": ["x"], "page": ["home"], "duration": [3]}}',
     PREDICT, None, "inputs.watch[0]: expected a number (float32), got a string"),
    ("bool-for-int", b'{"signature_name": "serving_raw", "inputs": {"watch": [1], "page": ["home"], "duration": [true]}}',
     PREDICT, None, "inputs.duration[0]: expected an integer (int64), got a boolean"),
    ("fraction-for-int", b'{"signature_name": "serving_raw", "inputs": {"watch": [1], "page": ["home"], "duration": [2.5]}}',
     PREDICT, None, "inputs.duration[0]: expected an integer (int64), got 2.5"),
    ("list-for-scalar", b'{"signature_name": "serving_raw", "inputs": {"watch": [[1]], "page": ["home"], "duration": [2]}}',
     PREDICT, None, "inputs.watch[0]: expected a single value, got a list"),
]


@pytest.mark.parametrize("raw,path,headers,prefix", [c[1:] for c in CASES_400], ids=[c[0] for c in CASES_400])
def test_malformed_requests_are_400_naming_the_field(shared_server, raw, path, headers, prefix):
    msg = error_of(post(shared_server, raw=raw, path=path, headers=headers))
    assert msg.startswith(prefix), msg


def test_a_5000_digit_version_is_400_on_every_route(shared_server):
    for route in ("", "/metadata"):
        r = httpx.get(f"http://127.0.0.1:{shared_server.rest_port}/v1/models/ctr_cvr/versions/{'1' * 5000}{route}")
        assert error_of(r).startswith("version: "), r.text
    r = httpx.get(f"http://127.0.0.1:{shared_server.rest_port}/v1/models/ctr_cvr/versions/{'1' * 18}")
    assert error_of(r, 404).startswith("version 111111111111111111: "), r.text


def test_garbage_tf_examples_name_the_row_and_the_input(shared_server, make_server):
    good = serialize_examples(ROWS[:3])
    missing = serialize_examples([{"watch": 0.5, "page": "home"}])[0]
    wrong_type = serialize_examples([{"watch": 0.5, "page": "home", "duration": "long"}])[0]
    # a model with its raw feature spec stored: the row, the input and the feature are named
    msg = error_of(post(shared_server, {"instances": [b64(good[0]), b64(b"\x08\xff\xff garbage"), b64(good[1])]}))
    assert msg.startswith("instances[1]: input \"examples\": not a serialized tf.Example"), msg
    msg = error_of(post(shared_server, {"inputs": [b64(good[0]), b64(good[1]), b64(missing)]}))
    assert msg.startswith("inputs[2]: input \"examples\": tf.Example feature \"duration\" is missing"), msg
    msg = error_of(post(shared_server, {"instances": [{"examples": b64(wrong_type)}]}))
    assert msg.startswith("instances[0].examples: tf.Example feature \"duration\" is a bytes_list, the model needs a int64_list"), msg
    # a SavedModel without a stored spec: TensorFlow's parse error, without "Graph execution error:", naming the input
    plain = make_server("plain")
    msg = error_of(post(plain, {"instances": [b64(good[0]), b64(b"\x08\xff\xff garbage")]}))
    assert msg.startswith("instances[1]: input \"examples\": not a serialized tf.Example"), msg
    msg = error_of(post(plain, {"instances": [b64(good[0]), b64(missing)]}))
    assert msg.startswith("instances: input \"examples\": the model rejected the request: Name: <unknown>, Feature: duration "
                          "(data type: int64) is required but could not be found."), msg
    assert "Graph execution error" not in msg and "node" not in msg, msg
    # and the good ones still answer
    assert post(plain, {"instances": [b64(e) for e in good]}).status_code == 200


# ----------------------------------------------------------------------------- 5. domains


def test_values_outside_the_schema_domain_are_400(shared_server):
    raw_row = {"watch": 0.5, "page": "home", "duration": -30}
    msg = error_of(post(shared_server, {"signature_name": "serving_raw", "instances": [ROWS[0], raw_row]}))
    assert msg.startswith("instances[1].duration: -30 is outside what the model accepts for \"duration\" (min 1"), msg
    msg = error_of(post(shared_server, {"signature_name": "serving_raw", "inputs": {"watch": [0.5, 1], "page": ["home", "home"],
                                                                                     "duration": [3, 0]}}))
    assert msg.startswith("inputs.duration[1]: 0 is outside") and "min 1" in msg, msg
    # through serving_default: the serialized example's feature is checked the same way
    ex = serialize_examples([ROWS[0], ROWS[1], raw_row])
    msg = error_of(post(shared_server, {"instances": [b64(e) for e in ex]}))
    assert msg.startswith("instances[2]: input \"examples\": tf.Example feature \"duration\" = -30 is outside") and "min 1" in msg, msg
    # a float above its max, a string outside a domain the schema does not let values leave
    msg = error_of(post(shared_server, {"signature_name": "serving_raw", "instances": [{**ROWS[0], "watch": 5000.0}]}))
    assert msg.startswith("instances[0].watch: 5000.0 is outside") and "max 1000" in msg, msg
    msg = error_of(post(shared_server, {"signature_name": "serving_raw", "instances": [{**ROWS[0], "page": "nope"}]}))
    assert msg.startswith("instances[0].page: 'nope' is outside") and "one of channel, home, related, search" in msg, msg
    ex = serialize_examples([{**ROWS[0], "watch": float("nan")}])
    msg = error_of(post(shared_server, {"instances": [b64(e) for e in ex]}))
    assert msg.startswith("instances[0]: input \"examples\": tf.Example feature \"watch\" = nan is not a finite number"), msg
    # at the edges of the domain: served
    ok = [{"watch": 0.0, "page": "channel", "duration": 1}, {"watch": 1000.0, "page": "related", "duration": 10**9}]
    r = post(shared_server, {"signature_name": "serving_raw", "instances": ok})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2


def test_the_pipeline_schema_decides_per_input_what_is_enforced():
    """From configs/video.schema.pbtxt: ``duration >= 1`` is enforced; the categorical domains carry
    ``min_domain_mass: 0.99`` (the schema tolerates unseen values, the model hashes them to OOV
    buckets), so an unseen ``page`` is served; ``hour`` has no domain."""
    import tensorflow as tf

    schema = text_format.Parse((VIDEO_CONFIG.parent / "video.schema.pbtxt").read_text(), schema_pb2.Schema())
    spec = {"duration": tf.io.FixedLenFeature([1], tf.int64), "page": tf.io.FixedLenFeature([1], tf.string),
            "hour": tf.io.FixedLenFeature([1], tf.int64), "interests": tf.io.VarLenFeature(tf.string)}
    stored = json.loads(json.dumps(raw_features_json(spec, schema)))  # as written to raw_features.json
    assert stored["duration"] == {"dtype": "int64", "shape": [1], "kind": "fixed", "domain": {"min": 1}}
    assert stored["page"]["domain"]["min_domain_mass"] == pytest.approx(0.99)
    assert stored["interests"]["kind"] == "varlen" and "domain" not in stored["hour"]
    rules = {k: FeatureRule.from_json(k, v) for k, v in stored.items()}
    assert rules["duration"].min == 1 and rules["duration"].shape == (1,)
    assert rules["page"].values is None  # tolerated: not enforced per value
    assert rules["hour"].min is None and rules["hour"].values is None
    # a fixed-length feature with a default may be absent from an example
    optional = raw_features_json({"hour": tf.io.FixedLenFeature([1], tf.int64, default_value=[12]),
                                  "page": tf.io.FixedLenFeature([], tf.string, default_value=b"home")}, schema)
    assert json.dumps(optional["hour"]["default"]) == "[12]" and optional["page"]["default"] == "home"
    assert FeatureRule.from_json("hour", optional["hour"]).default == [12]
    strict = dict(stored["page"], domain={**stored["page"]["domain"], "min_domain_mass": 1.0})
    assert FeatureRule.from_json("page", strict).values == {b"channel", b"home", b"related", b"search"}
    assert np.isclose(float(stored["page"]["domain"]["min_domain_mass"]), 0.99)
