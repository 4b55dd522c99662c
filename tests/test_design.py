"""Black-box checks of DESIGN.md's API, Behaviour and Outputs promises, edge cases first.

Only the public API (``import torchwatch as tw``) and observable outputs are used: event files
read back with TensorBoard's EventAccumulator, console text, modes inside the loop, warnings.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import re
import socket
import warnings

import pytest
import torch
from torch import nn

import torchwatch as tw
from torchwatch import TorchwatchWarning

from .conftest import read_scalars


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 50.0

    def __call__(self):
        return self.now


def lines_of(out):
    return [line for line in out.splitlines() if line.startswith("Epoch")]


def steps_of(points):
    return [s for s, _ in points]


def values_of(points):
    return [v for _, v in points]


# -- API: watch_epoch forms ---------------------------------------------------------------------


def test_watch_epoch_positional_phase_name_is_an_eval_phase(tmp_path, model):
    """`@tw.watch_epoch("val")` names the phase val: eval mode, no grad, val/epoch/loss."""
    run = tw.init(logdir=str(tmp_path), console=False)
    seen = {}

    @tw.watch_epoch("val")
    def evaluate(model):
        seen["training"] = model.training
        seen["grad"] = torch.is_grad_enabled()
        return 0.25

    model.train()
    assert evaluate(model) == 0.25
    assert seen == {"training": False, "grad": False}
    assert model.training and torch.is_grad_enabled()
    tw.close()
    assert [(r.phase, r.epoch) for r in run.history] == [("val", 0)]
    assert read_scalars(tmp_path / "val")["epoch/loss"] == [(0, 0.25)]


def test_watch_epoch_phase_keyword_train_g_is_a_train_phase(tmp_path, model):
    """`@tw.watch_epoch(phase="train_G")` is a train phase: train mode, grad, global step."""
    run = tw.init(logdir=str(tmp_path), console=False, log_every=2)
    seen = {}

    @tw.watch_epoch(phase="train_G")
    def train_g(model):
        seen["training"] = model.training
        seen["grad"] = torch.is_grad_enabled()
        for _ in tw.steps(range(3)):
            tw.log(loss=1.0)

    model.eval()
    with torch.no_grad():
        train_g(model)
        assert not torch.is_grad_enabled()
    assert seen == {"training": True, "grad": True}
    assert not model.training
    assert run.global_step == 3
    tw.close()
    written = read_scalars(tmp_path / "train_G")
    assert steps_of(written["step/loss"]) == [2, 3]
    assert written["epoch/loss"] == [(0, 1.0)]


def test_run_watch_epoch_with_a_positional_phase(tmp_path, model):
    """`run.watch_epoch("val")` on a Run object names the phase like the module-level verb."""
    run = tw.Run(str(tmp_path), console=False)

    @run.watch_epoch("val")
    def evaluate(model):
        assert not model.training
        return {"acc": 0.5}

    evaluate(model)
    run.close()
    assert [(r.phase, r.metrics) for r in run.history] == [("val", {"acc": 0.5})]


def test_watch_epoch_keeps_signature_docstring_and_return_value(tmp_path):
    """A watched function keeps its signature, name and docstring; its result passes untouched."""
    tw.init(logdir=str(tmp_path), console=False)
    token = {"loss": 1.0, "extra": object()}

    def train_one_epoch(model, loader, optimizer=None, *, scale=2):
        """One epoch."""
        return token

    watched = tw.watch_epoch(train_one_epoch)
    assert inspect.signature(watched) == inspect.signature(train_one_epoch)
    assert watched.__doc__ == "One epoch." and watched.__name__ == "train_one_epoch"
    with pytest.warns(TorchwatchWarning):  # 'extra' is not a number; no model found
        assert watched(None, []) is token


def test_watch_epoch_train_true_on_a_finetune_phase(tmp_path, model):
    """`train=True` on a phase named 'finetune' trains, advances the global step and writes step/*."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tw.init(logdir=str(tmp_path), console=False, optimizer=opt, log_every=2)
    seen = {}

    @tw.watch_epoch("finetune", train=True)
    def finetune(model):
        seen["training"], seen["grad"] = model.training, torch.is_grad_enabled()
        for _ in tw.steps(range(4)):
            tw.log(loss=2.0)

    model.eval()
    finetune(model)
    finetune(model)
    assert seen == {"training": True, "grad": True}
    assert not model.training
    assert run.global_step == 8
    assert [r.epoch for r in run.history] == [0, 1]
    tw.close()
    written = read_scalars(tmp_path / "finetune")
    assert steps_of(written["step/loss"]) == [2, 4, 6, 8]
    assert steps_of(written["step/lr"]) == [2, 4, 6, 8]
    assert written["epoch/lr"] == [(0, pytest.approx(0.1)), (1, pytest.approx(0.1))]


def test_phase_train_true_on_finetune_and_train_false_on_train_named(tmp_path, model):
    """`tw.phase("finetune", train=True)` trains; `tw.phase("train_eval", train=False)` evaluates."""
    run = tw.init(logdir=str(tmp_path), console=False, model=model)
    model.eval()
    with tw.phase("finetune", train=True):
        assert model.training and torch.is_grad_enabled()
        for _ in tw.steps(range(2)):
            pass
    assert run.global_step == 2 and not model.training
    model.train()
    with tw.phase("train_eval", train=False):
        assert not model.training and not torch.is_grad_enabled()
        for _ in tw.steps(range(5)):
            pass
    assert run.global_step == 2 and model.training


def test_grad_true_in_val_and_grad_false_in_train(tmp_path, model):
    """`grad=` overrides the phase's grad mode but not its train/eval mode; both restored."""
    tw.init(logdir=str(tmp_path), console=False, model=model)
    model.train()
    with tw.phase("val", grad=True):
        assert not model.training and torch.is_grad_enabled()
        out = model(torch.randn(3, 4)).sum()
        assert out.requires_grad
    assert model.training and torch.is_grad_enabled()
    with tw.phase("train", grad=False):
        assert model.training and not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    with torch.no_grad():
        with tw.phase("val", grad=True):
            assert torch.is_grad_enabled()
        assert not torch.is_grad_enabled()


def test_decorator_model_overrides_the_argument_scan(tmp_path):
    """`model=` of the decorator is the only module switched: a teacher argument stays in eval."""
    tw.init(logdir=str(tmp_path), console=False)
    student, teacher = nn.Linear(2, 2), nn.Linear(2, 2)
    teacher.eval()
    student.eval()

    @tw.watch_epoch(model=student)
    def distill(student, teacher):
        assert student.training and not teacher.training
        return 1.0

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "several modules found" message with model=
        distill(student, teacher)
    assert not student.training and not teacher.training


def test_run_model_dict_switches_every_module(tmp_path):
    """`model={"G": g, "D": d}` on the run: a val phase puts both in eval, then restores both."""
    g, d = nn.Linear(2, 2), nn.Linear(2, 2)
    tw.init(logdir=str(tmp_path), console=False, model={"G": g, "D": d})
    with tw.phase("val"):
        assert not g.training and not d.training
    assert g.training and d.training


# -- Epochs -------------------------------------------------------------------------------------


def test_phase_epoch_one_based_range_is_shown_as_given(tmp_path, capsys):
    """`epoch=` from range(1, N+1) on phase: TensorBoard steps 1..N, console Epoch [1/N]..[N/N]."""
    tw.init(logdir=str(tmp_path), total_epochs=3)
    for epoch in range(1, 4):
        with tw.phase("train", epoch=epoch):
            tw.log(loss=float(epoch))
        with tw.phase("val", epoch=epoch):
            tw.log(loss=float(epoch) / 2)
    tw.close()
    assert steps_of(read_scalars(tmp_path / "train")["epoch/loss"]) == [1, 2, 3]
    assert steps_of(read_scalars(tmp_path / "val")["epoch/loss"]) == [1, 2, 3]
    labels = [line.split(" ")[1] + " " + line.split(" ")[2] for line in
              lines_of(capsys.readouterr().out)]
    assert labels == ["[1/3] train", "[1/3] val", "[2/3] train", "[2/3] val",
                      "[3/3] train", "[3/3] val"]


def test_decorated_epoch_argument_one_based_and_val_joins_it(tmp_path, capsys):
    """An epoch passed from range(1, N+1) to a watched function is used as given; val joins it."""
    run = tw.init(logdir=str(tmp_path), total_epochs=2)

    @tw.watch_epoch
    def train_one_epoch(loader, epoch):
        return 0.5

    for epoch in range(1, 3):
        train_one_epoch([], epoch)
        with tw.phase("val"):
            tw.log(loss=1.0)
    tw.close()
    assert [(r.phase, r.epoch) for r in run.history] == [
        ("train", 1), ("val", 1), ("train", 2), ("val", 2)]
    assert steps_of(read_scalars(tmp_path / "val")["epoch/loss"]) == [1, 2]
    out = capsys.readouterr().out
    assert [line.split("  ")[0] for line in lines_of(out)] == [
        "Epoch [1/2] train", "Epoch [1/2] val", "Epoch [2/2] train", "Epoch [2/2] val"]


def test_decorated_epoch_keyword_zero_based_shown_one_based(tmp_path, capsys):
    """An epoch passed by keyword from range(N) is the TensorBoard step and shown value + 1."""
    tw.init(logdir=str(tmp_path), total_epochs=2)

    @tw.watch_epoch
    def train_one_epoch(loader, *, epoch):
        return 0.5

    for epoch in range(2):
        train_one_epoch([], epoch=epoch)
    tw.close()
    assert steps_of(read_scalars(tmp_path / "train")["epoch/loss"]) == [0, 1]
    assert [line.split("  ")[0] for line in lines_of(capsys.readouterr().out)] == [
        "Epoch [1/2] train", "Epoch [2/2] train"]


def test_epoch_passed_through_kwargs_is_explicit(tmp_path):
    """An `epoch` argument explicitly passed to a watched function taking **kwargs sets the epoch."""
    run = tw.init(logdir=str(tmp_path), console=False)

    @tw.watch_epoch
    def train_one_epoch(loader, **options):
        return 0.5

    train_one_epoch([], epoch=5)
    assert run.history[0].epoch == 5


def test_eval_only_loop_with_two_names_console_and_steps(tmp_path, capsys):
    """An eval-only loop of val and test counts epochs 0, 1 and shows Epoch [1], [2] without a total."""
    run = tw.init(logdir=str(tmp_path))
    for i in range(2):
        with tw.phase("val"):
            tw.log(loss=float(i))
        with tw.phase("test"):
            tw.log(loss=float(i) + 10)
    tw.close()
    assert [(r.phase, r.epoch) for r in run.history] == [
        ("val", 0), ("test", 0), ("val", 1), ("test", 1)]
    assert read_scalars(tmp_path / "val")["epoch/loss"] == [(0, 0.0), (1, 1.0)]
    assert read_scalars(tmp_path / "test")["epoch/loss"] == [(0, 10.0), (1, 11.0)]
    assert [line.split("  ")[0] for line in lines_of(capsys.readouterr().out)] == [
        "Epoch [1] val", "Epoch [1] test", "Epoch [2] val", "Epoch [2] test"]


def test_nested_watch_epoch_inside_watch_epoch(tmp_path, capsys):
    """A watched val function called inside a watched train epoch is nested: same epoch, one
    step/<metric> point at the current global step, its own console line, no epoch/* tags."""
    run = tw.init(logdir=str(tmp_path), total_epochs=2, log_every=2)

    @tw.watch_epoch("val")
    def evaluate():
        for _ in tw.steps([torch.zeros(2, 1)] * 4):
            tw.log(acc=0.75)

    @tw.watch_epoch
    def train_one_epoch():
        for _ in tw.steps(range(3)):
            tw.log(loss=1.0)
        evaluate()
        return 0.5

    train_one_epoch()
    train_one_epoch()
    tw.close()
    assert [(r.phase, r.epoch, r.nested, r.global_step) for r in run.history] == [
        ("val", 0, True, 3), ("train", 0, False, 3), ("val", 1, True, 6), ("train", 1, False, 6)]
    val = read_scalars(tmp_path / "val")
    assert val["step/acc"] == [(3, 0.75), (6, 0.75)]
    assert not any(tag.startswith("epoch/") for tag in val)
    assert not any(tag in val for tag in ("step/time_ms", "step/samples_per_s",
                                          "step/data_wait_frac"))
    assert [line.split("  ")[0] for line in lines_of(capsys.readouterr().out)] == [
        "Epoch [1/2] val", "Epoch [1/2] train", "Epoch [2/2] val", "Epoch [2/2] train"]


def test_nested_phase_record_fields(tmp_path):
    """A nested phase's PhaseRecord has the outer epoch, its own steps and samples, and nested."""
    run = tw.init(logdir=str(tmp_path), console=False)
    with tw.phase("train"):
        for _ in tw.steps(range(5)):
            tw.log(loss=1.0)
        with tw.phase("val") as inner:
            for x in tw.steps([torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(1, 3)]):
                tw.log(loss=float(len(x)))
    record = inner.record
    assert isinstance(record, tw.PhaseRecord)
    assert record._fields == ("epoch", "phase", "metrics", "time_s", "samples", "steps",
                              "global_step", "nested")
    assert record.epoch == 0 and record.phase == "val" and record.nested is True
    assert record.steps == 3 and record.samples == 5 and record.global_step == 5
    assert record.metrics == pytest.approx({"loss": (2 * 2 + 2 * 2 + 1 * 1) / 5})
    assert isinstance(record.time_s, float) and record.time_s >= 0
    assert run.history[0] is record or run.history[0] == record
    assert run.history[1].phase == "train" and run.history[1].nested is False


def test_phase_metrics_are_user_floats_without_lr(tmp_path):
    """`p.metrics` holds the user's metrics as Python floats under bare names, no automatic lr."""
    w = nn.Parameter(torch.zeros(1))
    tw.init(logdir=str(tmp_path), console=False, optimizer=torch.optim.SGD([w], lr=0.1))
    with tw.phase("train") as p:
        tw.log(loss=torch.tensor(0.5), acc=torch.tensor(1))
    assert p.metrics == {"loss": 0.5, "acc": 1.0}
    assert all(type(v) is float for v in p.metrics.values())


# -- Values -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Metrics:
    loss: torch.Tensor
    acc: float


Pair = collections.namedtuple("Pair", "loss top5")


def test_log_positional_dataclass_and_namedtuple_use_their_field_names(tmp_path):
    """A dataclass or namedtuple passed positionally to tw.log records each field by name."""
    tw.init(logdir=str(tmp_path), console=False, model=nn.Linear(1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tw.phase("val") as p:
            tw.log(Metrics(loss=torch.tensor(0.5), acc=0.75))
            tw.log(Pair(loss=1.5, top5=torch.tensor(0.25)))
    assert p.metrics == pytest.approx({"loss": 1.0, "acc": 0.75, "top5": 0.25})


def test_log_positional_bare_tuple_is_skipped_with_one_warning(tmp_path):
    """A bare tuple passed to tw.log is skipped with a TorchwatchWarning that says how to fix it."""
    tw.init(logdir=str(tmp_path), console=False)
    with tw.phase("val") as p:
        with pytest.warns(TorchwatchWarning, match="tuple") as caught:
            tw.log((0.5, 0.25))
            tw.log((0.5, 0.25))
        tw.log(acc=1.0)
    assert len([w for w in caught if issubclass(w.category, TorchwatchWarning)]) == 1
    assert p.metrics == {"acc": 1.0}


def test_none_anywhere_is_skipped_silently(tmp_path):
    """None in a returned dict, a dataclass field or a tw.log keyword is skipped without warning."""
    tw.init(logdir=str(tmp_path), console=False, model=nn.Linear(1, 1))

    @tw.watch_epoch
    def train():
        tw.log(loss=None, acc=0.5)
        tw.log(None)
        return {"loss": 0.25, "f1": None}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tw.phase("val") as p:
            tw.log(Metrics(loss=None, acc=0.5))
        train()
    assert p.metrics == {"acc": 0.5}
    assert tw.current_run().history[-1].metrics == {"acc": 0.5, "loss": 0.25}


def test_n_weighting_with_uneven_batches(tmp_path):
    """tw.log(..., n=len(x)) with batches of 3 and 1 gives the sample-weighted mean."""
    tw.init(logdir=str(tmp_path), console=False)
    with tw.phase("val") as p:
        for x, loss in ((torch.zeros(3), 1.0), (torch.zeros(1), 5.0)):
            tw.log(loss=torch.tensor(loss), n=len(x))
    assert p.metrics == pytest.approx({"loss": (3 * 1.0 + 1 * 5.0) / 4})
    with tw.phase("val") as q:
        tw.log(loss=torch.tensor(1.0), n=torch.tensor(3))
        tw.log(loss=torch.tensor(5.0), n=torch.tensor(1))
    assert q.metrics == pytest.approx({"loss": 2.0})


def test_n_overrides_the_samples_of_the_step(tmp_path):
    """Inside tw.steps an explicit n= is the weight, not the step's batch rows."""
    tw.init(logdir=str(tmp_path), console=False)
    with tw.phase("val") as p:
        for x in tw.steps([torch.zeros(4, 1), torch.zeros(1, 1)]):
            tw.log(a=float(len(x)), n=1)  # 4 and 1, weighted equally
            tw.log(b=float(len(x)))  # weighted by rows: (4*4 + 1*1) / 5
    assert p.metrics == pytest.approx({"a": 2.5, "b": 17 / 5})


def test_without_steps_or_n_each_call_weighs_one(tmp_path):
    """Outside a tw.steps step and without n=, each tw.log call weighs 1."""
    tw.init(logdir=str(tmp_path), console=False)
    with tw.phase("val") as p:
        for v in (1.0, 2.0, 6.0):
            tw.log(v)
    assert p.metrics == pytest.approx({"loss": 3.0})


def test_returned_name_replaces_only_that_name(tmp_path):
    """A name a watched function returns replaces the logged values of that name, not the others."""
    run = tw.init(logdir=str(tmp_path), console=False)

    @tw.watch_epoch
    def train():
        for v in (1.0, 3.0):
            tw.log(loss=v, acc=v / 10)
        return torch.tensor(9.0)

    train()
    assert run.history[0].metrics == pytest.approx({"loss": 9.0, "acc": 0.2})


# -- Learning rates -----------------------------------------------------------------------------


def _train_with(tmp_path, optimizer, log=None, steps=2, **options):
    run = tw.init(logdir=str(tmp_path), optimizer=optimizer, log_every=2, progress=False,
                  **options)
    with tw.phase("train"):
        for _ in tw.steps(range(steps)):
            tw.log(loss=1.0, **(log or {}))
    tw.close()
    return run


def test_lr_one_optimizer_one_group(tmp_path, capsys):
    """One optimizer with one param group gives `lr` on the console, epoch/lr and step/lr."""
    w = nn.Parameter(torch.zeros(1))
    _train_with(tmp_path, torch.optim.SGD([w], lr=1e-3))
    written = read_scalars(tmp_path / "train")
    assert written["epoch/lr"] == [(0, pytest.approx(1e-3))]
    assert written["step/lr"] == [(2, pytest.approx(1e-3))]
    assert "  lr 1.000e-03 |" in capsys.readouterr().out


def test_lr_per_param_group(tmp_path, capsys):
    """One optimizer with two param groups gives lr_0 and lr_1."""
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    _train_with(tmp_path, torch.optim.SGD([{"params": [a], "lr": 0.1},
                                           {"params": [b], "lr": 0.2}]))
    written = read_scalars(tmp_path / "train")
    assert values_of(written["epoch/lr_0"]) == pytest.approx([0.1])
    assert values_of(written["epoch/lr_1"]) == pytest.approx([0.2])
    assert "step/lr_0" in written and "step/lr_1" in written and "epoch/lr" not in written
    out = capsys.readouterr().out
    assert "lr_0 0.1000  lr_1 0.2000" in out


def test_lr_dict_of_optimizers_with_groups(tmp_path, capsys):
    """A dict of optimizers gives lr_<name> for one group and lr_<name>_<i> for several."""
    a, b, c = (nn.Parameter(torch.zeros(1)) for _ in range(3))
    _train_with(tmp_path, {"G": torch.optim.SGD([a], lr=0.5),
                           "D": torch.optim.SGD([{"params": [b], "lr": 0.1},
                                                 {"params": [c], "lr": 0.2}])})
    written = read_scalars(tmp_path / "train")
    assert {t for t in written if "lr" in t} == {
        "epoch/lr_G", "epoch/lr_D_0", "epoch/lr_D_1", "step/lr_G", "step/lr_D_0", "step/lr_D_1"}
    assert values_of(written["epoch/lr_D_1"]) == pytest.approx([0.2])
    assert "lr_G 0.5000" in capsys.readouterr().out


def test_user_metric_named_lr_replaces_the_automatic_one(tmp_path, capsys):
    """A metric the user logs as `lr` replaces the optimizer's lr on the console, epoch/ and step/."""
    w = nn.Parameter(torch.zeros(1))
    _train_with(tmp_path, torch.optim.SGD([w], lr=1e-3), log={"lr": 0.5}, steps=3)
    written = read_scalars(tmp_path / "train")
    assert written["epoch/lr"] == [(0, 0.5)]
    assert written["step/lr"] == [(2, 0.5), (3, 0.5)]
    line = lines_of(capsys.readouterr().out)[0]
    assert line.count(" lr ") == 1 and "lr 0.5000" in line and "1.000e-03" not in line


def test_user_metric_named_lr_g_replaces_the_automatic_one(tmp_path):
    """With a dict of optimizers, a logged `lr_G` replaces the automatic lr_G."""
    a = nn.Parameter(torch.zeros(1))
    _train_with(tmp_path, {"G": torch.optim.SGD([a], lr=0.5)}, log={"lr_G": 0.125}, console=False)
    written = read_scalars(tmp_path / "train")
    assert written["epoch/lr_G"] == [(0, 0.125)]
    assert written["step/lr_G"] == [(2, 0.125)]


# -- Console ------------------------------------------------------------------------------------


LINE = re.compile(r"^Epoch \[(\d+)(/\d+)?\] (\S+)((  \S+ \S+)*) \| (\d+\.\d+)s(  .*)?$")


def test_console_line_shape_with_steps_and_total(tmp_path, capsys):
    """With tw.steps and total_epochs: `Epoch [1/4] train  loss 0.5000 | 0.400s  N samples/s  data X%`."""
    clock = FakeClock()
    tw.init(logdir=str(tmp_path), total_epochs=4, clock=clock, progress=False)
    with tw.phase("train"):
        for _ in tw.steps([torch.zeros(10, 1)] * 4):
            clock.now += 0.1
            tw.log(loss=0.5)
    tw.close()
    (line,) = lines_of(capsys.readouterr().out)
    assert line == "Epoch [1/4] train  loss 0.5000 | 0.400s  100 samples/s  data 0%"
    assert LINE.match(line)


def test_console_thousands_separator_and_seconds(tmp_path, capsys):
    """Samples/s use a thousands separator; times of 1 s or more show one decimal."""
    clock = FakeClock()
    tw.init(logdir=str(tmp_path), clock=clock, progress=False)
    with tw.phase("train"):
        for _ in tw.steps([torch.zeros(5120, 1)] * 30):
            clock.now += 0.41
    tw.close()
    (line,) = lines_of(capsys.readouterr().out)
    assert line == "Epoch [1] train | 12.3s  12,488 samples/s  data 0%"


def test_console_without_steps_shows_no_samples_or_data(tmp_path, capsys):
    """A phase without tw.steps knows neither samples nor data wait: the line ends at the time."""
    tw.init(logdir=str(tmp_path), total_epochs=2)
    with tw.phase("val"):
        tw.log(loss=0.123456, acc=12.5)
    tw.close()
    (line,) = lines_of(capsys.readouterr().out)
    assert re.fullmatch(r"Epoch \[1/2\] val  loss 0\.1235  acc 12\.50 \| \d+\.\d+s", line)
    written = read_scalars(tmp_path / "val")
    assert "epoch/samples_per_s" not in written and "epoch/data_wait_frac" not in written
    assert "epoch/time_s" in written


def test_console_steps_over_items_without_tensors_shows_no_samples(tmp_path, capsys):
    """tw.steps over items with no tensor counts no samples: no samples/s, but the data wait."""
    clock = FakeClock()
    tw.init(logdir=str(tmp_path), clock=clock, progress=False)
    with tw.phase("val"):
        for _ in tw.steps(range(4)):
            clock.now += 0.25
    tw.close()
    (line,) = lines_of(capsys.readouterr().out)
    assert line == "Epoch [1] val | 1.0s  data 0%"
    written = read_scalars(tmp_path / "val")
    assert "epoch/samples_per_s" not in written and "epoch/data_wait_frac" in written


def test_console_batch_size_gives_samples(tmp_path, capsys):
    """tw.steps(batch_size=) counts samples for items without tensors."""
    clock = FakeClock()
    tw.init(logdir=str(tmp_path), clock=clock, progress=False)
    with tw.phase("val") as p:
        for _ in tw.steps(range(4), batch_size=25):
            clock.now += 0.25
    tw.close()
    assert p.record.samples == 100
    (line,) = lines_of(capsys.readouterr().out)
    assert line == "Epoch [1] val | 1.0s  100 samples/s  data 0%"


def test_watch_step_alone_reports_no_data_wait(tmp_path, capsys):
    """With @watch_step and no tw.steps the data wait is unknown: the line shows samples/s only."""
    clock = FakeClock()
    tw.init(logdir=str(tmp_path), clock=clock, progress=False)

    @tw.watch_step
    def step(x):
        clock.now += 0.5
        return x.sum()

    with tw.phase("train"):
        for _ in range(2):
            clock.now += 0.5  # data loading the watched step never sees
            step(torch.zeros(10, 1))
    tw.close()
    (line,) = lines_of(capsys.readouterr().out)
    assert "samples/s" in line and "data" not in line
    assert "epoch/data_wait_frac" not in read_scalars(tmp_path / "train")


def test_interrupted_nested_phase_console_and_history(tmp_path, capsys):
    """An exception in a nested phase prints it interrupted with its step count; no record."""
    run = tw.init(logdir=str(tmp_path), total_epochs=3)
    with pytest.raises(KeyError):
        with tw.phase("train"):
            with tw.phase("val"):
                for _ in tw.steps(range(2)):
                    pass
                raise KeyError("x")
    assert run.history == []
    out = capsys.readouterr().out
    assert "Epoch [1/3] val interrupted after 2 steps (KeyError)" in out
    assert "Epoch [1/3] train interrupted after 0 steps (KeyError)" in out


# -- Step scalars -------------------------------------------------------------------------------


def test_step_tags_every_log_every_steps_and_the_partial_interval(tmp_path):
    """step/* tags are written at k % log_every == 0 (k counted per phase) and at phase end."""
    clock = FakeClock()
    w = nn.Parameter(torch.zeros(1))
    tw.init(logdir=str(tmp_path), console=False, log_every=3, clock=clock, progress=False,
            optimizer=torch.optim.SGD([w], lr=0.1))
    with tw.phase("train"):
        for i, _ in enumerate(tw.steps([torch.zeros(2, 1)] * 7)):
            clock.now += 0.01
            tw.log(loss=float(i + 1))
    with tw.phase("train"):
        for _ in tw.steps([torch.zeros(2, 1)] * 3):
            clock.now += 0.01
            tw.log(loss=1.0)
    tw.close()
    written = read_scalars(tmp_path / "train")
    assert written["step/loss"][:3] == [(3, 2.0), (6, 5.0), (7, 7.0)]
    assert steps_of(written["step/loss"]) == [3, 6, 7, 10]
    for tag in ("step/time_ms", "step/samples_per_s", "step/data_wait_frac", "step/lr"):
        assert steps_of(written[tag]) == [3, 6, 7, 10], tag
    assert values_of(written["step/time_ms"]) == pytest.approx([10.0] * 4)
    assert values_of(written["step/samples_per_s"]) == pytest.approx([200.0] * 4)


def test_top_level_eval_phase_writes_no_step_tags(tmp_path):
    """A top-level val phase with tw.steps writes epoch/* only, no step/* scalars."""
    tw.init(logdir=str(tmp_path), console=False, log_every=2)
    with tw.phase("val"):
        for _ in tw.steps([torch.zeros(2, 1)] * 5):
            tw.log(loss=1.0)
    tw.close()
    written = read_scalars(tmp_path / "val")
    assert not any(tag.startswith("step/") for tag in written)
    assert written["epoch/loss"] == [(0, 1.0)]


def test_nested_phase_writes_its_results_once_at_the_global_step(tmp_path):
    """A nested phase with many steps and logs writes one point per metric at the global step."""
    tw.init(logdir=str(tmp_path), console=False, log_every=2)
    with tw.phase("train"):
        for _ in tw.steps(range(4)):
            tw.log(loss=1.0)
        with tw.phase("val"):
            for i in tw.steps(range(7)):
                tw.log(loss=float(i), acc=0.5)
        for _ in tw.steps(range(1)):
            tw.log(loss=1.0)
    tw.close()
    val = read_scalars(tmp_path / "val")
    assert val["step/loss"] == [(4, 3.0)]
    assert val["step/acc"] == [(4, 0.5)]
    assert steps_of(read_scalars(tmp_path / "train")["step/loss"]) == [2, 4, 5]


def test_watch_step_inside_steps_is_not_double_counted(tmp_path):
    """@watch_step called inside a tw.steps step counts once in steps, samples and global step."""
    run = tw.init(logdir=str(tmp_path), console=False, log_every=2)

    @tw.watch_step
    def step(x):
        return x.sum()

    with tw.phase("train") as p:
        for x in tw.steps([torch.ones(3, 1), torch.ones(1, 1)]):
            step(x)
    assert p.record.steps == 2 and p.record.samples == 4 and run.global_step == 2
    assert p.metrics == pytest.approx({"loss": (3 * 3 + 1 * 1) / 4})


def test_watch_step_in_val_does_not_advance_the_global_step(tmp_path):
    """@watch_step calls in an eval phase are steps of that phase but not global train steps."""
    run = tw.init(logdir=str(tmp_path), console=False)

    @tw.watch_step
    def step(x):
        return x.mean()

    with tw.phase("val") as p:
        for _ in range(3):
            step(torch.ones(2, 1))
    assert p.record.steps == 3 and p.record.samples == 6 and run.global_step == 0


# -- Options, disabling, runs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, error, words",
    [
        ({"log_every": -5}, ValueError, "log_every"),
        ({"log_every": 2.5}, ValueError, "log_every"),
        ({"progress": "yes"}, ValueError, "progress"),
        ({"tensorboard": 1}, TypeError, "tensorboard"),
        ({"strict": "no"}, TypeError, "strict"),
        ({"enabled": None}, TypeError, "enabled"),
        ({"total_epochs": "10"}, (TypeError, ValueError), "total_epochs"),
        ({"model": [nn.Linear(1, 1), "x"]}, TypeError, "model"),
        ({"model": {"G": nn.Linear(1, 1), "D": 3}}, TypeError, "model"),
        ({"model": nn.Linear}, TypeError, "model"),
        ({"optimizer": {"G": 3}}, TypeError, "optimizer"),
        ({"hparams": "lr=0.1"}, TypeError, "hparams"),
        ({"on_nan": None}, ValueError, "on_nan"),
    ],
)
def test_more_bad_options_name_the_option_and_what_came(tmp_path, options, error, words):
    """A wrong option type or value raises at once, naming the option and what was received."""
    with pytest.raises(error) as caught:
        tw.Run(str(tmp_path), **options)
    message = str(caught.value)
    assert words in message
    received = next(iter(options.values()))
    if isinstance(received, (int, float, str)) or received is None:
        assert repr(received) in message


def test_unknown_option_is_refused_naming_it(tmp_path):
    """A misspelt option raises TypeError naming it, rather than being ignored."""
    with pytest.raises(TypeError, match="log_evry"):
        tw.init(logdir=str(tmp_path), log_evry=5)


def test_disabled_run_watch_step_and_nested_pass_through(tmp_path, model, capsys):
    """enabled=False: @watch_step and nested phases return values unchanged and record nothing."""
    run = tw.init(logdir=str(tmp_path / "off"), enabled=False, model=model)

    @tw.watch_step
    def step(x):
        return x * 2

    with tw.phase("train") as outer:
        assert model.training
        with tw.phase("val") as inner:
            assert not model.training
            tw.log(loss=1.0)
        assert step(torch.ones(1)).item() == 2.0
        assert list(tw.steps([1, 2])) == [1, 2]
    assert outer.record is None and inner.record is None and run.history == []
    assert run.global_step == 0
    tw.close()
    assert not (tmp_path / "off").exists()
    assert capsys.readouterr().out == ""


def test_env_disable_wins_over_enabled_true(tmp_path, monkeypatch, capsys):
    """TORCHWATCH_DISABLE=1 disables a run even when enabled=True is passed."""
    monkeypatch.setenv("TORCHWATCH_DISABLE", "1")
    run = tw.init(logdir=str(tmp_path / "off"), enabled=True)

    @tw.watch_epoch
    def train():
        return 3

    assert train() == 3
    assert run.history == []
    tw.close()
    assert not (tmp_path / "off").exists() and capsys.readouterr().out == ""


def test_default_logdir_is_runs_date_host(tmp_path, monkeypatch):
    """Without logdir the run writes to runs/<date-time>_<host>, as SummaryWriter does."""
    monkeypatch.chdir(tmp_path)
    run = tw.init(console=False)
    with tw.phase("train"):
        tw.log(loss=1.0)
    tw.close()
    (folder,) = list((tmp_path / "runs").iterdir())
    assert folder.name.endswith("_" + socket.gethostname())
    assert (folder / "train").is_dir()
    assert read_scalars(folder / "train")["epoch/loss"] == [(0, 1.0)]
    assert run.logdir.replace("\\", "/").startswith("runs/")


def test_run_writer_is_the_writer_of_that_phase_folder(tmp_path):
    """run.writer(phase) writes into the same <logdir>/<phase>/ run that holds its epoch/* tags."""
    run = tw.Run(str(tmp_path), console=False)
    with run.phase("val"):
        tw.log(loss=0.5)
    writer = run.writer("val")
    assert writer is run.writer("val")
    writer.add_scalar("custom/value", 2.0, 0)
    run.close()
    written = read_scalars(tmp_path / "val")
    assert written["epoch/loss"] == [(0, 0.5)] and written["custom/value"] == [(0, 2.0)]


def test_two_runs_side_by_side_log_goes_to_the_innermost_phase(tmp_path):
    """tw.log and run.log record into the innermost active phase, whichever run it belongs to."""
    a = tw.Run(str(tmp_path / "a"), console=False)
    b = tw.Run(str(tmp_path / "b"), console=False)
    with a.phase("train") as pa:
        tw.log(x=1.0)
        with b.phase("val") as pb:
            tw.log(y=2.0)
            a.log(z=3.0)
        tw.log(x=3.0)
    a.close()
    b.close()
    assert pa.metrics == {"x": 2.0}
    assert pb.metrics == {"y": 2.0, "z": 3.0}
    assert pb.record.nested is False  # a phase of another run does not nest it
    assert read_scalars(tmp_path / "b" / "val")["epoch/y"] == [(0, 2.0)]
    assert "epoch/y" not in read_scalars(tmp_path / "a" / "train")


def test_two_runs_count_epochs_and_steps_separately(tmp_path):
    """Two runs side by side keep their own epoch and global-step counters."""
    a = tw.Run(str(tmp_path / "a"), console=False)
    b = tw.Run(str(tmp_path / "b"), console=False)
    for _ in range(2):
        with a.phase("train"):
            for _ in a.steps(range(3)):
                pass
    with b.phase("train"):
        for _ in b.steps(range(2)):
            pass
    assert [r.epoch for r in a.history] == [0, 1] and a.global_step == 6
    assert [r.epoch for r in b.history] == [0] and b.global_step == 2
    a.close()
    b.close()


def test_close_twice_and_after_context_manager(tmp_path):
    """tw.close() and run.close() are safe to call twice, also after `with tw.init()`."""
    with tw.init(logdir=str(tmp_path / "x"), console=False) as run:
        with tw.phase("train"):
            tw.log(loss=1.0)
    run.close()
    tw.close()
    tw.close()
    assert read_scalars(tmp_path / "x" / "train")["epoch/loss"] == [(0, 1.0)]
    tw.init(logdir=str(tmp_path / "y"), console=False)
    tw.close()
    tw.close()


def test_hparams_metrics_are_the_final_epoch_values(tmp_path):
    """hparams are written once to <logdir> with the last epoch/* metric of each phase."""
    tw.init(logdir=str(tmp_path), console=False, hparams={"lr": 0.1})
    for v in (1.0, 0.25):
        with tw.phase("train"):
            tw.log(loss=v)
    tw.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    assert read_scalars(tmp_path / "train")["epoch/loss"][-1] == (1, 0.25)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["train"]


def test_progress_bar_desc_and_no_bar_when_false(tmp_path, capsys):
    """progress=True draws a tqdm bar on stderr with the given desc; progress=False draws none."""
    tw.init(logdir=str(tmp_path), console=False, progress=True)
    with tw.phase("val"):
        for _ in tw.steps(range(3), desc="checking"):
            pass
    assert "checking" in capsys.readouterr().err
    tw.init(logdir=str(tmp_path / "quiet"), console=False, progress=False)
    with tw.phase("val"):
        for _ in tw.steps(range(3), desc="checking"):
            pass
    assert capsys.readouterr().err == ""


# -- methods ------------------------------------------------------------------------------------


class Trainer:
    def __init__(self):
        self.model = nn.Linear(1, 1)

    def fit(self, steps, epoch):
        assert self.model.training
        return 1.0


def test_method_of_a_module_takes_self_and_a_positional_epoch(tmp_path, capsys):
    """A watched method of an nn.Module switches self and takes an epoch passed positionally."""
    run = tw.init(logdir=str(tmp_path), total_epochs=3)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(1, 1)

        @tw.watch_epoch
        def fit(self, steps, epoch):
            assert self.training and self.layer.training
            return 0.5

    net = Net().eval()
    for epoch in range(1, 4):
        net.fit(7, epoch)
    assert not net.training
    assert [r.epoch for r in run.history] == [1, 2, 3]
    assert lines_of(capsys.readouterr().out)[-1].startswith("Epoch [3/3] train")


def test_staticmethod_over_watch_epoch_takes_the_epoch(tmp_path):
    """`@staticmethod` over `@tw.watch_epoch` reads an epoch passed positionally."""
    run = tw.init(logdir=str(tmp_path), console=False, model=nn.Linear(1, 1))

    class Loop:
        @staticmethod
        @tw.watch_epoch
        def fit(steps, epoch):
            return 0.5

    Loop.fit(7, 4)
    Loop().fit(7, 5)
    assert [r.epoch for r in run.history] == [4, 5]


def test_watch_epoch_on_a_bound_method_takes_the_epoch_argument(tmp_path):
    """Wrapping a bound method, `tw.watch_epoch(trainer.fit)(7, 3)`, runs epoch 3."""
    run = tw.init(logdir=str(tmp_path), console=False)
    trainer = Trainer()
    trainer.model.eval()
    fit = tw.watch_epoch(trainer.fit)
    fit(7, 3)
    assert not trainer.model.training
    assert [r.epoch for r in run.history] == [3]


def test_watch_epoch_over_classmethod_takes_the_epoch_argument(tmp_path):
    """`@tw.watch_epoch` over `@classmethod`: an epoch passed to the method is used as given."""
    run = tw.init(logdir=str(tmp_path), console=False, model=nn.Linear(1, 1))

    class Loop:
        @tw.watch_epoch
        @classmethod
        def fit(cls, steps, epoch):
            return 0.5

    Loop.fit(7, 40)
    assert [r.epoch for r in run.history] == [40]
