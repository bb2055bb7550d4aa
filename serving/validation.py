"""What a served model accepts, checked before anything reaches the model.

Every error is a :class:`~serving.registry.ServingError` (``INVALID_ARGUMENT`` → HTTP 400) whose
message starts with the field it is about — ``instances[3].duration: ...``,
``inputs.page[0]: ...``, ``inputs["watch"]: ...`` (gRPC), ``signature_name: ...``,
``request body: ...`` — so a client can find the culprit without reading server logs.

Three layers:

- **Feature rules** (:class:`FeatureRule`): per raw feature, the dtype, the per-example shape
  and the domain the model accepts, stored with the model by :mod:`serving.export`
  (``assets.extra/ncs/raw_features.json``, derived from the schema the pipeline validated the
  training data against). Policy (also in ``docs/serving.md``):

  * numeric ``int_domain`` / ``float_domain`` ``min``/``max`` are enforced (a negative
    ``duration`` is a 400, not a silently clamped score);
  * float values must be finite (NaN/inf would turn every output into NaN);
  * a string domain is enforced only when the schema demands every value be in it
    (``distribution_constraints.min_domain_mass`` = 1, the default); with a lower mass the
    schema itself tolerates unseen values, and the model maps them to its OOV buckets.

- **JSON values → arrays** (:func:`array_from_json`): the dtype and the per-example shape of
  the signature, element by element, with the element's path in the error.

- **TensorProto pre-check** (:func:`array_from_tensor_proto`): dtype, rank, every dimension and
  the batch limit are checked against the proto's *declared* shape and the number of values it
  *actually carries* before anything is materialized, so a 50-byte request declaring a
  50-million-element tensor is rejected without allocating it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from serving.registry import invalid

# where the model's own files live inside the SavedModel folder (TF Serving ignores assets.extra/)
ASSETS_EXTRA = os.path.join("assets.extra", "ncs")

# ----------------------------------------------------------------------------- feature rules


@dataclasses.dataclass(frozen=True)
class FeatureRule:
    """What the model accepts for one raw feature."""

    name: str
    dtype: str  # "int64" | "float32" | "string"
    shape: tuple = ()  # per-example shape of a fixed-length feature
    varlen: bool = False
    min: float | None = None
    max: float | None = None
    values: frozenset | None = None  # enforced string domain (bytes); None = any string
    default: object = None  # a fixed-length feature's default_value (then it may be absent)

    @classmethod
    def from_json(cls, name: str, d: dict) -> "FeatureRule":
        dom = d.get("domain") or {}
        values = None
        if dom.get("values") is not None and float(dom.get("min_domain_mass", 1.0)) >= 1.0:
            values = frozenset(v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in dom["values"])
        return cls(name, str(d["dtype"]), tuple(int(s) for s in d.get("shape") or ()), d.get("kind") == "varlen",
                   dom.get("min"), dom.get("max"), values, d.get("default"))

    def describe(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"min {_num(self.min)}")
        if self.max is not None:
            parts.append(f"max {_num(self.max)}")
        if self.values is not None:
            shown = sorted(v.decode("utf-8", "replace") for v in self.values)
            parts.append("one of " + ", ".join(shown[:12]) + (", ..." if len(shown) > 12 else ""))
        return "; ".join(parts)


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def schema_domains(schema, columns) -> dict[str, dict]:
    """``{column: domain}`` from a TFMD ``Schema`` proto: ``min``/``max`` for int/float domains,
    ``values`` and ``min_domain_mass`` for string domains (what :mod:`serving.export` stores)."""
    named = {d.name: d for d in schema.string_domain}
    out = {}
    for f in schema.feature:
        if f.name not in columns:
            continue
        dom: dict = {}
        which = f.WhichOneof("domain_info")
        if which in ("int_domain", "float_domain"):
            d = getattr(f, which)
            for bound in ("min", "max"):
                if d.HasField(bound):
                    dom[bound] = getattr(d, bound)
        elif which == "bool_domain":
            dom.update(min=0, max=1)
        elif which in ("domain", "string_domain"):
            sd = named.get(f.domain) if which == "domain" else f.string_domain
            if sd is not None and len(sd.value):
                dom["values"] = list(sd.value)
                dom["min_domain_mass"] = float(f.distribution_constraints.min_domain_mass)  # 1.0 when unset
        if dom:
            out[f.name] = dom
    return out


def raw_features_json(serving_spec: dict, schema=None) -> dict:
    """The content of ``raw_features.json``: per raw column its dtype, shape, kind and domain."""
    domains = schema_domains(schema, set(serving_spec)) if schema is not None else {}
    out = {}
    for k, v in serving_spec.items():
        entry = {"dtype": v.dtype.name, "shape": list(getattr(v, "shape", []) or []),
                 "kind": "fixed" if hasattr(v, "shape") else "varlen"}
        default = getattr(v, "default_value", None)
        if default is not None:
            d = np.asarray(default)
            entry["default"] = (np.vectorize(lambda x: x.decode() if isinstance(x, bytes) else str(x), otypes=[object])(d)
                                if v.dtype.name == "string" else d).tolist()
        if k in domains:
            entry["domain"] = domains[k]
        out[k] = entry
    return out


def load_rules(model_dir: str | Path) -> dict[str, FeatureRule]:
    """Feature rules stored with a model (empty for a SavedModel without them)."""
    path = Path(model_dir) / ASSETS_EXTRA / "raw_features.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of raw features")
    return {k: FeatureRule.from_json(k, v) for k, v in data.items()}


Locator = Callable[[int], str]  # row index -> field path of that row's value


def check_rule(rule: FeatureRule, flat: np.ndarray, rows: np.ndarray | None, where: Locator, what: str = "") -> None:
    """Raise 400 for the first value of ``flat`` outside ``rule`` (``rows[i]``: row of ``flat[i]``)."""
    if flat.size == 0:
        return
    bad = None
    if flat.dtype.kind == "f":
        nonfinite = ~np.isfinite(flat)
        if nonfinite.any():
            i = int(np.argmax(nonfinite))
            raise invalid(f"{where(_row(rows, i))}: {what}{flat[i]} is not a finite number")
    if rule.min is not None and flat.dtype.kind in "iuf":
        low = flat < rule.min
        if low.any():
            bad = int(np.argmax(low))
    if bad is None and rule.max is not None and flat.dtype.kind in "iuf":
        high = flat > rule.max
        if high.any():
            bad = int(np.argmax(high))
    if bad is None and rule.values is not None and flat.dtype.kind in "OSU":
        for i, v in enumerate(flat.tolist()):
            if (v.encode("utf-8") if isinstance(v, str) else v) not in rule.values:
                bad = i
                break
    if bad is not None:
        v = flat[bad]
        shown = v.decode("utf-8", "replace")[:60] if isinstance(v, bytes) else v
        raise invalid(f"{where(_row(rows, bad))}: {what}{shown!r} is outside what the model accepts for "
                      f"\"{rule.name}\" ({rule.describe()}; from the schema)")


def _row(rows, i):
    return int(rows[i]) if rows is not None else i


# ----------------------------------------------------------------------------- JSON -> arrays

_INT_RANGES = {k: (int(np.iinfo(k).min), int(np.iinfo(k).max)) for k in
               ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")}


class _Bad(Exception):
    pass


def _type_name(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _leaf_converter(dtype):
    """A function JSON value -> Python value of ``dtype``, raising :class:`_Bad` with the reason."""
    name = dtype.name
    if name == "string":
        def conv(v):
            if isinstance(v, str):
                return v.encode("utf-8")
            if isinstance(v, dict):
                if set(v) != {"b64"} or not isinstance(v["b64"], str):
                    raise _Bad("expected a string or {\"b64\": \"...\"}, got an object with keys "
                               + json.dumps(sorted(v)[:5])[:80])
                try:
                    return base64.b64decode(v["b64"], validate=True)
                except (binascii.Error, ValueError):
                    raise _Bad("invalid base64 in {\"b64\": ...}") from None
            raise _Bad(f"expected a string, got {_type_name(v)}")
        return conv
    if name == "bool":
        def conv(v):
            if isinstance(v, bool):
                return v
            raise _Bad(f"expected true or false, got {_type_name(v)}")
        return conv
    if name in _INT_RANGES:
        lo, hi = _INT_RANGES[name]

        def conv(v):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _Bad(f"expected an integer ({name}), got {_type_name(v)}")
            if isinstance(v, float):
                if not (math.isfinite(v) and v.is_integer()):
                    raise _Bad(f"expected an integer ({name}), got {v!r}")
                v = int(v)
            if not lo <= v <= hi:
                raise _Bad(f"{str(v)[:30]} is out of the {name} range")
            return v
        return conv
    if dtype.is_floating:
        limit = float(np.finfo(dtype.as_numpy_dtype).max) if name != "bfloat16" else 3.38e38

        def conv(v):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _Bad(f"expected a number ({name}), got {_type_name(v)}")
            try:
                f = float(v)
            except OverflowError:
                raise _Bad(f"{str(v)[:30]} is out of the {name} range") from None
            if not math.isfinite(f):
                raise _Bad(f"{v} is not a finite number")
            if abs(f) > limit:
                raise _Bad(f"{v!r} is out of the {name} range")
            return f
        return conv
    return None


def array_from_json(values, spec, where: Locator, batched: bool = True) -> np.ndarray:
    """JSON values of one input -> ``np.ndarray`` of ``spec`` (a ``tf.TensorSpec``).

    ``values`` is the list of the batch's rows (``batched``) or, for a rank-0 spec, the value;
    ``where(i)`` names row ``i`` in errors. Nesting is followed only as deep as the spec's rank.
    """
    conv = _leaf_converter(spec.dtype)
    if conv is None:
        raise invalid(f"{where(0)}: dtype {spec.dtype.name} is not supported over REST")
    dims = spec.shape.as_list() if spec.shape.rank is not None else None
    if dims is None:
        raise invalid(f"{where(0)}: inputs of unknown rank are not supported over REST")
    if not batched or not dims:
        if dims:
            raise invalid(f"{where(0)}: expected a list (shape {dims})")
        try:
            leaf = conv(values)
        except _Bad as err:
            raise invalid(f"{where(0)}: {err}") from None
        return _as_array([leaf], spec).reshape(())
    inner = dims[1:]
    leaves: list = []
    first_shape = None
    for i, v in enumerate(values):
        try:
            shape = _collect(v, inner, conv, leaves)
        except _Bad as err:
            raise invalid(f"{where(i)}: {err}") from None
        if first_shape is None:
            first_shape = shape
        elif shape != first_shape:
            raise invalid(f"{where(i)}: shape {list(shape)} differs from the first row's {list(first_shape)}")
    shape = (len(values),) + (first_shape or tuple(d or 0 for d in inner))
    return _as_array(leaves, spec).reshape(shape)


def _collect(v, dims, conv, out) -> tuple:
    """Append the leaves of ``v`` (nested ``len(dims)`` deep) to ``out``; return ``v``'s shape."""
    if not dims:
        if isinstance(v, list):
            raise _Bad("expected a single value, got a list")
        out.append(conv(v))
        return ()
    if not isinstance(v, list):
        raise _Bad(f"expected a list of {dims[0] if dims[0] is not None else 'some'} values, got {_type_name(v)}")
    if dims[0] is not None and len(v) != dims[0]:
        raise _Bad(f"expected {dims[0]} values, got {len(v)}")
    shapes = {_collect(x, dims[1:], conv, out) for x in v}
    if len(shapes) > 1:
        raise _Bad("ragged nested lists")
    return (len(v),) + (shapes.pop() if shapes else tuple(d or 0 for d in dims[1:]))


