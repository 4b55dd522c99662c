"""``torchwatch demo``: the seed loop of the README, watched, on built-in synthetic data."""

from __future__ import annotations

import datetime
import os
from typing import Optional

import torch
from torch import nn

import torchwatch as tw

__all__ = ["run_demo"]


def _data(n: int, w: torch.Tensor, generator: torch.Generator):
    x = torch.randn(n, w.shape[0], generator=generator)
    y = (x @ w + 0.5 * torch.randn(n, w.shape[1], generator=generator)).argmax(dim=1)
    return list(zip(x.split(64), y.split(64)))


def run_demo(logdir: Optional[str] = None, epochs: int = 5) -> int:
    """Train a small MLP for a few epochs on the CPU; print the TensorBoard command at the end."""
    torch.manual_seed(0)
    torch.set_num_threads(1)  # a model this small runs fastest, and steadiest, on one thread
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(20, 3, generator=generator)
    train_loader, val_loader = _data(4096, w, generator), _data(1024, w, generator)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss()
    logdir = logdir or os.path.join(
        "runs", "demo-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    run = tw.init(logdir=logdir, model=model, optimizer=optimizer, total_epochs=epochs,
                  log_every=16, hparams={"lr": 0.1, "momentum": 0.9, "hidden": 64})

    @tw.watch_epoch
    def train_one_epoch(model, loader, optimizer):
        total = 0.0
        for x, y in tw.steps(loader):
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tw.log(loss=loss)
            total += loss.detach()
        return total / len(loader)

    for _ in range(epochs):
        train_one_epoch(model, train_loader, optimizer)
        scheduler.step()
        with tw.phase("val"):
            for x, y in tw.steps(val_loader):
                logits = model(x)
                tw.log(loss=loss_fn(logits, y), acc=(logits.argmax(1) == y).float().mean())
    run.close()
    print(f"\nDone. See the curves with:\n  tensorboard --logdir {run.logdir}")
    return 0
