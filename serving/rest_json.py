"""TF Serving REST predict bodies: bytes -> validated input arrays, with limits while parsing.

Runs off the event loop (the server calls it in its worker pool). The body's top level and the
``instances`` / ``inputs`` lists are walked one element at a time with the standard library's
JSON scanner, so the row limit (``--max-batch``) stops the parse at the first row past it
instead of after building the whole document. Errors name the field
(``instances[2]: missing input "duration"``); see :mod:`serving.validation`.
"""

from __future__ import annotations

import codecs
import json
import re

import numpy as np

from serving.registry import ServingError, invalid
from serving.validation import array_from_json

TOP_KEYS = ("signature_name", "instances", "inputs")
MAX_INT_DIGITS = 40  # longer integers are never a valid input value (int64 has 19 digits)

_WS = re.compile(r"[ \t\n\r]*")


def decode_body(raw: bytes, charset: str | None) -> str:
    """Request bytes -> text in the Content-Type's charset (UTF-8 by default)."""
    charset = (charset or "utf-8").strip()
    try:
        info = codecs.lookup(charset)
        if not getattr(info, "_is_text_encoding", True):
            raise LookupError(charset)
    except LookupError:
        raise invalid(f"Content-Type: unknown charset \"{charset[:40]}\" (send UTF-8 JSON)") from None
    try:
        text = raw.decode(info.name)
    except UnicodeDecodeError as err:
        raise invalid(f"request body: not valid {charset[:40]} at byte {err.start} ({err.reason})") from None
    return text[1:] if text.startswith("\ufeff") else text


def _reject_constant(name):
    raise invalid(f"request body: {name} is not a JSON number (values must be finite)")


def _parse_int(s: str):
    if len(s) > MAX_INT_DIGITS:
        raise invalid(f"request body: an integer with {len(s)} digits is out of range")
    return int(s)


def _parse_float(s: str):
    f = float(s)
    if f in (float("inf"), float("-inf")):
        raise invalid(f"request body: the number {s[:30]} is out of range")
    return f


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise invalid(f"request body: duplicate key \"{k[:60]}\" in an object")
        out[k] = v
    return out


