"""Every accepted value kind becomes named floats; every bad one warns, naming metric and fix."""

from __future__ import annotations

import collections
import dataclasses
import re
import warnings

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


def _eight_steps(tmp_path, step):
    """Eight steps with log_every=4, ``step(i)`` logging and changing tensors in place; the
    metric 'm' as the run's history and step curve saw it, and the warnings raised."""
    from tests.conftest import read_scalars

    run = tw.init(str(tmp_path), console=False, progress=False, log_every=4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with run.phase("train"):
            for i in tw.steps(range(8)):
                step(i)
    run.close()
    curve = [v for _, v in read_scalars(tmp_path / "train")["step/m"]]
    return run.history[-1].metrics["m"], curve, [str(w.message) for w in seen]


def test_a_parameter_stepped_in_place_after_logging_keeps_its_logged_values(tmp_path):
    """tw.log(m=model.logit_scale) each step, then the optimizer changes it in place: each step
    keeps the value it had when logged (a copy is kept), not the value at the interval's end."""
    scale = torch.nn.Parameter(torch.tensor(0.0))

    def step(i):
        tw.log(m=scale)
        with torch.no_grad():
            scale.add_(1.0)  # the optimizer's step

    mean, curve, seen = _eight_steps(tmp_path, step)
    assert curve == pytest.approx([1.5, 5.5]) and mean == pytest.approx(3.5)  # 0..3, 4..7
    assert not [m for m in seen if "changed in place" in m]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_buffer_changed_in_place_and_logged_each_step_keeps_each_value(tmp_path, dtype):
    """A running buffer (an EMA, a counter) updated in place and then logged, every step: each
    step keeps its own value. bfloat16 takes the buffered path even where float32 is read on the
    host at once."""
    buffer = torch.zeros((), dtype=dtype)

    def step(i):
        buffer.add_(1.0)
        tw.log(m=buffer)

    mean, curve, seen = _eight_steps(tmp_path, step)
    assert curve == pytest.approx([2.5, 6.5]) and mean == pytest.approx(4.5)  # 1..4, 5..8
    assert not [m for m in seen if "changed in place" in m]


def test_a_tensor_changed_in_place_after_logging_is_named_with_the_fix(tmp_path):
    """A fresh tensor logged, then changed in place before its interval is read: torchwatch
    cannot know its logged value any more, and says so once, naming the metric and the fix."""
    def step(i):
        t = torch.full((), float(i), dtype=torch.bfloat16)  # kept as it is: no copy per step
        tw.log(m=t)
        t.add_(100.0)

    mean, curve, seen = _eight_steps(tmp_path, step)
    changed = [m for m in seen if "changed in place" in m]
    assert len(changed) == 1, seen
    assert "metric 'm'" in changed[0] and "tw.log(m=t.detach().clone())" in changed[0]
    assert "logged in phase 'train'" in changed[0]
