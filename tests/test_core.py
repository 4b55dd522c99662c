"""End-to-end tests of the core verbs on the seed loop: modes, epochs, outputs, nesting."""

from __future__ import annotations

import io
import math
import re
import sys
import weakref

import pytest
import torch
from torch import nn

import torchwatch as tw
from torchwatch import TorchwatchWarning

from .conftest import read_scalars


def batches(n=4, rows=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(rows, 4, generator=g), torch.randint(0, 2, (rows,), generator=g))
            for _ in range(n)]


def test_seed_loop_writes_returned_losses_to_tensorboard_and_console(tmp_path, model, capsys):
    """The README loop: returned train loss and logged val loss reach both event files and lines."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    run = tw.init(logdir=str(tmp_path), model=model, optimizer=opt, total_epochs=3)

    @tw.watch_epoch
    def train_one_epoch(model, loader, optimizer):
        total = 0.0
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach()
        return total / len(loader)

    returned, val_means = [], []
    for epoch in range(3):
        returned.append(float(train_one_epoch(model, batches(), opt)))
        with tw.phase("val") as p:
            losses = []
            for x, y in batches(seed=1):
                loss = loss_fn(model(x), y)
                tw.log(loss=loss, n=len(x))
                losses.append(float(loss))
        val_means.append(sum(losses) / len(losses))
        assert p.metrics["loss"] == pytest.approx(val_means[-1], rel=1e-6)
    tw.close()

    train = read_scalars(tmp_path / "train")
    val = read_scalars(tmp_path / "val")
    assert [s for s, _ in train["epoch/loss"]] == [0, 1, 2]
    assert [v for _, v in train["epoch/loss"]] == pytest.approx(returned, rel=1e-6)
    assert [v for _, v in val["epoch/loss"]] == pytest.approx(val_means, rel=1e-6)
    assert train["epoch/lr"] == [(0, pytest.approx(1e-3)), (1, pytest.approx(1e-3)),
                                 (2, pytest.approx(1e-3))]
    assert "epoch/time_s" in train and "epoch/lr" not in val
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"Epoch [1/3] train  loss {returned[0]:#.4g}  lr 1.000e-03 | ")
    assert lines[1].startswith(f"Epoch [1/3] val  loss {val_means[0]:#.4g} | ")
    assert lines[5].startswith("Epoch [3/3] val  loss")
    assert re.search(r"\| \d+\.\d+s$", lines[1])
    assert [r.phase for r in run.history] == ["train", "val"] * 3
    assert [r.epoch for r in run.history] == [0, 0, 1, 1, 2, 2]


def test_modes_and_grad_inside_and_restored_after(model):
    """Train phases train with grad; other phases eval under no_grad; both restored on exit."""
    tw.init(tensorboard=False, console=False, model=model)
    seen = {}

    @tw.watch_epoch
    def train_epoch():
        seen["train"] = (model.training, torch.is_grad_enabled())

    model.eval()
    train_epoch()
    assert not model.training
    with tw.phase("val"):
        seen["val"] = (model.training, torch.is_grad_enabled(), model[1].training)
    model.train()
    with tw.phase("test"):
        seen["test"] = model.training
    assert model.training and all(m.training for m in model.modules())
    assert seen == {"train": (True, True), "val": (False, False, False), "test": False}
    assert torch.is_grad_enabled()


def test_frozen_submodule_stays_frozen_and_every_flag_is_restored(model):
    """A BatchNorm frozen with .eval() stays frozen in train phases and keeps its flag after val."""
    tw.init(tensorboard=False, console=False, model=model)
    model.train()
    model[1].eval()
    inside = {}
    with tw.phase("train"):
        inside["train"] = {n: m.training for n, m in model.named_modules()}
    with tw.phase("val"):
        inside["val"] = {n: m.training for n, m in model.named_modules()}
    after = {n: m.training for n, m in model.named_modules()}
    assert inside["train"]["1"] is False and inside["train"]["0"] is True
    assert not any(inside["val"].values())
    assert after == {"": True, "0": True, "1": False, "2": True, "3": True, "4": True}


def test_train_phase_on_an_eval_model_trains_it_and_restores_eval(model):
    """A model left in eval mode is switched to train for a train phase and back afterwards."""
    tw.init(tensorboard=False, console=False, model=model)
    model.eval()
    with tw.phase("train"):
        assert all(m.training for m in model.modules())
    assert not any(m.training for m in model.modules())


def test_exception_propagates_unchanged_and_restores_modes(tmp_path, model, capsys):
    """An exception leaves the phase unchanged, restores modes and grad, and writes no record."""
    run = tw.init(logdir=str(tmp_path), model=model, log_every=2)
    model.train()
    model[1].eval()
    error = RuntimeError("boom")
    with pytest.raises(RuntimeError) as caught:
        with tw.phase("train"):
            for _ in tw.steps(range(3)):
                tw.log(loss=1.0)
            raise error
    assert caught.value is error
    assert torch.is_grad_enabled()
    assert model.training and not model[1].training and model[0].training
    assert run.history == []
    assert "Epoch [1] train interrupted after 3 steps (RuntimeError)" in capsys.readouterr().out
    tw.close()
    written = read_scalars(tmp_path / "train")
    assert written["step/loss"] == [(2, 1.0)] and "epoch/loss" not in written


def test_nested_val_inside_train_joins_the_epoch_and_writes_at_global_step(tmp_path, model):
    """A phase inside a train epoch is nested: no new epoch, results at the current global step."""
    run = tw.init(logdir=str(tmp_path), model=model, console=False)

    @tw.watch_epoch
    def train_epoch(model):
        for _ in tw.steps(range(5)):
            tw.log(loss=2.0)
        with tw.phase("val") as inner:
            assert not model.training
            tw.log(loss=0.5)
        assert model.training
        return {"loss": 1.0}

    train_epoch(model)
    train_epoch(model)
    tw.close()
    val = read_scalars(tmp_path / "val")
    assert val["step/loss"] == [(5, 0.5), (10, 0.5)]
    assert "epoch/loss" not in val
    records = [(r.phase, r.epoch, r.nested, r.global_step) for r in run.history]
    assert records == [("val", 0, True, 5), ("train", 0, False, 5),
                       ("val", 1, True, 10), ("train", 1, False, 10)]
    assert read_scalars(tmp_path / "train")["epoch/loss"] == [(0, 1.0), (1, 1.0)]


def test_method_finds_self_model_and_explicit_epoch(tmp_path, capsys):
    """A decorated method toggles self.model and takes an explicit epoch argument as given."""

    class Trainer:
        def __init__(self):
            self.model = nn.Linear(2, 2)

        @tw.watch_epoch
        def train_epoch(self, epoch, scale=1.0):
            """Train one epoch."""
            assert self.model.training
            return epoch * scale

    tw.init(logdir=str(tmp_path), total_epochs=3)
    trainer = Trainer()
    trainer.model.eval()
    for epoch in range(1, 4):
        trainer.train_epoch(epoch)
    assert not trainer.model.training
    assert Trainer.train_epoch.__doc__ == "Train one epoch."
    assert Trainer.train_epoch.__name__ == "train_epoch"
    import inspect

    assert list(inspect.signature(trainer.train_epoch).parameters) == ["epoch", "scale"]
    tw.close()
    out = capsys.readouterr().out
    assert "Epoch [1/3] train  loss 1.000" in out and "Epoch [3/3] train  loss 3.000" in out
    assert [s for s, _ in read_scalars(tmp_path / "train")["epoch/loss"]] == [1, 2, 3]


def test_epoch_numbering_zero_based_explicit(tmp_path, capsys):
    """Explicit epochs from range(N) are TensorBoard steps as given and shown 1-based."""
    tw.init(logdir=str(tmp_path))
    for epoch in range(3):
        with tw.phase("train", epoch=epoch):
            tw.log(loss=float(epoch))
    tw.close()
    assert [s for s, _ in read_scalars(tmp_path / "train")["epoch/loss"]] == [0, 1, 2]
    out = capsys.readouterr().out
    assert out.startswith("Epoch [1] train") and "Epoch [3] train" in out


def test_eval_only_loop_counts_epochs_by_repeated_names(tmp_path, capsys):
    """With no train phase, a top-level name seen again starts the next epoch: 0, 1, 2."""
    run = tw.init(logdir=str(tmp_path), total_epochs=3)
    for i in range(3):
        with tw.phase("val"):
            tw.log(loss=float(i))
        with tw.phase("test"):
            tw.log(acc=float(i))
    assert [(r.phase, r.epoch) for r in run.history] == [
        ("val", 0), ("test", 0), ("val", 1), ("test", 1), ("val", 2), ("test", 2)]
    tw.close()
    assert [s for s, _ in read_scalars(tmp_path / "test")["epoch/acc"]] == [0, 1, 2]
    assert "Epoch [3/3] test  acc 2.000" in capsys.readouterr().out


def test_parameter_default_epoch_does_not_count(tmp_path):
    """A default value of an epoch parameter is not an explicit epoch; a passed one is."""
    run = tw.init(logdir=str(tmp_path), console=False)

    @tw.watch_epoch
    def train(epoch=7):
        return 1.0

    train()
    train()
    train(epoch=10)
    train()
    assert [r.epoch for r in run.history] == [0, 1, 10, 11]


def test_val_joins_current_train_epoch(tmp_path):
    """Top-level non-train phases join the epoch the last train phase started."""
    run = tw.init(logdir=str(tmp_path), console=False)
    for _ in range(2):
        with tw.phase("train"):
            pass
        with tw.phase("val"):
            pass
        with tw.phase("test"):
            pass
    assert [r.epoch for r in run.history] == [0, 0, 0, 1, 1, 1]


def test_generator_and_async_functions_are_refused():
    """Decorating a generator or an async function raises TypeError at decoration time."""

    def gen():
        yield 1

    async def coro():
        return 1

    for fn in (gen, coro):
        with pytest.raises(TypeError, match="cannot watch"):
            tw.watch_epoch(fn)
        with pytest.raises(TypeError, match="cannot watch"):
            tw.watch_step(fn)


@pytest.mark.parametrize(
    "options, error, words",
    [
        ({"log_every": 0}, ValueError, "log_every must be a positive int, got 0"),
        ({"progress": "x"}, ValueError, "progress must be 'auto', True or False, got 'x'"),
        ({"on_nan": "explode"}, ValueError, "on_nan must be one of"),
        ({"model": "resnet"}, TypeError, "model must be an nn.Module"),
        ({"optimizer": 3}, TypeError, "optimizer must be a torch.optim.Optimizer"),
        ({"total_epochs": 0}, ValueError, "total_epochs must be a positive int"),
        ({"console": "yes"}, TypeError, "console must be True or False"),
        ({"hparams": [1]}, TypeError, "hparams must be a dict"),
    ],
)
def test_bad_options_raise_at_once(tmp_path, options, error, words):
    """A wrong option raises at init, naming the option, what was expected and what came."""
    with pytest.raises(error, match=re.escape(words)):
        tw.init(logdir=str(tmp_path), **options)


def test_unwritable_logdir_fails_at_init_naming_the_path(tmp_path):
    """A logdir that cannot be created fails at init with its path in the message."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=re.escape(str(blocker / "run"))):
        tw.init(logdir=str(blocker / "run"))


