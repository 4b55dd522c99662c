"""Shared fixtures: a small model, a fresh default run per test, and an event-file reader."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import torchwatch as tw

torch.set_num_threads(1)  # tiny models; two threads only contend on a 2-core machine
os.environ.pop("TORCHWATCH_DISABLE", None)


@pytest.fixture(autouse=True)
def _fresh_default_run():
    """Every test starts and ends without a default run or an active phase."""
    import sys

    phase_module = sys.modules["torchwatch.phase"]  # tw.phase (the verb) shadows the module name
    run_module = sys.modules["torchwatch.run"]
    yield
    run_module.close()
    run_module._default = None
    phase_module.ACTIVE.clear()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(8, 2))


def read_scalars(path):
    """{tag: [(step, value), ...]} of every scalar in the TensorBoard run at ``path``."""
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    acc = EventAccumulator(str(path), size_guidance={SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture
def scalars():
    return read_scalars