def _as_array(leaves: list, spec) -> np.ndarray:
    if spec.dtype.name == "string":
        arr = np.empty(len(leaves), dtype=object)
        arr[:] = leaves
        return arr
    return np.asarray(leaves, dtype=spec.dtype.as_numpy_dtype)


# ----------------------------------------------------------------------------- gRPC TensorProto

# DataType enum value -> (repeated value field, values per element)
_VALUE_FIELDS = {
    1: ("float_val", 1), 2: ("double_val", 1), 3: ("int_val", 1), 4: ("int_val", 1), 5: ("int_val", 1),
    6: ("int_val", 1), 7: ("string_val", 1), 8: ("scomplex_val", 2), 9: ("int64_val", 1), 10: ("bool_val", 1),
    14: ("half_val", 1), 17: ("int_val", 1), 18: ("dcomplex_val", 2), 19: ("half_val", 1),
    22: ("uint32_val", 1), 23: ("uint64_val", 1),
}


def array_from_tensor_proto(name: str, proto, spec, max_batch: int) -> np.ndarray:
    """A ``TensorProto`` for input ``name`` -> ``np.ndarray``, checked first (:func:`check_tensor_proto`)."""
    check_tensor_proto(name, proto, spec, max_batch)
    return decode_tensor_proto(name, proto)