def test_disabled_run_passes_through_and_records_nothing(tmp_path, model, capsys, monkeypatch):
    """enabled=False and TORCHWATCH_DISABLE=1: values pass through, no files, no lines."""
    for how in ("option", "env"):
        logdir = tmp_path / how
        if how == "env":
            monkeypatch.setenv("TORCHWATCH_DISABLE", "1")
            run = tw.init(logdir=str(logdir), model=model)
        else:
            run = tw.init(logdir=str(logdir), model=model, enabled=False)

        @tw.watch_epoch
        def train(model):
            assert model.training  # the loop computes the same thing either way
            return torch.tensor(1.5)

        assert float(train(model)) == 1.5
        with tw.phase("val") as p:
            for x in tw.steps([1, 2]):
                tw.log(loss=x)
        assert p.metrics == {} and p.record is None and run.history == []
        assert run.writer("train") is None
        tw.close()
        assert not logdir.exists()
    assert capsys.readouterr().out == ""


def test_log_and_steps_outside_a_phase_warn_once_and_pass_through(tmp_path):
    """Outside a phase tw.log drops its values and tw.steps yields items, each warning once."""
    tw.init(logdir=str(tmp_path))
    with pytest.warns(TorchwatchWarning, match="tw.log was called outside a phase"):
        tw.log(loss=1.0)
    with pytest.warns(TorchwatchWarning, match="tw.steps was called outside a phase"):
        assert list(tw.steps([1, 2, 3])) == [1, 2, 3]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tw.log(loss=1.0)
        assert list(tw.steps([4])) == [4]


