"""The memoized DoFn signature inspection answers exactly what Beam's own does."""

import functools
import inspect

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import core, userstate
from apache_beam.typehints.decorators import get_signature

from pipeline import beam_signatures


class _Counting(beam.DoFn):
    COUNT = userstate.ReadModifyWriteStateSpec("count", VarIntCoder())

    def process(self, kv, count=beam.DoFn.StateParam(COUNT), timestamp=beam.DoFn.TimestampParam):
        seen = (count.read() or 0) + 1
        count.write(seen)
        yield kv[0], seen


class _Plain(beam.DoFn):
    def process(self, x, scale=3):
        yield x * scale


def _fn(a, b=2, *rest, c, **kw):
    return a


def test_memoized_signature_equals_beams_for_every_kind_of_callable():
    memo = beam_signatures.memoized(get_signature)
    dofn_a, dofn_b = _Counting(), _Counting()
    callables = [_fn, dofn_a.process, dofn_b.process, _Plain().process, _Plain, len, str.strip,
                 functools.partial(_fn, 1), lambda x, y=1: x]
    for f in callables:
        assert memo(f) == get_signature(f), f
        assert memo(f) == get_signature(f), f  # from the memo the second time
    # a bound method's signature has no `self`, whatever the instance; the same object is shared
    assert list(memo(dofn_a.process).parameters) == ["kv", "count", "timestamp"]
    assert memo(dofn_a.process) is memo(dofn_b.process)
    # bound and unbound views of one function are kept apart
    assert list(memo(_Counting.process).parameters)[0] == "self"
    assert list(memo(dofn_a.process).parameters)[0] == "kv"


def test_install_is_idempotent_and_dofn_state_is_still_found(monkeypatch):
    monkeypatch.setattr(core, "get_signature", get_signature)  # restored after the test
    assert beam_signatures.install() and beam_signatures.install()
    assert core.get_signature.__wrapped_get_signature__ is get_signature  # wrapped once, not twice
    # what Beam derives from the signatures: the stateful DoFn keeps its state spec, the plain one has none
    states, timers = userstate.get_dofn_specs(_Counting())
    assert [s.name for s in states] == ["count"] and not timers
    assert userstate.get_dofn_specs(_Plain()) == (set(), set())
    assert inspect.signature(_Plain().process) == core.get_signature(_Plain().process)
    # and a pipeline with a stateful DoFn and a default-argument DoFn runs as before
    with beam.Pipeline() as p:
        keyed = p | beam.Create([("a", 1), ("a", 2), ("b", 3)]) | beam.ParDo(_Counting())
        assert_that(keyed, equal_to([("a", 1), ("a", 2), ("b", 1)]), label="state")
        scaled = p | "nums" >> beam.Create([1, 2]) | "scale" >> beam.ParDo(_Plain())
        assert_that(scaled, equal_to([3, 6]), label="defaults")
