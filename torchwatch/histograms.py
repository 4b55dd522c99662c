"""Opt-in TensorBoard extras: histograms every N epochs (``histograms=N``), the graph once
(``graph=example_input``).

Written at the end of a top-level train phase whose epoch, as the console shows it, is a multiple
of N (N=5: the 5th, 10th, ... epoch), to that phase's folder, at step = epoch like the
``epoch/*`` scalars: ``params/<name>`` and ``grads/<name>`` (the gradients the last step left;
none when the loop cleared them). With several models, ``<name>`` starts with the model's key
(``G.0.weight``) or its position. Off by default: every parameter is copied to the host, which
synchronises a GPU once per tensor; that is why it only happens every N epochs.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Iterator, Tuple

import torch

from .values import warn

if TYPE_CHECKING:  # pragma: no cover
    from .phase import Phase
    from .run import Run

__all__ = ["write_graph", "write_histograms"]


def _named_parameters(run: "Run", phase: "Phase") -> Iterator[Tuple[str, torch.nn.Parameter]]:
    several = len(phase.models) > 1
    for i, model in enumerate(phase.models):
        prefix = f"{run.model_names.get(id(model), f'model{i}')}." if several else ""
        for name, parameter in model.named_parameters():
            yield prefix + name, parameter


def _host(tensor: torch.Tensor) -> "object":
    return tensor.detach().to("cpu", torch.float32).numpy()  # numpy has no bfloat16


def write_histograms(run: "Run", phase: "Phase") -> None:
    """Histograms of the phase's models, if this epoch is one of every ``run.histograms``."""
    epoch = phase.record.epoch if phase.record is not None else None
    shown = run.display_epoch(epoch)
    sink = run.tensorboard
    if shown is None or shown % run.histograms or sink is None:
        return
    writer = sink.writer(phase.name)
    if writer is None:
        return
    try:
        for name, parameter in _named_parameters(run, phase):
            writer.add_histogram(f"params/{name}", _host(parameter), epoch)
            if parameter.grad is not None:
                writer.add_histogram(f"grads/{name}", _host(parameter.grad), epoch)
    except Exception as error:  # the sink's policy: warn once, TensorBoard off, training goes on
        sink._fail(error)


def write_graph(run: "Run", phase: "Phase") -> None:
    """The graph of the phase's first model, once, traced on ``run.graph``.

    Tracing runs a forward pass, so it runs in eval mode under ``no_grad`` (no BatchNorm
    statistics move, no graph is kept) and every module's own mode is restored afterwards. A
    model that cannot be traced costs one warning; training and the other outputs go on.
    """
    example, run.graph = run.graph, None  # once, whatever happens
    writer = run.writer(phase.name)
    if writer is None or not phase.models:
        return
    model = phase.models[0]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad(), warnings.catch_warnings():
            # torch.jit.trace's notice (a DeprecationWarning, a FutureWarning from torch 2.14):
            # add_graph's own call, about nothing the user wrote or can change
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", r"`torch\.jit\.trace", FutureWarning)
            writer.add_graph(model, example)
    except Exception as error:
        warn(
            f"torchwatch: could not write the graph of {type(model).__name__} (graph=): tracing "
            f"failed with {error!r:.200}; training goes on. Pass an example input the model "
            "accepts, or leave graph= out"
        )
    finally:
        for module, training in modes:
            module.training = training