def test_several_modules_found_warns_and_none_found_warns(tmp_path):
    """The argument scan names several modules found, and says so when there is none."""
    tw.init(logdir=str(tmp_path), console=False)
    student, teacher = nn.Linear(2, 2), nn.Linear(2, 2)

    @tw.watch_epoch
    def distill(student, teacher):
        return 1.0

    with pytest.warns(TorchwatchWarning,
                      match=r"found 2 modules among its arguments \(student \(Linear\), "
                            r"teacher \(Linear\)\).*pass model="):
        distill(student, teacher=teacher)

    class Trainer:  # a method: self is not among the names; self.model is
        def __init__(self):
            self.model = nn.Linear(2, 2)

        @tw.watch_epoch
        def fit(self, teacher, *more):
            return 1.0

    with pytest.warns(TorchwatchWarning,
                      match=r"found 3 modules among its arguments \(self.model \(Linear\), "
                            r"teacher \(Linear\), argument 2 \(Linear\)\)"):
        Trainer().fit(teacher, student)

    @tw.watch_epoch(model=student)
    def distill_right(student, teacher):
        assert student.training and not teacher.training

    teacher.eval()
    distill_right(student, teacher)

    with pytest.warns(TorchwatchWarning, match="no model to switch"):
        with tw.phase("val"):
            pass


