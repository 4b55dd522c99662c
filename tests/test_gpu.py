"""On a CUDA GPU, a watched loop's steady steps make no host-device sync (skipped without CUDA).

The strict gate: ``torch.cuda.set_sync_debug_mode("error")`` turns any synchronising CUDA call
(``.item()``, a blocking copy to the host, ``torch.cuda.synchronize()`` through torch, a boolean
mask...) into a ``RuntimeError`` while steps 100 to 349 run, interval closes and arrivals
included. ``benchmarks/gpu_check.sh`` runs this file and the CUDA overhead table.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchwatch as tw
from torchwatch.testing import count_syncs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

STEPS, LOG_EVERY = 400, 50
STEADY = range(100, 350)  # after two intervals have closed and reached the host


def make_loop():
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = [(torch.randn(64, 8, device=device), torch.randint(0, 2, (64,), device=device))
            for _ in range(STEPS)]
    return model, optimizer, data, nn.CrossEntropyLoss()


class SyncsRaise:
    """Within ``STEADY`` steps, every synchronising CUDA call raises; call ``at(i)`` per step."""

    def __init__(self):
        self.previous = torch.cuda.get_sync_debug_mode()

    def at(self, i):
        if i == STEADY.start:
            torch.cuda.set_sync_debug_mode("error")
        elif i == STEADY.stop:
            torch.cuda.set_sync_debug_mode(self.previous)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode(self.previous)


def test_steps_and_log_run_without_syncs(tmp_path, scalars):
    """tw.steps + tw.log, bar, console and TensorBoard on: 250 steady steps raise no sync error."""
    model, optimizer, data, loss_fn = make_loop()
    tw.init(logdir=str(tmp_path), model=model, optimizer=optimizer, log_every=LOG_EVERY,
            progress=True)
    with SyncsRaise() as gate, tw.phase("train"):
        for i, (x, y) in enumerate(tw.steps(data)):
            gate.at(i)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tw.log(loss=loss, acc=(logits.argmax(1) == y).float().mean(), n=len(x))
    tw.close()
    written = scalars(tmp_path / "train")
    steps = [step for step, _ in written["step/loss"]]
    assert steps == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert "step/memory_mb" in written and "step/time_ms" in written


def test_watch_step_runs_without_syncs(tmp_path):
    """@watch_step returning the loss tensor: 250 steady steps raise no sync error."""
    model, optimizer, data, loss_fn = make_loop()
    run = tw.init(logdir=str(tmp_path), model=model, optimizer=optimizer, log_every=LOG_EVERY,
                  console=False)

    @tw.watch_step
    def train_step(x, y):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    with SyncsRaise() as gate, tw.phase("train"):
        for i, (x, y) in enumerate(data):
            gate.at(i)
            train_step(x, y)
    assert run.history[-1].steps == STEPS
    assert run.history[-1].metrics["loss"] > 0


def test_count_syncs_sees_none_from_the_steady_loop(tmp_path):
    """count_syncs(cuda=True) over the steady steps: no user sync, at most one read per interval."""
    model, optimizer, data, loss_fn = make_loop()
    tw.init(logdir=str(tmp_path), model=model, optimizer=optimizer, log_every=LOG_EVERY,
            console=False)
    syncs = count_syncs(cuda=True)
    with tw.phase("train"):
        for i, (x, y) in enumerate(tw.steps(data)):
            if i == STEADY.start:
                syncs.__enter__()
            elif i == STEADY.stop:
                syncs.__exit__(None, None, None)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tw.log(loss=loss)
    assert syncs.user == 0, str(syncs)
    assert syncs.torchwatch <= len(STEADY) // LOG_EVERY + 1, str(syncs)  # interval reads
    assert not [e for e in syncs.events if e.op == "cuda sync"], str(syncs)