class _Parser:
    def __init__(self, text: str, max_rows: int):
        self.text = text
        self.max_rows = max_rows
        self.scan = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_int, parse_float=_parse_float,
                                     object_pairs_hook=_no_duplicates).scan_once

    # ---- primitives
    def error(self, msg: str, pos: int) -> ServingError:
        line = self.text.count("\n", 0, pos) + 1
        col = pos - self.text.rfind("\n", 0, pos)
        return invalid(f"request body: JSON Parse error: {msg} at line {line} column {col} (char {pos})")

    def ws(self, i: int) -> int:
        return _WS.match(self.text, i).end()

    def char(self, i: int) -> str:
        return self.text[i] if i < len(self.text) else ""

    def value(self, i: int):
        try:
            return self.scan(self.text, i)
        except StopIteration as err:
            raise self.error("Expecting value", err.value) from None
        except json.JSONDecodeError as err:
            raise self.error(err.msg, err.pos) from None
        except RecursionError:
            raise invalid("request body: JSON nested too deeply") from None

    def key(self, i: int) -> tuple[str, int]:
        if self.char(i) != '"':
            raise self.error("Expecting property name enclosed in double quotes", i)
        k, i = self.value(i)
        i = self.ws(i)
        if self.char(i) != ":":
            raise self.error("Expecting ':' delimiter", i)
        return k, self.ws(i + 1)

    def after_item(self, i: int, close: str) -> tuple[bool, int]:
        """Past ``,`` -> (False, next); past ``close`` -> (True, next)."""
        i = self.ws(i)
        c = self.char(i)
        if c == ",":
            return False, self.ws(i + 1)
        if c == close:
            return True, i + 1
        raise self.error(f"Expecting ',' delimiter or '{close}'", i)

    # ---- the rows
    def rows(self, i: int, field: str) -> tuple[list, int]:
        """A JSON list at ``i``, element by element, stopping past ``max_rows``."""
        items: list = []
        i = self.ws(i + 1)
        if self.char(i) == "]":
            return items, i + 1
        while True:
            v, i = self.value(i)
            items.append(v)
            if len(items) > self.max_rows:
                raise invalid(f"{field}: the batch exceeds the limit of {self.max_rows} rows per request (--max-batch); "
                              f"stopped reading at row {self.max_rows + 1}")
            done, i = self.after_item(i, "]")
            if done:
                return items, i

    def named_inputs(self, i: int) -> tuple[dict, int]:
        out: dict = {}
        i = self.ws(i + 1)
        if self.char(i) == "}":
            return out, i + 1
        while True:
            name, i = self.key(i)
            if name in out:
                raise invalid(f"inputs: duplicate input \"{name[:60]}\"")
            if self.char(i) == "[":
                out[name], i = self.rows(i, f"inputs.{name}")
            else:
                out[name], i = self.value(i)
            done, i = self.after_item(i, "}")
            if done:
                return out, i

    def body(self) -> dict:
        i = self.ws(0)
        if i == len(self.text):
            raise invalid("request body: empty; expected a JSON object with \"instances\" or \"inputs\"")
        if self.char(i) != "{":
            v, _ = self.value(i)
            raise invalid(f"request body: expected a JSON object with \"instances\" or \"inputs\", got {type(v).__name__}")
        out: dict = {}
        i = self.ws(i + 1)
        if self.char(i) != "}":
            while True:
                k, i = self.key(i)
                if k not in TOP_KEYS:
                    raise invalid(f"request body: unknown key \"{k[:60]}\" (expected \"signature_name\" and one of "
                                  "\"instances\" or \"inputs\")")
                if k in out:
                    raise invalid(f"request body: duplicate key \"{k}\"")
                c = self.char(i)
                if k == "instances" and c == "[":
                    out[k], i = self.rows(i, "instances")
                elif k == "inputs" and c == "[":
                    out[k], i = self.rows(i, "inputs")
                elif k == "inputs" and c == "{":
                    out[k], i = self.named_inputs(i)
                else:
                    out[k], i = self.value(i)
                done, i = self.after_item(i, "}")
                if done:
                    break
        else:
            i += 1
        i = self.ws(i)
        if i != len(self.text):
            raise self.error("Extra data", i)
        return out


def parse_body(text: str, max_rows: int) -> dict:
    """The top-level object of a predict body (only ``signature_name``, ``instances``, ``inputs``)."""
    return _Parser(text, max_rows).body()


def signature_name(body: dict, signatures) -> str:
    sig = body.get("signature_name", "serving_default")
    if not isinstance(sig, str):
        raise invalid(f"signature_name: expected a string, got {type(sig).__name__}")
    if sig not in signatures:
        raise invalid(f"signature_name: \"{sig[:80]}\" not found in signature def (the model has {sorted(signatures)})")
    return sig


def _input_list(names) -> str:
    return ", ".join(f"\"{n}\"" for n in sorted(names))


def _check_rows(field: str, values) -> None:
    if not isinstance(values, list):
        raise invalid(f"{field}: expected a list with one value per row, got {type(values).__name__}")
    if not values:
        raise invalid(f"{field}: empty list (no rows)")


