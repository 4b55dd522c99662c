"""Where PyTorch users already work: summary of a watched run, resuming from a checkpoint,
gradient accumulation, several models and optimizers (a GAN), torch.compile, autocast with a
GradScaler, and parameter/gradient histograms; each checked on what TensorBoard reads back.
"""

from __future__ import annotations

import io
import time
import warnings

import pytest
import torch
from torch import nn

import torchwatch as tw
from torchwatch.compiled import speedups
from torchwatch.summary import main as summary_main
from torchwatch.summary import summarize

from .conftest import read_scalars


def batches(n, rows=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(rows, 4, generator=generator), torch.randn(rows, 2, generator=generator))
            for _ in range(n)]


def next_second():
    """Sleep into the next wall-clock second: event files are named, and read, in second order."""
    time.sleep(1.02 - time.time() % 1.0)


def values(points):
    return [v for _, v in points]


def steps_of(points):
    return [s for s, _ in points]


# -- summary ------------------------------------------------------------------------------------

def test_summary_reports_a_watched_runs_own_numbers(tmp_path, model, capsys):
    """`torchwatch summary` on a watched run's logdir reports the losses the run computed."""
    logdir = str(tmp_path / "exp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tw.Run(logdir, model=model, optimizer=optimizer, progress=False, console=False)
    val_losses = [0.9, 0.5, 0.7]  # best at epoch 1, last 0.7
    for epoch in range(3):
        with run.phase("train"):
            for x, y in run.steps(batches(4, seed=epoch)):
                loss = nn.functional.mse_loss(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                run.log(loss=loss)
        with run.phase("val"):
            run.log(loss=val_losses[epoch])
    run.close()
    train = [r.metrics["loss"] for r in run.history if r.phase == "train"]

    rows = {(r["phase"], r["metric"]): r for r in summarize(logdir)}
    assert rows["train", "loss"]["last"] == pytest.approx(train[-1], rel=1e-6)
    assert rows["train", "loss"]["best"] == pytest.approx(min(train), rel=1e-6)
    assert rows["train", "loss"]["best_epoch"] == train.index(min(train))
    assert rows["train", "lr"]["last"] == pytest.approx(0.1)
    assert (rows["val", "loss"]["last"], rows["val", "loss"]["best"]) == pytest.approx((0.7, 0.5))
    assert rows["val", "loss"]["best_epoch"] == 1 and rows["val", "loss"]["epochs"] == 3

    from torchwatch.cli import main as cli_main

    assert cli_main(["summary", logdir]) == 0
    table = capsys.readouterr().out
    val_line = next(line for line in table.splitlines() if line.split()[:2] == ["val", "loss"])
    assert val_line.split()[2:] == ["0.7000", "0.5000", "1", "3"]
    assert summary_main([str(tmp_path / "empty")]) == 1
    assert "does not exist" in capsys.readouterr().err


# -- resuming -----------------------------------------------------------------------------------

def run_epochs(run, epochs, offset, checkpoint_after=None):
    """Each epoch: 3 train steps logging ``offset + 10*epoch + i``, then val logging ``offset +
    epoch``; returns run.state_dict() taken after epoch ``checkpoint_after``."""
    state = None
    for epoch in epochs:
        with run.phase("train"):
            for i, _ in enumerate(run.steps(batches(3))):
                run.log(loss=offset + 10 * epoch + i)
        with run.phase("val"):
            run.log(loss=offset + epoch)
        if epoch == checkpoint_after:
            state = run.state_dict()
    return state


def test_resumed_run_replaces_the_points_after_the_checkpoint(tmp_path, model):
    """After load_state_dict, each epoch and step appears once in TensorBoard: the old run's up to
    the checkpoint, the resumed run's after it."""
    logdir = str(tmp_path)
    options = dict(model=model, progress=False, console=False, log_every=2)
    run = tw.Run(logdir, **options)
    state = run_epochs(run, range(4), 0.0, checkpoint_after=1)  # crashes after epoch 3
    run.close()
    assert state == {"epoch": 1, "global_step": 6, "epoch_offset": 1, "had_train": True,
                     "seen": ["train", "val"]}
    buffer = io.BytesIO()
    torch.save(state, buffer)  # a checkpoint holds it, and loads it back with weights_only
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    next_second()
    run = tw.Run(logdir, **options)
    run.load_state_dict(state)
    run_epochs(run, range(2, 4), 1000.0)
    run.close()
    assert [(r.phase, r.epoch, r.global_step) for r in run.history] == [
        ("train", 2, 9), ("val", 2, 9), ("train", 3, 12), ("val", 3, 12)]

    train, val = read_scalars(tmp_path / "train"), read_scalars(tmp_path / "val")
    assert train["epoch/loss"] == [(0, 1.0), (1, 11.0), (2, 1021.0), (3, 1031.0)]
    assert val["epoch/loss"] == [(0, 0.0), (1, 1.0), (2, 1002.0), (3, 1003.0)]
    # intervals of 2 steps and the phase's rest: the old run's up to step 6, then the new run's
    assert train["step/loss"] == [(2, 0.5), (3, 2.0), (5, 10.5), (6, 12.0),
                                  (8, 1020.5), (9, 1022.0), (11, 1030.5), (12, 1032.0)]
    rows = {(r["phase"], r["metric"]): r for r in summarize(logdir)}
    assert rows["train", "loss"]["epochs"] == 4 and rows["train", "loss"]["last"] == 1031.0


def test_checkpoint_inside_a_training_epoch_reruns_that_epoch(tmp_path, model):
    """A state taken mid-epoch resumes into that epoch again, with the global step continuing."""
    run = tw.Run(str(tmp_path), model=model, progress=False, console=False, log_every=1)
    for epoch in range(2):
        with run.phase("train"):
            for i, _ in enumerate(run.steps(batches(3))):
                run.log(loss=10 * epoch + i)
                if epoch == 1 and i == 1:
                    state = run.state_dict()  # two steps into epoch 1: global step 5
    run.close()
    assert (state["epoch"], state["global_step"], state["had_train"]) == (0, 5, True)

    next_second()
    run = tw.Run(str(tmp_path), model=model, progress=False, console=False, log_every=1)
    run.load_state_dict(state)
    with run.phase("train"):
        for i, _ in enumerate(run.steps(batches(1))):  # the rest of epoch 1
            run.log(loss=100.0)
    run.close()
    assert (run.history[0].epoch, run.history[0].global_step) == (1, 6)
    train = read_scalars(tmp_path / "train")
    assert train["epoch/loss"] == [(0, 1.0), (1, 100.0)]
    assert train["step/loss"] == [(1, 0.0), (2, 1.0), (3, 2.0), (4, 10.0), (5, 11.0), (6, 100.0)]


def test_load_state_dict_explains_a_bad_state(tmp_path):
    """A wrong state, or loading inside a phase, is refused with a message naming the problem."""
    run = tw.Run(str(tmp_path), progress=False, console=False)
    with pytest.raises(TypeError, match="state must be a dict"):
        run.load_state_dict([1, 2])
    with pytest.raises(ValueError, match="missing .*global_step"):
        run.load_state_dict({"epoch": 3})
    good = run.state_dict()
    with pytest.raises(ValueError, match=r"state\['global_step'\] must be a non-negative int"):
        run.load_state_dict({**good, "global_step": -1})
    with run.phase("val", model=nn.Linear(1, 1)):
        with pytest.raises(RuntimeError, match="inside a phase"):
            run.load_state_dict(good)
    run.close()


# -- gradient accumulation ----------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_accumulate_counts_optimizer_steps(tmp_path):
    """With accumulate=3, every 3 micro-batches are one step: global step, intervals, samples
    and data wait add up per optimizer step; a last partial group is one more step."""
    clock = FakeClock()
    run = tw.Run(str(tmp_path), log_every=2, clock=clock, progress=False, console=False)
    seen = []

    def loader():
        for i in range(10):
            clock.now += 0.01  # data wait
            yield torch.full((4, 2), float(i))

    with run.phase("train", model=nn.Linear(2, 1)) as p:
        for i, x in enumerate(run.steps(loader(), accumulate=3)):
            clock.now += 0.02  # compute
            run.log(loss=float(i))
            seen.append(run.global_step)
    run.close()
    assert seen == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]  # the step ends with its last micro-batch
    assert (p.record.steps, p.record.samples, run.global_step) == (4, 40, 4)
    train = read_scalars(tmp_path / "train")
    assert train["step/loss"] == [(2, 2.5), (4, 7.5)]  # micro-batches 0-5, then 6-9
    assert values(train["step/time_ms"]) == pytest.approx([90.0, 60.0])  # 3 and 1.5 items/step
    assert values(train["step/samples_per_s"]) == pytest.approx([24 / 0.18, 16 / 0.12])
    assert values(train["step/data_wait_frac"]) == pytest.approx([1 / 3, 1 / 3])
    with pytest.raises(ValueError, match="accumulate must be a positive int"):
        tw.steps([], accumulate=0)


# -- several models and optimizers: a GAN ------------------------------------------------------

def test_gan_with_two_models_and_two_optimizers(tmp_path, capsys):
    """model={"G": g, "D": d} switches both in train phases; a phase with model=g switches only
    G; a dict of optimizers gives lr_G and lr_D per epoch and per step."""
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))
    d = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.1), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3)
    decay_g = torch.optim.lr_scheduler.StepLR(opt_g, step_size=1, gamma=0.5)
    g.eval(), d.eval()
    run = tw.Run(str(tmp_path), model={"G": g, "D": d}, optimizer={"G": opt_g, "D": opt_d},
                 total_epochs=2, log_every=2, progress=False)
    bce = nn.BCEWithLogitsLoss()
    modes = []

    @run.watch_epoch
    def train_epoch(loader):
        for real in run.steps(loader):
            modes.append(("train", g.training, d.training))
            fake = g(torch.randn(len(real), 2))
            loss_d = bce(d(real), torch.ones(len(real), 1)) + bce(d(fake.detach()),
                                                                   torch.zeros(len(real), 1))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(d(fake), torch.ones(len(real), 1))
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            run.log(loss_D=loss_d, loss_G=loss_g)

    for epoch in range(2):
        train_epoch([torch.randn(8, 2) + 3 for _ in range(4)])
        decay_g.step()
        with run.phase("sample", model=g):
            modes.append(("sample", g.training, d.training))
            run.log(mean=g(torch.randn(64, 2)).mean())
    run.close()
    assert set(modes) == {("train", True, True), ("sample", False, False)}
    assert (g.training, d.training) == (False, False)
    train = read_scalars(tmp_path / "train")
    assert train["epoch/lr_G"] == [(0, pytest.approx(2e-4)), (1, pytest.approx(1e-4))]
    assert values(train["epoch/lr_D"]) == pytest.approx([1e-3, 1e-3])
    assert steps_of(train["step/lr_G"]) == [2, 4, 6, 8]
    losses = [r.metrics for r in run.history if r.phase == "train"]
    assert values(train["epoch/loss_G"]) == pytest.approx([m["loss_G"] for m in losses])
    assert values(train["epoch/loss_D"]) == pytest.approx([m["loss_D"] for m in losses])
    assert steps_of(read_scalars(tmp_path / "sample")["epoch/mean"]) == [0, 1]
    out = capsys.readouterr().out
    assert "Epoch [2/2] train  loss_D" in out and "lr_G 1.000e-04  lr_D 1.000e-03" in out