def test_graph_of_logged_and_returned_tensors_is_not_kept_alive(tmp_path):
    """Values are detached: a weakref to an intermediate of the loss graph dies."""
    tw.init(logdir=str(tmp_path), console=False)
    w = torch.ones(3, requires_grad=True)
    refs = []

    @tw.watch_epoch
    def train():
        hidden = w * 2
        refs.append(weakref.ref(hidden))
        loss = hidden.sum()
        tw.log(aux=loss)
        return loss

    result = train()
    del result
    import gc

    gc.collect()
    assert refs[0]() is None


def test_hparams_go_to_the_logdir_itself(tmp_path):
    """hparams are written to <logdir> (no extra run folder) with the final epoch metrics."""
    tw.init(logdir=str(tmp_path), console=False, hparams={"lr": 0.1, "opt": "sgd", "bn": True})
    with tw.phase("train"):
        tw.log(loss=0.25)
    with tw.phase("val"):
        tw.log(loss=0.5)
    tw.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    assert set(content) == {"_hparams_/experiment", "_hparams_/session_start_info",
                            "_hparams_/session_end_info"}
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = {(m.name.group, m.name.tag) for m in data.experiment.metric_infos}
    assert {("train", "epoch/loss"), ("val", "epoch/loss")} <= metrics
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["lr"].number_value == 0.1
    assert start.session_start_info.hparams["opt"].string_value == "sgd"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["train", "val"]


def test_run_writer_and_runs_side_by_side(tmp_path):
    """Two Run objects write to their own logdirs; run.writer(phase) is the phase's writer."""
    a, b = tw.Run(str(tmp_path / "a"), console=False), tw.Run(str(tmp_path / "b"), console=False)
    with a.phase("train"):
        tw.log(loss=1.0)
    with b.phase("train"):
        tw.log(loss=2.0)
    a.writer("train").add_text("note", "hello", 0)
    a.close()
    b.close()
    a.close()  # twice is harmless
    assert read_scalars(tmp_path / "a" / "train")["epoch/loss"] == [(0, 1.0)]
    assert read_scalars(tmp_path / "b" / "train")["epoch/loss"] == [(0, 2.0)]