def inputs_from_body(body: dict, specs: dict, max_rows: int):
    """``(arrays by input name, format, at(name, i) -> field path, root field)`` from a parsed body.

    ``at(name, i)`` is the prefix of an error about row ``i`` of input ``name``: ``instances[i].name``,
    ``inputs.name[i]``, or for bare values ``instances[i]: input "name"``.

    Row format: every instance carries every input (a single-input signature also takes bare
    values). Columnar format: one list per input, all of the same length.
    """
    if ("instances" in body) == ("inputs" in body):
        raise invalid("request body: must have exactly one of \"instances\" (row format) or \"inputs\" (columnar format)")
    names = sorted(specs)
    if "instances" in body:
        rows = body["instances"]
        _check_rows("instances", rows)
        if len(rows) > max_rows:
            raise invalid(f"instances: {len(rows)} rows exceed the limit of {max_rows} rows per request (--max-batch)")
        if len(names) == 1:
            (name,) = names
            values = [r[name] if isinstance(r, dict) and set(r) == {name} else r for r in rows]
            if not (isinstance(rows[0], dict) and set(rows[0]) == {name}):
                at = lambda n, i: f"instances[{i}]: input \"{n}\""  # noqa: E731 - bare values: the row is the value
            else:
                at = lambda n, i: f"instances[{i}].{n}"  # noqa: E731
            return {name: array_from_json(values, specs[name], lambda i: at(name, i))}, "row", at, "instances"
        want = set(names)
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                raise invalid(f"instances[{i}]: expected an object of named inputs ({_input_list(names)}), got {type(r).__name__}")
            if r.keys() != want:
                missing, extra = sorted(want - r.keys()), sorted(r.keys() - want)
                if missing:
                    raise invalid(f"instances[{i}]: missing input(s) {_input_list(missing)}; every instance must carry "
                                  f"every input ({_input_list(names)})")
                raise invalid(f"instances[{i}]: unknown input(s) {_input_list(extra)[:120]} (the signature takes {_input_list(names)})")
        at = lambda n, i: f"instances[{i}].{n}"  # noqa: E731
        arrays = {n: array_from_json([r[n] for r in rows], specs[n], lambda i, n=n: at(n, i)) for n in names}
        return arrays, "row", at, "instances"
    inputs = body["inputs"]
    if isinstance(inputs, dict):
        missing, extra = sorted(set(names) - inputs.keys()), sorted(inputs.keys() - set(names))
        if missing:
            raise invalid(f"inputs: missing input(s) {_input_list(missing)} (the signature takes {_input_list(names)})")
        if extra:
            raise invalid(f"inputs: unknown input(s) {_input_list(extra)[:120]} (the signature takes {_input_list(names)})")
        at = lambda n, i: f"inputs.{n}[{i}]"  # noqa: E731
        arrays, first = {}, None
        for n in names:
            batched = specs[n].shape.rank != 0
            if batched:
                _check_rows(f"inputs.{n}", inputs[n])
                if len(inputs[n]) > max_rows:
                    raise invalid(f"inputs.{n}: {len(inputs[n])} rows exceed the limit of {max_rows} rows per request (--max-batch)")
                if first is not None and len(inputs[n]) != len(inputs[first]):
                    raise invalid(f"inputs.{n}: {len(inputs[n])} rows, but inputs.{first} has {len(inputs[first])}; "
                                  "every input needs one value per row")
                first = first or n
            arrays[n] = array_from_json(inputs[n], specs[n], lambda i, n=n: at(n, i), batched=batched)
        return arrays, "columnar", at, "inputs"
    if len(names) != 1:
        raise invalid(f"inputs: expected an object of named inputs ({_input_list(names)}), got {type(inputs).__name__}")
    (name,) = names
    at = lambda n, i: f"inputs[{i}]: input \"{n}\""  # noqa: E731
    batched = specs[name].shape.rank != 0
    if batched:
        _check_rows("inputs", inputs)
        if len(inputs) > max_rows:
            raise invalid(f"inputs: {len(inputs)} rows exceed the limit of {max_rows} rows per request (--max-batch)")
    return {name: array_from_json(inputs, specs[name], lambda i: at(name, i), batched=batched)}, "columnar", at, "inputs"


def _encode(array: np.ndarray):
    if array.dtype.kind in ("S", "O"):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.tolist()]
    return array.tolist()


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
