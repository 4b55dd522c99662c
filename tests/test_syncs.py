"""The sync gate: a watched 400-step loop makes no host-device sync per step from torchwatch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchwatch as tw
from torchwatch.testing import count_syncs

STEPS, LOG_EVERY = 400, 50


def make_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    data = [(torch.randn(16, 8), torch.randint(0, 2, (16,))) for _ in range(STEPS)]
    return model, optimizer, data, nn.CrossEntropyLoss()


def test_steps_and_log_make_at_most_one_sync_per_interval(tmp_path):
    """tw.steps + tw.log(loss, n): torchwatch syncs only once per log interval and at phase end."""
    model, optimizer, data, loss_fn = make_loop()
    tw.init(logdir=str(tmp_path), model=model, optimizer=optimizer, log_every=LOG_EVERY,
            progress=True, console=True)
    with count_syncs() as syncs:
        with tw.phase("train"):
            for x, y in tw.steps(data):
                loss = loss_fn(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                tw.log(loss=loss, n=len(x), acc=(loss < 1).float())
    assert syncs.torchwatch <= STEPS // LOG_EVERY + 2, str(syncs)
    assert syncs.user == 0, str(syncs)


def test_watch_step_makes_no_sync_per_step(tmp_path):
    """@watch_step returning a tensor loss: torchwatch syncs only per interval and phase end."""
    model, optimizer, data, loss_fn = make_loop()
    tw.init(logdir=str(tmp_path), model=model, optimizer=optimizer, log_every=LOG_EVERY,
            console=False)

    @tw.watch_step
    def train_step(x, y):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss}

    @tw.watch_epoch
    def train_epoch(model):
        total = 0.0
        for x, y in data:
            total += train_step(x, y)["loss"].detach()
        return total / len(data)

    with count_syncs() as syncs:
        train_epoch(model)
    assert syncs.torchwatch <= STEPS // LOG_EVERY + 2, str(syncs)
    assert tw.current_run().history[-1].steps == STEPS


def test_sync_count_does_not_grow_with_steps_between_intervals(tmp_path):
    """With log_every larger than the phase, the whole phase costs torchwatch one or two syncs."""
    model, optimizer, data, loss_fn = make_loop()
    tw.init(logdir=str(tmp_path), model=model, log_every=1000, console=False)
    with count_syncs() as syncs:
        with tw.phase("val"):
            for x, y in tw.steps(data):
                tw.log(loss=loss_fn(model(x), y))
    assert syncs.torchwatch <= 2, str(syncs)
