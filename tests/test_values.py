"""Every accepted value kind becomes named floats; every bad one warns, naming metric and fix."""

from __future__ import annotations

import collections
import dataclasses
import re

import pytest
import torch

import torchwatch as tw
from torchwatch import TorchwatchWarning

Pair = collections.namedtuple("Pair", "loss acc")


@dataclasses.dataclass
class Result:
    loss: float
    acc: torch.Tensor
    note: object = None


def returned_metrics(value, names=None, **options):
    """p.metrics of a train phase whose watched function returned ``value``."""
    tw.init(tensorboard=False, console=False, **options)

    @tw.watch_epoch(names=names)
    def train():
        return value

    assert train() is value  # passes through untouched
    return tw.current_run().history[-1].metrics


@pytest.mark.parametrize(
    "value, names, expected",
    [
        (0.5, None, {"loss": 0.5}),
        (3, None, {"loss": 3.0}),
        (True, None, {"loss": 1.0}),
        (torch.tensor(0.25), None, {"loss": 0.25}),
        (torch.tensor([0.75]), None, {"loss": 0.75}),
        (torch.tensor([[2]]), None, {"loss": 2.0}),
        (torch.tensor(7, dtype=torch.int64), None, {"loss": 7.0}),
        (torch.tensor(True), None, {"loss": 1.0}),
        (torch.tensor(0.5, dtype=torch.bfloat16), None, {"loss": 0.5}),
        ({"loss": 0.5, "acc": torch.tensor(0.9)}, None, {"loss": 0.5, "acc": 0.9}),
        (Pair(0.5, torch.tensor(0.25)), None, {"loss": 0.5, "acc": 0.25}),
        (Result(0.5, torch.tensor(0.25)), None, {"loss": 0.5, "acc": 0.25}),
        ((0.5, 0.25), ("loss", "acc"), {"loss": 0.5, "acc": 0.25}),
        ([0.5, None], ("loss", "acc"), {"loss": 0.5}),
        ({"loss": None, "acc": 1.0}, None, {"acc": 1.0}),
        (None, None, {}),
    ],
)
def test_accepted_values_become_named_floats(value, names, expected):
    """Numbers, one-element tensors, mappings, dataclasses, namedtuples and named tuples."""
    metrics = returned_metrics(value, names)
    assert metrics == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "value, names, metric, words",
    [
        ("abc", None, "loss", "metric 'loss' returned by .*train\\(\\): got str 'abc'; log numbers"),
        (torch.ones(3), None, "loss", "got a torch.float32 tensor of shape \\(3,\\).*`.mean\\(\\)`"),
        ({"acc": {"top1": 1.0}}, None, "acc", "metric 'acc'.*got dict of 1 items; flatten"),
        (1 + 2j, None, "loss", "got complex \\(1\\+2j\\); log its real part"),
        (torch.tensor(1j), None, "loss", "complex64 tensor.*`.real` or `.abs\\(\\)`"),
        ((0.5, 0.25), None, "loss", "bare tuple of 2 values and no names; pass names="),
        ({1: 0.5}, None, "1", "metric name 1 is a int, not a str; use string keys"),
        ((0.5,), ("loss", "acc"), "loss", "names= has 2 names"),
        (object(), None, "loss", "got object .*log a Python number"),
    ],
)
def test_bad_values_warn_once_naming_metric_source_and_fix(value, names, metric, words):
    """A bad value is skipped with one TorchwatchWarning that says what, where and how to fix."""
    with pytest.warns(TorchwatchWarning, match=words) as caught:
        metrics = returned_metrics(value, names)
    assert metric not in metrics
    assert len([w for w in caught if "skipped" in str(w.message)]) == 1


def test_bad_value_beside_good_ones_keeps_the_good(tmp_path):
    """A bad metric in a dict does not cost the good metrics beside it."""
    with pytest.warns(TorchwatchWarning, match="metric 'name'"):
        metrics = returned_metrics({"loss": 0.5, "name": "resnet", "acc": torch.tensor(0.8)})
    assert metrics == pytest.approx({"loss": 0.5, "acc": 0.8})


def test_strict_raises_value_error_with_the_same_message():
    """strict=True turns the skip warning into a ValueError."""
    with pytest.raises(ValueError, match="metric 'loss' returned by .*got str 'oops'"):
        returned_metrics("oops", strict=True)
    tw.init(tensorboard=False, console=False, strict=True)
    with pytest.raises(ValueError, match=re.escape("metric 'acc' logged in phase 'val'")):
        with tw.phase("val"):
            tw.log(acc=torch.ones(2))


def test_log_warns_once_per_metric_over_many_calls():
    """The same bad metric logged every step warns once, and good ones are still recorded."""
    tw.init(tensorboard=False, console=False)
    with pytest.warns(TorchwatchWarning) as caught:
        with tw.phase("val") as p:
            for i in range(5):
                tw.log(loss=float(i), label="cat")
    assert len([w for w in caught if "metric 'label'" in str(w.message)]) == 1
    assert p.metrics == {"loss": 2.0}


def test_returned_name_replaces_logged_values():
    """A name returned by the watched function replaces what was logged under that name."""
    tw.init(tensorboard=False, console=False)

    @tw.watch_epoch
    def train():
        tw.log(loss=10.0, acc=0.5)
        tw.log(loss=20.0, acc=0.7)
        return 1.25

    train()
    assert tw.current_run().history[-1].metrics == pytest.approx({"loss": 1.25, "acc": 0.6})


def test_log_weights_by_n_and_positional_value_is_loss():
    """tw.log's mean is weighted by n; a positional value is named loss."""
    tw.init(tensorboard=False, console=False)
    with tw.phase("val") as p:
        tw.log(torch.tensor(1.0), n=1)
        tw.log(torch.tensor(4.0), n=3)
        tw.log({"acc": 0.5}, n=2)
    assert p.metrics == pytest.approx({"loss": (1 + 12) / 4, "acc": 0.5})
