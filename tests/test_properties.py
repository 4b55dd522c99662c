"""Property-based: random nested values fed to tw.log and returned by @watch_epoch never raise
anything but the documented errors, and never cost a good value that sits beside a bad one.

The expected metrics come from an oracle written from DESIGN.md's "Values" rules, independently
of torchwatch/values.py.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import warnings
from collections.abc import Mapping

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchwatch as tw

Pair = collections.namedtuple("Pair", "loss acc")


@dataclasses.dataclass
class Result:
    loss: object
    acc: object = None


DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int32,
          torch.int64, torch.uint8, torch.bool, torch.complex64]
SHAPES = [(), (1,), (1, 1), (2,), (0,), (2, 3)]
NAMES = st.sampled_from(["loss", "acc", "lr", "top1", "f1"])


@st.composite
def tensors(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.sampled_from(SHAPES))
    if dtype == torch.bool:
        data = torch.rand(shape) > 0.5
    elif dtype.is_complex:
        data = torch.randn(shape, dtype=dtype)
    elif dtype.is_floating_point:
        scale = draw(st.sampled_from([1.0, 1e3, float("nan"), float("inf")]))
        data = (torch.randn(shape, dtype=torch.float64) * scale).to(dtype)
        if draw(st.booleans()) and dtype != torch.float16:
            data.requires_grad_(True)
            data = data * 1.0  # a non-leaf with a graph behind it
    else:
        data = torch.randint(0, 100, shape, dtype=dtype)
    return data


LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(min_value=-1e6, max_value=1e6) | st.sampled_from([math.nan, math.inf, -math.inf]),
    st.complex_numbers(max_magnitude=10, allow_nan=False),
    st.text(max_size=5),
    tensors(),
)


def containers(children):
    return st.one_of(
        st.dictionaries(NAMES | st.integers(0, 3), children, max_size=3),
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.builds(Pair, children, children),
        st.builds(Result, children, children),
    )


VALUES = st.recursive(LEAVES, containers, max_leaves=6)


def good_scalar(value):
    """The float DESIGN.md says an accepted leaf becomes, or None for a bad one."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype.is_complex:
            return None
        return value.detach().to(torch.float64).item()
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def named_items(value):
    """(name, leaf) pairs of a top-level value; None for a value that cannot be named."""
    if isinstance(value, Mapping):
        return list(value.items())
    if dataclasses.is_dataclass(value):
        return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return list(zip(value._fields, value))
    if isinstance(value, (list, tuple)):
        return None
    return [("loss", value)]


def oracle(value):
    """({name: [floats]}, whether anything was bad) for one value logged or returned."""
    good, bad = {}, False
    if value is None:
        return good, bad
    items = named_items(value)
    if items is None:
        return good, True
    for name, leaf in items:
        if leaf is None:
            continue
        number = good_scalar(leaf) if isinstance(name, str) else None
        if number is None:
            bad = True
        else:
            good.setdefault(name, []).append(number)
    return good, bad


def same(actual, expected):
    if math.isnan(expected):
        return math.isnan(actual)
    return actual == pytest.approx(expected, rel=1e-9, abs=1e-12)


def assert_metrics(actual, expected):
    assert set(actual) == set(expected)
    for name, values in expected.items():
        total = sum(values)
        mean = total / len(values) if not math.isnan(total) else math.nan
        assert same(actual[name], mean), (name, actual[name], values)


def documented_only(caught):
    """Every warning raised is a TorchwatchWarning."""
    assert all(issubclass(w.category, tw.TorchwatchWarning) for w in caught), [
        (w.category, str(w.message)) for w in caught
    ]


PROPERTY = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPERTY
@given(positional=VALUES, named=st.dictionaries(NAMES, VALUES, max_size=3),
       strict=st.booleans())
def test_logged_values_keep_every_good_metric(positional, named, strict):
    """tw.log(value, **named): the good metrics appear in p.metrics with their mean; the bad ones
    warn (TorchwatchWarning) or, under strict, raise ValueError, and nothing else escapes."""
    run = tw.Run(console=False, tensorboard=False, strict=strict, on_nan="warn")
    expected, bad = oracle(positional)
    for name, leaf in named.items():
        if leaf is None:
            continue
        number = good_scalar(leaf)
        if number is None:
            bad = True
        else:
            expected.setdefault(name, []).append(number)
    with warnings.catch_warnings(record=True) as caught, run:
        warnings.simplefilter("always")
        try:
            with run.phase("val", model=torch.nn.Linear(1, 1)) as p:
                run.log(positional, **named)
        except ValueError as error:
            assert strict and bad, error
            assert str(error).startswith("torchwatch: rejected (strict=True) ")
            return
    assert not (strict and bad)
    documented_only(caught)
    assert_metrics(p.metrics, expected)


@PROPERTY
@given(value=VALUES, strict=st.booleans())
def test_returned_values_keep_every_good_metric(value, strict):
    """A value returned by @watch_epoch passes through untouched and its good metrics reach the
    history; bad ones warn, or raise ValueError under strict, and nothing else escapes."""
    run = tw.Run(console=False, tensorboard=False, strict=strict, on_nan="warn")
    expected, bad = oracle(value)

    @run.watch_epoch("val", model=torch.nn.Linear(1, 1))
    def evaluate():
        return value

    with warnings.catch_warnings(record=True) as caught, run:
        warnings.simplefilter("always")
        try:
            returned = evaluate()
        except ValueError as error:
            assert strict and bad, error
            assert str(error).startswith("torchwatch: rejected (strict=True) ")
            return
    assert not (strict and bad)
    assert returned is value
    documented_only(caught)
    assert_metrics(run.history[-1].metrics, expected)
