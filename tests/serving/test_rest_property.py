"""Property: whatever JSON (or not-JSON) a client sends to REST predict, the server answers 200 or a
4xx whose error names the field, never a 500; and a 200 has exactly one prediction per row."""

import base64
import json
import re

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.client import serialize_examples

INPUTS = ("watch", "page", "duration")
NAMES = INPUTS + ("examples",)
_NAME = "(" + "|".join(NAMES) + ")"
FIELD = re.compile(
    r"^(request body|Content-Type|signature_name|version"
    rf"|instances(\[\d+\](\.{_NAME})?)?"
    rf"|inputs(\[\d+\]|\.{_NAME}(\[\d+\])?)?"
    r"): \S"
)

GOOD_EXAMPLE = serialize_examples([{"watch": 0.5, "page": "home", "duration": 30}])[0]


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


scalars = (st.none() | st.booleans() | st.integers(-(10**25), 10**25) | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=12))
any_json = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
                        max_leaves=12)
example_values = st.one_of(
    st.just(b64(GOOD_EXAMPLE)),
    st.binary(max_size=30).map(b64),
    st.builds(lambda w, p, d: b64(serialize_examples([{"watch": w, "page": p, "duration": d}])[0]),
              st.floats(-10, 2000, allow_nan=False), st.sampled_from(["home", "search", "nope", ""]), st.integers(-5, 10**6)),
    st.just({"b64": "%%% not base64"}),
    st.text(max_size=8),
)
input_values = st.one_of(
    st.floats(-1e40, 1e40, allow_nan=False), st.integers(-(10**20), 10**20), st.integers(-3, 2000),
    st.sampled_from(["home", "search", "related", "channel", "nope", ""]), example_values, any_json,
)
good_row = st.fixed_dictionaries({"watch": st.floats(0, 1000), "page": st.sampled_from(["home", "search", "related", "channel"]),
                                  "duration": st.integers(1, 10**6)})
rows = st.one_of(
    st.lists(good_row, min_size=1, max_size=6),
    st.lists(good_row | st.dictionaries(st.sampled_from(NAMES + ("b64", "x")), input_values, max_size=4), max_size=6),
    st.lists(good_row, min_size=95, max_size=105),  # around the row limit (100)
    st.lists(example_values, min_size=1, max_size=5),
    st.lists(any_json, max_size=4),
    any_json,
)
columns = st.one_of(
    st.dictionaries(st.sampled_from(NAMES + ("x",)), st.lists(input_values, max_size=4) | input_values, max_size=4),
    st.lists(st.integers(1, 5), min_size=1, max_size=3).flatmap(  # well-formed columns, maybe of different lengths
        lambda ns: st.fixed_dictionaries({k: st.lists(input_values, min_size=ns[i % len(ns)], max_size=ns[i % len(ns)])
                                          for i, k in enumerate(INPUTS)})),
    st.lists(example_values, max_size=5),
    any_json,
)
signatures = st.one_of(st.sampled_from(["serving_raw", "serving_default", "nope", ""]), any_json)


def _mutate(draw, rows: list) -> list:
    """Maybe break one row: drop an input, add one, or replace a value by anything."""
    how = draw(st.sampled_from(["keep", "keep", "drop", "add", "replace"]))
    if how == "keep" or not rows:
        return rows
    i = draw(st.integers(0, len(rows) - 1))
    row = dict(rows[i])
    if how == "drop":
        row.pop(draw(st.sampled_from(INPUTS)), None)
    elif how == "add":
        row[draw(st.sampled_from(["x", "examples", "b64"]))] = draw(input_values)
    else:
        row[draw(st.sampled_from(INPUTS))] = draw(input_values)
    return rows[:i] + [row] + rows[i + 1:]


@st.composite
def bodies(draw):
    """``(body bytes, charset or None)``: mostly well-formed requests with a mutation, plus anything."""
    charset = draw(st.sampled_from([None, None, None, "utf-8", "latin-1", "utf-16", "nope"]))
    kind = draw(st.sampled_from(["good-rows", "good-columns", "examples", "rows", "columns", "both", "neither",
                                 "other-json", "nested", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=60)), charset
    if kind == "nested":
        depth = draw(st.integers(1, 3000))
        text = '{"signature_name": "serving_raw", "instances": ' + "[" * depth + "1" + "]" * depth + "}"
        return text.encode(), None
    if kind == "other-json":
        body = draw(any_json)
    elif kind == "good-rows":
        body = {"signature_name": "serving_raw", "instances": _mutate(draw, draw(st.lists(good_row, min_size=1, max_size=6)))}
    elif kind == "good-columns":
        good = draw(st.lists(good_row, min_size=1, max_size=6))
        body = {"signature_name": "serving_raw", "inputs": {k: [r[k] for r in good] for k in INPUTS}}
        if draw(st.booleans()):
            k = draw(st.sampled_from(INPUTS))
            body["inputs"][k] = draw(st.lists(input_values, max_size=7) | input_values)
    elif kind == "examples":
        values = draw(st.lists(example_values, min_size=1, max_size=5))
        body = {"instances": values} if draw(st.booleans()) else {"inputs": values}
        if draw(st.booleans()):
            body["signature_name"] = "serving_default"
    else:
        body = {}
        if draw(st.booleans()):
            body["signature_name"] = draw(signatures)
        if kind in ("rows", "both"):
            body["instances"] = draw(rows)
        if kind in ("columns", "both"):
            body["inputs"] = draw(columns)
    if isinstance(body, dict) and draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=6))] = draw(any_json)
    text = json.dumps(body, allow_nan=True)
    if draw(st.integers(0, 9)) == 0:  # truncated
        text = text[: draw(st.integers(0, len(text)))]
    try:
        return text.encode(charset or "utf-8"), charset
    except (LookupError, UnicodeEncodeError):
        return text.encode(), charset


@pytest.fixture(scope="module")
def http(shared_server):
    with httpx.Client(base_url=f"http://127.0.0.1:{shared_server.rest_port}", timeout=30) as client:
        yield client


# a bounded, fast run; no example database written into the working tree
@settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(request=bodies())
def test_random_bodies_get_200_or_a_4xx_naming_the_field(http, request):
    body, charset = request
    headers = {"Content-Type": f"application/json; charset={charset}"} if charset else {}
    r = http.post("/v1/models/ctr_cvr:predict", content=body, headers=headers)
    assert r.status_code < 500, (r.status_code, r.text, body[:300])
    out = r.json()
    if r.status_code == 200:
        sent = json.loads(body.decode(charset or "utf-8"))
        if "instances" in sent:
            assert len(out["predictions"]) == len(sent["instances"]), (out, body[:300])
        else:
            n = {len(v) for v in (sent["inputs"].values() if isinstance(sent["inputs"], dict) else [sent["inputs"]])}
            assert len(n) == 1, (out, body[:300])
            (rows,) = n
            assert all(len(v) == rows for v in out["outputs"].values()), (out, body[:300])
        return
    assert r.status_code in (400, 404), (r.status_code, r.text)
    msg = out["error"]
    assert isinstance(msg, str) and FIELD.match(msg), (msg, body[:300])
