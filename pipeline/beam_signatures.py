"""Beam's DoFn signature inspection, memoized per function.

Apache Beam (2.59) inspects the signature of every method of every DoFn several times per
transform: when a ``ParDo`` is built, when the pipeline becomes its proto, and again for
every bundle the runner executes (``userstate.get_dofn_specs`` walks ``dir(dofn)`` and calls
``inspect.signature`` on each method). A TFX stage builds hundreds of transforms (TFT's
analyzers, TFDV's generators, TFMA's extractors), so on a small day this inspection is a
large fixed cost: 186,570 calls and 7.7 s of one 800-row ``ncs daily`` day's 48 s in Beam
stages (``docs/benchmarks.md`` names the command).

A function's signature is fixed when it is defined, and a bound method's is its function's
without the first parameter, whatever the instance. So the result is memoized per function
object (held weakly), for plain functions and bound methods only; anything else (classes,
builtins, ``functools.partial``) goes to Beam's own ``get_signature`` every time, as before.
The memo would be wrong only for code that rewrites a function's ``__signature__``,
``__defaults__`` or ``__wrapped__`` after Beam first saw it, which nothing in a pipeline does.

:func:`install` replaces the name ``get_signature`` in ``apache_beam.transforms.core`` (the
module every DoFn inspection goes through) with the memoized one; it is idempotent and is
called by the local runner and ``ncs compare``'s Transform before they build a pipeline.
"""

from __future__ import annotations

import types
import weakref

_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # function -> its Signature
_METHODS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # function -> its Signature when bound


def memoized(get_signature):
    """``get_signature`` (``func -> inspect.Signature``), memoized per plain function and per bound method's
    function; other callables are passed through."""

    def memoized_get_signature(func):
        kind = type(func)
        if kind is types.FunctionType:
            table, key = _FUNCTIONS, func
        elif kind is types.MethodType and type(func.__func__) is types.FunctionType:
            table, key = _METHODS, func.__func__
        else:
            return get_signature(func)
        signature = table.get(key)
        if signature is None:
            signature = table[key] = get_signature(func)  # a Signature is immutable: safe to share
        return signature

    memoized_get_signature.__wrapped_get_signature__ = get_signature
    return memoized_get_signature


def install() -> bool:
    """Memoize Beam's DoFn signature inspection in this process. Returns True if it is (now) installed."""
    from apache_beam.transforms import core

    current = getattr(core, "get_signature", None)
    if current is None:  # a Beam that no longer inspects through this name: nothing to speed up
        return False
    if not hasattr(current, "__wrapped_get_signature__"):
        core.get_signature = memoized(current)
    return True