# -- torch.compile -----------------------------------------------------------------------------

@pytest.fixture
def dynamo():
    """torch._dynamo with its caches and counters cleared before and after the test."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()
    counters.clear()


def test_compiled_model_is_switched_through_to_the_original(tmp_path, model, dynamo):
    """Phases switch a torch.compile'd model's original module (and its BatchNorm and Dropout),
    restore it on exit, and the compiled forward then runs in that mode."""
    compiled = torch.compile(model, backend="eager")
    run = tw.Run(str(tmp_path), model=compiled, progress=False, console=False)
    x, y = batches(1, rows=8)[0]
    model.eval()
    model[1].train()  # a submodule the user set apart stays as it is
    flags = {name: m.training for name, m in model.named_modules()}
    with run.phase("train"):
        assert model.training and model[3].training and model[1].training
        compiled(x)
    with run.phase("val"):
        assert not model.training and not model[1].training and not model[3].training
        loss = nn.functional.mse_loss(compiled(x), y)
        run.log(loss=loss)
    run.close()
    assert {name: m.training for name, m in model.named_modules()} == flags
    model.eval()
    with torch.no_grad():
        expected = nn.functional.mse_loss(model(x), y).item()  # eager, eval mode
    assert read_scalars(tmp_path / "val")["epoch/loss"] == [(0, pytest.approx(expected))]


def train_step(model, optimizer, x, y):
    loss = nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def test_compiled_step_inside_steps_keeps_one_graph(tmp_path, dynamo):
    """A compiled forward and loss inside tw.steps, logged outside, compiles one graph with no
    break and no recompile over the epoch; TensorBoard gets the eager losses."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    reference = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    reference.load_state_dict(model.state_dict())

    def forward_loss(x, y):
        return nn.functional.mse_loss(model(x), y)

    compiled = torch.compile(forward_loss, backend="eager")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = tw.Run(str(tmp_path), model=model, progress=False, console=False, log_every=3)
    data = batches(6)
    with run.phase("train"):
        for x, y in run.steps(data):
            loss = compiled(x, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(loss=loss)
    run.close()
    assert dynamo["stats"]["unique_graphs"] == 1 and not dynamo["graph_break"]
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    expected = [train_step(reference, ref_opt, x, y).item() for x, y in data]
    train = read_scalars(tmp_path / "train")
    assert values(train["step/loss"]) == pytest.approx([sum(expected[:3]) / 3,
                                                        sum(expected[3:]) / 3], rel=1e-5)


def test_explain_finds_no_graph_break_in_a_step_run_inside_a_phase(tmp_path, dynamo):
    """torch._dynamo.explain, run on the step function inside a phase and tw.steps, counts no
    graph break: torchwatch puts nothing inside the compiled step."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    run = tw.Run(str(tmp_path), model=model, progress=False, console=False)

    def forward_loss(x, y):
        return nn.functional.mse_loss(model(x), y)

    with run.phase("train"):
        for x, y in run.steps(batches(1)):
            explained = torch._dynamo.explain(forward_loss)(x, y)
            run.log(loss=forward_loss(x, y))
    run.close()
    assert explained.graph_count == 1 and explained.graph_break_count == 0


def test_log_inside_a_compiled_function_is_recorded_without_recompiles(tmp_path, dynamo):
    """tw.log called inside a compiled function records the right values; the graph breaks at
    that call (documented) but nothing is compiled again, however many steps."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward_loss(x, y):
        loss = nn.functional.mse_loss(model(x), y)
        tw.log(loss=loss, rows=x.shape[0])
        return loss

    compiled = torch.compile(forward_loss, backend="eager")
    run = tw.init(str(tmp_path), model=model, progress=False, console=False, log_every=4)
    data = batches(12)
    compiled_frames = []
    for epoch in range(2):
        with tw.phase("val"):
            for x, y in tw.steps(data):
                compiled(x, y)
        compiled_frames.append(dynamo["frames"]["total"])
    tw.close()
    assert compiled_frames[0] == compiled_frames[1]  # the second epoch compiled nothing
    reasons = dynamo["graph_break"]
    if speedups is None or hasattr(torch.compiler, "substitute_in_graph"):
        # at tw.log's disabled wrapper ("torch._dynamo.disable()" in dynamo's words before 2.5)
        assert reasons and all("torch.compiler.disable" in r or "torch._dynamo.disable()" in r
                               for r in reasons)
    else:  # torch < 2.5 cannot trace the Python tw.log in the C one's place: a break at it
        # (an unsupported builtin; torch 2.1: a call of the object `log`)
        assert any("torchwatch._speedups.log" in r or "UserDefinedObjectVariable(log)" in r
                   for r in reasons)
    with torch.no_grad():
        expected = sum(nn.functional.mse_loss(model(x), y).item() for x, y in data) / len(data)
    assert read_scalars(tmp_path / "val")["epoch/loss"] == [(0, pytest.approx(expected)),
                                                           (1, pytest.approx(expected))]
    assert run.history[0].metrics["rows"] == 4.0


# -- autocast and GradScaler --------------------------------------------------------------------
# on the CPU they need torch.amp.GradScaler (torch 2.3); torch.cuda.amp's does nothing without CUDA
cpu_grad_scaler = pytest.mark.skipif(not hasattr(torch.amp, "GradScaler"),
                                     reason="a CPU GradScaler needs torch >= 2.3")


@cpu_grad_scaler
def test_autocast_and_grad_scaler_log_the_loss_scale(tmp_path):
    """With scaler= given, amp/scale is read back at each interval's last step with the scale the
    GradScaler had then: growing, and halved after a step with an Inf gradient."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    run = tw.Run(str(tmp_path), model=model, optimizer=optimizer, scaler=scaler,
                 log_every=2, progress=False, console=False)
    scales = []
    with run.phase("train"):
        for i, (x, y) in enumerate(run.steps(batches(7))):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
                assert out.dtype == torch.bfloat16
                loss = nn.functional.mse_loss(out.float(), y)
            run.log(loss=loss)
            if i == 2:
                loss = loss * float("inf")  # an overflow: the step is skipped, the scale halved
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scales.append(scaler.get_scale())
    run.close()
    assert scales[:4] == [2.0**11, 2.0**12, 2.0**11, 2.0**12]
    train = read_scalars(tmp_path / "train")
    assert train["amp/scale"] == [(2, scales[1]), (4, scales[3]), (6, scales[5]),
                                  (7, scales[6])]
    assert len(train["step/loss"]) == 4  # the interval scalars, written with it


@cpu_grad_scaler
def test_loss_scale_adds_no_sync(tmp_path):
    """Logging amp/scale costs no host-device sync of its own: with scaler= the scale rides its
    interval's one copy, so the loop's torchwatch reads are one per interval at most, as many as
    the loss alone makes on a GPU (count_syncs counts reads of CPU tensors as a GPU would sync on
    them; without scaler= the compiled tw.log reads a CPU loss from host memory, which counts
    none)."""
    from torchwatch.testing import count_syncs

    counts = []
    for given in (False, True):
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cpu")
        run = tw.Run(str(tmp_path / str(given)), model=model, optimizer=optimizer, log_every=25,
                     scaler=scaler if given else None, progress=False, console=False)
        with count_syncs() as syncs:
            with run.phase("train"):
                for x, y in run.steps(batches(100)):
                    loss = nn.functional.mse_loss(model(x), y)
                    optimizer.zero_grad()
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    run.log(loss=loss)
        run.close()
        counts.append(syncs.torchwatch)
    assert counts[0] <= counts[1] <= 100 // 25 + 2
    assert len(read_scalars(tmp_path / "True" / "train")["amp/scale"]) == 4


def test_options_scaler_and_histograms_are_checked(tmp_path):
    """A scaler that is not a GradScaler, or histograms that is not a positive int, is refused."""
    with pytest.raises(TypeError, match="scaler must be a torch.amp.GradScaler"):
        tw.Run(str(tmp_path), scaler=object())
    for bad in (0, -2, 1.5, True, "5"):
        with pytest.raises(ValueError, match="histograms must be a positive int"):
            tw.Run(str(tmp_path), histograms=bad)


# -- histograms ---------------------------------------------------------------------------------

def read_histograms(path):
    from tensorboard.backend.event_processing.event_accumulator import (
        HISTOGRAMS,
        EventAccumulator,
    )

    acc = EventAccumulator(str(path), size_guidance={HISTOGRAMS: 0})
    acc.Reload()
    return {tag: [(e.step, e.histogram_value) for e in acc.Histograms(tag)]
            for tag in acc.Tags()["histograms"]}


def test_histograms_every_n_epochs(tmp_path):
    """histograms=2 writes params/ and grads/ histograms of each model at the 2nd and 4th epoch,
    named by the model's key, with the values the model had at the end of that epoch."""
    torch.manual_seed(0)
    g, d = nn.Linear(2, 3), nn.Linear(3, 1)
    optimizer = torch.optim.SGD([*g.parameters(), *d.parameters()], lr=0.1)
    run = tw.Run(str(tmp_path), model={"G": g, "D": d}, histograms=2, progress=False,
                 console=False)
    ends = []
    for epoch in range(4):
        with run.phase("train"):
            for x in run.steps([torch.randn(4, 2) for _ in range(2)]):
                loss = d(g(x)).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with run.phase("val"):
            run.log(loss=0.0)
        ends.append((g.weight.detach().clone(), g.weight.grad.clone()))
    run.close()
    histograms = read_histograms(tmp_path / "train")
    assert set(histograms) == {f"{kind}/{name}" for kind in ("params", "grads")
                               for name in ("G.weight", "G.bias", "D.weight", "D.bias")}
    assert steps_of(histograms["params/G.weight"]) == [1, 3]  # epochs shown as 2 and 4
    for (step, value), (weight, _) in zip(histograms["params/G.weight"], (ends[1], ends[3])):
        assert value.num == 6 and value.sum == pytest.approx(weight.sum().item(), rel=1e-5)
        assert (value.min, value.max) == pytest.approx((weight.min().item(), weight.max().item()))
    grad_sum = histograms["grads/G.weight"][1][1].sum
    assert grad_sum == pytest.approx(ends[3][1].sum().item(), rel=1e-5, abs=1e-7)
    assert read_histograms(tmp_path / "val") == {}


def test_no_histograms_by_default(tmp_path, model):
    """Without histograms=, a train phase writes no histogram."""
    run = tw.Run(str(tmp_path), model=model, progress=False, console=False)
    with run.phase("train"):
        for x, y in run.steps(batches(2)):
            model(x).sum().backward()
    run.close()
    assert read_histograms(tmp_path / "train") == {}


def test_graph_is_written_once_in_eval_mode_with_modes_restored(tmp_path, model):
    """graph=example writes the model graph once; no BatchNorm statistic moves; modes restored;
    no warning of torch's tracer (torch.jit.trace's deprecation notice) reaches the user."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model.train()
    model[1].eval()
    tw.init(logdir=str(tmp_path), model=model, console=False, graph=torch.randn(3, 4))
    before = model[1].running_mean.clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            with tw.phase("train"):
                tw.log(loss=1.0)
    assert [str(w.message) for w in caught] == []
    assert torch.equal(model[1].running_mean, before)
    assert model.training and not model[1].training and model[0].training
    tw.close()
    acc = EventAccumulator(str(tmp_path / "train"))
    acc.Reload()
    assert acc.Tags()["graph"] is True
    names = {node.op for node in acc.Graph().node}
    assert any("linear" in op.lower() for op in names)


def test_graph_that_cannot_be_traced_warns_and_training_goes_on(tmp_path, model):
    """An example input the model rejects costs one warning; the epoch is still written."""
    tw.init(logdir=str(tmp_path), model=model, console=False, graph=torch.randn(3, 99))
    with pytest.warns(tw.TorchwatchWarning, match=r"could not write the graph of Sequential"):
        with tw.phase("train"):
            tw.log(loss=1.0)
    tw.close()
    from .conftest import read_scalars

    assert read_scalars(tmp_path / "train")["epoch/loss"] == [(0, 1.0)]
    with pytest.raises(TypeError, match="graph must be an example input"):
        tw.init(logdir=str(tmp_path), graph="x")