def decode_tensor_proto(name: str, proto) -> np.ndarray:
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except Exception as err:  # noqa: BLE001 - any decoding problem is the request's
        raise invalid(f"inputs[\"{name}\"]: bad TensorProto: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def check_tensor_proto(name: str, proto, spec, max_batch: int) -> None:
    """Check a ``TensorProto`` for input ``name`` without materializing it.

    Checked against the proto's declared shape and the values it actually carries: the dtype
    is the signature's, the rank and every fixed dimension match, the batch (first dimension)
    is at most ``max_batch``, ``tensor_content`` holds exactly the declared number of bytes and
    the typed value list holds at most the declared number of elements. Fewer values than
    elements (TensorFlow's "repeat the last value" encoding, what ``tf.make_tensor_proto(x,
    shape=...)`` writes) is accepted only when every dimension is bounded by the signature and
    the batch limit; a tensor whose size is not bounded that way must carry every value.
    """
    import tensorflow as tf

    field = f"inputs[\"{name}\"]"
    if proto.dtype != spec.dtype.as_datatype_enum:
        try:
            got = tf.dtypes.as_dtype(proto.dtype).name
        except TypeError:
            got = f"DataType {proto.dtype}"
        raise invalid(f"{field}: dtype {got}, the signature expects {spec.dtype.name}")
    if proto.tensor_shape.unknown_rank:
        raise invalid(f"{field}: unknown rank; give the shape")
    dims = [d.size for d in proto.tensor_shape.dim]
    want = spec.shape.as_list() if spec.shape.rank is not None else None
    if want is not None and len(dims) != len(want):
        raise invalid(f"{field}: shape {dims} has rank {len(dims)}, the signature expects {want}")
    for i, d in enumerate(dims):
        if d < 0:
            raise invalid(f"{field}: dimension {i} is {d}")
    if dims and dims[0] > max_batch:
        raise invalid(f"{field}: batch of {dims[0]} rows exceeds the limit of {max_batch} (--max-batch)")
    if want is not None:
        for i, (d, w) in enumerate(zip(dims, want)):
            if w is not None and d != w:
                raise invalid(f"{field}: shape {dims} is not compatible with the signature's {want}")
    n = math.prod(dims)
    bounded = want is not None and all(w is not None for w in want[1:])
    entry = _VALUE_FIELDS.get(proto.dtype)
    if entry is None:
        raise invalid(f"{field}: dtype {spec.dtype.name} is not supported")
    value_field, per = entry
    if proto.tensor_content:
        if proto.dtype == 7:
            raise invalid(f"{field}: string tensors carry their values in string_val, not tensor_content")
        need = n * spec.dtype.size
        if len(proto.tensor_content) != need:
            raise invalid(f"{field}: tensor_content has {len(proto.tensor_content)} bytes, the declared shape {dims} "
                          f"needs {need}")
    else:
        count = len(getattr(proto, value_field)) // per
        if count > n:
            raise invalid(f"{field}: {count} values for the declared shape {dims} ({n} elements)")
        if n and not count:
            raise invalid(f"{field}: no values for the declared shape {dims} ({value_field} is empty)")
        if count < n and not bounded:
            raise invalid(f"{field}: {count} values for the declared shape {dims} ({n} elements); send every value")


# ----------------------------------------------------------------------------- serialized tf.Examples


def parse_spec(rules: dict[str, FeatureRule]) -> dict:
    import tensorflow as tf

    return {k: (tf.io.VarLenFeature(tf.as_dtype(r.dtype)) if r.varlen
                else tf.io.FixedLenFeature(list(r.shape), tf.as_dtype(r.dtype), default_value=r.default))
            for k, r in rules.items()}


_KIND = {"string": "bytes_list", "int64": "int64_list", "float32": "float_list"}


def locate_bad_example(examples, rules: dict[str, FeatureRule], where: Locator) -> None:
    """Raise 400 for the first example that is not a tf.Example or lacks / mistypes a feature."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    for i, s in enumerate(examples):
        try:
            ex = example_pb2.Example.FromString(bytes(s))
        except (DecodeError, TypeError, ValueError):
            raise invalid(f"{where(i)}: not a serialized tf.Example ({len(s)} bytes)") from None
        feats = ex.features.feature
        for k, r in rules.items():
            want = _KIND.get(r.dtype)
            if k not in feats or feats[k].WhichOneof("kind") is None:
                if not r.varlen and r.default is None:
                    raise invalid(f"{where(i)}: tf.Example feature \"{k}\" is missing (the model needs it, {r.dtype})")
                continue
            kind = feats[k].WhichOneof("kind")
            if want and kind != want:
                raise invalid(f"{where(i)}: tf.Example feature \"{k}\" is a {kind}, the model needs a {want} ({r.dtype})")
            count = len(getattr(feats[k], kind).value)
            need = math.prod(r.shape)
            if not r.varlen and count != need:
                raise invalid(f"{where(i)}: tf.Example feature \"{k}\" has {count} values, the model needs {need}")


def check_examples(examples: np.ndarray, rules: dict[str, FeatureRule], where: Locator) -> None:
    """Parse serialized examples with the model's raw feature spec and check every feature's domain."""
    import tensorflow as tf

    try:
        parsed = tf.io.parse_example(tf.constant(examples, dtype=tf.string), parse_spec(rules))
    except (tf.errors.InvalidArgumentError, UnicodeDecodeError) as err:
        locate_bad_example(examples, rules, where)
        raise invalid(f"{where(0)}: the batch of tf.Examples does not parse: {tf_error_summary(err)}") from None
    for k, r in rules.items():
        t = parsed[k]
        if isinstance(t, tf.SparseTensor):
            flat, rows = t.values.numpy(), t.indices.numpy()[:, 0]
        else:
            arr = t.numpy()
            per = max(1, int(np.prod(arr.shape[1:])))
            flat, rows = arr.reshape(-1), np.repeat(np.arange(arr.shape[0]), per)
        check_rule(r, flat, rows, where, f"tf.Example feature \"{k}\" = ")


def tf_error_summary(err) -> str:
    """The informative line(s) of a TensorFlow error (without "Graph execution error:", the stack
    and the node names), bytes escaped, at most 300 characters."""
    text = getattr(err, "message", None) or str(err)
    skip = ("Graph execution error", "Detected at node", "<stack traces", "File \"")
    keep = [line.split(" [[{{node")[0].strip() for line in text.splitlines()
            if line and not line[0].isspace() and not line.startswith(skip)]  # stack frames and node lines are indented
    out = " ".join(k for k in keep if k) or type(err).__name__
    out = out.encode("ascii", "backslashreplace").decode("ascii")
    return out[:300] + ("..." if len(out) > 300 else "")