def test_events_are_on_disk_before_the_console_line(tmp_path, monkeypatch):
    """When a phase's line is printed, the values it reports are already readable from disk."""
    tw.init(logdir=str(tmp_path))
    seen = []

    class Spy(io.StringIO):
        def write(self, text):
            if "Epoch" in text:
                seen.append(read_scalars(tmp_path / "train").get("epoch/loss"))
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Spy())
    for i in range(2):
        with tw.phase("train"):
            tw.log(loss=float(i) + 0.5)
    assert seen == [[(0, 0.5)], [(0, 0.5), (1, 1.5)]]


def test_scalar_events_share_the_writers_file_in_order_without_its_queue(tmp_path):
    """The sink appends its events to the phase's own event file from the calling thread, after
    the events the user queued on the same SummaryWriter; the writer's queue never carries them
    (with the installed tensorboard: a change in its internals fails here, not silently)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    run = tw.init(logdir=str(tmp_path), console=False, log_every=2)
    queued = run.writer("train")._get_file_writer().event_writer._async_writer
    carried, write = [], queued.write
    queued.write = lambda data: (carried.append(data), write(data))[1]
    for epoch in range(2):
        run.writer("train").add_text("note", f"before epoch {epoch}", epoch)
        with tw.phase("train"):
            for i in tw.steps(range(4)):
                tw.log(loss=float(i))
    tw.close()
    assert len(carried) == 2  # the two notes only
    (path,) = (tmp_path / "train").glob("events.out.tfevents.*")
    order = [(e.step, v.tag) for e in EventFileLoader(str(path)).Load() for v in e.summary.value
             if v.tag in ("note/text_summary", "step/loss", "epoch/loss")]
    assert order == [(0, "note/text_summary"), (2, "step/loss"), (4, "step/loss"),
                     (0, "epoch/loss"), (1, "note/text_summary"), (6, "step/loss"),
                     (8, "step/loss"), (1, "epoch/loss")]


def test_reused_logdir_gets_new_event_files_beside_old(tmp_path):
    """A second run into the same logdir adds event files instead of overwriting."""
    for value in (1.0, 2.0):
        tw.init(logdir=str(tmp_path), console=False)
        with tw.phase("train"):
            tw.log(loss=value)
        tw.close()
    assert len(list((tmp_path / "train").glob("events.out.tfevents.*"))) == 2


def test_second_init_closes_the_first_run(tmp_path):
    """tw.init closes an earlier default run before starting the new one."""
    first = tw.init(logdir=str(tmp_path / "one"), console=False)
    second = tw.init(logdir=str(tmp_path / "two"), console=False)
    assert first.closed and not second.closed and tw.current_run() is second


def test_context_manager_run_closes(tmp_path):
    """`with tw.init(...) as run:` closes the run at the end of the block."""
    with tw.init(logdir=str(tmp_path), console=False) as run:
        with tw.phase("train"):
            tw.log(loss=3.0)
    assert run.closed
    assert read_scalars(tmp_path / "train")["epoch/loss"] == [(0, 3.0)]


def test_nan_is_recorded_and_warned_once(tmp_path):
    """A NaN metric is written as NaN and warned about once per metric."""
    tw.init(logdir=str(tmp_path), console=False)
    with pytest.warns(TorchwatchWarning, match="metric 'loss' of phase 'train' was NaN or Inf"):
        for _ in range(2):
            with tw.phase("train"):
                tw.log(loss=torch.tensor(float("nan")))
    tw.close()
    values = [v for _, v in read_scalars(tmp_path / "train")["epoch/loss"]]
    assert len(values) == 2 and all(math.isnan(v) for v in values)


def test_console_line_shape_with_total_and_without(tmp_path, capsys):
    """Lines read `Epoch [e/N] phase  name value ... | time` with 4 significant digits."""
    tw.init(logdir=str(tmp_path), total_epochs=10)
    with tw.phase("train"):
        tw.log(loss=0.41234, acc=0.912)
    tw.init(logdir=str(tmp_path / "b"))
    with tw.phase("val"):
        tw.log(loss=12345.678)
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"Epoch \[1/10\] train  loss 0\.4123  acc 0\.9120 \| \d\.\d{3}s", out[0])
    assert re.fullmatch(r"Epoch \[1\] val  loss 1\.235e\+04 \| \d\.\d{3}s", out[1])


def test_gan_train_phases_share_an_epoch(tmp_path):
    """train_D then train_G in one epoch share it; train_D seen again starts the next epoch."""
    g, d = nn.Linear(2, 2), nn.Linear(2, 2)
    run = tw.init(logdir=str(tmp_path), console=False, model={"G": g, "D": d})
    for _ in range(2):
        with tw.phase("train_D", model=d):
            tw.log(loss=1.0)
        with tw.phase("train_G", model=g):
            assert g.training
            tw.log(loss=2.0)
        with tw.phase("val"):
            pass
    assert [(r.phase, r.epoch) for r in run.history] == [
        ("train_D", 0), ("train_G", 0), ("val", 0), ("train_D", 1), ("train_G", 1), ("val", 1)]
    tw.close()
    assert [s for s, _ in read_scalars(tmp_path / "train_G")["epoch/loss"]] == [0, 1]


def test_phase_names_are_folders_under_the_logdir(tmp_path):
    """A phase name with a slash is a nested run folder; one that climbs out is refused."""
    tw.init(logdir=str(tmp_path), console=False)
    with tw.phase("val/fold1"):
        tw.log(loss=0.5)
    tw.close()
    assert read_scalars(tmp_path / "val" / "fold1")["epoch/loss"] == [(0, 0.5)]
    for bad in ("", "/abs", "../up", 3):
        with pytest.raises(ValueError, match="phase name must be a non-empty str"):
            tw.phase(bad)


def test_metrics_keep_the_order_they_were_logged_in_whatever_their_type(tmp_path, capsys):
    """The console line and p.metrics list what the function returned first, then the logged
    metrics in the order they were first logged: a Python float, an int tensor, a float16 and a
    float32 tensor are not regrouped by how each is kept (the same on both hot paths)."""
    tw.init(tmp_path, model=nn.Linear(2, 1), progress=False)

    @tw.watch_epoch
    def train():
        for _ in tw.steps([torch.zeros(2, 2)] * 3):
            tw.log(acc=0.9, correct=torch.tensor(3),
                   half=torch.tensor(1.0, dtype=torch.float16), z=torch.tensor(2.0))
        return torch.tensor(0.5)

    train()
    with tw.phase("val") as p:
        tw.log(loss=torch.tensor(1.0), correct=torch.tensor(2), acc=0.9)
    assert list(p.metrics) == ["loss", "correct", "acc"]
    lines = capsys.readouterr().out.splitlines()
    assert re.search(r"train  loss 0\.5000  acc 0\.9000  correct 3\.000  half 1\.000  z 2\.000 \|",
                     lines[0]), lines[0]
    assert "val  loss 1.000  correct 2.000  acc 0.9000 |" in lines[1]


def test_a_slow_rate_is_printed_with_two_digits_not_as_zero(tmp_path, capsys):
    """A phase of 2 samples in 5 s prints `0.4 samples/s` (it printed `0 samples/s`); a fast
    one keeps whole samples with a thousands separator."""
    clock = iter([0.0, 0.0, 5.0, 5.0] + [5.0] * 50).__next__
    tw.init(tmp_path, model=nn.Linear(2, 1), tensorboard=False, progress=False, clock=clock)
    with tw.phase("val"):
        for _ in tw.steps([torch.zeros(2, 2)]):
            pass
    line = capsys.readouterr().out.strip()
    assert re.search(r"\| 5\.0+s  0\.4 samples/s", line), line
    from torchwatch.sinks.console import phase_line

    assert "5,120 samples/s" in phase_line("Epoch [1]", "train", {}, 1.0, 5120.0)
    assert "| 1.0s  3 samples/s" in phase_line("Epoch [1]", "train", {}, 1.0, 3.0)
